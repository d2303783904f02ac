import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { Agent, request } from "undici";
import { loadConfig } from "../../src/config/load.js";
import { createLogger } from "../../src/log/logger.js";
import { startPlatform } from "../../src/platform.js";
import { createGroupStorage } from "../../src/volumes/groups.js";
import { Fscrypt } from "../../src/volumes/fscrypt.js";
import { GroupRekeys } from "../../src/workspaces/rekey.js";
import { startTestPlatform, type TestPlatform } from "../support/platform.js";
import { createTestWorkspace, gatewayRows, waitForState, type TestWorkspace } from "../support/workspaces.js";
import { cleanupRoot } from "../volumes/helpers.js";

// Re-keying a group's data key end to end: a real platform with an fscrypt volume, a workspace written through
// the gateway, the volume rewritten under a new key; and a stop in the middle of the copy, then a restart.
let tp: TestPlatform;
let ws: TestWorkspace;
let dataDir = "";

before(async () => {
  tp = await startTestPlatform();
  dataDir = tp.dataDir;
  ws = await createTestWorkspace(tp);
});
after(async () => {
  try {
    await tp?.platform.stop();
  } finally {
    if (dataDir) await cleanupRoot(dataDir);
  }
});

const query = (sqlText: string): Promise<any[]> => gatewayRows(tp, ws, sqlText);

/** Every row's content in one digest: equal digests, equal data. */
async function digest(): Promise<{ n: number; sum: string }> {
  return (await query("SELECT count(*)::int AS n, md5(string_agg(id::text || ':' || v, ',' ORDER BY id)) AS sum FROM rekey_probe"))[0];
}

async function activeKey(): Promise<string> {
  return (await tp.platform.db.selectFrom("kms_keys").select("id").where("kind", "=", "group-data").where("group_id", "=", ws.groupId).where("state", "=", "active").executeTakeFirstOrThrow()).id;
}

const mount = () => join(dataDir, "volumes", ws.groupId);

/** Polls GET .../keys until the re-key is no longer RUNNING; answers every view seen. */
async function untilFinished(operationID: string): Promise<any[]> {
  const seen: any[] = [];
  const deadline = Date.now() + 50_000;
  for (;;) {
    const k = await tp.call("GET", `/v1/workspaceGroups/${ws.groupId}/keys`);
    assert.equal(k.status, 200, k.text);
    assert.equal(k.body.rekey.operationID, operationID);
    seen.push(k.body.rekey);
    if (k.body.rekey.state !== "RUNNING") return seen;
    assert.ok(Date.now() < deadline, `re-key still ${k.body.rekey.phase}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Stops the platform and starts it again on the same data directory (recovery runs before the reconciler). */
async function restart(): Promise<void> {
  await tp.platform.stop();
  const config = loadConfig({ flags: { dataDir, apiPort: 0, gatewayPort: 0 }, env: {}, cwd: dataDir });
  const platform = await startPlatform({ config, logger: createLogger({ level: "silent" }) });
  const agent = new Agent({ connect: { ca: tp.caPem }, pipelining: 0 });
  tp = {
    ...tp, platform, apiUrl: platform.apiUrl,
    async call(method, path, o = {}) {
      const headers: Record<string, string> = { authorization: `Bearer ${tp.ownerKey}`, ...(o.body === undefined ? {} : { "content-type": "application/json" }) };
      const res = await request(platform.apiUrl + path, { method: method as never, headers, body: o.body === undefined ? undefined : JSON.stringify(o.body), dispatcher: agent });
      const text = await res.body.text();
      return { status: res.statusCode, headers: res.headers as never, body: text ? JSON.parse(text) : undefined, text };
    },
  };
  ws = { ...ws, port: platform.gatewayPort };
}

/** Starts a re-key and stops it at its first copied chunk (what a crash in COPYING leaves); answers its row. */
async function rekeyStoppedInCopy(): Promise<{ id: string; new_key_id: string | null; bytes_copied: string; bytes_total: string; phase: string }> {
  let stopping: Promise<void> | undefined;
  tp.platform.rekeys.on("progress", (p) => {
    if (p.bytesCopied > 0 && p.bytesCopied < p.bytesTotal) stopping ??= tp.platform.rekeys.stop();
  });
  const r = await tp.call("POST", `/v1/workspaceGroups/${ws.groupId}/keys/rekey`, { body: {} });
  assert.equal(r.status, 202, r.text);
  for (const until = Date.now() + 30_000; !stopping; await new Promise((res) => setTimeout(res, 20))) assert.ok(Date.now() < until, "the copy did not start");
  await stopping;
  return tp.platform.db.selectFrom("group_rekeys").selectAll().where("id", "=", r.body.operationID).executeTakeFirstOrThrow();
}

test("rekey: a new data key, the volume rewritten under it, every row still there, workspaces ACTIVE again; a second one at once is refused", async () => {
  await query("CREATE TABLE rekey_probe (id int PRIMARY KEY, v text); INSERT INTO rekey_probe SELECT g, md5(g::text) || repeat('x', 200) FROM generate_series(1, 20000) g");
  const before = await digest();
  const oldKey = await activeKey();
  const oldIdentifier = (await new Fscrypt().status(join(mount(), "data"))).identifier;
  assert.ok(oldIdentifier);
  const events: number[] = [];
  tp.platform.rekeys.on("progress", (p) => events.push(p.bytesCopied));

  const r = await tp.call("POST", `/v1/workspaceGroups/${ws.groupId}/keys/rekey`, { body: {} });
  assert.equal(r.status, 202, r.text);
  assert.equal(r.body.state, "RUNNING");
  assert.equal(r.body.oldKeyID, oldKey);
  const again = await tp.call("POST", `/v1/workspaceGroups/${ws.groupId}/keys/rekey`, { body: {} });
  assert.equal(again.status, 409, again.text);
  assert.match(String(again.headers["content-type"]), /application\/problem\+json/);
  assert.equal(again.body.code, "ERR_REKEY_REFUSED");
  assert.equal(again.body.reason, "IN_PROGRESS");

  const seen = await untilFinished(r.body.operationID);
  const done = seen.at(-1);
  assert.equal(done.state, "DONE", done.error);
  assert.equal(done.phase, "DONE");
  assert.ok(done.bytesTotal > 1024 * 1024, "the copy measured the data");
  assert.equal(done.bytesCopied, done.bytesTotal);
  assert.ok(events.length > 1 && events.at(-1) === done.bytesCopied, "progress was reported as the copy went");
  assert.ok(seen.some((s) => s.state === "RUNNING"), "GET .../keys showed it running");

  const newKey = await activeKey();
  assert.notEqual(newKey, oldKey, "a new data key");
  assert.equal(done.newKeyID, newKey);
  const old = await tp.platform.db.selectFrom("kms_keys").select(["state", "retired_at"]).where("id", "=", oldKey).executeTakeFirstOrThrow();
  assert.equal(old.state, "retired");
  assert.ok(old.retired_at);
  const k = await tp.call("GET", `/v1/workspaceGroups/${ws.groupId}/keys`);
  assert.equal(k.body.dataKey.keyID, newKey);

  // On the volume: the encrypted directory has the new key's policy; neither the copy nor the old directory is left.
  const s = await new Fscrypt().status(join(mount(), "data"));
  assert.equal(s.policy, "v2");
  assert.notEqual(s.identifier, oldIdentifier, "the directory is under another key");
  assert.equal(existsSync(join(mount(), ".data.rekey")), false);
  assert.equal(existsSync(join(mount(), ".data.old")), false);

  await waitForState(tp, ws.workspaceId, "ACTIVE");
  assert.deepEqual(await digest(), before, "every row is there");
  await query("INSERT INTO rekey_probe VALUES (0, 'after the re-key')");
  assert.equal((await digest()).n, before.n + 1);

  const audit = await tp.platform.db.selectFrom("audit_log").selectAll().where("type", "=", "WorkspaceGroupRekey").where("resource_id", "=", ws.groupId).orderBy("seq").execute();
  assert.ok(audit.some((a) => a.source !== "System" && a.result === "SUCCESS"), "the request is audited");
  assert.ok(audit.some((a) => a.source === "System" && a.result === "SUCCESS" && (a.attributes as any).newKeyID === newKey), "its outcome is audited");
  assert.ok(audit.some((a) => a.result !== "SUCCESS" && (a.attributes as any).code === "ERR_REKEY_REFUSED"), "the refusal is audited");
  assert.ok(!JSON.stringify(audit).includes(oldIdentifier!), "no key identifier in the audit log");
});

test("rekey is refused, changing nothing, for a group with no data key and without volume encryption", async () => {
  const regionID = (await tp.call("GET", "/v1/regions")).body[0].regionID;
  const g = await tp.call("POST", "/v1/workspaceGroups", { body: { name: "rekey-empty", regionID } });
  const r = await tp.call("POST", `/v1/workspaceGroups/${g.body.workspaceGroupID}/keys/rekey`, { body: {} });
  assert.equal(r.status, 409, r.text);
  assert.equal(r.body.code, "ERR_REKEY_REFUSED");
  assert.equal(r.body.reason, "NO_DATA_KEY");
  const p = tp.platform;
  const plain = new GroupRekeys({
    db: p.db, keyring: {} as never, engine: p.engine, reconciler: p.reconciler, audit: p.audit, logger: createLogger({ level: "silent" }),
    storage: createGroupStorage({ encryption: "none", dataDir, keys: { groupVolumeKey: () => Promise.reject(new Error("unused")) }, logger: createLogger({ level: "silent" }) }),
  });
  const orgId = (await tp.call("GET", "/v1/auth/whoami")).body.orgID;
  await assert.rejects(plain.start(orgId, ws.groupId, "test"), (err: any) => err.code === "ERR_REKEY_REFUSED" && err.details.reason === "NO_VOLUME_ENCRYPTION");
});

test("a stop in the middle of the copy, then a start: rolled back to the old key with every row readable; a re-key afterwards finishes", async () => {
  await query("INSERT INTO rekey_probe SELECT g, md5(g::text) FROM generate_series(20001, 30000) g");
  const before = await digest();
  const oldKey = await activeKey();
  const op = await rekeyStoppedInCopy();
  assert.equal(op.phase, "COPYING");
  assert.ok(Number(op.bytes_copied) < Number(op.bytes_total));
  assert.ok(op.new_key_id);
  assert.equal(existsSync(join(mount(), ".data.rekey")), true, "a half-made copy is on the volume");
  await tp.platform.stop();

  await restart();
  const k = await tp.call("GET", `/v1/workspaceGroups/${ws.groupId}/keys`);
  assert.equal(k.body.rekey.operationID, op.id);
  assert.equal(k.body.rekey.state, "FAILED");
  assert.match(k.body.rekey.error, /stopped before the switch: rolled back/);
  assert.equal(k.body.dataKey.keyID, oldKey, "the old key stays");
  assert.equal(await tp.platform.db.selectFrom("kms_keys").select("id").where("id", "=", op.new_key_id!).executeTakeFirst(), undefined, "the pending key is gone");
  await waitForState(tp, ws.workspaceId, "ACTIVE");
  assert.equal(existsSync(join(mount(), ".data.rekey")), false);
  assert.deepEqual(await digest(), before, "every row is readable");

  const again = await tp.call("POST", `/v1/workspaceGroups/${ws.groupId}/keys/rekey`, { body: {} });
  assert.equal(again.status, 202, again.text);
  const done = (await untilFinished(again.body.operationID)).at(-1);
  assert.equal(done.state, "DONE", done.error);
  assert.notEqual(await activeKey(), oldKey);
  await waitForState(tp, ws.workspaceId, "ACTIVE");
  assert.deepEqual(await digest(), before);
});

test("a crash between the switch's two renames: the next start finishes the switch and the cleanup, every row readable", async () => {
  const before = await digest();
  const oldKey = await activeKey();
  const op = await rekeyStoppedInCopy();
  assert.ok(op.new_key_id);
  // The rest of COPYING and the switch's transaction done by hand as rekey.ts does them, then a crash after the
  // first rename: `data` is gone, `.data.old` and a complete `.data.rekey` are there, the store names the new key.
  const staging = join(mount(), ".data.rekey");
  for (const e of readdirSync(staging)) rmSync(join(staging, e), { recursive: true, force: true });
  await tp.platform.storage.rekeyVolume(ws.groupId)!.copyRekey({ progress: () => undefined });
  await tp.platform.db.transaction().execute(async (trx) => {
    await trx.updateTable("group_rekeys").set({ phase: "SWITCHING" }).where("id", "=", op.id).execute();
    await trx.updateTable("kms_keys").set({ state: "retired", retired_at: new Date() }).where("id", "=", oldKey).execute();
    await trx.updateTable("kms_keys").set({ state: "active" }).where("id", "=", op.new_key_id!).execute();
  });
  renameSync(join(mount(), "data"), join(mount(), ".data.old"));
  await restart();
  const k = await tp.call("GET", `/v1/workspaceGroups/${ws.groupId}/keys`);
  assert.equal(k.body.rekey.operationID, op.id);
  assert.equal(k.body.rekey.state, "DONE", k.body.rekey.error);
  assert.equal(k.body.dataKey.keyID, op.new_key_id);
  assert.equal(existsSync(join(mount(), ".data.rekey")), false);
  assert.equal(existsSync(join(mount(), ".data.old")), false);
  await waitForState(tp, ws.workspaceId, "ACTIVE");
  assert.deepEqual(await digest(), before, "every row is readable under the new key");
});
