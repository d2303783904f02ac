import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { request as httpsRequest } from "node:https";
import { SignJWT, exportJWK, generateKeyPair, type JWK, type CryptoKey } from "jose";
import { startTestPlatform, type TestPlatform } from "../support/platform.js";
import { createTestWorkspace, gatewayClient, psql, conninfo, type TestWorkspace } from "../support/workspaces.js";
import { createCA, issueServerCert } from "../../src/tls/pki.js";
import { join } from "node:path";
import { existsSync } from "node:fs";
import { randomUUID } from "node:crypto";

const ISSUER = "https://idp.example.test";
const AUDIENCE = "parhelion-db";

let tp: TestPlatform;
let ws: TestWorkspace;
let jwksServer: Server;
let jwksUrl = "";
let jwksCa = "";
/** What the JWKS server serves (the test rotates it). */
let served: JWK[] = [];
let jwksFetches = 0;
const keys: Record<string, { privateKey: CryptoKey; jwk: JWK }> = {};

async function newKey(kid: string, alg: "ES256" | "RS256" = "ES256"): Promise<void> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  keys[kid] = { privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: "sig" } };
}

async function jwt(claims: Record<string, unknown>, o: { kid?: string; alg?: "ES256" | "RS256"; iss?: string; aud?: string; exp?: number; nbf?: number; signWith?: string } = {}): Promise<string> {
  const kid = o.kid ?? "k1";
  const now = Math.floor(Date.now() / 1000);
  const j = new SignJWT(claims).setProtectedHeader({ alg: o.alg ?? "ES256", kid }).setIssuer(o.iss ?? ISSUER).setAudience(o.aud ?? AUDIENCE).setIssuedAt(now).setExpirationTime(o.exp ?? now + 300);
  if (o.nbf !== undefined) j.setNotBefore(o.nbf);
  return j.sign(keys[o.signWith ?? kid]!.privateKey);
}

function b64url(o: unknown): string {
  return Buffer.from(JSON.stringify(o)).toString("base64url");
}

/** Logs in through the gateway with `password`; answers current_user or the error's SQLSTATE and message. */
async function login(user: string, password: string): Promise<{ ok: true; user: string } | { ok: false; code: string; message: string }> {
  const c = gatewayClient(tp, ws, { user, password });
  try {
    await c.connect();
    const r = await c.query("select current_user as u");
    await c.end();
    return { ok: true, user: r.rows[0].u };
  } catch (err: any) {
    await c.end().catch(() => undefined);
    return { ok: false, code: err.code, message: err.message };
  }
}

function dataApi(path: string, auth: string, body: unknown): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const text = JSON.stringify(body);
    const req = httpsRequest(<import("node:https").RequestOptions>{ host: "127.0.0.1", port: ws.port, servername: ws.endpoint, ca: tp.caPem, path, method: "POST", agent: false, ALPNProtocols: ["http/1.1"], headers: { authorization: auth, "content-type": "application/json", "content-length": Buffer.byteLength(text) } }, (res) => {
      let data = "";
      res.on("data", (d: Buffer) => (data += d.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: data ? JSON.parse(data) : null }));
    });
    req.on("error", reject);
    req.end(text);
  });
}

/** Waits (audit records are written asynchronously) for a record of `type` that `match` accepts. */
async function auditRecord(type: string, match: (a: any) => boolean): Promise<any> {
  for (const deadline = Date.now() + 5000; Date.now() < deadline; ) {
    const r = await tp.call("GET", `/v1/auditLogs?limit=100&type=${type}`);
    assert.equal(r.status, 200, r.text);
    const hit = (r.body.auditLogs as any[]).find((a) => a.type === type && match(a));
    if (hit) return hit;
    await new Promise((res) => setTimeout(res, 50));
  }
  return undefined;
}

before(async () => {
  const ca = await createCA({ commonName: "test IdP CA", validDays: 2 });
  const cert = await issueServerCert(ca, { commonName: "idp", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"], validDays: 2 });
  jwksCa = ca.certPem;
  await newKey("k1");
  await newKey("k2");
  await newKey("rsa1", "RS256");
  served = [keys["k1"]!.jwk, keys["rsa1"]!.jwk];
  jwksServer = createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    jwksFetches++;
    res.writeHead(req.url === "/jwks.json" ? 200 : 404, { "content-type": "application/json" });
    res.end(JSON.stringify({ keys: served }));
  });
  await new Promise<void>((r) => jwksServer.listen(0, "127.0.0.1", r));
  jwksUrl = `https://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks.json`;
  tp = await startTestPlatform({ env: { PARHELION_WORKSPACE_FSYNC: "false" } });
  ws = await createTestWorkspace(tp);
});

after(async () => {
  await tp?.stop();
  jwksServer?.close();
});

describe("JWT logins (a group's JWKS)", () => {
  test("settings are validated: exactly one key source, https, public keys only, no alg none, grants that are roles", async () => {
    const base = { issuer: ISSUER, audience: AUDIENCE };
    const bad: Array<[unknown, string]> = [
      [{ ...base }, "ERR_VALIDATION"],
      [{ ...base, jwksEndpoint: jwksUrl, jwks: { keys: [keys["k1"]!.jwk] } }, "ERR_VALIDATION"],
      [{ ...base, jwksEndpoint: "http://127.0.0.1/jwks.json" }, "ERR_VALIDATION"],
      [{ ...base, jwks: { keys: [{ kty: "oct", k: "c2VjcmV0" }] } }, "ERR_VALIDATION"],
      [{ ...base, jwks: { keys: [{ ...keys["k1"]!.jwk, d: "cHJpdmF0ZQ" }] } }, "ERR_VALIDATION"],
      [{ ...base, jwksEndpoint: jwksUrl, algorithms: ["none"] }, "ERR_VALIDATION"],
      [{ ...base, jwksEndpoint: jwksUrl, algorithms: ["HS256"] }, "ERR_VALIDATION"],
      [{ ...base, jwksEndpoint: jwksUrl, defaultGrants: ["pg_execute_server_program"] }, "ERR_VALIDATION"],
      [{ ...base, jwksEndpoint: jwksUrl, surprise: true }, "ERR_UNKNOWN_FIELD"],
    ];
    for (const [body, code] of bad) {
      const r = await tp.call("PUT", `/v1/workspaceGroups/${ws.groupId}/jwtAuth`, { body });
      assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
      assert.equal(r.body.code, code, JSON.stringify(body));
      assert.match(String(r.headers["content-type"]), /application\/problem\+json/);
    }
    assert.equal((await tp.call("GET", `/v1/workspaceGroups/${ws.groupId}/jwtAuth`)).status, 404, "nothing was stored");
  });

  test("a JWT as the password logs in; a missing user is created on first login with the group's grants", async () => {
    const put = await tp.call("PUT", `/v1/workspaceGroups/${ws.groupId}/jwtAuth`, {
      body: { jwksEndpoint: jwksUrl, jwksCaPem: jwksCa, issuer: ISSUER, audience: [AUDIENCE, "other"], usernameField: "db_user", provisionRoles: true, defaultGrants: ["pg_read_all_data"], algorithms: ["ES256", "RS256"] },
    });
    assert.equal(put.status, 200, put.text);
    assert.equal(put.body.usernameField, "db_user");
    const got = await tp.call("GET", `/v1/workspaceGroups/${ws.groupId}/jwtAuth`);
    assert.deepEqual(got.body.audience, [AUDIENCE, "other"]);

    const r = await login("app_reader", await jwt({ db_user: "app_reader", sub: "svc-42" }));
    assert.deepEqual(r, { ok: true, user: "app_reader" });
    const rsa = await login("app_reader", await jwt({ db_user: "app_reader" }, { kid: "rsa1", alg: "RS256" }));
    assert.deepEqual(rsa, { ok: true, user: "app_reader" });
    // psql too, with the token in PGPASSWORD.
    const p = await psql(conninfo(ws, "user=app_reader"), ["-At", "-c", "select current_user, pg_has_role('pg_read_all_data', 'MEMBER')"], { PGUSER: "app_reader", PGPASSWORD: await jwt({ db_user: "app_reader" }) });
    assert.equal(p.code, 0, p.stderr);
    assert.equal(p.stdout.trim(), "app_reader|t");
    const success = await auditRecord("DatabaseLoginSuccess", (a) => a.attributes?.mechanism === "JWT" && a.attributes?.tokenSubject === "svc-42");
    assert.ok(success, "the login is audited");
    assert.equal(success.attributes.tokenIssuer, ISSUER);
    assert.equal(success.attributes.tokenSubject, "svc-42");
  });

  test("expired, not-yet-valid, wrong audience, wrong issuer, unknown kid, bad signature and alg none are refused with 28P01 and audited", async () => {
    const now = Math.floor(Date.now() / 1000);
    const header = b64url({ alg: "none", typ: "JWT" });
    const cases: Array<[string, string, string]> = [
      ["expired", await jwt({ db_user: "app_reader" }, { exp: now - 120 }), "expired"],
      ["not yet valid", await jwt({ db_user: "app_reader" }, { nbf: now + 600 }), "not-yet-valid"],
      ["wrong audience", await jwt({ db_user: "app_reader" }, { aud: "someone-else" }), "audience"],
      ["wrong issuer", await jwt({ db_user: "app_reader" }, { iss: "https://evil.example" }), "issuer"],
      ["unknown kid", await jwt({ db_user: "app_reader" }, { kid: "k2" }), "unknown-key"],
      ["bad signature", await jwt({ db_user: "app_reader" }, { kid: "k1", signWith: "k2" }), "signature"],
      ["alg none", `${header}.${b64url({ db_user: "app_reader", iss: ISSUER, aud: AUDIENCE, exp: now + 300 })}.`, "algorithm"],
      ["another user's token", await jwt({ db_user: "someone_else" }), "role"],
      ["no user claim", await jwt({ sub: "x" }), "role"],
    ];
    for (const [name, token, reason] of cases) {
      const r = await login("app_reader", token);
      assert.equal(r.ok, false, name);
      if (!r.ok) {
        assert.equal(r.code, "28P01", `${name}: ${r.message}`);
        assert.match(r.message, /token authentication failed for user "app_reader"/, name);
      }
      const rec = await auditRecord("DatabaseLoginFailure", (a) => a.attributes?.tokenFailure === reason);
      assert.ok(rec, `${name} is audited as ${reason}`);
    }
  });

  test("a rotated key set is read again by POST /api/v2/jwks_setup; a password user still logs in with its password", async () => {
    served = [keys["k2"]!.jwk];
    const fetches = jwksFetches;
    const basic = `Basic ${Buffer.from(`admin:${ws.adminPassword}`).toString("base64")}`;
    const setup = await dataApi("/api/v2/jwks_setup", basic, {});
    assert.equal(setup.status, 200, JSON.stringify(setup.body));
    assert.deepEqual(setup.body, { workspaceGroupID: ws.groupId, source: "endpoint", keys: 1 });
    assert.ok(jwksFetches > fetches, "fetched again");
    assert.deepEqual(await login("app_reader", await jwt({ db_user: "app_reader" }, { kid: "k2" })), { ok: true, user: "app_reader" });
    const old = await login("app_reader", await jwt({ db_user: "app_reader" }, { kid: "k1" }));
    assert.equal(old.ok, false, "a key no longer served is no longer trusted");
    // In a JWT group the gateway asks everyone for a cleartext password (inside TLS); passwords still work.
    assert.deepEqual(await login("admin", ws.adminPassword), { ok: true, user: "admin" });
    assert.equal((await login("admin", "wrong-password-123")).ok, false);
    const unauth = await dataApi("/api/v2/jwks_setup", "Bearer not.a.token", {});
    assert.equal(unauth.status, 401);
  });

  test("the Data API takes a JWT as a Bearer token", async () => {
    const ok = await dataApi("/api/v2/query/rows", `Bearer ${await jwt({ db_user: "app_reader" }, { kid: "k2" })}`, { sql: "select current_user as u, ? + 1 as n", args: [41] });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.deepEqual(ok.body, { results: [{ rows: [{ u: "app_reader", n: 42 }] }] });
    const expired = await dataApi("/api/v2/query/rows", `Bearer ${await jwt({ db_user: "app_reader" }, { kid: "k2", exp: Math.floor(Date.now() / 1000) - 100 })}`, { sql: "select 1" });
    assert.equal(expired.status, 401);
    assert.equal(expired.body.code, "ERR_GW_AUTH_FAILED");
    assert.match(expired.body.message, /expired/);
  });

  test("without provisioning, a user must exist; after DELETE the group accepts no JWTs", async () => {
    const put = await tp.call("PUT", `/v1/workspaceGroups/${ws.groupId}/jwtAuth`, { body: { jwks: { keys: [keys["k2"]!.jwk] }, issuer: ISSUER, audience: AUDIENCE, usernameField: "db_user" } });
    assert.equal(put.status, 200, put.text);
    const r = await login("not_there", await jwt({ db_user: "not_there" }, { kid: "k2" }));
    assert.equal(r.ok, false);
    if (!r.ok) assert.match(r.message, /does not exist/);
    assert.deepEqual(await login("app_reader", await jwt({ db_user: "app_reader" }, { kid: "k2" })), { ok: true, user: "app_reader" }, "inline keys work");
    assert.equal((await tp.call("DELETE", `/v1/workspaceGroups/${ws.groupId}/jwtAuth`)).status, 200);
    const after = await login("app_reader", await jwt({ db_user: "app_reader" }, { kid: "k2" }));
    assert.equal(after.ok, false);
    if (!after.ok) assert.match(after.message, /accepts no JWTs/);
    // Back to SCRAM for password users.
    assert.deepEqual(await login("admin", ws.adminPassword), { ok: true, user: "admin" });
  });
});

describe("short-lived platform credentials", () => {
  test("POST /v1/workspaces/{id}/credentials mints a token that logs in as the caller's own database user, and the session names the caller", async () => {
    const r = await tp.call("POST", `/v1/workspaces/${ws.workspaceId}/credentials`, { body: { ttlSeconds: 300 } });
    assert.equal(r.status, 200, r.text);
    assert.match(r.body.databaseUser, /^apikey:/);
    assert.equal(r.body.access, "read-write");
    const left = Date.parse(r.body.expiresAt) - Date.now();
    assert.ok(left > 280_000 && left <= 300_000, `expires in ${left} ms`);
    const me = await login(r.body.databaseUser, r.body.token);
    assert.deepEqual(me, { ok: true, user: r.body.databaseUser });
    const rec = await auditRecord("DatabaseLoginSuccess", (a) => a.attributes?.mechanism === "platform credential");
    assert.ok(rec, "audited as a platform credential");
    assert.ok(rec.attributes.platformPrincipalID, "names the platform identity");
    const issued = await auditRecord("DatabaseCredentialsIssue", () => true);
    assert.ok(issued);
    assert.ok(!JSON.stringify(issued).includes(r.body.token), "the token is never in the audit log");
    // It writes: its user is a member of admin.
    const c = gatewayClient(tp, ws, { user: r.body.databaseUser, password: r.body.token });
    await c.connect();
    await c.query("create table if not exists cred_probe(x int); insert into cred_probe values (1)");
    await c.end();
    // Its statement records (DDL at the default level) name the person behind the credential too.
    const stmt = await auditRecord("DatabaseStatement", (a) => typeof a.attributes?.statement === "string" && a.attributes.statement.includes("cred_probe"));
    assert.ok(stmt, "the session's DDL is recorded");
    assert.equal(stmt.attributes.platformPrincipalID, rec.attributes.platformPrincipalID);
    assert.equal(stmt.attributes.databaseUser, r.body.databaseUser);

    assert.equal((await tp.call("POST", `/v1/workspaces/${ws.workspaceId}/credentials`, { body: { ttlSeconds: 3600 } })).status, 400, "at most 15 minutes");
    // For one workspace only; another user's name is refused; a tampered token is refused.
    const other = await login("admin", r.body.token);
    assert.equal(other.ok, false);
    const [h, p, s] = (r.body.token as string).split(".");
    const payload = JSON.parse(Buffer.from(p!, "base64url").toString());
    const tampered = `${h}.${b64url({ ...payload, db_grants: ["admin"], exp: payload.exp + 3600 })}.${s}`;
    assert.equal((await login(r.body.databaseUser, tampered)).ok, false);
  });

  test("an expired credential, and one minted for another workspace, are refused", async () => {
    const platform = tp.platform.credentials;
    const me = (await tp.call("POST", `/v1/workspaces/${ws.workspaceId}/credentials`, { body: {} })).body.databaseUser as string;
    const orgId = (await tp.call("GET", "/v1/organizations/current")).body.orgID as string;
    const old = await platform.mint({ workspaceId: ws.workspaceId, orgId, principalId: "p", email: null, role: me, grants: [], ttlSeconds: 60, now: new Date(Date.now() - 3_600_000) });
    const expired = await login(me, old.token);
    assert.equal(expired.ok, false);
    if (!expired.ok) assert.match(expired.message, /expired/);
    const elsewhere = await platform.mint({ workspaceId: "00000000-0000-4000-8000-000000000000", orgId, principalId: "p", email: null, role: me, grants: [], ttlSeconds: 60 });
    const wrong = await login(me, elsewhere.token);
    assert.equal(wrong.ok, false);
    if (!wrong.ok) assert.match(wrong.message, /audience/);
    // Another organization's key never verifies this organization's credentials.
    const otherOrg = (await tp.platform.db.insertInto("organizations").values({ id: randomUUID(), name: "other-org" } as never).returning("id").executeTakeFirstOrThrow()).id as string;
    const foreign = await platform.mint({ workspaceId: ws.workspaceId, orgId: otherOrg, principalId: "p", email: null, role: me, grants: [], ttlSeconds: 60 });
    const refused = await login(me, foreign.token);
    assert.equal(refused.ok, false);
    // The signing keys: the public half in clear, the private half sealed (no PKCS#8 header in the row), no key file.
    const rows = await tp.platform.db.selectFrom("db_credential_keys").select(["org_id", "public_key", "private_key_enc"]).execute();
    assert.equal(rows.length, 2);
    for (const r of rows) {
      assert.match(r.public_key, /BEGIN PUBLIC KEY/);
      assert.ok(!Buffer.from(r.private_key_enc).includes(Buffer.from("302e020100300506032b6570", "hex")), "the private key is sealed");
    }
    assert.equal(existsSync(join(tp.dataDir, "keys", "db-credentials.key")), false);
  });
});
