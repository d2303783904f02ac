import { test } from "node:test";
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, chmodSync, existsSync, readFileSync, statSync, unlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request } from "undici";
import { startUp, waitHealthy, alive } from "../support/up.js";
import { cleanupRoot } from "../volumes/helpers.js";
import { mountAt } from "../../src/volumes/index.js";
import { volumeStoreDataDir, volumeStoreLogFile } from "../../src/volumes/store.js";

/** The metadata store's postmaster pid from its lock file, on the store's encrypted volume (volumeEncryption fscrypt, the default). */
function postmasterPid(dataDir: string): number | null {
  const f = join(volumeStoreDataDir(dataDir), "postmaster.pid");
  if (!existsSync(f)) return null;
  return Number(readFileSync(f, "utf8").split("\n")[0]);
}

test("parhelion up survives a kill -9 of itself: the next start reaps the orphan store and keeps the data", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "parhelion-up-"));
  chmodSync(dataDir, 0o711);
  const procs: ChildProcess[] = [];
  try {
    let t0 = Date.now();
    const first = startUp(dataDir);
    procs.push(first.child);
    const seen: number[] = [];
    const a = await waitHealthy(dataDir, t0, first.output, 60_000, seen);
    // The listener comes up before the store is initialised: healthz said 503 until everything was ready.
    assert.equal(seen[0], 503, `healthz answers ${seen.join(",")}`);
    assert.equal(seen.at(-1), 200);
    const keyFile = join(dataDir, "bootstrap", "owner-api-key");
    assert.equal(statSync(keyFile).mode & 0o777, 0o600);
    const key = readFileSync(keyFile, "utf8").trim();
    assert.ok(!first.output().includes(key), "the owner key is never printed");
    assert.ok(first.output().includes(keyFile), "its path is printed");
    const created = await request(`${a.apiUrl}/v1/teams`, { method: "POST", dispatcher: a.agent, headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: JSON.stringify({ name: "survivor" }) });
    assert.equal(created.statusCode, 200);
    await created.body.text();
    await a.agent.close();
    const pgPid = postmasterPid(dataDir);
    assert.ok(pgPid && alive(pgPid));

    first.child.kill("SIGKILL");
    await new Promise((r) => first.child.once("exit", r));
    assert.ok(alive(pgPid!), "the store outlives a kill -9 of parhelion (an orphan)");
    assert.ok(await mountAt(join(dataDir, "volumes", "store")), "and so does its volume's mount: the next start reuses it");

    unlinkSync(join(dataDir, "runtime.json"));
    t0 = Date.now();
    const second = startUp(dataDir);
    procs.push(second.child);
    const b = await waitHealthy(dataDir, t0, second.output);
    assert.ok(!alive(pgPid!), "the orphan was shut down");
    assert.ok(!existsSync(join(dataDir, "bootstrap", "owner-api-key")) || readFileSync(keyFile, "utf8").trim() === key, "no second bootstrap");
    const teams = await request(`${b.apiUrl}/v1/teams`, { dispatcher: b.agent, headers: { authorization: `Bearer ${key}` } });
    const body = (await teams.body.json()) as Array<{ name: string }>;
    assert.deepEqual(body.map((t) => t.name), ["survivor"]);
    await b.agent.close();
    // The store's log is beside its data directory on its volume: read while the volume is mounted (a clean stop unmounts it).
    const storeLog = readFileSync(volumeStoreLogFile(dataDir), "utf8");

    const stopped = Date.now();
    const newPg = postmasterPid(dataDir);
    second.child.kill("SIGTERM");
    const code = await new Promise((r) => second.child.once("exit", (c) => r(c)));
    assert.equal(code, 0);
    assert.ok(Date.now() - stopped < 10_000, "stops within 10 s");
    assert.ok(newPg && !alive(newPg), "the store stopped with parhelion");
    assert.equal(await mountAt(join(dataDir, "volumes", "store")), undefined, "a clean stop unmounts the store's volume");
    assert.ok(existsSync(join(dataDir, "volumes", "store.img")), "and keeps its image");
    assert.equal(existsSync(join(dataDir, "store", "postgres.log")), false, "the store's log is not on plain disk");
    const afterStop = second.output().slice(second.output().indexOf('"msg":"stopping"'));
    assert.ok(afterStop.length > 0);
    assert.doesNotMatch(afterStop, /"level":(40|50|60)/, "a clean stop logs no warning or error");
    for (const [name, text] of [["first run output", first.output()], ["second run output", second.output()], ["store log", storeLog]] as const) {
      assert.ok(!text.includes(key), `the owner key appears in the ${name}`);
      assert.ok(!text.includes(key.split("_").slice(2).join("_")), `the owner key's secret appears in the ${name}`);
    }
  } finally {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
    const pid = postmasterPid(dataDir);
    if (pid && alive(pid)) process.kill(pid, "SIGQUIT");
    await new Promise((r) => setTimeout(r, 300));
    // The store's volume: unmounted by the clean stop; whatever a failure left is unmounted here.
    await cleanupRoot(dataDir);
  }
});
