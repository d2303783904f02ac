import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestPlatform, type TestPlatform } from "../support/platform.js";
import { as, makeUser, signIn, totpCode, type TestSession } from "../support/mfa.js";
import { FakeClock } from "../identity/helpers.js";

let tp: TestPlatform;
// The platform runs on this clock, so TOTP steps and the step-up window move only when the test says.
const clock = new FakeClock(Math.floor(Date.now() / 30_000) * 30_000 + 15_000);
let regionID = "";
const secrets: string[] = [];

before(async () => {
  tp = await startTestPlatform({ clock: clock.now });
  regionID = (await tp.call("GET", "/v1/regions")).body[0].regionID;
});

after(async () => {
  await tp?.stop();
});

const expiresAt = () => new Date(clock.ms + 86400_000).toISOString();

/** Enrolls TOTP in the session; answers the secret and recovery codes (and moves past the spent step). */
async function enrollTotp(s: TestSession): Promise<{ secret: string; recoveryCodes: string[]; factorID: string }> {
  const begin = await as(tp, s, "POST", "/v1/auth/mfa/totp", { name: "phone" });
  assert.equal(begin.status, 201, begin.text);
  const confirm = await as(tp, s, "POST", "/v1/auth/mfa/totp/confirm", { code: totpCode(begin.body.secret, clock.ms) });
  assert.equal(confirm.status, 201, confirm.text);
  clock.advance(30);
  secrets.push(begin.body.secret, ...confirm.body.recoveryCodes);
  return { secret: begin.body.secret, recoveryCodes: confirm.body.recoveryCodes, factorID: confirm.body.factorID };
}

async function audits(type: string): Promise<Array<{ type: string; result: string; requestID: string; userEmail: string | null; attributes: Record<string, unknown> }>> {
  const r = await tp.call("GET", `/v1/auditLogs?type=${type}&limit=1000`);
  assert.equal(r.status, 200, r.text);
  return r.body.auditLogs;
}

test("a user without a factor signs in as before, with mfaRequired false", async () => {
  const s = await signIn(tp, await makeUser(tp));
  assert.equal(s.login["mfaRequired"], false);
  assert.equal(s.login["mfaVerified"], false);
  assert.equal(s.login["mfaEnrollmentRequired"], false);
  assert.deepEqual(s.login["mfaMethods"], []);
  for (const k of ["sessionID", "csrfToken", "expiresAt", "userID", "orgID"]) assert.equal(typeof s.login[k], "string", k);
  assert.equal((await as(tp, s, "GET", "/v1/organizations/current")).status, 200);
  const st = await as(tp, s, "GET", "/v1/auth/mfa");
  assert.equal(st.status, 200, st.text);
  assert.equal(st.body.mfaEnrolled, false);
  assert.deepEqual(st.body.factors, []);
});

test("TOTP enrollment over the API: QR code and URI, confirmation, then sign-in waits for the second factor", async () => {
  const user = await makeUser(tp);
  const s = await signIn(tp, user);
  const begin = await as(tp, s, "POST", "/v1/auth/mfa/totp", {});
  assert.equal(begin.status, 201, begin.text);
  const uri = new URL(begin.body.otpauthURI);
  assert.equal(`${uri.protocol}//${uri.host}${decodeURIComponent(uri.pathname)}`, `otpauth://totp/parhelion:${user.email}`);
  assert.equal(uri.searchParams.get("secret"), begin.body.secret);
  assert.equal(uri.searchParams.get("issuer"), "parhelion");
  assert.match(begin.body.qrCodeSvg, /^<svg/);
  secrets.push(begin.body.secret);
  const wrong = await as(tp, s, "POST", "/v1/auth/mfa/totp/confirm", { code: totpCode(begin.body.secret, clock.ms - 120_000) });
  assert.equal(wrong.status, 401);
  assert.equal(wrong.body.code, "ERR_MFA_INVALID");
  const code = totpCode(begin.body.secret, clock.ms);
  const ok = await as(tp, s, "POST", "/v1/auth/mfa/totp/confirm", { code });
  assert.equal(ok.status, 201, ok.text);
  assert.equal(ok.body.recoveryCodes.length, 10);
  secrets.push(...ok.body.recoveryCodes);
  // The list never shows the secret again.
  const st = await as(tp, s, "GET", "/v1/auth/mfa");
  assert.equal(st.body.mfaEnrolled, true);
  assert.equal(st.body.mfaVerified, true);
  assert.equal(st.body.factors.length, 1);
  assert.equal(st.body.recoveryCodesRemaining, 10);
  assert.ok(!st.text.includes(begin.body.secret));

  const pending = await signIn(tp, user);
  assert.equal(pending.login["mfaRequired"], true);
  assert.equal(pending.login["mfaVerified"], false);
  assert.deepEqual(pending.login["mfaMethods"], ["totp", "recovery"]);
  const blocked = await as(tp, pending, "GET", "/v1/organizations/current");
  assert.equal(blocked.status, 401);
  assert.equal(blocked.body.code, "ERR_MFA_REQUIRED");
  assert.equal(blocked.headers["content-type"], "application/problem+json; charset=utf-8");
  const mutate = await as(tp, pending, "POST", "/v1/auth/password", { currentPassword: user.password, newPassword: "another-long-password-77" });
  assert.equal(mutate.body.code, "ERR_MFA_REQUIRED", "a pending session cannot change the password");
  const enrollMore = await as(tp, pending, "POST", "/v1/auth/mfa/totp", {});
  assert.equal(enrollMore.body.code, "ERR_MFA_REQUIRED", "a pending session cannot enroll factors");
  const who = await as(tp, pending, "GET", "/v1/auth/whoami");
  assert.equal(who.status, 200);
  assert.deepEqual(who.body.mfa, { enrolled: true, verified: false, verifiedAt: null, enrollmentRequired: false });
  // The code that confirmed the enrollment is spent.
  const replay = await as(tp, pending, "POST", "/v1/auth/mfa/totp/verify", { code });
  assert.equal(replay.status, 401);
  assert.equal(replay.body.code, "ERR_MFA_INVALID");
  clock.advance(30);
  const next = totpCode(begin.body.secret, clock.ms);
  const verified = await as(tp, pending, "POST", "/v1/auth/mfa/totp/verify", { code: next });
  assert.equal(verified.status, 200, verified.text);
  assert.equal(verified.body.method, "totp");
  assert.equal(verified.body.mfaVerifiedAt, new Date(clock.ms).toISOString());
  assert.equal((await as(tp, pending, "GET", "/v1/organizations/current")).status, 200);
  const again = await as(tp, pending, "POST", "/v1/auth/mfa/totp/verify", { code: next });
  assert.equal(again.body.code, "ERR_MFA_INVALID", "a code is accepted once");

  // The refusals and the success are audited, as MfaVerify; no record holds a code or the secret.
  const recs = await audits("MfaVerify");
  assert.ok(recs.some((r) => r.requestID === replay.body.requestId && r.result === "DENIED" && r.attributes["code"] === "ERR_MFA_INVALID"));
  assert.ok(recs.some((r) => r.userEmail === user.email && r.result === "SUCCESS" && r.attributes["method"] === "totp"));
  const denied = await audits("ApiRequest");
  assert.ok(denied.some((r) => r.requestID === blocked.body.requestId && r.result === "DENIED" && r.attributes["code"] === "ERR_MFA_REQUIRED"));
  const logins = await audits("Login");
  assert.ok(logins.some((r) => r.userEmail === user.email && r.attributes["mfa"] === "pending"));
});

test("a recovery code completes a sign-in once; regenerating needs step-up and voids the old codes", async () => {
  const user = await makeUser(tp);
  const { recoveryCodes } = await enrollTotp(await signIn(tp, user));
  const pending = await signIn(tp, user);
  const used = await as(tp, pending, "POST", "/v1/auth/mfa/recovery/verify", { code: recoveryCodes[0] });
  assert.equal(used.status, 200, used.text);
  assert.equal(used.body.recoveryCodesRemaining, 9);
  assert.equal((await as(tp, pending, "GET", "/v1/organizations/current")).status, 200);
  const other = await signIn(tp, user);
  const reused = await as(tp, other, "POST", "/v1/auth/mfa/recovery/verify", { code: recoveryCodes[0] });
  assert.equal(reused.status, 401);
  assert.equal(reused.body.code, "ERR_MFA_INVALID");
  assert.equal((await as(tp, other, "GET", "/v1/organizations/current")).body.code, "ERR_MFA_REQUIRED");
  const recs = await audits("MfaRecoveryCodeUse");
  assert.ok(recs.some((r) => r.requestID === used.headers["x-request-id"] && r.result === "SUCCESS" && r.attributes["recoveryCodesRemaining"] === 9));
  assert.ok(recs.some((r) => r.requestID === reused.body.requestId && r.result === "DENIED"));

  clock.advance(11 * 60);
  const stale = await as(tp, pending, "POST", "/v1/auth/mfa/recoveryCodes");
  assert.equal(stale.status, 401);
  assert.equal(stale.body.code, "ERR_STEP_UP_REQUIRED");
  assert.equal(stale.body.message.includes("10 minutes"), true);
  assert.equal((await as(tp, pending, "POST", "/v1/auth/mfa/recovery/verify", { code: recoveryCodes[1] })).status, 200);
  const regen = await as(tp, pending, "POST", "/v1/auth/mfa/recoveryCodes");
  assert.equal(regen.status, 200, regen.text);
  assert.equal(regen.body.recoveryCodes.length, 10);
  secrets.push(...regen.body.recoveryCodes);
  assert.equal((await as(tp, other, "POST", "/v1/auth/mfa/recovery/verify", { code: recoveryCodes[2] })).body.code, "ERR_MFA_INVALID");
  assert.equal((await as(tp, other, "POST", "/v1/auth/mfa/recovery/verify", { code: regen.body.recoveryCodes[0] })).status, 200);
});

test("wrong codes are rate limited per user: after five failures even the right code waits", async () => {
  const user = await makeUser(tp);
  const { secret } = await enrollTotp(await signIn(tp, user));
  const pending = await signIn(tp, user);
  const bad = totpCode(secret, clock.ms - 600_000) === totpCode(secret, clock.ms) ? "000001" : totpCode(secret, clock.ms - 600_000);
  for (let i = 0; i < 5; i++) {
    const r = await as(tp, pending, "POST", "/v1/auth/mfa/totp/verify", { code: bad });
    assert.equal(r.body.code, "ERR_MFA_INVALID", `attempt ${i + 1}`);
  }
  const locked = await as(tp, pending, "POST", "/v1/auth/mfa/totp/verify", { code: totpCode(secret, clock.ms) });
  assert.equal(locked.status, 429);
  assert.equal(locked.body.code, "ERR_RATE_LIMITED");
  // A fresh password sign-in does not reset the second factor's count.
  const again = await signIn(tp, user);
  assert.equal((await as(tp, again, "POST", "/v1/auth/mfa/totp/verify", { code: totpCode(secret, clock.ms) })).status, 429);
  clock.advance(301);
  assert.equal((await as(tp, again, "POST", "/v1/auth/mfa/totp/verify", { code: totpCode(secret, clock.ms) })).status, 200);
});

test("step-up: creating an API key and changing a group's firewall need a factor verified within the window", async () => {
  const admin = await makeUser(tp, "Admin");
  const s = await signIn(tp, admin);
  // Without a factor there is nothing to step up with: allowed (the org does not require MFA).
  const k0 = await as(tp, s, "POST", "/v1/apiKeys", { name: "no-factor-key", role: "Member", expiresAt: expiresAt() });
  assert.equal(k0.status, 201, k0.text);
  const { secret } = await enrollTotp(s);
  // Fresh from the enrollment.
  assert.equal((await as(tp, s, "POST", "/v1/apiKeys", { name: "fresh-key", role: "Member", expiresAt: expiresAt() })).status, 201);
  const g = await tp.call("POST", "/v1/workspaceGroups", { body: { name: "mfa-step-up-group", regionID } });
  assert.equal(g.status, 200, g.text);
  const groupPath = `/v1/workspaceGroups/${g.body.workspaceGroupID}`;

  clock.advance(10 * 60 + 1);
  const key = await as(tp, s, "POST", "/v1/apiKeys", { name: "stale-key", role: "Member", expiresAt: expiresAt() });
  assert.equal(key.status, 401);
  assert.equal(key.body.code, "ERR_STEP_UP_REQUIRED");
  const fw = await as(tp, s, "PATCH", groupPath, { firewallRanges: ["10.1.0.0/16"] });
  assert.equal(fw.body.code, "ERR_STEP_UP_REQUIRED");
  const tls = await as(tp, s, "PATCH", groupPath, { tlsMinVersion: "1.3" });
  assert.equal(tls.body.code, "ERR_STEP_UP_REQUIRED");
  const acl = await as(tp, s, "PATCH", `${groupPath}/accessControls`, { grants: [] });
  assert.equal(acl.body.code, "ERR_STEP_UP_REQUIRED");
  // Audit and database-login settings are sensitive too.
  assert.equal((await as(tp, s, "PATCH", groupPath, { auditLevel: "OFF" })).body.code, "ERR_STEP_UP_REQUIRED");
  assert.equal((await as(tp, s, "PUT", `${groupPath}/jwtAuth`, { jwksEndpoint: "https://idp.example.test/jwks.json", issuer: "https://idp.example.test", audience: "db" })).body.code, "ERR_STEP_UP_REQUIRED");
  assert.equal((await as(tp, s, "DELETE", `${groupPath}/jwtAuth`)).body.code, "ERR_STEP_UP_REQUIRED");
  // Key changes: setting a customer-managed key, rotating the data key's wrapping, re-keying the volume.
  assert.equal((await as(tp, s, "PATCH", groupPath, { kmsKey: { provider: "aws-kms", keyID: "alias/customer" } })).body.code, "ERR_STEP_UP_REQUIRED");
  assert.equal((await as(tp, s, "POST", `${groupPath}/keys/rotate`, {})).body.code, "ERR_STEP_UP_REQUIRED");
  assert.equal((await as(tp, s, "POST", `${groupPath}/keys/rekey`, {})).body.code, "ERR_STEP_UP_REQUIRED");
  // So is starting a group with a customer-managed key (as setting one is); a group without one is not.
  assert.equal((await as(tp, s, "POST", "/v1/workspaceGroups", { name: "mfa-cmek-group", regionID, dataBucketKMSKeyID: "alias/customer" })).body.code, "ERR_STEP_UP_REQUIRED");
  assert.equal((await as(tp, s, "POST", "/v1/workspaceGroups", { name: "mfa-cmek-group-2", regionID, kmsKey: { provider: "aws-kms", keyID: "alias/customer" } })).body.code, "ERR_STEP_UP_REQUIRED");
  const plain = await as(tp, s, "POST", "/v1/workspaceGroups", { name: "mfa-plain-group", regionID });
  assert.equal(plain.status, 200, plain.text);
  assert.ok(!(await tp.call("GET", "/v1/workspaceGroups")).body.some((x: { name: string }) => x.name.startsWith("mfa-cmek-group")), "no group was created");
  assert.equal((await tp.call("DELETE", `/v1/workspaceGroups/${plain.body.workspaceGroupID}`)).status, 200);
  // A rename is not sensitive.
  assert.equal((await as(tp, s, "PATCH", groupPath, { name: "mfa-renamed" })).status, 200);
  // Nothing changed: the keys and the firewall are as before.
  const keys = await tp.call("GET", "/v1/apiKeys");
  assert.ok(!keys.body.some((k: { name: string }) => k.name === "stale-key"));
  assert.notDeepEqual((await tp.call("GET", groupPath)).body.firewallRanges, ["10.1.0.0/16"]);
  assert.equal((await tp.call("GET", groupPath)).body.auditLevel, "ADMIN-ONLY");
  assert.equal((await tp.call("GET", `${groupPath}/jwtAuth`)).status, 404, "no JWT settings were stored");
  const denied = await audits("ApiKeyCreate");
  const rec = denied.find((r) => r.requestID === key.body.requestId);
  assert.equal(rec?.result, "DENIED");
  assert.equal(rec?.attributes["code"], "ERR_STEP_UP_REQUIRED");
  assert.equal(rec?.attributes["stepUp"], "required");
  assert.ok((await audits("WorkspaceGroupUpdate")).some((r) => r.requestID === fw.body.requestId && r.result === "DENIED"));

  const v = await as(tp, s, "POST", "/v1/auth/mfa/totp/verify", { code: totpCode(secret, clock.ms) });
  assert.equal(v.status, 200, v.text);
  assert.equal(v.body.stepUpFreshUntil, new Date(clock.ms + 10 * 60_000).toISOString());
  assert.equal((await as(tp, s, "POST", "/v1/apiKeys", { name: "stepped-up-key", role: "Member", expiresAt: expiresAt() })).status, 201);
  const fw2 = await as(tp, s, "PATCH", groupPath, { firewallRanges: ["10.1.0.0/16"] });
  assert.equal(fw2.status, 200, fw2.text);
  // API keys are machine credentials: no step-up.
  assert.equal((await tp.call("POST", "/v1/apiKeys", { body: { name: "machine-key", role: "Member", expiresAt: expiresAt() } })).status, 201);
  assert.equal((await tp.call("DELETE", `${groupPath}?force=true`)).status, 200);
});

test("removing a factor needs step-up; removing the last one ends the user's sessions still waiting for it", async () => {
  const user = await makeUser(tp);
  const s = await signIn(tp, user);
  const { secret, factorID, recoveryCodes } = await enrollTotp(s);
  const pending = await signIn(tp, user);
  clock.advance(11 * 60);
  const stale = await as(tp, s, "DELETE", `/v1/auth/mfa/factors/${factorID}`);
  assert.equal(stale.body.code, "ERR_STEP_UP_REQUIRED");
  assert.equal((await as(tp, s, "POST", "/v1/auth/mfa/totp/verify", { code: totpCode(secret, clock.ms) })).status, 200);
  const del = await as(tp, s, "DELETE", `/v1/auth/mfa/factors/${factorID}`);
  assert.equal(del.status, 200, del.text);
  assert.deepEqual(del.body, { factorID, type: "totp", remainingFactors: 0 });
  assert.equal((await as(tp, pending, "GET", "/v1/auth/whoami")).status, 401, "the password-only session is gone");
  assert.equal((await as(tp, s, "GET", "/v1/organizations/current")).status, 200);
  const st = await as(tp, s, "GET", "/v1/auth/mfa");
  assert.equal(st.body.mfaEnrolled, false);
  assert.equal(st.body.recoveryCodesRemaining, 0);
  const rec = (await audits("MfaFactorRemove")).find((r) => r.requestID === del.headers["x-request-id"]);
  assert.equal(rec?.attributes["sessionsEnded"], 1);
  assert.ok(recoveryCodes.length === 10);
  const unknown = await as(tp, s, "DELETE", `/v1/auth/mfa/factors/${factorID}`);
  assert.equal(unknown.status, 404);
});

test("mfaRequired: a user without a factor can only enroll one (and whoami, logout); API keys are not subject to it", async () => {
  const owner = await makeUser(tp, "Owner");
  const os = await signIn(tp, owner);
  // A session without a factor may not require one from everybody (it would lock itself out).
  const self = await as(tp, os, "PATCH", "/v1/organizations/current", { mfaRequired: true });
  assert.equal(self.status, 409, self.text);
  assert.equal(self.body.code, "ERR_CONFLICT");
  const { secret } = await enrollTotp(os);
  clock.advance(11 * 60);
  const staleP = await as(tp, os, "PATCH", "/v1/organizations/current", { mfaRequired: true });
  assert.equal(staleP.body.code, "ERR_STEP_UP_REQUIRED");
  assert.equal((await as(tp, os, "POST", "/v1/auth/mfa/totp/verify", { code: totpCode(secret, clock.ms) })).status, 200);
  const bad = await as(tp, os, "PATCH", "/v1/organizations/current", { mfaRequired: true, color: "red" });
  assert.equal(bad.body.code, "ERR_UNKNOWN_FIELD");
  assert.equal((await tp.call("GET", "/v1/organizations/current")).body.mfaRequired, false, "a rejected body changes nothing");
  const on = await as(tp, os, "PATCH", "/v1/organizations/current", { mfaRequired: true });
  assert.equal(on.status, 200, on.text);
  assert.equal(on.body.mfaRequired, true);
  assert.equal(on.body.mfaStepUpMinutes, 10);
  try {
    const member = await signIn(tp, await makeUser(tp));
    assert.equal(member.login["mfaEnrollmentRequired"], true);
    assert.equal(member.login["mfaRequired"], false);
    const teams = await as(tp, member, "GET", "/v1/organizations/current");
    assert.equal(teams.status, 403);
    assert.equal(teams.body.code, "ERR_MFA_ENROLLMENT_REQUIRED");
    const org = await as(tp, member, "GET", "/v1/organizations/current");
    assert.equal(org.body.code, "ERR_MFA_ENROLLMENT_REQUIRED");
    const verify = await as(tp, member, "POST", "/v1/auth/mfa/totp/verify", { code: "123456" });
    assert.equal(verify.body.code, "ERR_MFA_ENROLLMENT_REQUIRED");
    const who = await as(tp, member, "GET", "/v1/auth/whoami");
    assert.equal(who.status, 200);
    assert.equal(who.body.mfa.enrollmentRequired, true);
    assert.equal((await as(tp, member, "GET", "/v1/auth/mfa")).body.mfaEnrollmentRequired, true);
    await enrollTotp(member);
    assert.equal((await as(tp, member, "GET", "/v1/organizations/current")).status, 200, "enrolled: the session is verified and free");
    // API keys are machine credentials: not subject to the policy.
    assert.equal((await tp.call("GET", "/v1/organizations/current")).status, 200);
    const audit = (await audits("ApiRequest")).find((r) => r.requestID === teams.body.requestId);
    assert.equal(audit?.result, "DENIED");
    assert.equal(audit?.attributes["code"], "ERR_MFA_ENROLLMENT_REQUIRED");
    const upd = (await audits("OrganizationUpdate")).find((r) => r.requestID === on.headers["x-request-id"]);
    assert.deepEqual(upd?.attributes["change"], { mfaRequired: true });
    assert.deepEqual(upd?.attributes["before"], { mfaRequired: false, mfaStepUpMinutes: 10 });
    const out = await as(tp, member, "POST", "/v1/auth/logout");
    assert.equal(out.status, 200);
  } finally {
    // The owner key (an API key: no step-up) turns the policy off again.
    const off = await tp.call("PATCH", "/v1/organizations/current", { body: { mfaRequired: false } });
    assert.equal(off.status, 200, off.text);
  }
  assert.equal((await tp.call("PATCH", "/v1/organizations/current", { body: { mfaStepUpMinutes: 0 } })).body.code, "ERR_VALIDATION");
});

test("an administrator resets a user's factors: factors and codes gone, sessions ended; only an Owner resets an Owner", async () => {
  const user = await makeUser(tp);
  const s = await signIn(tp, user);
  await enrollTotp(s);
  const r = await tp.call("DELETE", `/v1/users/${s.userID}/mfa`);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.factorsRemoved, 1);
  assert.ok(r.body.sessionsEnded >= 1);
  assert.equal((await as(tp, s, "GET", "/v1/auth/whoami")).status, 401);
  const again = await signIn(tp, user);
  assert.equal(again.login["mfaRequired"], false);
  const owner = await makeUser(tp, "Owner");
  const ownerSession = await signIn(tp, owner);
  const adminKey = await tp.call("POST", "/v1/apiKeys", { body: { name: "admin-key", role: "Admin", expiresAt: expiresAt() } });
  const denied = await tp.call("DELETE", `/v1/users/${ownerSession.userID}/mfa`, { key: adminKey.body.key });
  assert.equal(denied.status, 403);
  assert.equal(denied.body.code, "ERR_FORBIDDEN");
  assert.ok((await audits("MfaReset")).some((a) => a.requestID === r.headers["x-request-id"] && a.result === "SUCCESS"));
});

test("API keys cannot use the MFA routes, and no audit record ever holds a secret or a code", async () => {
  const r = await tp.call("GET", "/v1/auth/mfa");
  assert.equal(r.status, 403);
  assert.equal(r.body.code, "ERR_FORBIDDEN");
  const all = await tp.call("GET", "/v1/auditLogs?limit=1000");
  const text = JSON.stringify(all.body);
  assert.ok(secrets.length > 20);
  for (const s of secrets) {
    assert.ok(!text.includes(s), "a secret or recovery code is in the audit log");
    assert.ok(!text.includes(s.replace(/-/g, "").toUpperCase()));
  }
});
