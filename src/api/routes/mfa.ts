import { z } from "zod";
import type { FastifyRequest } from "fastify";
import { defineRoute } from "../route.js";
import { Id } from "../schemas.js";
import type { Services } from "../context.js";
import { ParhelionError } from "../../lib/errors.js";
import type { Principal } from "../../identity/types.js";
import {
  beginTotpEnrollment,
  beginWebAuthnAuthentication,
  beginWebAuthnRegistration,
  confirmTotpEnrollment,
  finishWebAuthnAuthentication,
  finishWebAuthnRegistration,
  getUser,
  listFactors,
  regenerateRecoveryCodes,
  removeFactor,
  resetUserMfa,
  revokeUserSessions,
  useRecoveryCode,
  verifyTotp,
  WebAuthnRejected,
  type MfaSessionState,
} from "../../identity/index.js";
import { identityRolesOfUser } from "../../rbac/grants.js";

// Second factors of the caller's own console session, under /v1/auth/mfa (like the rest of the caller's
// sign-in: /v1/auth/login, /v1/auth/password), plus an administrator's reset of another user's factors.

const FactorName = z.string().trim().min(1).max(64).regex(/^[^\u0000-\u001f\u007f]*$/, { message: "must not contain control characters" });
const TotpCode = z.string().trim().min(6).max(16).regex(/^[0-9 -]+$/, { message: "must be the 6 digits the authenticator shows" });
const RecoveryCode = z.string().trim().min(16).max(32).regex(/^[A-Za-z2-7 -]+$/, { message: "must be a recovery code (xxxx-xxxx-xxxx-xxxx)" });
const B64u = z.string().max(65_536).regex(/^[A-Za-z0-9_-]*$/, { message: "must be base64url" });
const Transports = z.array(z.string().max(32)).max(8);
const ExtensionResults = z.record(z.string(), z.unknown());

/** What navigator.credentials.create() answers, serialized (RegistrationResponseJSON). */
const RegistrationCredential = z.object({
  id: B64u.min(1), rawId: B64u.min(1), type: z.literal("public-key"),
  response: z.object({
    clientDataJSON: B64u, attestationObject: B64u, authenticatorData: B64u.optional(), transports: Transports.optional(),
    publicKeyAlgorithm: z.number().int().optional(), publicKey: B64u.optional(),
  }).strict(),
  authenticatorAttachment: z.enum(["platform", "cross-platform"]).optional(),
  clientExtensionResults: ExtensionResults,
}).strict();

/** What navigator.credentials.get() answers, serialized (AuthenticationResponseJSON). */
const AuthenticationCredential = z.object({
  id: B64u.min(1), rawId: B64u.min(1), type: z.literal("public-key"),
  response: z.object({ clientDataJSON: B64u, authenticatorData: B64u, signature: B64u, userHandle: B64u.optional() }).strict(),
  authenticatorAttachment: z.enum(["platform", "cross-platform"]).optional(),
  clientExtensionResults: ExtensionResults,
}).strict();

const Factor = z.object({ factorID: Id, type: z.enum(["totp", "webauthn"]), name: z.string(), createdAt: z.string(), lastUsedAt: z.string().nullable() });
const Verified = z.object({
  sessionID: Id, method: z.enum(["totp", "webauthn", "recovery"]), mfaVerifiedAt: z.string(),
  stepUpFreshUntil: z.string().describe("Until when step-up actions need no new verification."),
});
const Enrolled = z.object({
  factorID: Id, type: z.enum(["totp", "webauthn"]), mfaVerifiedAt: z.string(),
  recoveryCodes: z.array(z.string()).nullable().describe("Issued with the first factor (or when none is left unused): shown once, stored hashed."),
});
const CreationOptions = z.looseObject({ challenge: z.string(), rp: z.object({ id: z.string().optional(), name: z.string() }), user: z.object({ id: z.string(), name: z.string(), displayName: z.string() }), pubKeyCredParams: z.array(z.object({ type: z.string(), alg: z.number() })) });
const RequestOptions = z.looseObject({ challenge: z.string(), rpId: z.string().optional(), allowCredentials: z.array(z.object({ id: z.string(), type: z.string() }).loose()).optional() });

function me(principal: Principal | null): { userId: string; sessionId: string; email: string } {
  // Routes here are access "session": the pipeline has refused everything but a user's console session.
  if (principal === null || principal.userId === null || principal.sessionId === null || principal.email === null) throw new ParhelionError("ERR_FORBIDDEN", "this needs a user's console session");
  return { userId: principal.userId, sessionId: principal.sessionId, email: principal.email };
}

/**
 * Runs one second-factor check under the sign-in throttle: failures count against the user (key
 * `mfa:<userID>`, separate from the password's so a fresh password sign-in does not reset it) and the source
 * address; a success clears the user's count.
 */
async function throttled<T>(services: Services, req: FastifyRequest, userId: string, fn: () => Promise<T>): Promise<T> {
  const subject = { account: `mfa:${userId}`, source: req.socket.remoteAddress ?? req.ip };
  services.throttle.check(subject);
  try {
    const r = await fn();
    services.throttle.recordSuccess({ account: subject.account });
    return r;
  } catch (err) {
    if (err instanceof ParhelionError && err.code === "ERR_MFA_INVALID") services.throttle.recordFailure(subject);
    throw err;
  }
}

function freshUntil(verifiedAt: Date, mfa: MfaSessionState | null): string {
  return new Date(verifiedAt.getTime() + (mfa?.stepUpMinutes ?? 10) * 60_000).toISOString();
}

/** Puts a WebAuthn refusal's reason (origin, RP id, counter, ...: never a secret) in the audit record. */
function noteWebAuthn(err: unknown, audit: { attributes?: Record<string, unknown> }): void {
  if (err instanceof WebAuthnRejected) audit.attributes = { ...(audit.attributes ?? {}), reason: err.reason };
}

export const mfaRoutes = [
  defineRoute({
    method: "GET", path: "/v1/auth/mfa", operationId: "getMfaStatus", tag: "MFA", access: "session", allowBeforeMfa: ["verify", "enroll"],
    summary: "The caller's second factors, whether this session has verified one, and the organization's MFA policy.",
    response: z.object({
      userID: Id, mfaEnrolled: z.boolean(), mfaVerified: z.boolean(), mfaVerifiedAt: z.string().nullable(), mfaRequired: z.boolean().describe("The organization's policy."),
      mfaEnrollmentRequired: z.boolean(), stepUpWindowMinutes: z.number().int(), stepUpFreshUntil: z.string().nullable(), factors: z.array(Factor), recoveryCodesRemaining: z.number().int(),
    }),
    handler: async ({ principal, services, mfa }) => {
      const { userId } = me(principal);
      const state = mfa!;
      const { factors, recoveryCodesRemaining } = await listFactors(services.db, userId);
      return {
        userID: userId, mfaEnrolled: state.enrolled, mfaVerified: state.verifiedAt !== null, mfaVerifiedAt: state.verifiedAt?.toISOString() ?? null,
        mfaRequired: state.orgRequired, mfaEnrollmentRequired: state.orgRequired && !state.enrolled, stepUpWindowMinutes: state.stepUpMinutes,
        stepUpFreshUntil: state.verifiedAt ? freshUntil(state.verifiedAt, state) : null, factors, recoveryCodesRemaining,
      };
    },
  }),
  defineRoute({
    method: "POST", path: "/v1/auth/mfa/totp", operationId: "startTotpEnrollment", tag: "MFA", access: "session", auditType: "MfaTotpEnrollmentStart",
    stepUp: true, allowBeforeMfa: ["enroll"], status: 201,
    summary: "Starts enrolling a TOTP authenticator app: a new secret, its otpauth:// URI and a QR code (SVG). Confirm with a code within 10 minutes.",
    body: z.object({ name: FactorName.optional() }).strict().default({}),
    response: z.object({ factorID: Id, secret: z.string().describe("Base32; shown only in this answer."), otpauthURI: z.string(), qrCodeSvg: z.string(), expiresAt: z.string() }),
    handler: async ({ body, principal, services, audit }) => {
      const { userId, email } = me(principal);
      const e = await beginTotpEnrollment(services.db, { userId, email, issuer: services.settings.mfa.issuer, name: body.name }, services.clock);
      audit.resource = { type: "MfaFactor", id: e.factorID };
      audit.attributes = { factorType: "totp" };
      return e;
    },
  }),
  defineRoute({
    method: "POST", path: "/v1/auth/mfa/totp/confirm", operationId: "confirmTotpEnrollment", tag: "MFA", access: "session", auditType: "MfaTotpEnroll",
    stepUp: true, allowBeforeMfa: ["enroll"], status: 201,
    summary: "Confirms the TOTP enrollment with a current code; the session counts as verified. The first factor also brings recovery codes (shown once).",
    body: z.object({ code: TotpCode }).strict(), response: Enrolled,
    handler: async ({ body, principal, services, req, audit }) => {
      const { userId, sessionId } = me(principal);
      audit.attributes = { factorType: "totp" };
      const r = await throttled(services, req, userId, () => confirmTotpEnrollment(services.db, { userId, sessionId, code: body.code }, services.clock));
      audit.resource = { type: "MfaFactor", id: r.factorID };
      audit.attributes = { factorType: "totp", recoveryCodesIssued: r.recoveryCodes?.length ?? 0 };
      return { factorID: r.factorID, type: "totp", mfaVerifiedAt: services.clock().toISOString(), recoveryCodes: r.recoveryCodes };
    },
  }),
  defineRoute({
    method: "POST", path: "/v1/auth/mfa/totp/verify", operationId: "verifyTotp", tag: "MFA", access: "session", auditType: "MfaVerify", allowBeforeMfa: ["verify"],
    summary: "Verifies a TOTP code: completes a sign-in waiting for its second factor, or refreshes step-up. Each code works once.",
    body: z.object({ code: TotpCode }).strict(), response: Verified,
    handler: async ({ body, principal, services, req, audit, mfa }) => {
      const { userId, sessionId } = me(principal);
      audit.resource = { type: "Session", id: sessionId };
      audit.attributes = { method: "totp", purpose: mfa?.verifiedAt ? "step-up" : "sign-in" };
      const at = await throttled(services, req, userId, () => verifyTotp(services.db, { userId, sessionId, code: body.code }, services.clock));
      return { sessionID: sessionId, method: "totp", mfaVerifiedAt: at.toISOString(), stepUpFreshUntil: freshUntil(at, mfa) };
    },
  }),
  defineRoute({
    method: "POST", path: "/v1/auth/mfa/recovery/verify", operationId: "useRecoveryCode", tag: "MFA", access: "session", auditType: "MfaRecoveryCodeUse", allowBeforeMfa: ["verify"],
    summary: "Spends one recovery code in place of the second factor (each code works once).",
    body: z.object({ code: RecoveryCode }).strict(), response: Verified.extend({ recoveryCodesRemaining: z.number().int() }),
    handler: async ({ body, principal, services, req, audit, mfa }) => {
      const { userId, sessionId } = me(principal);
      audit.resource = { type: "Session", id: sessionId };
      audit.attributes = { method: "recovery", purpose: mfa?.verifiedAt ? "step-up" : "sign-in" };
      const r = await throttled(services, req, userId, () => useRecoveryCode(services.db, { userId, sessionId, code: body.code }, services.clock));
      audit.attributes = { ...audit.attributes, recoveryCodesRemaining: r.remaining };
      return { sessionID: sessionId, method: "recovery", mfaVerifiedAt: r.verifiedAt.toISOString(), stepUpFreshUntil: freshUntil(r.verifiedAt, mfa), recoveryCodesRemaining: r.remaining };
    },
  }),
  defineRoute({
    method: "POST", path: "/v1/auth/mfa/recoveryCodes", operationId: "regenerateRecoveryCodes", tag: "MFA", access: "session", auditType: "MfaRecoveryCodesRegenerate", stepUp: true,
    summary: "Replaces all recovery codes with 10 new ones (shown once; the old ones stop working).",
    response: z.object({ recoveryCodes: z.array(z.string()) }),
    handler: async ({ principal, services, audit }) => {
      const { userId } = me(principal);
      audit.resource = { type: "User", id: userId };
      const recoveryCodes = await regenerateRecoveryCodes(services.db, userId);
      audit.attributes = { recoveryCodesIssued: recoveryCodes.length };
      return { recoveryCodes };
    },
  }),
  defineRoute({
    method: "POST", path: "/v1/auth/mfa/webauthn/registration/options", operationId: "startWebAuthnRegistration", tag: "MFA", access: "session", auditType: "MfaWebAuthnRegistrationStart",
    stepUp: true, allowBeforeMfa: ["enroll"],
    summary: "Options for navigator.credentials.create(): registers a security key or passkey. The challenge is valid for 5 minutes in this session.",
    response: CreationOptions,
    handler: async ({ principal, services, audit }) => {
      const { userId, sessionId, email } = me(principal);
      audit.resource = { type: "Session", id: sessionId };
      audit.attributes = { factorType: "webauthn", rpID: services.settings.mfa.webauthn.rpID };
      return beginWebAuthnRegistration(services.db, services.settings.mfa.webauthn, { userId, email, sessionId }, services.clock);
    },
  }),
  defineRoute({
    method: "POST", path: "/v1/auth/mfa/webauthn/registration", operationId: "finishWebAuthnRegistration", tag: "MFA", access: "session", auditType: "MfaWebAuthnRegister",
    stepUp: true, allowBeforeMfa: ["enroll"], status: 201,
    summary: "Verifies the browser's registration answer and stores the credential; the session counts as verified.",
    body: z.object({ name: FactorName.optional(), credential: RegistrationCredential }).strict(), response: Enrolled,
    handler: async ({ body, principal, services, audit }) => {
      const { userId, sessionId } = me(principal);
      audit.attributes = { factorType: "webauthn" };
      try {
        const r = await finishWebAuthnRegistration(services.db, services.settings.mfa.webauthn, { userId, sessionId, name: body.name, response: body.credential as never }, services.clock);
        audit.resource = { type: "MfaFactor", id: r.factorID };
        audit.attributes = { factorType: "webauthn", recoveryCodesIssued: r.recoveryCodes?.length ?? 0 };
        return { factorID: r.factorID, type: "webauthn", mfaVerifiedAt: services.clock().toISOString(), recoveryCodes: r.recoveryCodes };
      } catch (err) {
        noteWebAuthn(err, audit);
        throw err;
      }
    },
  }),
  defineRoute({
    method: "POST", path: "/v1/auth/mfa/webauthn/authentication/options", operationId: "startWebAuthnAuthentication", tag: "MFA", access: "session", auditType: "MfaWebAuthnChallenge",
    allowBeforeMfa: ["verify"],
    summary: "Options for navigator.credentials.get() with the caller's security keys. The challenge is valid for 5 minutes in this session.",
    response: RequestOptions,
    handler: async ({ principal, services, audit }) => {
      const { userId, sessionId } = me(principal);
      audit.resource = { type: "Session", id: sessionId };
      return beginWebAuthnAuthentication(services.db, services.settings.mfa.webauthn, { userId, sessionId }, services.clock);
    },
  }),
  defineRoute({
    method: "POST", path: "/v1/auth/mfa/webauthn/authentication", operationId: "verifyWebAuthn", tag: "MFA", access: "session", auditType: "MfaVerify", allowBeforeMfa: ["verify"],
    summary: "Verifies a security key's assertion: completes a sign-in waiting for its second factor, or refreshes step-up.",
    body: z.object({ credential: AuthenticationCredential }).strict(), response: Verified,
    handler: async ({ body, principal, services, req, audit, mfa }) => {
      const { userId, sessionId } = me(principal);
      audit.resource = { type: "Session", id: sessionId };
      audit.attributes = { method: "webauthn", purpose: mfa?.verifiedAt ? "step-up" : "sign-in" };
      try {
        const r = await throttled(services, req, userId, () => finishWebAuthnAuthentication(services.db, services.settings.mfa.webauthn, { userId, sessionId, response: body.credential as never }, services.clock));
        audit.attributes = { ...audit.attributes, factorID: r.factorID };
        return { sessionID: sessionId, method: "webauthn", mfaVerifiedAt: r.verifiedAt.toISOString(), stepUpFreshUntil: freshUntil(r.verifiedAt, mfa) };
      } catch (err) {
        noteWebAuthn(err, audit);
        throw err;
      }
    },
  }),
  defineRoute({
    method: "DELETE", path: "/v1/auth/mfa/factors/{factorID}", operationId: "removeMfaFactor", tag: "MFA", access: "session", auditType: "MfaFactorRemove", stepUp: true,
    summary: "Removes one of the caller's factors. Removing the last one also deletes the recovery codes and ends the caller's other sessions that never verified a factor.",
    params: z.object({ factorID: Id }).strict(), response: z.object({ factorID: Id, type: z.enum(["totp", "webauthn"]), remainingFactors: z.number().int() }),
    handler: async ({ params, principal, services, audit }) => {
      const { userId, sessionId } = me(principal);
      audit.resource = { type: "MfaFactor", id: params.factorID };
      const r = await removeFactor(services.db, userId, params.factorID);
      let sessionsEnded = 0;
      if (r.remainingFactors === 0) {
        // A session signed in with the password alone and still waiting for its factor would otherwise be let in.
        sessionsEnded = Number((await services.db.updateTable("sessions").set({ revoked_at: services.clock() }).where("user_id", "=", userId).where("id", "<>", sessionId).where("revoked_at", "is", null).where("mfa_verified_at", "is", null).executeTakeFirst()).numUpdatedRows);
      }
      audit.attributes = { factorType: r.type, remainingFactors: r.remainingFactors, sessionsEnded };
      return { factorID: params.factorID, type: r.type, remainingFactors: r.remainingFactors };
    },
  }),
  defineRoute({
    method: "DELETE", path: "/v1/users/{userID}/mfa", operationId: "resetUserMfa", tag: "MFA", access: "users:write", auditType: "MfaReset", stepUp: true,
    summary: "An administrator's reset for a user who lost their factors: removes all factors and recovery codes and ends all the user's sessions. Only an Owner may reset an Owner.",
    params: z.object({ userID: Id }).strict(), response: z.object({ userID: Id, factorsRemoved: z.number().int(), sessionsEnded: z.number().int() }),
    handler: async ({ params, principal, grants, services, audit }) => {
      audit.resource = { type: "User", id: params.userID };
      await getUser(services.db, principal!.orgId, params.userID);
      const targetIsOwner = (await identityRolesOfUser(services.db, principal!.orgId, params.userID)).some((r) => r.resourceType === "Organization" && r.role === "Owner");
      if (targetIsOwner && !grants.orgRoles.has("Owner")) throw new ParhelionError("ERR_FORBIDDEN", "only an Owner may reset an Owner's second factors");
      const factorsRemoved = await resetUserMfa(services.db, params.userID);
      const sessionsEnded = await revokeUserSessions(services.db, params.userID, { clock: services.clock });
      audit.attributes = { factorsRemoved, sessionsEnded };
      return { userID: params.userID, factorsRemoved, sessionsEnded };
    },
  }),
];
