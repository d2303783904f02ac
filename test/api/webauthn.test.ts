import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestPlatform, type TestPlatform } from "../support/platform.js";
import { as, makeUser, signIn, type TestSession } from "../support/mfa.js";
import { SoftAuthenticator } from "../support/webauthn.js";
import { FakeClock } from "../identity/helpers.js";

let tp: TestPlatform;
const clock = new FakeClock(Date.now());
/** The default relying party: the API listens on 127.0.0.1, an IP address, so the RP id is localhost. */
let origin = "";

before(async () => {
  tp = await startTestPlatform({ clock: clock.now });
  origin = `https://localhost:${new URL(tp.apiUrl).port}`;
});

after(async () => {
  await tp?.stop();
});

async function audits(type: string): Promise<Array<{ result: string; requestID: string; attributes: Record<string, unknown> }>> {
  return (await tp.call("GET", `/v1/auditLogs?type=${type}&limit=1000`)).body.auditLogs;
}

/** Registers the authenticator in the session; answers the factor id. */
async function register(s: TestSession, key: SoftAuthenticator, name = "yubikey"): Promise<string> {
  const opts = await as(tp, s, "POST", "/v1/auth/mfa/webauthn/registration/options");
  assert.equal(opts.status, 200, opts.text);
  const r = await as(tp, s, "POST", "/v1/auth/mfa/webauthn/registration", { name, credential: key.register(opts.body) });
  assert.equal(r.status, 201, r.text);
  return r.body.factorID;
}

async function assertion(s: TestSession, key: SoftAuthenticator, o: Parameters<SoftAuthenticator["authenticate"]>[1] = {}) {
  const opts = await as(tp, s, "POST", "/v1/auth/mfa/webauthn/authentication/options");
  assert.equal(opts.status, 200, opts.text);
  return as(tp, s, "POST", "/v1/auth/mfa/webauthn/authentication", { credential: key.authenticate(opts.body, o) });
}

test("registration: options name the RP and user; a wrong origin or RP id is refused; the challenge is single-use", async () => {
  const user = await makeUser(tp);
  const s = await signIn(tp, user);
  const key = new SoftAuthenticator(origin, "localhost");
  const opts = await as(tp, s, "POST", "/v1/auth/mfa/webauthn/registration/options");
  assert.equal(opts.status, 200, opts.text);
  assert.equal(opts.body.rp.id, "localhost");
  assert.equal(opts.body.rp.name, "parhelion");
  assert.equal(opts.body.user.name, user.email);
  assert.equal(opts.body.attestation, "none");
  assert.ok(opts.body.pubKeyCredParams.some((p: { alg: number }) => p.alg === -7), "ES256 is offered");

  const wrongOrigin = await as(tp, s, "POST", "/v1/auth/mfa/webauthn/registration", { credential: key.register(opts.body, { origin: "https://evil.example:443" }) });
  assert.equal(wrongOrigin.status, 401);
  assert.equal(wrongOrigin.body.code, "ERR_MFA_INVALID");
  const rec = (await audits("MfaWebAuthnRegister")).find((r) => r.requestID === wrongOrigin.body.requestId);
  assert.equal(rec?.result, "DENIED");
  assert.match(String(rec?.attributes["reason"]), /origin/);
  // The challenge was consumed by the failed attempt.
  const replay = await as(tp, s, "POST", "/v1/auth/mfa/webauthn/registration", { credential: key.register(opts.body) });
  assert.equal(replay.body.code, "ERR_MFA_INVALID");

  const opts2 = await as(tp, s, "POST", "/v1/auth/mfa/webauthn/registration/options");
  const wrongRp = await as(tp, s, "POST", "/v1/auth/mfa/webauthn/registration", { credential: key.register(opts2.body, { rpId: "evil.example" }) });
  assert.equal(wrongRp.body.code, "ERR_MFA_INVALID");
  const opts3 = await as(tp, s, "POST", "/v1/auth/mfa/webauthn/registration/options");
  const wrongType = await as(tp, s, "POST", "/v1/auth/mfa/webauthn/registration", { credential: key.register(opts3.body, { type: "webauthn.get" }) });
  assert.equal(wrongType.body.code, "ERR_MFA_INVALID");
  const st = await as(tp, s, "GET", "/v1/auth/mfa");
  assert.deepEqual(st.body.factors, [], "nothing was registered");

  const opts4 = await as(tp, s, "POST", "/v1/auth/mfa/webauthn/registration/options");
  const ok = await as(tp, s, "POST", "/v1/auth/mfa/webauthn/registration", { name: "desk key", credential: key.register(opts4.body) });
  assert.equal(ok.status, 201, ok.text);
  assert.equal(ok.body.type, "webauthn");
  assert.equal(ok.body.recoveryCodes.length, 10);
  const list = await as(tp, s, "GET", "/v1/auth/mfa");
  assert.deepEqual(list.body.factors.map((f: { type: string; name: string }) => [f.type, f.name]), [["webauthn", "desk key"]]);
  assert.equal(list.body.mfaVerified, true);
  // The same authenticator again: excluded by the options, refused by the server.
  const opts5 = await as(tp, s, "POST", "/v1/auth/mfa/webauthn/registration/options");
  assert.deepEqual(opts5.body.excludeCredentials.map((c: { id: string }) => c.id), [key.id]);
  const dup = await as(tp, s, "POST", "/v1/auth/mfa/webauthn/registration", { credential: key.register(opts5.body) });
  assert.equal(dup.status, 409);
  assert.equal(dup.body.code, "ERR_CONFLICT");
});

test("sign-in with a security key: the assertion completes the session; a counter that does not grow, a wrong origin or a replayed challenge are refused", async () => {
  const user = await makeUser(tp);
  const key = new SoftAuthenticator(origin, "localhost");
  await register(await signIn(tp, user), key);
  const s = await signIn(tp, user);
  assert.equal(s.login["mfaRequired"], true);
  assert.deepEqual(s.login["mfaMethods"], ["webauthn", "recovery"]);
  assert.equal((await as(tp, s, "GET", "/v1/organizations/current")).body.code, "ERR_MFA_REQUIRED");

  const opts = await as(tp, s, "POST", "/v1/auth/mfa/webauthn/authentication/options");
  assert.equal(opts.status, 200, opts.text);
  assert.equal(opts.body.rpId, "localhost");
  assert.deepEqual(opts.body.allowCredentials.map((c: { id: string }) => c.id), [key.id]);
  const good = key.authenticate(opts.body);
  const ok = await as(tp, s, "POST", "/v1/auth/mfa/webauthn/authentication", { credential: good });
  assert.equal(ok.status, 200, ok.text);
  assert.equal(ok.body.method, "webauthn");
  assert.equal((await as(tp, s, "GET", "/v1/organizations/current")).status, 200);

  // Replaying the very same assertion: its challenge is spent.
  const replay = await as(tp, s, "POST", "/v1/auth/mfa/webauthn/authentication", { credential: good });
  assert.equal(replay.body.code, "ERR_MFA_INVALID");

  const s2 = await signIn(tp, user);
  const cloned = await assertion(s2, key, { counter: key.counter });
  assert.equal(cloned.status, 401, "the same counter again (a cloned key)");
  assert.equal(cloned.body.code, "ERR_MFA_INVALID");
  const rec = (await audits("MfaVerify")).find((r) => r.requestID === cloned.body.requestId);
  assert.match(String(rec?.attributes["reason"]), /counter/);
  const lower = await assertion(s2, key, { counter: 0 });
  assert.equal(lower.body.code, "ERR_MFA_INVALID", "a counter that went back");
  assert.equal((await as(tp, s2, "GET", "/v1/organizations/current")).body.code, "ERR_MFA_REQUIRED");
  const fine = await assertion(s2, key);
  assert.equal(fine.status, 200, fine.text);
});

test("assertions for another RP id, from another origin, another user's key, or after the challenge expired are refused", async () => {
  const user = await makeUser(tp);
  const key = new SoftAuthenticator(origin, "localhost");
  await register(await signIn(tp, user), key);
  const s = await signIn(tp, user);
  const wrongOrigin = await assertion(s, key, { origin: "https://localhost:1" });
  assert.equal(wrongOrigin.body.code, "ERR_MFA_INVALID");
  const wrongRp = await assertion(s, key, { rpId: "example.com" });
  assert.equal(wrongRp.body.code, "ERR_MFA_INVALID");
  const rec = (await audits("MfaVerify")).find((r) => r.requestID === wrongRp.body.requestId);
  assert.match(String(rec?.attributes["reason"]), /RP ID/i);

  const other = await makeUser(tp);
  const otherKey = new SoftAuthenticator(origin, "localhost");
  await register(await signIn(tp, other), otherKey);
  const opts = await as(tp, s, "POST", "/v1/auth/mfa/webauthn/authentication/options");
  const foreign = await as(tp, s, "POST", "/v1/auth/mfa/webauthn/authentication", { credential: otherKey.authenticate(opts.body) });
  assert.equal(foreign.body.code, "ERR_MFA_INVALID");

  const late = await as(tp, s, "POST", "/v1/auth/mfa/webauthn/authentication/options");
  clock.advance(5 * 60 + 1);
  const expired = await as(tp, s, "POST", "/v1/auth/mfa/webauthn/authentication", { credential: key.authenticate(late.body) });
  assert.equal(expired.body.code, "ERR_MFA_INVALID");
  assert.equal((await as(tp, s, "GET", "/v1/organizations/current")).body.code, "ERR_MFA_REQUIRED");
});

test("a security key refreshes step-up, and removing it needs a fresh one", async () => {
  const user = await makeUser(tp, "Admin");
  const s = await signIn(tp, user);
  const key = new SoftAuthenticator(origin, "localhost");
  const factorID = await register(s, key);
  clock.advance(11 * 60);
  const stale = await as(tp, s, "POST", "/v1/apiKeys", { name: "k", role: "Member", expiresAt: new Date(clock.ms + 86400_000).toISOString() });
  assert.equal(stale.body.code, "ERR_STEP_UP_REQUIRED");
  const staleDel = await as(tp, s, "DELETE", `/v1/auth/mfa/factors/${factorID}`);
  assert.equal(staleDel.body.code, "ERR_STEP_UP_REQUIRED");
  assert.equal((await assertion(s, key)).status, 200);
  assert.equal((await as(tp, s, "POST", "/v1/apiKeys", { name: "k", role: "Member", expiresAt: new Date(clock.ms + 86400_000).toISOString() })).status, 201);
  const del = await as(tp, s, "DELETE", `/v1/auth/mfa/factors/${factorID}`);
  assert.equal(del.status, 200, del.text);
  assert.equal(del.body.type, "webauthn");
  const gone = await as(tp, s, "POST", "/v1/auth/mfa/webauthn/authentication/options");
  assert.equal(gone.status, 409);
});

test("malformed WebAuthn bodies are typed validation errors and change nothing", async () => {
  const s = await signIn(tp, await makeUser(tp));
  const extra = await as(tp, s, "POST", "/v1/auth/mfa/webauthn/registration", { credential: { id: "x", rawId: "x", type: "public-key", response: { clientDataJSON: "", attestationObject: "" }, clientExtensionResults: {}, extra: 1 } });
  assert.equal(extra.body.code, "ERR_UNKNOWN_FIELD");
  const notB64 = await as(tp, s, "POST", "/v1/auth/mfa/webauthn/authentication", { credential: { id: "!!", rawId: "x", type: "public-key", response: { clientDataJSON: "a", authenticatorData: "b", signature: "c" }, clientExtensionResults: {} } });
  assert.equal(notB64.body.code, "ERR_VALIDATION");
  const garbage = await as(tp, s, "POST", "/v1/auth/mfa/webauthn/registration", { credential: { id: "abc", rawId: "abc", type: "public-key", response: { clientDataJSON: "e30", attestationObject: "AAAA" }, clientExtensionResults: {} } });
  assert.equal(garbage.body.code, "ERR_MFA_INVALID", "no challenge outstanding");
  assert.deepEqual((await as(tp, s, "GET", "/v1/auth/mfa")).body.factors, []);
});
