import { test } from "node:test";
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, chmodSync, readFileSync, readdirSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request, type Agent } from "undici";
import pg from "pg";
import { startUp, waitHealthy, alive } from "../support/up.js";
import { volumeStoreDataDir } from "../../src/volumes/store.js";
import { postgresProcessesIn } from "../../src/engine/postgres.js";
import { mountAt } from "../../src/volumes/index.js";
import { cleanupRoot } from "../volumes/helpers.js";

const POSTGRES = "/usr/lib/postgresql/15/bin/postgres";

interface Api {
  apiUrl: string;
  agent: Agent;
  key: string;
}

async function call(api: Api, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const r = await request(api.apiUrl + path, {
    method: method as never, dispatcher: api.agent,
    headers: { authorization: `Bearer ${api.key}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await r.body.text();
  return { status: r.statusCode, body: text ? JSON.parse(text) : undefined };
}

/** A workspace's data directory: on its group's encrypted volume. */
function pgdataOf(dataDir: string, groupId: string, id: string): string {
  return join(dataDir, "volumes", groupId, "data", id, "pgdata");
}

/** Every postmaster (not child) working in a workspace's data directory. */
function postmasters(dataDir: string, groupId: string, id: string): number[] {
  return postgresProcessesIn(pgdataOf(dataDir, groupId, id), POSTGRES).filter((p) => !p.cmdline.startsWith("postgres:")).map((p) => p.pid);
}

/** Waits until no workspace is PENDING or RESUMING (FAILED fails the test). */
async function settled(api: Api, timeoutMs = 60_000): Promise<any[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const all = (await call(api, "GET", "/v1/workspaces?includeTerminated=true")).body as any[];
    const failed = all.find((w) => w.state === "FAILED");
    if (failed) assert.fail(`workspace FAILED: ${failed.stateReason}`);
    if (!all.some((w) => w.state === "PENDING" || w.state === "RESUMING")) return all;
    if (Date.now() > deadline) assert.fail(`workspaces did not settle: ${JSON.stringify(all.map((w) => [w.name, w.state]))}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function query(dataDir: string, port: number, ws: any, password: string, sql: string): Promise<any[]> {
  const c = new pg.Client({ host: "127.0.0.1", port, user: "admin", password, database: "postgres", ssl: { ca: readFileSync(join(dataDir, "tls", "ca.crt"), "utf8"), servername: ws.endpoint } });
  c.on("error", () => undefined);
  await c.connect();
  try {
    return (await c.query(sql)).rows;
  } finally {
    await c.end();
  }
}

test("kill -9 of parhelion at any step of create/suspend/resume/delete: every workspace converges, nothing stray, no data lost", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "parhelion-crash-"));
  chmodSync(dataDir, 0o711);
  const env = { PARHELION_WORKSPACE_FSYNC: "false" };
  let child: ChildProcess | undefined;
  let groupId = "";
  try {
    let t0 = Date.now();
    let up = startUp(dataDir, env);
    child = up.child;
    let h = await waitHealthy(dataDir, t0, up.output);
    const key = readFileSync(join(dataDir, "bootstrap", "owner-api-key"), "utf8").trim();
    let api: Api = { ...h, key };
    const regionID = (await call(api, "GET", "/v1/regions")).body[0].regionID;
    const group = await call(api, "POST", "/v1/workspaceGroups", { name: "crash", regionID, adminPassword: "crash-test-password-1" });
    groupId = group.body.workspaceGroupID as string;
    const keeper = (await call(api, "POST", "/v1/workspaces", { workspaceGroupID: groupId, name: "keeper" })).body.workspaceID as string;
    let all = await settled(api);
    let port = JSON.parse(readFileSync(join(dataDir, "runtime.json"), "utf8")).gatewayPort as number;
    const keeperWs = all.find((w) => w.workspaceID === keeper);
    assert.equal(keeperWs.state, "ACTIVE");
    await query(dataDir, port, keeperWs, "crash-test-password-1", "create table ledger(n int); insert into ledger select generate_series(1, 1000)");

    // Each round asks for several transitions at once and kills parhelion after a different delay, so the
    // kill lands before, during and after the engine's steps.
    const delays = [0, 40, 150, 400, 900];
    const expected = new Map<string, "ACTIVE" | "SUSPENDED" | "TERMINATED">([[keeper, "ACTIVE"]]);
    for (const [round, delay] of delays.entries()) {
      const created = (await call(api, "POST", "/v1/workspaces", { workspaceGroupID: groupId, name: `r${round}` })).body.workspaceID as string;
      expected.set(created, "ACTIVE");
      if (round % 2 === 0) {
        await call(api, "POST", `/v1/workspaces/${keeper}/suspend`);
        expected.set(keeper, "SUSPENDED");
      } else {
        await call(api, "POST", `/v1/workspaces/${keeper}/resume`);
        expected.set(keeper, "ACTIVE");
      }
      const prev = [...expected.entries()].find(([id, st]) => id !== keeper && id !== created && st === "ACTIVE");
      if (prev) {
        await call(api, "DELETE", `/v1/workspaces/${prev[0]}`);
        expected.set(prev[0], "TERMINATED");
      }
      await new Promise((r) => setTimeout(r, delay));
      child.kill("SIGKILL");
      await new Promise((r) => child!.once("exit", r));
      api.agent.close().catch(() => undefined);

      t0 = Date.now();
      up = startUp(dataDir, env);
      child = up.child;
      h = await waitHealthy(dataDir, t0, up.output);
      api = { ...h, key };
      port = JSON.parse(readFileSync(join(dataDir, "runtime.json"), "utf8")).gatewayPort as number;
      // Converged: every workspace in its desired state.
      const deadline = Date.now() + 60_000;
      for (;;) {
        all = (await call(api, "GET", "/v1/workspaces?includeTerminated=true")).body;
        const wrong = [...expected].filter(([id, st]) => all.find((w) => w.workspaceID === id)?.state !== st);
        if (wrong.length === 0) break;
        if (Date.now() > deadline) assert.fail(`round ${round}: not converged: ${JSON.stringify(wrong.map(([id, st]) => [st, all.find((w) => w.workspaceID === id)?.state]))}\n${up.output().slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      // Serving: each ACTIVE workspace answers a query (its row may say ACTIVE from before the kill while the
      // reconciler is still replacing the orphan server).
      for (const [id, st] of expected) {
        if (st !== "ACTIVE") continue;
        const ws = all.find((w) => w.workspaceID === id);
        const until = Date.now() + 30_000;
        for (;;) {
          try {
            await query(dataDir, port, ws, "crash-test-password-1", "select 1");
            break;
          } catch (err) {
            if (Date.now() > until) throw err;
            await new Promise((r) => setTimeout(r, 100));
          }
        }
      }
      // Exactly one server per ACTIVE workspace, none otherwise, no directory for a terminated one (neither
      // its socket and log directory nor its data directory on the group's volume, which stays mounted).
      const volumeData = join(dataDir, "volumes", groupId, "data");
      for (const [id, st] of expected) {
        const pms = postmasters(dataDir, groupId, id);
        assert.equal(pms.length, st === "ACTIVE" ? 1 : 0, `round ${round}: ${id} (${st}) has ${pms.length} postmasters`);
        assert.equal(existsSync(join(dataDir, "workspaces", id)), st !== "TERMINATED", `round ${round}: directory of ${id} (${st})`);
        assert.equal(existsSync(pgdataOf(dataDir, groupId, id)), st !== "TERMINATED", `round ${round}: data directory of ${id} (${st})`);
      }
      const dirs = readdirSync(join(dataDir, "workspaces")).filter((d) => /^[0-9a-f-]{36}$/.test(d));
      for (const d of dirs) assert.ok(expected.has(d) && expected.get(d) !== "TERMINATED", `round ${round}: stray directory ${d}`);
      for (const d of readdirSync(volumeData).filter((n) => /^[0-9a-f-]{36}$/.test(n))) assert.ok(expected.has(d) && expected.get(d) !== "TERMINATED", `round ${round}: stray data directory ${d}`);
      assert.ok(await mountAt(join(dataDir, "volumes", groupId)), `round ${round}: the group's volume is mounted`);
    }
    if (expected.get(keeper) !== "ACTIVE") {
      await call(api, "POST", `/v1/workspaces/${keeper}/resume`);
      const deadline = Date.now() + 30_000;
      while ((await call(api, "GET", `/v1/workspaces/${keeper}`)).body.state !== "ACTIVE") {
        if (Date.now() > deadline) assert.fail("keeper did not resume");
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const rows = await query(dataDir, port, keeperWs, "crash-test-password-1", "select count(*)::int as n, sum(n)::int as s from ledger");
    assert.deepEqual(rows[0], { n: 1000, s: 500500 }, "no data lost across five kill -9s");

    const stopped = new Promise((r) => child!.once("exit", r));
    child.kill("SIGTERM");
    await stopped;
    for (const id of expected.keys()) assert.equal(postmasters(dataDir, groupId, id).length, 0, "every workspace server stopped with parhelion");
    assert.equal(await mountAt(join(dataDir, "volumes", groupId)), undefined, "a clean stop unmounts the group's volume");
    assert.ok(existsSync(join(dataDir, "volumes", `${groupId}.img`)), "and keeps its image");
  } finally {
    if (child && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    // Whatever a failed assertion left running, then the volume (unmounted, loop device detached).
    for (const d of existsSync(join(dataDir, "workspaces")) ? readdirSync(join(dataDir, "workspaces")) : []) {
      for (const p of groupId ? postgresProcessesIn(pgdataOf(dataDir, groupId, d), POSTGRES) : []) if (alive(p.pid)) process.kill(p.pid, "SIGKILL");
    }
    for (const p of postgresProcessesIn(volumeStoreDataDir(dataDir), POSTGRES)) if (alive(p.pid)) process.kill(p.pid, "SIGKILL");
    await new Promise((r) => setTimeout(r, 200));
    await cleanupRoot(dataDir);
  }
});
