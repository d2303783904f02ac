import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Agent as HttpsAgent } from "node:https";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DisableKeyCommand, EnableKeyCommand, KMSClient } from "@aws-sdk/client-kms";
import { startTestPlatform, type TestPlatform } from "../support/platform.js";
import { createTestWorkspace, gatewayClient, gatewayRefusal, gatewayRows, waitForState, type TestWorkspace } from "../support/workspaces.js";
import { createTestToken } from "../support/softhsm.js";
import { startTestKms, type TestKms } from "../support/kms-server.js";

// Customer-managed keys end to end: the local AWS KMS (DisableKey/EnableKey honoured), a real platform with
// fscrypt volumes, the gateway. kmsCheckSeconds 1 keeps the revocation wait short.
const tok = createTestToken("cmek-backing");
const dir = mkdtempSync(join(tmpdir(), "parhelion-cmek-"));
chmodSync(dir, 0o711);
process.env["AWS_ACCESS_KEY_ID"] = "AKIAPARHELIONCMEK01";
process.env["AWS_SECRET_ACCESS_KEY"] = randomBytes(20).toString("base64");
process.env["AWS_CONFIG_FILE"] = join(dir, "no-aws-config");
process.env["AWS_SHARED_CREDENTIALS_FILE"] = join(dir, "no-aws-credentials");
let kms: TestKms;
let sdk: KMSClient;
let tp: TestPlatform;
let ws: TestWorkspace;

before(async () => {
  kms = await startTestKms(tok);
  const caFile = join(dir, "kms-ca.pem");
  writeFileSync(caFile, kms.caPem);
  sdk = new KMSClient({ region: kms.region, endpoint: kms.endpoint, requestHandler: { httpsAgent: new HttpsAgent({ ca: kms.caPem }) } });
  tp = await startTestPlatform({ env: { PARHELION_CMEK_AWS_ENDPOINT: kms.endpoint, PARHELION_CMEK_AWS_CA_FILE: caFile, PARHELION_CMEK_AWS_REGION: kms.region, PARHELION_KMS_CHECK_SECONDS: "1" } });
  ws = await createTestWorkspace(tp);
});
after(async () => {
  await tp?.stop();
  sdk?.destroy();
  await kms?.close();
  rmSync(dir, { recursive: true, force: true });
  tok.cleanup();
});

const query = (sqlText: string): Promise<any[]> => gatewayRows(tp, ws, sqlText);

async function dataKey(): Promise<{ id: string; wrap: string; wrapped_by: string; wrap_version: number }> {
  return tp.platform.db.selectFrom("kms_keys").select(["id", "wrap", "wrapped_by", "wrap_version"]).where("kind", "=", "group-data").where("group_id", "=", ws.groupId).where("state", "=", "active").executeTakeFirstOrThrow();
}

async function auditOf(type: string, atLeast = 0): Promise<any[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const rows = await tp.platform.db.selectFrom("audit_log").selectAll().where("type", "=", type).where("resource_id", "=", ws.groupId).orderBy("seq").execute();
    if (rows.length >= atLeast || Date.now() > deadline) return rows;
    await new Promise((r) => setTimeout(r, 100));
  }
}

test("bad kmsKey input answers problem+json with a stable code and changes nothing", async () => {
  const before = await dataKey();
  const path = `/v1/workspaceGroups/${ws.groupId}`;
  const cases: Array<[unknown, string]> = [
    [{ kmsKey: { provider: "aws-kms" } }, "ERR_VALIDATION"],
    [{ kmsKey: { provider: "gcp-kms", keyID: "k" } }, "ERR_VALIDATION"],
    [{ kmsKey: { provider: "aws-kms", keyID: "k", endpoint: "https://evil.example" } }, "ERR_UNKNOWN_FIELD"],
    [{ kmsKey: { provider: "aws-kms", keyID: kms.createKey() }, name: "renamed" }, "ERR_VALIDATION"],
    [{ kmsKey: { provider: "aws-kms", keyID: "k" }, dataBucketKMSKeyID: "k" }, "ERR_VALIDATION"],
    [{ dataBucketKMSKeyID: `arn:aws:kms:${kms.region}:${kms.accountId}:key/00000000-0000-4000-8000-000000000000` }, "ERR_KMS_KEY_UNUSABLE"],
    [{ kmsKey: { provider: "pkcs11", keyID: "tok/label", pin: "1234" } }, "ERR_FIELD_NOT_SUPPORTED"],
  ];
  const disabled = kms.createKey();
  await sdk.send(new DisableKeyCommand({ KeyId: disabled }));
  cases.push([{ kmsKey: { provider: "aws-kms", keyID: disabled } }, "ERR_KMS_KEY_UNUSABLE"]);
  for (const [body, code] of cases) {
    const r = await tp.call("PATCH", path, { body });
    assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
    assert.match(String(r.headers["content-type"]), /application\/problem\+json/);
    assert.equal(r.body.code, code, `${JSON.stringify(body)}: ${r.text}`);
  }
  assert.deepEqual(await dataKey(), before, "the data key's wrapping is unchanged");
  const g = await tp.call("GET", path);
  assert.equal(g.body.kmsKey, null);
  assert.equal(g.body.name.startsWith("g-"), true, "nothing else changed either");
  const denied = await auditOf("WorkspaceGroupUpdate");
  assert.ok(denied.some((a) => a.result === "FAILURE" || a.result === "DENIED"), "the refusals are audited");
  assert.ok(!JSON.stringify(denied).includes('"1234"'), "a PIN never reaches the audit log");
});

test("dataBucketKMSKeyID re-wraps the data key under the customer's key online; rotation re-wraps again; no data rewritten", async () => {
  await query("CREATE TABLE cmek_probe (v text); INSERT INTO cmek_probe VALUES ('before the customer key')");
  const arn = kms.createKey("customer");
  const before = await dataKey();
  const held = gatewayClient(tp, ws);
  await held.connect();
  try {
    const r = await tp.call("PATCH", `/v1/workspaceGroups/${ws.groupId}`, { body: { dataBucketKMSKeyID: arn } });
    assert.equal(r.status, 200, r.text);
    const after = await dataKey();
    assert.equal(after.id, before.id, "the same data key");
    assert.equal(after.wrap, "aws-kms");
    assert.equal(after.wrapped_by, arn);
    assert.equal(after.wrap_version, before.wrap_version + 1);
    const g = await tp.call("GET", `/v1/workspaceGroups/${ws.groupId}`);
    assert.equal(g.body.kmsKey.provider, "aws-kms");
    assert.equal(g.body.kmsKey.keyID, arn);
    assert.equal(g.body.kmsKey.status, "ENABLED");
    assert.deepEqual((await held.query("SELECT v FROM cmek_probe")).rows, [{ v: "before the customer key" }], "an open session kept serving");
    assert.ok(kms.requests.some((q) => q.target === "Encrypt" && (q.body["EncryptionContext"] as any)?.workspaceGroupId === ws.groupId), "wrapped by KMS, bound to the group");

    const rot = await tp.call("POST", `/v1/workspaceGroups/${ws.groupId}/keys/rotate`, { body: {} });
    assert.equal(rot.status, 200, rot.text);
    assert.equal(rot.body.provider, "aws-kms");
    assert.equal(rot.body.keyID, before.id);
    assert.equal(rot.body.keyVersion, after.wrap_version + 1);
    assert.ok(Date.parse(rot.body.wrappedAt) > 0);
    assert.equal((await auditOf("WorkspaceGroupKeyRotate")).at(-1)?.attributes.keyVersion, rot.body.keyVersion);
    const k = await tp.call("GET", `/v1/workspaceGroups/${ws.groupId}/keys`);
    assert.equal(k.body.dataKey.keyVersion, rot.body.keyVersion);
    assert.equal(k.body.kmsKey.keyID, arn);
    assert.deepEqual((await held.query("SELECT v FROM cmek_probe")).rows, [{ v: "before the customer key" }]);
  } finally {
    await held.end();
  }
  assert.ok((await auditOf("WorkspaceGroupUpdate")).some((a) => a.result === "SUCCESS" && a.attributes.change?.kmsKey?.keyID === arn));
});

/** ACTIVE again (it is FAILED until the key works: waitForState would stop at FAILED). */
async function waitForActive(): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const r = await tp.call("GET", `/v1/workspaces/${ws.workspaceId}`);
    if (r.body.state === "ACTIVE") return;
    assert.ok(Date.now() < deadline, `still ${r.body.state} 60 s after the key was enabled: ${r.body.stateReason}`);
    await new Promise((res) => setTimeout(res, 200));
  }
}

test("disabling the customer's key stops the group's workspaces within 60 s; enabling it brings them back with the data", async () => {
  const arn = (await dataKey()).wrapped_by;
  await query("INSERT INTO cmek_probe VALUES ('written before revocation')");
  const t0 = Date.now();
  await sdk.send(new DisableKeyCommand({ KeyId: arn }));
  // The gateway refuses new sessions once the servers are stopped.
  for (;;) {
    const c = gatewayClient(tp, ws);
    const refused = await c.connect().then(async () => {
      await c.end();
      return false;
    }, () => true);
    if (refused) break;
    assert.ok(Date.now() - t0 < 60_000, "still serving 60 s after the key was disabled");
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.ok(Date.now() - t0 < 60_000);
  const failed = await waitForState(tp, ws.workspaceId, "FAILED", 30_000);
  assert.match(failed.stateReason, /^ERR_KEY_UNAVAILABLE: /);
  assert.ok(failed.stateReason.includes(arn), "the reason names the key");
  // A client is told why, with the key's name (once the gateway's 2 s route cache has seen FAILED).
  const told = await gatewayRefusal(tp, ws, "58000");
  assert.ok(told, "the gateway answers ERR_KEY_UNAVAILABLE (58000)");
  assert.ok(told.message.includes(arn), told.message);
  assert.equal(tp.platform.engine.isRunning(ws.workspaceId), false);
  assert.equal(tp.platform.storage.isOpen(ws.groupId), false, "the volume is locked");
  const g = await tp.call("GET", `/v1/workspaceGroups/${ws.groupId}`);
  assert.equal(g.body.kmsKey.status, "UNAVAILABLE");
  assert.match(g.body.kmsKey.statusDetail, /Disabled/);
  assert.equal((await auditOf("WorkspaceGroupKeyRevoked", 1)).length, 1);
  // Moving away from a disabled key is impossible: the data key cannot be unwrapped.
  const away = await tp.call("PATCH", `/v1/workspaceGroups/${ws.groupId}`, { body: { kmsKey: null } });
  assert.equal(away.status, 503, away.text);
  assert.equal(away.body.code, "ERR_KEY_UNAVAILABLE");
  // Nor can the data key be re-keyed: refused before anything stops or changes.
  const rekey = await tp.call("POST", `/v1/workspaceGroups/${ws.groupId}/keys/rekey`, { body: {} });
  assert.equal(rekey.status, 409, rekey.text);
  assert.equal(rekey.body.code, "ERR_REKEY_REFUSED");
  assert.equal(rekey.body.reason, "KEY_UNAVAILABLE");

  await sdk.send(new EnableKeyCommand({ KeyId: arn }));
  await waitForActive();
  assert.deepEqual((await query("SELECT v FROM cmek_probe ORDER BY v")).map((r) => r.v), ["before the customer key", "written before revocation"]);
  assert.equal((await auditOf("WorkspaceGroupKeyRestored", 1)).length, 1);
  assert.equal((await tp.call("GET", `/v1/workspaceGroups/${ws.groupId}`)).body.kmsKey.status, "ENABLED");
});

test("rekey under a customer key: the new data key is wrapped by the same customer key, the old one retired, the data kept", async () => {
  const before = await dataKey();
  assert.equal(before.wrap, "aws-kms");
  const r = await tp.call("POST", `/v1/workspaceGroups/${ws.groupId}/keys/rekey`, { body: {} });
  assert.equal(r.status, 202, r.text);
  for (const until = Date.now() + 50_000; ;) {
    const k = await tp.call("GET", `/v1/workspaceGroups/${ws.groupId}/keys`);
    if (k.body.rekey.state !== "RUNNING") {
      assert.equal(k.body.rekey.state, "DONE", k.body.rekey.error);
      break;
    }
    assert.ok(Date.now() < until, "the re-key did not finish");
    await new Promise((res) => setTimeout(res, 200));
  }
  const after = await dataKey();
  assert.notEqual(after.id, before.id);
  assert.equal(after.wrap, "aws-kms");
  assert.equal(after.wrapped_by, before.wrapped_by, "wrapped by the same customer key");
  assert.ok(kms.requests.some((q) => q.target === "Encrypt" && (q.body["EncryptionContext"] as any)?.keyId === after.id), "wrapped by KMS, bound to the new key's id");
  assert.equal((await tp.platform.db.selectFrom("kms_keys").select("state").where("id", "=", before.id).executeTakeFirstOrThrow()).state, "retired");
  await waitForActive();
  assert.equal((await query("SELECT count(*)::int AS n FROM cmek_probe"))[0].n, 2);
});

test("kmsKey null moves the group back to the platform key, online", async () => {
  const r = await tp.call("PATCH", `/v1/workspaceGroups/${ws.groupId}`, { body: { kmsKey: null } });
  assert.equal(r.status, 200, r.text);
  const k = await dataKey();
  assert.equal(k.wrap, "kek");
  assert.match(k.wrapped_by, /^kek-/);
  assert.equal((await tp.call("GET", `/v1/workspaceGroups/${ws.groupId}`)).body.kmsKey, null);
  const rot = await tp.call("POST", `/v1/workspaceGroups/${ws.groupId}/keys/rotate`, { body: {} });
  assert.equal(rot.status, 200, rot.text);
  assert.equal(rot.body.provider, "platform");
  assert.equal((await query("SELECT count(*)::int AS n FROM cmek_probe"))[0].n, 2);
});

test("POST /v1/workspaceGroups takes dataBucketKMSKeyID (Helios) or kmsKey: the key is probed first, an unusable one creates no group", async () => {
  const regionID = (await tp.call("GET", "/v1/regions")).body[0].regionID;
  const groupsNamed = async (name: string) => (await tp.platform.db.selectFrom("workspace_groups").select("id").where("name", "=", name).execute()).length;
  const disabled = kms.createKey();
  await sdk.send(new DisableKeyCommand({ KeyId: disabled }));
  const keysBefore = (await tp.platform.db.selectFrom("kms_keys").select("id").execute()).length;
  const cases: Array<[Record<string, unknown>, number, string]> = [
    [{ dataBucketKMSKeyID: `arn:aws:kms:${kms.region}:${kms.accountId}:key/00000000-0000-4000-8000-000000000000` }, 400, "ERR_KMS_KEY_UNUSABLE"],
    [{ dataBucketKMSKeyID: disabled }, 400, "ERR_KMS_KEY_UNUSABLE"],
    [{ kmsKey: { provider: "aws-kms", keyID: disabled } }, 400, "ERR_KMS_KEY_UNUSABLE"],
    [{ kmsKey: { provider: "aws-kms", keyID: disabled }, dataBucketKMSKeyID: disabled }, 400, "ERR_VALIDATION"],
    [{ kmsKey: { provider: "aws-kms", keyID: disabled, endpoint: "https://evil.example" } }, 400, "ERR_UNKNOWN_FIELD"],
    [{ kmsKey: { provider: "pkcs11", keyID: "tok/label", pin: "1234" } }, 400, "ERR_FIELD_NOT_SUPPORTED"],
  ];
  for (const [i, [extra, status, code]] of cases.entries()) {
    const name = `cmek-refused-${i}`;
    const r = await tp.call("POST", "/v1/workspaceGroups", { body: { name, regionID, ...extra } });
    assert.equal(r.status, status, `${JSON.stringify(extra)}: ${r.text}`);
    assert.equal(r.body.code, code, `${JSON.stringify(extra)}: ${r.text}`);
    assert.equal(await groupsNamed(name), 0, `${JSON.stringify(extra)}: no group is left`);
  }
  assert.equal((await tp.platform.db.selectFrom("kms_keys").select("id").execute()).length, keysBefore, "no key row is left either");
  const refusals = (await tp.platform.db.selectFrom("audit_log").selectAll().where("type", "=", "WorkspaceGroupCreate").execute()).filter((a) => a.result !== "SUCCESS");
  assert.ok(refusals.some((a) => (a.attributes as any)?.kmsKey?.keyID === disabled), "the refusal is audited with the key");

  const arn = kms.createKey("customer, from the start");
  const seen = kms.requests.length;
  const r = await tp.call("POST", "/v1/workspaceGroups", { body: { name: "cmek-from-birth", regionID, dataBucketKMSKeyID: arn } });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(Object.keys(r.body).sort(), ["adminPassword", "workspaceGroupID"], "Helios's answer, nothing more");
  const id = r.body.workspaceGroupID;
  const newRequests = kms.requests.slice(seen);
  assert.ok(newRequests.some((q) => q.target === "Decrypt" && (q.body["EncryptionContext"] as any)?.purpose === "parhelion-health"), "probed (a wrap and unwrap) first");
  assert.ok(newRequests.some((q) => q.target === "Encrypt" && (q.body["EncryptionContext"] as any)?.workspaceGroupId === id), "the data key wrapped by KMS, bound to the group");
  const g = await tp.call("GET", `/v1/workspaceGroups/${id}`);
  assert.equal(g.body.state, "ACTIVE");
  assert.deepEqual({ provider: g.body.kmsKey.provider, keyID: g.body.kmsKey.keyID, status: g.body.kmsKey.status }, { provider: "aws-kms", keyID: arn, status: "ENABLED" });
  const k = await tp.platform.db.selectFrom("kms_keys").select(["wrap", "wrapped_by"]).where("kind", "=", "group-data").where("group_id", "=", id).where("state", "=", "active").executeTakeFirstOrThrow();
  assert.deepEqual(k, { wrap: "aws-kms", wrapped_by: arn });
  const created = (await tp.platform.db.selectFrom("audit_log").selectAll().where("type", "=", "WorkspaceGroupCreate").where("resource_id", "=", id).execute()).at(-1);
  assert.equal(created?.result, "SUCCESS");
  assert.equal((created?.attributes as any)?.kmsKey?.keyID, arn);
  assert.equal((created?.attributes as any)?.wrappedBy, arn);
  assert.equal((await tp.call("DELETE", `/v1/workspaceGroups/${id}`)).status, 200);
});
