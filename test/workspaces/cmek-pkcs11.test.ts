import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { startTestPlatform, type TestPlatform } from "../support/platform.js";
import { createTestWorkspace, gatewayClient, gatewayRefusal, gatewayRows, waitForState, type TestWorkspace } from "../support/workspaces.js";
import { SOFTHSM_MODULE, createTestToken } from "../support/softhsm.js";
import { hsmAdmin } from "../support/hsm-admin.js";

// Customer-managed keys on a PKCS#11 HSM end to end: a real SoftHSM2 token reached through the operator's
// cmekHsmModule, a real platform with fscrypt volumes, the gateway. The customer works on the token with their
// own tools in a process of their own (hsmAdmin): makes keys, turns a key's decryption off and on again.
const TOKEN = "cust-hsm";
const tok = createTestToken(TOKEN);
const KEY = "customer-key";
const KEY_ID = `pkcs11:${TOKEN}/${KEY}`;
let tp: TestPlatform;
let ws: TestWorkspace;

before(async () => {
  hsmAdmin(tok, { op: "genkey", label: KEY, type: "aes256" });
  hsmAdmin(tok, { op: "genkey", label: "aes-128-key", type: "aes128" });
  hsmAdmin(tok, { op: "genkey", label: "generic-secret", type: "generic" });
  tp = await startTestPlatform({ env: { PARHELION_CMEK_HSM_MODULE: SOFTHSM_MODULE, PARHELION_KMS_CHECK_SECONDS: "1" } });
  ws = await createTestWorkspace(tp);
});
after(async () => {
  await tp?.stop();
  tok.cleanup();
});

const query = (sqlText: string): Promise<any[]> => gatewayRows(tp, ws, sqlText);

async function dataKey(groupId = ws.groupId): Promise<{ id: string; wrap: string; wrapped_by: string; wrap_version: number }> {
  return tp.platform.db.selectFrom("kms_keys").select(["id", "wrap", "wrapped_by", "wrap_version"]).where("kind", "=", "group-data").where("group_id", "=", groupId).where("state", "=", "active").executeTakeFirstOrThrow();
}

async function auditOf(type: string, atLeast = 0, groupId = ws.groupId): Promise<any[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const rows = await tp.platform.db.selectFrom("audit_log").selectAll().where("type", "=", type).where("resource_id", "=", groupId).orderBy("seq").execute();
    if (rows.length >= atLeast || Date.now() > deadline) return rows;
    await new Promise((r) => setTimeout(r, 100));
  }
}

const pkcs11Key = (label: string, pin = tok.pin, token = TOKEN) => ({ kmsKey: { provider: "pkcs11", keyID: `${token}/${label}`, pin } });

/** PATCHes an unusable key; asserts 400 ERR_KMS_KEY_UNUSABLE naming why, and that the PIN is not in the answer. */
async function refused(body: { kmsKey: { keyID: string; pin: string } }, why: RegExp): Promise<void> {
  const r = await tp.call("PATCH", `/v1/workspaceGroups/${ws.groupId}`, { body });
  assert.equal(r.status, 400, `${body.kmsKey.keyID}: ${r.text}`);
  assert.match(String(r.headers["content-type"]), /application\/problem\+json/);
  assert.equal(r.body.code, "ERR_KMS_KEY_UNUSABLE", r.text);
  assert.ok(r.body.message.includes(body.kmsKey.keyID), r.body.message);
  assert.match(r.body.message, why);
  assert.ok(!r.text.includes(body.kmsKey.pin), "the PIN is not in the answer");
}

test("a wrong PIN, a missing key, a non-AES or AES-128 key and an unknown token answer ERR_KMS_KEY_UNUSABLE and change nothing", async () => {
  const before = await dataKey();
  // First: while no session of the platform is logged in to the token, so the token itself checks the PIN.
  await refused(pkcs11Key(KEY, "0000" + randomBytes(4).toString("hex")), /CKR_PIN_INCORRECT/);
  await refused(pkcs11Key("no-such-key"), /no such key on the token/);
  await refused(pkcs11Key("generic-secret"), /no such key on the token/);
  await refused(pkcs11Key("aes-128-key"), /not an AES-256 key/);
  await refused(pkcs11Key(KEY, tok.pin, "no-such-token"), /no such token/);
  assert.deepEqual(await dataKey(), before, "the data key's wrapping is unchanged");
  assert.equal((await tp.call("GET", `/v1/workspaceGroups/${ws.groupId}`)).body.kmsKey, null);
  assert.equal(await tp.platform.db.selectFrom("group_kms_keys").select("group_id").where("group_id", "=", ws.groupId).executeTakeFirst(), undefined);
  const denied = (await auditOf("WorkspaceGroupUpdate", 5)).filter((a) => a.result !== "SUCCESS");
  assert.equal(denied.length, 5, "each refusal is audited");
  assert.ok(!JSON.stringify(denied).includes(tok.pin), "a PIN never reaches the audit log");
});

test("a pkcs11 key re-wraps the data key in the HSM online (same key, no data rewritten); a wrong PIN is refused while the token is open; rotation re-wraps again", async () => {
  await query("CREATE TABLE hsm_probe (v text); INSERT INTO hsm_probe VALUES ('before the customer key')");
  const before = await dataKey();
  const held = gatewayClient(tp, ws);
  await held.connect();
  try {
    const r = await tp.call("PATCH", `/v1/workspaceGroups/${ws.groupId}`, { body: pkcs11Key(KEY) });
    assert.equal(r.status, 200, r.text);
    const after = await dataKey();
    assert.equal(after.id, before.id, "the same data key");
    assert.equal(after.wrap, "pkcs11");
    assert.equal(after.wrapped_by, KEY_ID);
    assert.equal(after.wrap_version, before.wrap_version + 1);
    const g = await tp.call("GET", `/v1/workspaceGroups/${ws.groupId}`);
    assert.deepEqual({ provider: g.body.kmsKey.provider, keyID: g.body.kmsKey.keyID, status: g.body.kmsKey.status }, { provider: "pkcs11", keyID: KEY_ID, status: "ENABLED" });
    assert.ok(!g.text.includes(tok.pin));
    const stored = await tp.platform.db.selectFrom("group_kms_keys").select(["credential_enc", "key_ref"]).where("group_id", "=", ws.groupId).executeTakeFirstOrThrow();
    assert.equal(stored.key_ref, `${TOKEN}/${KEY}`);
    assert.ok(stored.credential_enc && stored.credential_enc.length > 0 && !stored.credential_enc.includes(Buffer.from(tok.pin)), "the PIN is stored sealed");
    assert.deepEqual((await held.query("SELECT v FROM hsm_probe")).rows, [{ v: "before the customer key" }], "an open session kept serving");

    // The platform is now logged in to the token: a C_Login with any PIN answers CKR_USER_ALREADY_LOGGED_IN.
    await refused(pkcs11Key(KEY, "9999" + randomBytes(4).toString("hex")), /CKR_PIN_INCORRECT/);
    assert.equal((await dataKey()).wrap_version, after.wrap_version, "the refused PATCH changed nothing");

    const rot = await tp.call("POST", `/v1/workspaceGroups/${ws.groupId}/keys/rotate`, { body: {} });
    assert.equal(rot.status, 200, rot.text);
    assert.equal(rot.body.provider, "pkcs11");
    assert.equal(rot.body.keyID, before.id);
    assert.equal(rot.body.wrappedBy, KEY_ID);
    assert.equal(rot.body.keyVersion, after.wrap_version + 1);
    assert.equal((await dataKey()).wrap_version, rot.body.keyVersion);
    assert.deepEqual((await held.query("SELECT v FROM hsm_probe")).rows, [{ v: "before the customer key" }]);
  } finally {
    await held.end();
  }
  const set = (await auditOf("WorkspaceGroupUpdate")).filter((a) => a.result === "SUCCESS");
  assert.equal(set.at(-1)?.attributes.change?.kmsKey?.keyID, `${TOKEN}/${KEY}`);
  assert.equal(set.at(-1)?.attributes.change?.kmsKey?.pin, "(set)");
  assert.ok(!JSON.stringify(await auditOf("WorkspaceGroupUpdate")).includes(tok.pin));
  assert.equal((await auditOf("WorkspaceGroupKeyRotate", 1)).at(-1)?.attributes.keyVersion, (await dataKey()).wrap_version);
});

/** ACTIVE again (it is FAILED until the key works: waitForState would stop at FAILED). */
async function waitForActive(): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const r = await tp.call("GET", `/v1/workspaces/${ws.workspaceId}`);
    if (r.body.state === "ACTIVE") return;
    assert.ok(Date.now() < deadline, `still ${r.body.state} 60 s after the key was enabled again: ${r.body.stateReason}`);
    await new Promise((res) => setTimeout(res, 200));
  }
}

test("the customer turning the key's decryption off in the HSM stops the group within kmsCheckSeconds; turning it on brings it back with its rows", async (t) => {
  await query("INSERT INTO hsm_probe SELECT 'row ' || i FROM generate_series(1, 500) i");
  const t0 = Date.now();
  assert.deepEqual(hsmAdmin(tok, { op: "set", label: KEY, decrypt: false }), { ok: true, decrypt: false });
  const failed = await waitForState(tp, ws.workspaceId, "FAILED", 30_000);
  const stoppedMs = Date.now() - t0;
  // kmsCheckSeconds is 1: the next check finds it, then the servers stop; allow for a loaded machine.
  assert.ok(stoppedMs < 15_000, `FAILED only after ${stoppedMs} ms`);
  t.diagnostic(`CKA_DECRYPT off -> workspace FAILED seen by the API after ${stoppedMs} ms (kmsCheckSeconds 1)`);
  assert.ok(failed.stateReason.startsWith("ERR_KEY_UNAVAILABLE: "), failed.stateReason);
  assert.ok(failed.stateReason.includes(KEY_ID), `the reason names the key: ${failed.stateReason}`);
  assert.equal(tp.platform.engine.isRunning(ws.workspaceId), false);
  assert.equal(tp.platform.storage.isOpen(ws.groupId), false, "the volume is locked");
  const g = await tp.call("GET", `/v1/workspaceGroups/${ws.groupId}`);
  assert.equal(g.body.kmsKey.status, "UNAVAILABLE");
  assert.equal(g.body.kmsKey.statusDetail, "CKR_KEY_FUNCTION_NOT_PERMITTED", "the HSM's reason");
  // The gateway tells a client why, naming the key (once its 2 s route cache has seen FAILED).
  const told = await gatewayRefusal(tp, ws, "58000");
  assert.ok(told, "the gateway answers SQLSTATE 58000");
  assert.ok(told.message.includes(KEY_ID), told.message);
  const revoked = await auditOf("WorkspaceGroupKeyRevoked", 1);
  assert.equal(revoked.length, 1);
  assert.equal(revoked[0].attributes.keyID, KEY_ID);
  assert.equal(revoked[0].attributes.provider, "pkcs11");
  assert.deepEqual(revoked[0].attributes.workspaceIDs, [ws.workspaceId]);
  // Still revoked on later checks, and audited once.
  await new Promise((r) => setTimeout(r, 2500));
  assert.equal((await tp.call("GET", `/v1/workspaces/${ws.workspaceId}`)).body.state, "FAILED");
  assert.equal((await auditOf("WorkspaceGroupKeyRevoked")).length, 1);
  // Moving off a key needs that key: it cannot unwrap the data key now.
  const away = await tp.call("PATCH", `/v1/workspaceGroups/${ws.groupId}`, { body: { kmsKey: null } });
  assert.equal(away.status, 503, away.text);
  assert.equal(away.body.code, "ERR_KEY_UNAVAILABLE");

  assert.deepEqual(hsmAdmin(tok, { op: "set", label: KEY, decrypt: true }), { ok: true, decrypt: true });
  const t1 = Date.now();
  await waitForActive();
  t.diagnostic(`CKA_DECRYPT on -> workspace ACTIVE after ${Date.now() - t1} ms`);
  const rows = await query("SELECT v FROM hsm_probe");
  assert.equal(rows.length, 501);
  assert.ok(rows.some((r) => r.v === "before the customer key") && rows.some((r) => r.v === "row 500"));
  const restored = await auditOf("WorkspaceGroupKeyRestored", 1);
  assert.equal(restored.length, 1);
  assert.equal(restored[0].attributes.keyID, KEY_ID);
  const g2 = await tp.call("GET", `/v1/workspaceGroups/${ws.groupId}`);
  assert.equal(g2.body.kmsKey.status, "ENABLED");
});

test("kmsKey null moves the group back to the platform key, online", async () => {
  const r = await tp.call("PATCH", `/v1/workspaceGroups/${ws.groupId}`, { body: { kmsKey: null } });
  assert.equal(r.status, 200, r.text);
  const k = await dataKey();
  assert.equal(k.wrap, "kek");
  assert.equal((await tp.call("GET", `/v1/workspaceGroups/${ws.groupId}`)).body.kmsKey, null);
  assert.equal((await query("SELECT count(*)::int AS n FROM hsm_probe"))[0].n, 501);
});

test("a group created with a pkcs11 kmsKey starts on the customer's key: its workspace runs on it; a wrong PIN or missing key creates no group", async () => {
  const regionID = (await tp.call("GET", "/v1/regions")).body[0].regionID;
  for (const [i, body] of [pkcs11Key(KEY, "0000" + randomBytes(4).toString("hex")), pkcs11Key("no-such-key")].entries()) {
    const name = `hsm-refused-${i}`;
    const r = await tp.call("POST", "/v1/workspaceGroups", { body: { name, regionID, ...body } });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.body.code, "ERR_KMS_KEY_UNUSABLE", r.text);
    assert.ok(!r.text.includes(body.kmsKey.pin));
    assert.equal((await tp.platform.db.selectFrom("workspace_groups").select("id").where("name", "=", name).execute()).length, 0, "no group is left");
  }
  const born = await createTestWorkspace(tp, { group: pkcs11Key(KEY) });
  const g = await tp.call("GET", `/v1/workspaceGroups/${born.groupId}`);
  assert.equal(g.body.state, "ACTIVE");
  assert.equal(g.body.kmsKey.keyID, KEY_ID);
  const k = await dataKey(born.groupId);
  assert.deepEqual({ wrap: k.wrap, wrappedBy: k.wrapped_by }, { wrap: "pkcs11", wrappedBy: KEY_ID });
  const c = gatewayClient(tp, born);
  await c.connect();
  try {
    assert.deepEqual((await c.query("SELECT 'on the customer key' AS v")).rows, [{ v: "on the customer key" }]);
  } finally {
    await c.end();
  }
  const created = (await tp.platform.db.selectFrom("audit_log").selectAll().where("type", "=", "WorkspaceGroupCreate").where("resource_id", "=", born.groupId).execute()).at(-1);
  assert.equal((created?.attributes as any)?.kmsKey?.pin, "(set)");
  assert.ok(!JSON.stringify(await tp.platform.db.selectFrom("audit_log").select("attributes").where("type", "=", "WorkspaceGroupCreate").execute()).includes(tok.pin), "a PIN never reaches the audit log");
});
