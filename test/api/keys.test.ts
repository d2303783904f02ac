import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { runCli, startSignedInPlatform, type SignedInPlatform } from "../cli/helpers.js";

let env: SignedInPlatform;

before(async () => {
  env = await startSignedInPlatform("parhelion-keys-");
});
after(async () => {
  await env?.stop();
});

test("GET /v1/keys/status names the provider, its health and which key wraps which, and never key material", async () => {
  const { tp } = env;
  const put = await tp.call("PUT", "/v1/organizations/current/sso", { body: { issuer: "https://idp.example.com", clientID: "parhelion", clientSecret: "status-test-client-secret", redirectURI: `${tp.apiUrl}/v1/auth/sso/callback` } });
  assert.equal(put.status, 200, put.text);
  const r = await tp.call("GET", "/v1/keys/status");
  assert.equal(r.status, 200, r.text);
  const rootKey = readFileSync(join(tp.dataDir, "keys", "root.key"));
  assert.equal(r.body.provider.provider, "local");
  assert.match(r.body.provider.keyId, /^local:[0-9a-f]{16}$/);
  assert.equal(r.body.provider.details.file, join(tp.dataDir, "keys", "root.key"));
  assert.deepEqual(r.body.health, { ok: true, detail: "ok" });
  const kek = r.body.keys.find((k: { kind: string }) => k.kind === "org-kek");
  const data = r.body.keys.find((k: { kind: string }) => k.kind === "org-data");
  assert.ok(kek && data, r.text);
  assert.equal(kek.wrappedBy, r.body.provider.keyId);
  assert.equal(kek.provider, "local");
  assert.equal(data.wrappedBy, kek.keyID);
  assert.equal(data.state, "active");
  const who = await tp.call("GET", "/v1/auth/whoami");
  for (const k of r.body.keys) assert.equal(k.organizationID, who.body.orgID);
  // Wrapped keys are not answered either, only ids and relations.
  const wrapped = await tp.platform.db.selectFrom("kms_keys").select("wrapped").execute();
  for (const form of [rootKey.toString("hex"), rootKey.toString("base64"), rootKey.toString("base64url"), ...wrapped.map((w) => w.wrapped.toString("base64"))]) assert.ok(!r.text.includes(form), "key material in the answer");
  assert.ok(!r.text.includes("status-test-client-secret"));
  // Reads are audited as ApiRequest with the route.
  const audit = await tp.call("GET", "/v1/auditLogs?type=ApiRequest&limit=20");
  assert.ok(audit.body.auditLogs.some((a: { reason: string; attributes?: unknown }) => JSON.stringify(a).includes("/v1/keys/status")), "the read was not audited");
});

test("parhelion key status prints the provider, health and keys, as a table and as JSON", async () => {
  const t = await runCli(["key", "status", "--output", "table"], { env: { PARHELION_HOME: env.home } });
  assert.equal(t.code, 0, t.stderr);
  assert.match(t.stdout, /provider\s+local/);
  assert.match(t.stdout, /health\s+ok/);
  assert.match(t.stdout, /org-kek/);
  assert.match(t.stdout, /WRAPPED BY/);
  const j = await runCli(["key", "status", "--output", "json"], { env: { PARHELION_HOME: env.home } });
  assert.equal(j.code, 0, j.stderr);
  const s = JSON.parse(j.stdout);
  assert.equal(s.provider.provider, "local");
  assert.ok(Array.isArray(s.keys) && s.keys.length >= 2);
  const rootKey = readFileSync(join(env.tp.dataDir, "keys", "root.key"));
  assert.ok(!t.stdout.includes(rootKey.toString("hex")) && !j.stdout.includes(rootKey.toString("base64")));
});
