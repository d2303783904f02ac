import { z } from "zod";
import { defineRoute } from "../route.js";
import { Id, Email } from "../schemas.js";
import { ParhelionError } from "../../lib/errors.js";
import { assertPasswordSignInAllowed } from "../../identity/sso.js";
import { ORG_ROLES } from "../../identity/types.js";
import { SESSION_COOKIE, changePassword, createSession, listFactors, revokeSession, verifyUserPassword } from "../../identity/index.js";

const WhoAmI = z.object({
  kind: z.enum(["user", "apiKey"]), orgID: Id, userID: Id.nullable(), email: z.string().nullable(), apiKeyID: Id.nullable(), sessionID: Id.nullable(), roles: z.array(z.enum(ORG_ROLES)),
  mfa: z.object({ enrolled: z.boolean(), verified: z.boolean(), verifiedAt: z.string().nullable(), enrollmentRequired: z.boolean() }).nullable().describe("A console session's second-factor state; null for API keys."),
});

export const authRoutes = [
  defineRoute({
    method: "POST", path: "/v1/auth/login", operationId: "login", tag: "Authentication", auditType: "Login",
    summary: "Signs in with email and password; sets an HttpOnly session cookie and returns the CSRF token for mutating calls.", access: "public",
    body: z.object({ email: Email, password: z.string().min(1).max(1024) }).strict(),
    response: z.object({
      sessionID: Id, csrfToken: z.string(), expiresAt: z.string(), userID: Id, orgID: Id,
      mfaRequired: z.boolean().describe("The user has a second factor: this session can only verify it (POST /v1/auth/mfa/...) until it does."),
      mfaVerified: z.boolean(),
      mfaMethods: z.array(z.enum(["totp", "webauthn", "recovery"])).describe("How this user can verify."),
      mfaEnrollmentRequired: z.boolean().describe("The organization requires a second factor the user lacks: this session can only enroll one."),
    }),
    handler: async ({ body, services, req, reply, audit }) => {
      const ip = req.socket.remoteAddress ?? req.ip;
      const account = body.email.toLowerCase();
      audit.actor = { type: "anonymous", email: account };
      services.throttle.check({ account, source: ip });
      let user: Awaited<ReturnType<typeof verifyUserPassword>>;
      try {
        user = await verifyUserPassword(services.db, account, body.password);
      } catch (err) {
        if (err instanceof ParhelionError && err.code === "ERR_INVALID_CREDENTIALS") services.throttle.recordFailure({ account, source: ip });
        throw err;
      }
      await assertPasswordSignInAllowed(services.db, user); // an SSO-only organization: break-glass owners only
      services.throttle.recordSuccess({ account });
      const s = await createSession(services.db, { userId: user.userID, orgId: user.orgId, sourceIp: ip, ttlSeconds: services.settings.sessionTtlSeconds }, services.clock);
      audit.actor = { type: "user", id: user.userID, email: user.email };
      audit.orgId = user.orgId;
      audit.resource = { type: "Session", id: s.sessionID };
      const { factors, recoveryCodesRemaining } = await listFactors(services.db, user.userID);
      const methods = [...new Set(factors.map((f) => f.type))] as Array<"totp" | "webauthn" | "recovery">;
      if (factors.length > 0 && recoveryCodesRemaining > 0) methods.push("recovery");
      const orgRequired = (await services.db.selectFrom("organizations").select("mfa_required").where("id", "=", user.orgId).executeTakeFirst())?.mfa_required ?? false;
      const mfa = { mfaRequired: factors.length > 0, mfaVerified: false, mfaMethods: methods, mfaEnrollmentRequired: factors.length === 0 && orgRequired };
      audit.attributes = { mfa: mfa.mfaRequired ? "pending" : mfa.mfaEnrollmentRequired ? "enrollment-required" : "none" };
      reply.setCookie(SESSION_COOKIE, s.token, { httpOnly: true, secure: true, sameSite: "strict", path: "/", maxAge: services.settings.sessionTtlSeconds });
      return { sessionID: s.sessionID, csrfToken: s.csrfToken, expiresAt: s.expiresAt, userID: user.userID, orgID: user.orgId, ...mfa };
    },
  }),
  defineRoute({
    method: "POST", path: "/v1/auth/logout", operationId: "logout", tag: "Authentication", auditType: "Logout",
    summary: "Ends the current console session.", access: "authenticated", allowBeforeMfa: ["verify", "enroll"], response: z.object({ sessionID: Id.nullable() }),
    handler: async ({ principal, services, reply, audit }) => {
      if (principal!.sessionId) {
        await revokeSession(services.db, principal!.sessionId);
        audit.resource = { type: "Session", id: principal!.sessionId };
      }
      reply.clearCookie(SESSION_COOKIE, { path: "/", httpOnly: true, secure: true, sameSite: "strict" });
      return { sessionID: principal!.sessionId };
    },
  }),
  defineRoute({
    method: "GET", path: "/v1/auth/whoami", operationId: "whoAmI", tag: "Authentication",
    summary: "The caller: user or API key, organization and roles.", access: "authenticated", allowBeforeMfa: ["verify", "enroll"], response: WhoAmI,
    handler: async ({ principal, grants, mfa }) => ({
      kind: principal!.kind, orgID: principal!.orgId, userID: principal!.userId, email: principal!.email, apiKeyID: principal!.apiKeyId,
      sessionID: principal!.sessionId, roles: ORG_ROLES.filter((r) => grants.orgRoles.has(r)),
      mfa: mfa === null ? null : { enrolled: mfa.enrolled, verified: mfa.verifiedAt !== null, verifiedAt: mfa.verifiedAt?.toISOString() ?? null, enrollmentRequired: mfa.orgRequired && !mfa.enrolled },
    }),
  }),
  defineRoute({
    method: "POST", path: "/v1/auth/password", operationId: "changePassword", tag: "Authentication", auditType: "PasswordChange",
    summary: "Changes the caller's password (the current one is required once one is set); ends the user's other sessions.", access: "authenticated",
    body: z.object({ currentPassword: z.string().max(1024).optional(), newPassword: z.string().min(1).max(1024) }).strict(),
    response: z.object({ userID: Id }),
    handler: async ({ body, principal, services, audit }) => {
      if (principal!.userId === null || principal!.email === null) throw new ParhelionError("ERR_FORBIDDEN", "this credential has no user whose password could change");
      audit.resource = { type: "User", id: principal!.userId };
      await changePassword(services.db, { userId: principal!.userId, email: principal!.email ?? undefined, currentPassword: body.currentPassword ?? null, newPassword: body.newPassword, exceptSessionID: principal!.sessionId });
      return { userID: principal!.userId };
    },
  }),
];
