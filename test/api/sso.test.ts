import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { startTestPlatform, type TestPlatform } from "../support/platform.js";
import { startTestIdp, TestBrowser, type TestAccount, type TestIdp } from "../support/idp.js";

let tp: TestPlatform;
let idp: TestIdp;
let callbackUrl = "";
let orgId = "";
let engTeam = "";
let dbaTeam = "";
let baseConfig: Record<string, unknown> = {};
const browsers: TestBrowser[] = [];

function browser(): TestBrowser {
  const b = new TestBrowser([tp.caPem, idp.caPem]);
  browsers.push(b);
  return b;
}

async function putConfig(patch: Record<string, unknown>, key?: string): Promise<{ status: number; body: any; text: string }> {
  return tp.call("PUT", "/v1/organizations/current/sso", { body: { ...baseConfig, ...patch }, ...(key ? { key } : {}) });
}

/** Starts a console sign-in in `b` and walks the IdP as `account`; answers the callback URL the IdP sent the browser to. */
async function toCallback(b: TestBrowser, account: TestAccount | null, startBody: Record<string, unknown> = {}): Promise<{ callback: URL; authorizationURL: URL }> {
  const s = await b.send("POST", `${tp.apiUrl}/v1/auth/sso/start`, { body: startBody });
  assert.equal(s.status, 200, s.text);
  idp.account = account;
  const authorizationURL = new URL(s.body.authorizationURL);
  return { callback: await b.authorize(authorizationURL.href, callbackUrl), authorizationURL };
}

async function auditOf(requestId: string): Promise<any> {
  const logs = await tp.call("GET", "/v1/auditLogs?limit=200");
  assert.equal(logs.status, 200, logs.text);
  const rec = logs.body.auditLogs.find((l: { requestID: string }) => l.requestID === requestId);
  assert.ok(rec, `no audit record for request ${requestId}`);
  return rec;
}

/** A sign-in refused with ERR_SSO_FAILED and this reason, and its audit record. */
async function assertRefused(res: { status: number; body: any; text: string }, reason: string, type = "SsoLogin"): Promise<any> {
  assert.equal(res.status, 401, res.text);
  assert.equal(res.body.code, "ERR_SSO_FAILED");
  assert.equal(res.body.reason, reason);
  const rec = await auditOf(res.body.requestId);
  assert.equal(rec.type, type);
  assert.equal(rec.result, "DENIED");
  assert.equal(rec.attributes.code, "ERR_SSO_FAILED");
  assert.equal(rec.attributes.reason, reason);
  return rec;
}

before(async () => {
  tp = await startTestPlatform();
  callbackUrl = `${tp.apiUrl}/v1/auth/sso/callback`;
  idp = await startTestIdp({ redirectUris: [callbackUrl] });
  orgId = (await tp.call("GET", "/v1/auth/whoami")).body.orgID;
  engTeam = (await tp.call("POST", "/v1/teams", { body: { name: "engineers" } })).body.teamID;
  dbaTeam = (await tp.call("POST", "/v1/teams", { body: { name: "dbas" } })).body.teamID;
  baseConfig = {
    issuer: idp.issuer, clientID: idp.clientId, clientSecret: idp.clientSecret, redirectURI: callbackUrl, caPem: idp.caPem,
    scopes: ["openid", "email", "profile", "groups"], jit: true, defaultRole: "Member",
    teamMappings: [{ group: "eng", teamID: engTeam }, { group: "dba", teamID: dbaTeam }],
    roleMappings: [{ group: "admins", role: "Admin" }, { group: "auditors", role: "Auditor" }],
  };
  const r = await putConfig({});
  assert.equal(r.status, 200, r.text);
});

after(async () => {
  for (const b of browsers) await b.close();
  await idp?.close();
  await tp?.stop();
});

test("the client secret is write-only: GET shows only that one is set, and PUT without it keeps it", async () => {
  const g = await tp.call("GET", "/v1/organizations/current/sso");
  assert.equal(g.status, 200, g.text);
  assert.equal(g.body.clientSecretSet, true);
  assert.equal(g.body.issuer, idp.issuer);
  assert.ok(!g.text.includes(idp.clientSecret), "the secret never leaves the API");
  assert.ok(!("clientSecret" in g.body));
  const { clientSecret: _omit, ...rest } = baseConfig;
  const p = await tp.call("PUT", "/v1/organizations/current/sso", { body: rest });
  assert.equal(p.status, 200, p.text);
  assert.equal(p.body.clientSecretSet, true);
  const logs = await tp.call("GET", "/v1/auditLogs?type=SsoConfigUpdate&limit=10");
  assert.ok(!JSON.stringify(logs.body).includes(idp.clientSecret), "the secret is not in the audit log");
});

test("bad SSO settings are rejected with typed errors and change nothing", async () => {
  const before = (await tp.call("GET", "/v1/organizations/current/sso")).body;
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ issuer: "http://127.0.0.1:1/" }, "ERR_VALIDATION"],
    [{ issuer: "not a url" }, "ERR_VALIDATION"],
    [{ redirectURI: `${tp.apiUrl}/elsewhere` }, "ERR_VALIDATION"],
    [{ redirectURI: `${callbackUrl}?x=1` }, "ERR_VALIDATION"],
    [{ scopes: ["email"] }, "ERR_VALIDATION"],
    [{ roleMappings: [{ group: "root", role: "Owner" }] }, "ERR_VALIDATION"],
    [{ defaultRole: "Owner" }, "ERR_VALIDATION"],
    [{ teamMappings: [{ group: "x", teamID: "00000000-0000-4000-8000-000000000000" }] }, "ERR_VALIDATION"],
    [{ caPem: "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n" }, "ERR_VALIDATION"],
    [{ breakGlassUserIDs: ["00000000-0000-4000-8000-000000000000"], ssoOnly: true }, "ERR_VALIDATION"],
    [{ claims: { email: "bad claim!" } }, "ERR_VALIDATION"],
    [{ clientID: "" }, "ERR_VALIDATION"],
    [{ surprise: true }, "ERR_UNKNOWN_FIELD"],
  ];
  for (const [patch, code] of cases) {
    const r = await putConfig(patch);
    assert.equal(r.status, 400, `${JSON.stringify(patch)}: ${r.text}`);
    assert.equal(r.body.code, code, JSON.stringify(patch));
  }
  const after = (await tp.call("GET", "/v1/organizations/current/sso")).body;
  assert.deepEqual(after, before);
});

test("a full code + PKCE sign-in creates a just-in-time user with the mapped role and team and a working session", async () => {
  const b = browser();
  const { callback, authorizationURL } = await toCallback(b, { sub: "alice-1", email: "alice@corp.example", email_verified: true, groups: ["eng", "admins"], given_name: "Alice", family_name: "Liddell" });
  assert.equal(authorizationURL.searchParams.get("code_challenge_method"), "S256");
  assert.ok(authorizationURL.searchParams.get("code_challenge"));
  assert.ok(authorizationURL.searchParams.get("nonce"));
  assert.ok(authorizationURL.searchParams.get("state"));
  assert.equal(callback.searchParams.get("iss"), idp.issuer);
  const r = await b.send("GET", callback.href);
  assert.equal(r.status, 200, r.text);
  assert.ok(typeof r.body.csrfToken === "string" && r.body.csrfToken.length === 43);
  assert.ok(b.cookie(tp.apiUrl, "parhelion_session"), "the session cookie is set");
  const who = await b.send("GET", `${tp.apiUrl}/v1/auth/whoami`);
  assert.equal(who.status, 200, who.text);
  assert.equal(who.body.email, "alice@corp.example");
  assert.deepEqual(who.body.roles, ["Admin"]);
  // The session works for a mutation with its CSRF token, like a password session.
  const t = await b.send("POST", `${tp.apiUrl}/v1/teams`, { body: { name: "made-by-alice" }, headers: { "x-csrf-token": r.body.csrfToken } });
  assert.equal(t.status, 200, t.text);
  const team = await tp.call("GET", `/v1/teams/${engTeam}`);
  assert.deepEqual(team.body.memberUsers.map((u: { email: string }) => u.email), ["alice@corp.example"]);
  const user = (await tp.call("GET", `/v1/users?email=alice@corp.example`)).body;
  assert.equal(user[0].firstName, "Alice");
  const rec = await auditOf(r.headers["x-request-id"] as string);
  assert.equal(rec.type, "SsoLogin");
  assert.equal(rec.result, "SUCCESS");
  assert.equal(rec.attributes.created, true);
  assert.equal(rec.attributes.subject, "alice-1");
  assert.equal(rec.userEmail, "alice@corp.example");
  assert.equal(rec.orgID, orgId);
});

test("a second sign-in follows the IdP's groups: role and managed teams are replaced, the user stays the same", async () => {
  const first = (await tp.call("GET", `/v1/users?email=alice@corp.example`)).body[0].userID;
  const b = browser();
  const { callback } = await toCallback(b, { sub: "alice-1", email: "alice@corp.example", email_verified: true, groups: ["dba", "auditors"] });
  const r = await b.send("GET", callback.href);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.userID, first);
  const who = await b.send("GET", `${tp.apiUrl}/v1/auth/whoami`);
  assert.deepEqual(who.body.roles, ["Auditor"]);
  assert.deepEqual((await tp.call("GET", `/v1/teams/${engTeam}`)).body.memberUsers, []);
  assert.deepEqual((await tp.call("GET", `/v1/teams/${dbaTeam}`)).body.memberUsers.map((u: { userID: string }) => u.userID), [first]);
  const rec = await auditOf(r.headers["x-request-id"] as string);
  assert.deepEqual(rec.attributes.rolesRemoved, ["Admin"]);
  assert.deepEqual(rec.attributes.teamsRemoved, [engTeam]);
  assert.deepEqual(rec.attributes.teamsAdded, [dbaTeam]);
});

test("a replayed callback (the same state twice) is refused and audited", async () => {
  const b = browser();
  const { callback } = await toCallback(b, { sub: "carol-1", email: "carol@corp.example", email_verified: true, groups: [] });
  assert.equal((await b.send("GET", callback.href)).status, 200);
  const again = await b.send("GET", callback.href);
  const rec = await assertRefused(again, "state_invalid");
  assert.equal(rec.attributes.stateCheck, "replayed");
  assert.equal(rec.orgID, orgId, "a refused sign-in is recorded against its organization");
});

test("a tampered state is refused and audited, and leaves the real sign-in usable", async () => {
  const b = browser();
  const { callback } = await toCallback(b, { sub: "dave-1", email: "dave@corp.example", email_verified: true, groups: [] });
  const bad = new URL(callback.href);
  const state = bad.searchParams.get("state")!;
  bad.searchParams.set("state", (state[0] === "A" ? "B" : "A") + state.slice(1));
  const rec = await assertRefused(await b.send("GET", bad.href), "state_invalid");
  assert.equal(rec.attributes.stateCheck, "unknown");
  const ok = await b.send("GET", callback.href);
  assert.equal(ok.status, 200, ok.text);
});

test("an ID token for another audience is refused and audited", async () => {
  const b = browser();
  const { callback } = await toCallback(b, { sub: "eve-1", email: "eve@corp.example", email_verified: true });
  idp.tamperIdToken = (c) => ({ ...c, aud: "some-other-client" });
  await assertRefused(await b.send("GET", callback.href), "audience_mismatch");
  assert.equal((await tp.call("GET", "/v1/users?email=eve@corp.example")).body.length, 0, "no user was created");
});

test("an ID token from another issuer is refused and audited", async () => {
  const b = browser();
  const { callback } = await toCallback(b, { sub: "eve-1", email: "eve@corp.example", email_verified: true });
  idp.tamperIdToken = (c) => ({ ...c, iss: "https://evil.example" });
  await assertRefused(await b.send("GET", callback.href), "issuer_mismatch");
});

test("an expired ID token is refused and audited", async () => {
  const b = browser();
  const { callback } = await toCallback(b, { sub: "eve-1", email: "eve@corp.example", email_verified: true });
  const now = Math.floor(Date.now() / 1000);
  idp.tamperIdToken = (c) => ({ ...c, iat: now - 7200, exp: now - 3600 });
  await assertRefused(await b.send("GET", callback.href), "token_expired");
});

test("an ID token signed with a key the IdP never published is refused and audited", async () => {
  const b = browser();
  const { callback } = await toCallback(b, { sub: "eve-1", email: "eve@corp.example", email_verified: true });
  idp.forgeSignature = true;
  idp.tamperIdToken = (c) => c;
  const rec = await assertRefused(await b.send("GET", callback.href), "token_invalid");
  assert.ok(typeof rec.attributes.check === "string");
});

test("an ID token carrying another sign-in's nonce (a replayed nonce) is refused and audited", async () => {
  const b = browser();
  const old = await b.send("POST", `${tp.apiUrl}/v1/auth/sso/start`, { body: {} });
  const oldNonce = new URL(old.body.authorizationURL).searchParams.get("nonce")!;
  const s = await b.send("POST", `${tp.apiUrl}/v1/auth/sso/start`, { body: {} });
  const url = new URL(s.body.authorizationURL);
  url.searchParams.set("nonce", oldNonce);
  idp.account = { sub: "eve-1", email: "eve@corp.example", email_verified: true };
  const callback = await b.authorize(url.href, callbackUrl);
  await assertRefused(await b.send("GET", callback.href), "nonce_mismatch");
});

test("a callback completed in another browser than the one that started it is refused", async () => {
  const a = browser();
  const { callback } = await toCallback(a, { sub: "frank-1", email: "frank@corp.example", email_verified: true });
  await assertRefused(await browser().send("GET", callback.href), "browser_mismatch");
});

test("the IdP's refusal is reported and audited", async () => {
  const b = browser();
  idp.deny = true;
  const { callback } = await toCallback(b, null);
  assert.equal(callback.searchParams.get("error"), "access_denied");
  const rec = await assertRefused(await b.send("GET", callback.href), "idp_error");
  assert.equal(rec.attributes.idpError, "access_denied");
});

test("settings naming another issuer than the provider's discovery document are refused at start", async () => {
  assert.equal((await putConfig({ issuer: `${idp.issuer}/other` })).status, 200);
  try {
    const r = await tp.call("POST", "/v1/auth/sso/start", { key: null, body: {} });
    await assertRefused(r, "issuer_mismatch", "SsoLoginStart");
  } finally {
    assert.equal((await putConfig({})).status, 200);
  }
});

test("the IdP's certificate is verified: without its CA the provider cannot be used", async () => {
  assert.equal((await putConfig({ caPem: null })).status, 200);
  try {
    const r = await tp.call("POST", "/v1/auth/sso/start", { key: null, body: {} });
    assert.equal(r.status, 502, r.text);
    assert.equal(r.body.code, "ERR_SSO_IDP_UNAVAILABLE");
    const rec = await auditOf(r.body.requestId);
    assert.equal(rec.type, "SsoLoginStart");
    assert.equal(rec.result, "FAILURE");
  } finally {
    assert.equal((await putConfig({})).status, 200);
  }
});

async function invite(email: string, role: string, password: string): Promise<string> {
  const inv = await tp.call("POST", "/v1/invitations", { body: { email, role } });
  assert.ok(inv.status < 300, inv.text);
  const acc = await tp.call("POST", "/v1/auth/invitations/accept", { key: null, body: { token: inv.body.token, password } });
  assert.equal(acc.status, 201, acc.text);
  return acc.body.userID;
}

test("an existing user is linked by email only when the IdP says email_verified", async () => {
  const id = await invite("grace@corp.example", "Member", "orchid-lantern-velvet-58");
  const b = browser();
  const { callback } = await toCallback(b, { sub: "grace-1", email: "grace@corp.example", email_verified: false });
  await assertRefused(await b.send("GET", callback.href), "email_not_verified");
  const b2 = browser();
  const second = await toCallback(b2, { sub: "grace-1", email: "grace@corp.example", email_verified: true, groups: ["eng"] });
  const r = await b2.send("GET", second.callback.href);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.userID, id, "the existing user, not a new one");
  const rec = await auditOf(r.headers["x-request-id"] as string);
  assert.equal(rec.attributes.linked, true);
  assert.equal(rec.attributes.created, false);
});

test("without JIT an unknown identity is refused; with defaultRole null a user in no mapped group is refused", async () => {
  assert.equal((await putConfig({ jit: false })).status, 200);
  try {
    const b = browser();
    const { callback } = await toCallback(b, { sub: "heidi-1", email: "heidi@corp.example", email_verified: true });
    await assertRefused(await b.send("GET", callback.href), "jit_disabled");
  } finally {
    assert.equal((await putConfig({})).status, 200);
  }
  assert.equal((await putConfig({ defaultRole: null })).status, 200);
  try {
    const b = browser();
    const { callback } = await toCallback(b, { sub: "ivan-1", email: "ivan@corp.example", email_verified: true, groups: ["eng"] });
    await assertRefused(await b.send("GET", callback.href), "no_mapped_role");
    assert.equal((await tp.call("GET", "/v1/users?email=ivan@corp.example")).body.length, 0);
  } finally {
    assert.equal((await putConfig({})).status, 200);
  }
});

test("a CLI sign-in hands a one-time code to its loopback listener, redeemable once and only with its verifier", async () => {
  const verifier = randomBytes(32).toString("base64url");
  const challenge = createHash("sha256").update(verifier).digest("base64url");
  const redirect = "http://127.0.0.1:9/callback";
  const b = browser();
  const { callback } = await toCallback(b, { sub: "judy-1", email: "judy@corp.example", email_verified: true }, { redirect, clientChallenge: challenge });
  const r = await b.send("GET", callback.href);
  assert.equal(r.status, 303, r.text);
  assert.ok(r.location!.startsWith(`${redirect}?code=`), r.location ?? "");
  assert.equal(b.cookie(tp.apiUrl, "parhelion_session"), undefined, "the browser gets no session");
  const code = new URL(r.location!).searchParams.get("code")!;
  const wrong = await tp.call("POST", "/v1/auth/sso/token", { key: null, body: { code, codeVerifier: randomBytes(32).toString("base64url") } });
  await assertRefused(wrong, "handoff_invalid", "SsoSessionExchange");
  const burned = await tp.call("POST", "/v1/auth/sso/token", { key: null, body: { code, codeVerifier: verifier } });
  await assertRefused(burned, "handoff_invalid", "SsoSessionExchange");

  const b2 = browser();
  const second = await toCallback(b2, { sub: "judy-1", email: "judy@corp.example", email_verified: true }, { redirect, clientChallenge: challenge });
  const r2 = await b2.send("GET", second.callback.href);
  const code2 = new URL(r2.location!).searchParams.get("code")!;
  const ok = await tp.call("POST", "/v1/auth/sso/token", { key: null, body: { code: code2, codeVerifier: verifier } });
  assert.equal(ok.status, 200, ok.text);
  const cookie = String(ok.headers["set-cookie"]).match(/parhelion_session=([^;]+)/)?.[1];
  assert.ok(cookie);
  const who = await tp.call("GET", "/v1/auth/whoami", { key: null, headers: { cookie: `parhelion_session=${cookie}` } });
  assert.equal(who.body.email, "judy@corp.example");
  const start = await tp.call("POST", "/v1/auth/sso/start", { key: null, body: { redirect: "https://evil.example/cb", clientChallenge: challenge } });
  assert.equal(start.status, 400);
  assert.equal(start.body.code, "ERR_VALIDATION");
});

test("ssoOnly refuses password sign-in except for break-glass owners, and only an Owner may set it", async () => {
  const owner2 = await invite("owner2@corp.example", "Owner", "granite-meadow-kettle-37");
  await invite("member2@corp.example", "Member", "saffron-bridge-comet-64");
  const expiresAt = new Date(Date.now() + 86400_000).toISOString();
  const adminKey = (await tp.call("POST", "/v1/apiKeys", { body: { name: "sso-admin", role: "Admin", expiresAt } })).body.key;
  const denied = await putConfig({ ssoOnly: true, breakGlassUserIDs: [owner2] }, adminKey);
  assert.equal(denied.status, 403, denied.text);
  assert.equal(denied.body.code, "ERR_FORBIDDEN");
  const set = await putConfig({ ssoOnly: true, breakGlassUserIDs: [owner2] });
  assert.equal(set.status, 200, set.text);
  try {
    const m = await tp.call("POST", "/v1/auth/login", { key: null, body: { email: "member2@corp.example", password: "saffron-bridge-comet-64" } });
    assert.equal(m.status, 403, m.text);
    assert.equal(m.body.code, "ERR_SSO_REQUIRED");
    assert.equal(m.headers["set-cookie"], undefined, "no session");
    const rec = await auditOf(m.body.requestId);
    assert.equal(rec.type, "Login");
    assert.equal(rec.result, "DENIED");
    assert.equal(rec.attributes.code, "ERR_SSO_REQUIRED");
    // A wrong password answers as before: the policy is not an oracle for accounts.
    const wrong = await tp.call("POST", "/v1/auth/login", { key: null, body: { email: "member2@corp.example", password: "not-the-password-00" } });
    assert.equal(wrong.body.code, "ERR_INVALID_CREDENTIALS");
    const o = await tp.call("POST", "/v1/auth/login", { key: null, body: { email: "owner2@corp.example", password: "granite-meadow-kettle-37" } });
    assert.equal(o.status, 200, o.text);
    const keep = await putConfig({ ssoOnly: true, breakGlassUserIDs: [owner2], defaultRole: "Auditor" }, adminKey);
    assert.equal(keep.status, 200, "an Admin may change other settings while the policy stays as it is");
    const del = await tp.call("DELETE", "/v1/organizations/current/sso", { key: adminKey });
    assert.equal(del.status, 403);
  } finally {
    assert.equal((await putConfig({ ssoOnly: false, breakGlassUserIDs: [] })).status, 200);
  }
  const m2 = await tp.call("POST", "/v1/auth/login", { key: null, body: { email: "member2@corp.example", password: "saffron-bridge-comet-64" } });
  assert.equal(m2.status, 200, m2.text);
});

test("deleting the settings stops SSO sign-in with ERR_SSO_NOT_CONFIGURED", async () => {
  const d = await tp.call("DELETE", "/v1/organizations/current/sso");
  assert.equal(d.status, 200, d.text);
  try {
    const g = await tp.call("GET", "/v1/organizations/current/sso");
    assert.equal(g.status, 404);
    assert.equal(g.body.code, "ERR_SSO_NOT_CONFIGURED");
    const s = await tp.call("POST", "/v1/auth/sso/start", { key: null, body: { organizationID: orgId } });
    assert.equal(s.status, 404);
    assert.equal(s.body.code, "ERR_SSO_NOT_CONFIGURED");
  } finally {
    assert.equal((await putConfig({})).status, 200);
  }
});

test("an SSO session passes parhelion's MFA gate like a password session", async () => {
  const on = await tp.call("PATCH", "/v1/organizations/current", { body: { mfaRequired: true } });
  assert.equal(on.status, 200, on.text);
  try {
    const b = browser();
    const { callback } = await toCallback(b, { sub: "mallory-1", email: "mallory@corp.example", email_verified: true });
    const r = await b.send("GET", callback.href);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.mfaEnrollmentRequired, true);
    assert.equal(r.body.mfaRequired, false);
    const teams = await b.send("GET", `${tp.apiUrl}/v1/teams`);
    assert.equal(teams.status, 403, teams.text);
    assert.equal(teams.body.code, "ERR_MFA_ENROLLMENT_REQUIRED");
  } finally {
    assert.equal((await tp.call("PATCH", "/v1/organizations/current", { body: { mfaRequired: false } })).status, 200);
  }
});
