import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import { startTestPlatform, type TestPlatform } from "../support/platform.js";
import { createTestWorkspace, gatewayClient } from "../support/workspaces.js";
import { until as waitUntil } from "../support/wait.js";
import { loadConfig } from "../../src/config/load.js";
import { WORKSPACE_SIZES } from "../../src/engine/sizes.js";
import { checkVolumeSupport } from "../../src/volumes/groups.js";
import { mountAt } from "../../src/volumes/index.js";
import { ParhelionError } from "../../src/lib/errors.js";
import { account } from "../volumes/helpers.js";

/** Polls a workspace until pred holds (FAILED does not end the wait: some tests wait for it). */
async function until(tp: TestPlatform, id: string, pred: (w: any) => boolean, what: string, timeoutMs = 60_000): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await tp.call("GET", `/v1/workspaces/${id}`);
    assert.equal(r.status, 200, r.text);
    if (pred(r.body)) return r.body;
    if (Date.now() > deadline) assert.fail(`${what}: workspace is ${r.body.state} (${r.body.stateReason ?? "no reason"}) after ${timeoutMs} ms`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

describe("workspace data on the group's encrypted volume (volumeEncryption fscrypt, the default)", () => {
  let tp: TestPlatform;
  before(async () => {
    tp = await startTestPlatform({ env: { PARHELION_WORKSPACE_FSYNC: "false" } });
  });
  after(async () => {
    await tp?.stop();
  });

  test("is the default, reported by /healthz and runtime.json", async () => {
    assert.equal(loadConfig({ env: {}, cwd: tp.dataDir }).volumeEncryption, "fscrypt");
    assert.throws(() => loadConfig({ env: { PARHELION_VOLUME_ENCRYPTION: "plaintext" }, cwd: tp.dataDir }), /volumeEncryption/);
    const h = await tp.call("GET", "/healthz", { key: null });
    assert.deepEqual(h.body, { status: "ok", volumeEncryption: "fscrypt" });
    assert.equal(JSON.parse(readFileSync(join(tp.dataDir, "runtime.json"), "utf8")).volumeEncryption, "fscrypt");
  });

  test("a workspace's data directory and its server's logs are on its group's mounted, encrypted volume, sized by its storage share; its socket is not", async () => {
    const ws = await createTestWorkspace(tp, { group: { adminPassword: "volume-test-admin-password-1" } });
    const mountPoint = join(tp.dataDir, "volumes", ws.groupId);
    const m = await mountAt(mountPoint);
    assert.ok(m, "the group's volume is mounted");
    assert.equal(m.fsType, "ext4");
    const image = statSync(join(tp.dataDir, "volumes", `${ws.groupId}.img`));
    assert.equal(image.size, WORKSPACE_SIZES["S-00"].storageBytes, "one S-00 workspace: the image is its share");
    assert.ok(image.blocks * 512 < 256 * 1024 * 1024, `the image is sparse (${image.blocks * 512} bytes used)`);
    assert.equal(tp.platform.storage.isOpen(ws.groupId), true, "unlocked by this process");
    const data = statSync(join(mountPoint, "data"));
    assert.equal(data.uid, 0, "the encrypted directory is root's");
    assert.equal(data.mode & 0o777, 0o711);
    const pgdata = join(mountPoint, "data", ws.workspaceId, "pgdata");
    assert.equal(statSync(pgdata).uid, account().uid, "the data directory is the service account's");
    assert.ok(existsSync(join(pgdata, "PG_VERSION")) && existsSync(join(pgdata, "pg_wal")), "data and WAL on the volume");
    assert.equal(existsSync(join(tp.dataDir, "workspaces", ws.workspaceId, "pgdata")), false, "nothing in plaintext beside it");
    assert.ok(existsSync(join(tp.dataDir, "workspaces", ws.workspaceId, "run")), "the socket directory stays outside (path length)");
    for (const f of ["postgres.log", "postgres.csv"]) {
      const log = join(mountPoint, "data", ws.workspaceId, f);
      assert.ok(existsSync(log), `${f} is beside the data directory on the volume (it holds statement text)`);
      assert.deepEqual([statSync(log).mode & 0o777, statSync(log).uid], [0o600, account().uid], `${f} is the service account's, 0600`);
      assert.equal(existsSync(join(tp.dataDir, "workspaces", ws.workspaceId, f)), false, `no ${f} outside the volume`);
    }
    assert.equal(statSync(join(mountPoint, "data", ws.workspaceId)).mode & 0o777, 0o700, "the directory holding them is 0700");
    const c = gatewayClient(tp, ws);
    await c.connect();
    assert.equal((await c.query("SELECT current_setting('data_directory') AS d")).rows[0].d, pgdata);
    await c.end();
  });

  test("a group whose data key is unavailable: its workspace stays FAILED with ERR_KEY_UNAVAILABLE and nothing is written, never in plaintext; once the key is usable it starts", async () => {
    const org = (await tp.call("GET", "/v1/organizations/current")).body.orgID as string;
    const regionID = (await tp.call("GET", "/v1/regions")).body[0].regionID;
    const g = await tp.call("POST", "/v1/workspaceGroups", { body: { name: `nokey-${randomUUID().slice(0, 8)}`, regionID } });
    assert.equal(g.status, 200, g.text);
    const groupId = g.body.workspaceGroupID as string;
    // The group's active data key, as a KMS that no longer opens it would leave it: present, not unwrappable.
    const keyId = `dek-${randomUUID()}`;
    await tp.platform.db.insertInto("kms_keys").values({ id: keyId, kind: "group-data", org_id: org, group_id: groupId, wrapped_by: `kek-${randomUUID()}`, provider: null, wrapped: Buffer.from("not an envelope") }).execute();
    const w = await tp.call("POST", "/v1/workspaces", { body: { workspaceGroupID: groupId, name: "locked-out" } });
    assert.equal(w.status, 200, w.text);
    const id = w.body.workspaceID as string;
    const failed = await until(tp, id, (x) => x.state === "FAILED", "the workspace fails");
    assert.match(failed.stateReason, /^ERR_KEY_UNAVAILABLE: /);
    assert.equal(existsSync(join(tp.dataDir, "volumes", `${groupId}.img`)), false, "no volume was made without the key");
    assert.equal(existsSync(join(tp.dataDir, "workspaces", id, "pgdata")), false, "no plaintext data directory instead");
    assert.equal(tp.platform.engine.isRunning(id), false);
    const client = () => gatewayClient(tp, { groupId, workspaceId: id, endpoint: failed.endpoint, port: failed.port, adminPassword: g.body.adminPassword, caFile: "" });
    // The gateway refuses it, saying why (ERR_KEY_UNAVAILABLE, 58000) once its 2 s route cache has seen FAILED.
    let code = "";
    for (const deadline = Date.now() + 10_000; code !== "58000" && Date.now() < deadline;) {
      await assert.rejects(client().connect(), (err: any) => {
        code = String(err.code);
        return code === "57P03" || code === "58000";
      }, "the gateway refuses it");
      if (code !== "58000") await new Promise((r) => setTimeout(r, 250));
    }
    assert.equal(code, "58000", "the refusal names the key's unavailability");
    // The reconciler records the failure just after it sets the state the gateway reads: wait for the record.
    await waitUntil("the WorkspaceFailed record naming ERR_KEY_UNAVAILABLE (audited)", async () => {
      const logs = (await tp.call("GET", `/v1/auditLogs?source=System&limit=100`)).body.auditLogs as any[];
      return logs.some((l) => l.type === "WorkspaceFailed" && String(l.reason).includes("ERR_KEY_UNAVAILABLE"));
    }, 10_000, 100);

    // The key usable again (here: the unopenable key retired; a new one is made on first use).
    await tp.platform.db.updateTable("kms_keys").set({ state: "retired" }).where("id", "=", keyId).execute();
    const active = await until(tp, id, (x) => x.state === "ACTIVE", "the workspace starts once the key is usable", 90_000);
    assert.equal(active.stateReason, undefined);
    assert.ok(existsSync(join(tp.dataDir, "volumes", groupId, "data", id, "pgdata", "PG_VERSION")));
  });
});

describe("volumeEncryption none", () => {
  test("is an explicit choice: warned at start, shown in /healthz, workspace data in the engine's directory and no volume", async () => {
    let log = "";
    const sink = new Writable({
      write(chunk, _enc, cb) {
        log += String(chunk);
        cb();
      },
    });
    const tp = await startTestPlatform({ env: { PARHELION_WORKSPACE_FSYNC: "false", PARHELION_VOLUME_ENCRYPTION: "none" }, logDestination: sink });
    try {
      const warning = log.split("\n").filter(Boolean).map((l) => JSON.parse(l)).find((l) => l.level === 40 && /volumeEncryption is none/.test(l.msg));
      assert.ok(warning, "a warning at start");
      assert.equal((await tp.call("GET", "/healthz", { key: null })).body.volumeEncryption, "none");
      const ws = await createTestWorkspace(tp);
      assert.ok(existsSync(join(tp.dataDir, "workspaces", ws.workspaceId, "pgdata", "PG_VERSION")));
      assert.equal(existsSync(join(tp.dataDir, "volumes", `${ws.groupId}.img`)), false);
      assert.equal(await mountAt(join(tp.dataDir, "volumes", ws.groupId)), undefined);
    } finally {
      await tp.stop();
    }
  });
});

test("when fscrypt volumes cannot work on the host, the start fails naming the option (never a silent plaintext fallback)", async () => {
  const err = await checkVolumeSupport("/nonexistent/parhelion-fscrypt").then(() => null, (e: unknown) => e);
  assert.ok(err instanceof ParhelionError);
  assert.equal(err.code, "ERR_CONFIG");
  assert.match(err.message, /volumeEncryption is fscrypt/);
  assert.match(err.message, /\/nonexistent\/parhelion-fscrypt/);
  assert.match(err.message, /--volume-encryption none \(PARHELION_VOLUME_ENCRYPTION=none/);
  await checkVolumeSupport(); // this host (root, loop devices, ext4 encryption, the helper) can
});
