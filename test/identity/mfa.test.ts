import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { Secret, TOTP } from "otpauth";
import { startTestStore } from "../support/pg.js";
import type { Db } from "../../src/store/db.js";
import { createSession } from "../../src/identity/sessions.js";
import { createUser } from "../../src/identity/users.js";
import {
  RECOVERY_CODE_COUNT,
  beginTotpEnrollment,
  checkMfaGate,
  checkStepUp,
  confirmTotpEnrollment,
  listFactors,
  mfaSessionState,
  regenerateRecoveryCodes,
  removeFactor,
  updateOrgMfaPolicy,
  useRecoveryCode,
  verifyTotp,
  type MfaSessionState,
} from "../../src/identity/mfa.js";
import { FakeClock, email, makeOrg, rejectsWith } from "./helpers.js";

/** The code an authenticator app shows for this secret at this time (SHA-1, 6 digits, 30 s). */
function codeAt(secret: string, ms: number): string {
  return new TOTP({ secret: Secret.fromBase32(secret), algorithm: "SHA1", digits: 6, period: 30 }).generate({ timestamp: ms });
}

describe("second factors", () => {
  let store: Awaited<ReturnType<typeof startTestStore>>;
  let db: Db;
  let orgId: string;
  // Mid-step, so "30 s earlier" is exactly one step back.
  const clock = new FakeClock(Date.parse("2030-01-01T00:00:15.000Z"));

  before(async () => {
    store = await startTestStore();
    db = store.db;
    orgId = await makeOrg(db);
  });
  after(async () => {
    await store?.stop();
  });

  async function userWithSession() {
    const e = email("mfa");
    const u = await createUser(db, { orgId, email: e, firstName: "", lastName: "", passwordHash: null });
    const s = await createSession(db, { userId: u.userID, orgId, sourceIp: "192.0.2.9", ttlSeconds: 86400 }, clock.now);
    return { userId: u.userID, email: e, sessionId: s.sessionID };
  }

  /** A user with a confirmed TOTP authenticator; answers its secret and recovery codes. */
  async function enrolled() {
    const u = await userWithSession();
    const e = await beginTotpEnrollment(db, { userId: u.userId, email: u.email, issuer: "parhelion" }, clock.now);
    const r = await confirmTotpEnrollment(db, { userId: u.userId, sessionId: u.sessionId, code: codeAt(e.secret, clock.ms) }, clock.now);
    clock.advance(30); // the confirming code's step is spent
    return { ...u, secret: e.secret, recoveryCodes: r.recoveryCodes!, factorID: r.factorID };
  }

  test("TOTP enrollment hands out a 160-bit base32 secret, an otpauth URI with the app defaults and an SVG QR code", async () => {
    const u = await userWithSession();
    const e = await beginTotpEnrollment(db, { userId: u.userId, email: u.email, issuer: "parhelion", name: "phone" }, clock.now);
    assert.match(e.secret, /^[A-Z2-7]{32}$/);
    const uri = new URL(e.otpauthURI);
    assert.equal(uri.protocol, "otpauth:");
    assert.equal(uri.host, "totp");
    assert.equal(decodeURIComponent(uri.pathname), `/parhelion:${u.email}`);
    assert.equal(uri.searchParams.get("secret"), e.secret);
    assert.equal(uri.searchParams.get("issuer"), "parhelion");
    assert.equal(uri.searchParams.get("algorithm"), "SHA1");
    assert.equal(uri.searchParams.get("digits"), "6");
    assert.equal(uri.searchParams.get("period"), "30");
    assert.match(e.qrCodeSvg, /^<svg[^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    // Not a factor until confirmed.
    assert.deepEqual((await listFactors(db, u.userId)).factors, []);
    assert.equal((await mfaSessionState(db, u.sessionId)).enrolled, false);
  });

  test("confirming needs a current code; it verifies the session and issues ten distinct single-use recovery codes", async () => {
    const u = await userWithSession();
    const e = await beginTotpEnrollment(db, { userId: u.userId, email: u.email, issuer: "parhelion" }, clock.now);
    const wrong = codeAt(e.secret, clock.ms) === "000000" ? "111111" : "000000";
    await rejectsWith(confirmTotpEnrollment(db, { userId: u.userId, sessionId: u.sessionId, code: wrong }, clock.now), "ERR_MFA_INVALID");
    assert.equal((await mfaSessionState(db, u.sessionId)).enrolled, false, "a wrong code enrolls nothing");
    const r = await confirmTotpEnrollment(db, { userId: u.userId, sessionId: u.sessionId, code: codeAt(e.secret, clock.ms) }, clock.now);
    assert.equal(r.recoveryCodes?.length, RECOVERY_CODE_COUNT);
    assert.equal(new Set(r.recoveryCodes).size, RECOVERY_CODE_COUNT);
    for (const c of r.recoveryCodes!) assert.match(c, /^[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}$/);
    const state = await mfaSessionState(db, u.sessionId);
    assert.equal(state.enrolled, true);
    assert.equal(state.verifiedAt?.getTime(), clock.ms);
    const list = await listFactors(db, u.userId);
    assert.equal(list.factors.length, 1);
    assert.equal(list.factors[0]!.type, "totp");
    assert.equal(list.recoveryCodesRemaining, RECOVERY_CODE_COUNT);
    assert.ok(!JSON.stringify(list).includes(e.secret), "the factor list never carries the secret");
    // Stored hashed: no code appears in the table.
    const rows = await db.selectFrom("mfa_recovery_codes").select("code_hash").where("user_id", "=", u.userId).execute();
    const dump = rows.map((x) => x.code_hash.toString("hex") + x.code_hash.toString("latin1")).join();
    for (const c of r.recoveryCodes!) assert.ok(!dump.includes(c.replace(/-/g, "").toUpperCase()));
    // A second authenticator needs the first removed.
    await rejectsWith(beginTotpEnrollment(db, { userId: u.userId, email: u.email, issuer: "parhelion" }, clock.now), "ERR_CONFLICT");
  });

  test("an enrollment left unconfirmed for more than 10 minutes expires", async () => {
    const u = await userWithSession();
    const e = await beginTotpEnrollment(db, { userId: u.userId, email: u.email, issuer: "parhelion" }, clock.now);
    clock.advance(601);
    await rejectsWith(confirmTotpEnrollment(db, { userId: u.userId, sessionId: u.sessionId, code: codeAt(e.secret, clock.ms) }, clock.now), "ERR_MFA_INVALID", /No TOTP enrollment/);
  });

  test("a TOTP code is accepted once: the same code again, or an older one, is refused", async () => {
    const u = await enrolled();
    const code = codeAt(u.secret, clock.ms);
    await verifyTotp(db, { userId: u.userId, sessionId: u.sessionId, code }, clock.now);
    await rejectsWith(verifyTotp(db, { userId: u.userId, sessionId: u.sessionId, code }, clock.now), "ERR_MFA_INVALID");
    // The previous step's code is inside the ±1 window but older than the spent one.
    await rejectsWith(verifyTotp(db, { userId: u.userId, sessionId: u.sessionId, code: codeAt(u.secret, clock.ms - 30_000) }, clock.now), "ERR_MFA_INVALID");
    // The next step's code (clock drift) works, and then the current one no longer does.
    await verifyTotp(db, { userId: u.userId, sessionId: u.sessionId, code: codeAt(u.secret, clock.ms + 30_000) }, clock.now);
    clock.advance(30);
    await rejectsWith(verifyTotp(db, { userId: u.userId, sessionId: u.sessionId, code: codeAt(u.secret, clock.ms) }, clock.now), "ERR_MFA_INVALID");
    clock.advance(30);
    await verifyTotp(db, { userId: u.userId, sessionId: u.sessionId, code: codeAt(u.secret, clock.ms) }, clock.now);
  });

  test("codes from one step back are accepted (clock drift) but two steps back are expired", async () => {
    const u = await enrolled();
    clock.advance(300);
    await rejectsWith(verifyTotp(db, { userId: u.userId, sessionId: u.sessionId, code: codeAt(u.secret, clock.ms - 60_000) }, clock.now), "ERR_MFA_INVALID");
    await rejectsWith(verifyTotp(db, { userId: u.userId, sessionId: u.sessionId, code: codeAt(u.secret, clock.ms + 60_000) }, clock.now), "ERR_MFA_INVALID");
    const at = await verifyTotp(db, { userId: u.userId, sessionId: u.sessionId, code: codeAt(u.secret, clock.ms - 30_000) }, clock.now);
    assert.equal(at.getTime(), clock.ms);
    assert.equal((await mfaSessionState(db, u.sessionId)).verifiedAt?.getTime(), clock.ms);
  });

  test("malformed codes and a user without an authenticator get the same ERR_MFA_INVALID", async () => {
    const u = await enrolled();
    for (const code of ["", "12345", "1234567", "abcdef", "12 34 5x"]) {
      await rejectsWith(verifyTotp(db, { userId: u.userId, sessionId: u.sessionId, code }, clock.now), "ERR_MFA_INVALID", "The code is wrong, expired or already used.");
    }
    const none = await userWithSession();
    await rejectsWith(verifyTotp(db, { userId: none.userId, sessionId: none.sessionId, code: codeAt(u.secret, clock.ms) }, clock.now), "ERR_MFA_INVALID", "The code is wrong, expired or already used.");
  });

  test("a recovery code works once, in any case and with or without dashes; regenerating voids the old ones", async () => {
    const u = await enrolled();
    const [first, second] = u.recoveryCodes;
    const r = await useRecoveryCode(db, { userId: u.userId, sessionId: u.sessionId, code: first! }, clock.now);
    assert.equal(r.remaining, RECOVERY_CODE_COUNT - 1);
    await rejectsWith(useRecoveryCode(db, { userId: u.userId, sessionId: u.sessionId, code: first! }, clock.now), "ERR_MFA_INVALID");
    const r2 = await useRecoveryCode(db, { userId: u.userId, sessionId: u.sessionId, code: second!.replace(/-/g, "").toUpperCase() }, clock.now);
    assert.equal(r2.remaining, RECOVERY_CODE_COUNT - 2);
    await rejectsWith(useRecoveryCode(db, { userId: u.userId, sessionId: u.sessionId, code: "not-a-code" }, clock.now), "ERR_MFA_INVALID");
    // Another user's code is not this user's.
    const other = await enrolled();
    await rejectsWith(useRecoveryCode(db, { userId: u.userId, sessionId: u.sessionId, code: other.recoveryCodes[0]! }, clock.now), "ERR_MFA_INVALID");
    const fresh = await regenerateRecoveryCodes(db, u.userId);
    assert.equal(fresh.length, RECOVERY_CODE_COUNT);
    await rejectsWith(useRecoveryCode(db, { userId: u.userId, sessionId: u.sessionId, code: u.recoveryCodes[2]! }, clock.now), "ERR_MFA_INVALID");
    assert.equal((await useRecoveryCode(db, { userId: u.userId, sessionId: u.sessionId, code: fresh[0]! }, clock.now)).remaining, RECOVERY_CODE_COUNT - 1);
  });

  test("recovery codes cannot be generated without a factor, and go away with the last one", async () => {
    const none = await userWithSession();
    await rejectsWith(regenerateRecoveryCodes(db, none.userId), "ERR_CONFLICT");
    const u = await enrolled();
    await rejectsWith(removeFactor(db, u.userId, none.userId), "ERR_NOT_FOUND");
    const other = await enrolled();
    await rejectsWith(removeFactor(db, u.userId, other.factorID), "ERR_NOT_FOUND", "factor not found");
    const r = await removeFactor(db, u.userId, u.factorID);
    assert.deepEqual(r, { type: "totp", name: "Authenticator app", remainingFactors: 0 });
    assert.equal((await listFactors(db, u.userId)).recoveryCodesRemaining, 0);
    await rejectsWith(useRecoveryCode(db, { userId: u.userId, sessionId: u.sessionId, code: u.recoveryCodes[0]! }, clock.now), "ERR_MFA_INVALID");
    assert.equal((await mfaSessionState(db, u.sessionId)).enrolled, false);
  });

  test("the gate: a pending session may only verify; a user without a factor under mfaRequired may only enroll", () => {
    const base: MfaSessionState = { userId: "u", enrolled: true, verifiedAt: null, orgRequired: false, stepUpMinutes: 10 };
    assert.throws(() => checkMfaGate(base, undefined), { code: "ERR_MFA_REQUIRED" });
    assert.throws(() => checkMfaGate(base, ["enroll"]), { code: "ERR_MFA_REQUIRED" });
    assert.doesNotThrow(() => checkMfaGate(base, ["verify"]));
    assert.doesNotThrow(() => checkMfaGate({ ...base, verifiedAt: new Date() }, undefined));
    const lacking = { ...base, enrolled: false, orgRequired: true };
    assert.throws(() => checkMfaGate(lacking, undefined), { code: "ERR_MFA_ENROLLMENT_REQUIRED" });
    assert.throws(() => checkMfaGate(lacking, ["verify"]), { code: "ERR_MFA_ENROLLMENT_REQUIRED" });
    assert.doesNotThrow(() => checkMfaGate(lacking, ["enroll"]));
    assert.doesNotThrow(() => checkMfaGate({ ...lacking, orgRequired: false }, undefined));
  });

  test("step-up: a verification older than the window, or none, is refused; a user without a factor passes", () => {
    const now = new Date(Date.parse("2030-06-01T12:00:00Z"));
    const s: MfaSessionState = { userId: "u", enrolled: true, verifiedAt: new Date(now.getTime() - 10 * 60_000), orgRequired: false, stepUpMinutes: 10 };
    assert.doesNotThrow(() => checkStepUp(s, now));
    assert.throws(() => checkStepUp({ ...s, verifiedAt: new Date(now.getTime() - 10 * 60_000 - 1) }, now), { code: "ERR_STEP_UP_REQUIRED" });
    assert.throws(() => checkStepUp({ ...s, verifiedAt: null }, now), { code: "ERR_STEP_UP_REQUIRED" });
    assert.doesNotThrow(() => checkStepUp({ ...s, stepUpMinutes: 60, verifiedAt: new Date(now.getTime() - 59 * 60_000) }, now));
    assert.doesNotThrow(() => checkStepUp({ ...s, enrolled: false, verifiedAt: null }, now));
  });

  test("the organization policy is read with the session and bounded", async () => {
    const u = await userWithSession();
    assert.deepEqual(await updateOrgMfaPolicy(db, orgId, {}), { mfaRequired: false, mfaStepUpMinutes: 10 });
    await rejectsWith(updateOrgMfaPolicy(db, orgId, { mfaStepUpMinutes: 0 }), "ERR_VALIDATION");
    await rejectsWith(updateOrgMfaPolicy(db, orgId, { mfaStepUpMinutes: 1441 }), "ERR_VALIDATION");
    try {
      assert.deepEqual(await updateOrgMfaPolicy(db, orgId, { mfaRequired: true, mfaStepUpMinutes: 5 }), { mfaRequired: true, mfaStepUpMinutes: 5 });
      const s = await mfaSessionState(db, u.sessionId);
      assert.equal(s.orgRequired, true);
      assert.equal(s.stepUpMinutes, 5);
    } finally {
      await updateOrgMfaPolicy(db, orgId, { mfaRequired: false, mfaStepUpMinutes: 10 });
    }
  });
});
