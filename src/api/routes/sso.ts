import { z } from "zod";
import type { FastifyReply, FastifyRequest } from "fastify";
import { defineRoute, Redirect, type AuditNote } from "../route.js";
import { Id } from "../schemas.js";
import { ParhelionError } from "../../lib/errors.js";
import type { Services } from "../context.js";
import { SESSION_COOKIE, createSession, listFactors } from "../../identity/index.js";
import {
  SSO_BINDING_COOKIE,
  SSO_ROLES,
  SSO_TRANSACTION_TTL_SECONDS,
  completeSsoLogin,
  deleteSsoConfig,
  getSsoConfig,
  putSsoConfig,
  redeemSsoHandoff,
  startSsoLogin,
  type SsoTrail,
} from "../../identity/sso.js";

// eslint-disable-next-line no-control-regex
const Printable = (max: number) => z.string().min(1).max(max).regex(/^[^\u0000-\u001f\u007f]*$/, { message: "must not contain control characters" });
const ClaimName = z.string().min(1).max(128).regex(/^[A-Za-z0-9_:.\/-]+$/, { message: "must be a claim name (letters, digits, _ : . / -)" });
const Scope = z.string().min(1).max(128).regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, { message: "must be an OAuth scope token" });
const Group = Printable(256);
const Role = z.enum(SSO_ROLES, { message: `must be one of ${SSO_ROLES.join(", ")} (Owner is granted by hand only)` });

const Claims = z.object({ email: ClaimName, groups: ClaimName, firstName: ClaimName, lastName: ClaimName }).strict();

const SsoConfigBody = z.object({
  issuer: z.string().max(2048).describe("The IdP's issuer identifier (https); its discovery document must name exactly this issuer."),
  clientID: Printable(255),
  clientSecret: z.string().min(1).max(1024).nullable().optional().describe("Write-only. Omit to keep the stored secret; null for a public client (PKCE only)."),
  redirectURI: z.string().max(2048).describe("This API's https://HOST:PORT/v1/auth/sso/callback as registered at the IdP."),
  caPem: z.string().max(65536).nullable().optional().describe("PEM certificates trusted for the IdP's TLS in addition to the system roots."),
  scopes: z.array(Scope).min(1).max(20).optional().describe('Default ["openid","email","profile"]; must include openid.'),
  claims: Claims.partial().strict().optional().describe("Claim names: email (email), groups (groups), firstName (given_name), lastName (family_name)."),
  jit: z.boolean().optional().describe("Create users on their first sign-in (default true)."),
  defaultRole: Role.nullable().optional().describe("Role of a user whose groups match no role mapping (default Member; null refuses them)."),
  teamMappings: z.array(z.object({ group: Group, teamID: Id }).strict()).max(200).optional(),
  roleMappings: z.array(z.object({ group: Group, role: Role }).strict()).max(200).optional(),
  ssoOnly: z.boolean().optional().describe("Refuse password sign-in except for the break-glass owners (Owner only)."),
  breakGlassUserIDs: z.array(Id).max(20).optional().describe("Owners who may still sign in with a password under ssoOnly (Owner only)."),
}).strict();

const SsoConfigView = z.object({
  organizationID: Id, issuer: z.string(), clientID: z.string(), clientSecretSet: z.boolean(), redirectURI: z.string(), caPem: z.string().nullable(),
  scopes: z.array(z.string()), claims: Claims, jit: z.boolean(), defaultRole: Role.nullable(),
  teamMappings: z.array(z.object({ group: z.string(), teamID: Id })), roleMappings: z.array(z.object({ group: z.string(), role: Role })),
  ssoOnly: z.boolean(), breakGlassUserIDs: z.array(Id), createdAt: z.string(), updatedAt: z.string(),
});

const SessionAnswer = z.object({
  sessionID: Id, csrfToken: z.string(), expiresAt: z.string(), userID: Id, orgID: Id,
  mfaRequired: z.boolean().describe("As for POST /v1/auth/login: the user has a parhelion second factor this session must verify first."),
  mfaVerified: z.boolean(),
  mfaMethods: z.array(z.enum(["totp", "webauthn", "recovery"])),
  mfaEnrollmentRequired: z.boolean(),
});

function ipOf(req: FastifyRequest): string {
  return req.socket.remoteAddress ?? req.ip;
}

/** Copies what a sign-in step learned into its audit record, and counts a refused attempt against the source. */
async function audited<T>(services: Services, req: FastifyRequest, audit: AuditNote, step: (trail: SsoTrail) => Promise<T>): Promise<T> {
  const trail: SsoTrail = {};
  try {
    return await step(trail);
  } catch (err) {
    if (err instanceof ParhelionError && err.code === "ERR_SSO_FAILED") {
      services.throttle.recordFailure({ source: ipOf(req) });
      trail["reason"] = err.details?.["reason"];
    }
    throw err;
  } finally {
    if (typeof trail["orgId"] === "string") audit.orgId = trail["orgId"];
    const email = typeof trail["email"] === "string" ? trail["email"] : undefined;
    audit.actor ??= { type: "anonymous", ...(email ? { email } : {}) };
    audit.attributes = { ...(audit.attributes ?? {}), ...trail };
  }
}

/** Opens a console session exactly as password sign-in does: HttpOnly SameSite=Strict cookie, CSRF token in the answer. */
async function openSession(services: Services, req: FastifyRequest, reply: FastifyReply, audit: AuditNote, user: { userId: string; orgId: string; email: string }) {
  const s = await createSession(services.db, { userId: user.userId, orgId: user.orgId, sourceIp: ipOf(req), ttlSeconds: services.settings.sessionTtlSeconds }, services.clock);
  audit.actor = { type: "user", id: user.userId, email: user.email };
  audit.orgId = user.orgId;
  audit.resource = { type: "Session", id: s.sessionID };
  // The session passes parhelion's MFA gate like a password session; the answer says so the same way.
  const { factors, recoveryCodesRemaining } = await listFactors(services.db, user.userId);
  const methods = [...new Set(factors.map((f) => f.type))] as Array<"totp" | "webauthn" | "recovery">;
  if (factors.length > 0 && recoveryCodesRemaining > 0) methods.push("recovery");
  const orgRequired = (await services.db.selectFrom("organizations").select("mfa_required").where("id", "=", user.orgId).executeTakeFirst())?.mfa_required ?? false;
  const mfa = { mfaRequired: factors.length > 0, mfaVerified: false, mfaMethods: methods, mfaEnrollmentRequired: factors.length === 0 && orgRequired };
  audit.attributes = { ...(audit.attributes ?? {}), mfa: mfa.mfaRequired ? "pending" : mfa.mfaEnrollmentRequired ? "enrollment-required" : "none" };
  reply.setCookie(SESSION_COOKIE, s.token, { httpOnly: true, secure: true, sameSite: "strict", path: "/", maxAge: services.settings.sessionTtlSeconds });
  return { sessionID: s.sessionID, csrfToken: s.csrfToken, expiresAt: s.expiresAt, userID: user.userId, orgID: user.orgId, ...mfa };
}

export const ssoRoutes = [
  defineRoute({
    method: "GET", path: "/v1/organizations/current/sso", operationId: "getSsoConfig", tag: "Single sign-on",
    summary: "The organization's OpenID Connect identity provider settings (the client secret is never shown).", access: "sso:read",
    response: SsoConfigView,
    handler: async ({ principal, services }) => getSsoConfig(services.db, principal!.orgId),
  }),
  defineRoute({
    method: "PUT", path: "/v1/organizations/current/sso", operationId: "putSsoConfig", tag: "Single sign-on", auditType: "SsoConfigUpdate",
    summary: "Creates or replaces the identity provider settings, mappings and the SSO-only policy (ssoOnly and break-glass owners: Owner only).",
    access: "sso:write", body: SsoConfigBody, response: SsoConfigView,
    handler: async ({ body, principal, grants, services, audit }) => {
      audit.resource = { type: "Organization", id: principal!.orgId };
      audit.attributes = {
        issuer: body.issuer, clientID: body.clientID, clientSecret: body.clientSecret === undefined ? "kept" : body.clientSecret === null ? "removed" : "set",
        jit: body.jit ?? true, defaultRole: body.defaultRole === undefined ? "Member" : body.defaultRole, teamMappings: body.teamMappings?.length ?? 0,
        roleMappings: body.roleMappings?.length ?? 0, ssoOnly: body.ssoOnly ?? false, breakGlassUserIDs: body.breakGlassUserIDs ?? [],
      };
      return putSsoConfig(services.db, principal!.orgId, body, grants.orgRoles, services.clock);
    },
  }),
  defineRoute({
    method: "DELETE", path: "/v1/organizations/current/sso", operationId: "deleteSsoConfig", tag: "Single sign-on", auditType: "SsoConfigDelete",
    summary: "Removes the identity provider settings and the SSO-only policy; users and their links stay.", access: "sso:write",
    response: SsoConfigView,
    handler: async ({ principal, grants, services, audit }) => {
      audit.resource = { type: "Organization", id: principal!.orgId };
      return deleteSsoConfig(services.db, principal!.orgId, grants.orgRoles);
    },
  }),
  defineRoute({
    method: "POST", path: "/v1/auth/sso/start", operationId: "startSsoLogin", tag: "Single sign-on", auditType: "SsoLoginStart",
    summary: "Starts an OpenID Connect sign-in: answers the identity provider's authorization URL (state, nonce and PKCE are kept server-side).",
    access: "public",
    body: z.object({
      organizationID: Id.optional().describe("Optional when only one organization of the install has SSO."),
      redirect: z.string().max(512).optional().describe("A console path to return to, or a CLI's loopback URL http://127.0.0.1:PORT/... (needs clientChallenge)."),
      clientChallenge: z.string().max(64).optional().describe("CLI: base64url SHA-256 of a verifier it sends to /v1/auth/sso/token."),
    }).strict(),
    response: z.object({ organizationID: Id, authorizationURL: z.string(), expiresAt: z.string() }),
    handler: async ({ body, services, req, reply, audit }) => {
      services.throttle.check({ source: ipOf(req) });
      const s = await audited(services, req, audit, (trail) => startSsoLogin(services.db, { orgId: body.organizationID, redirect: body.redirect, clientChallenge: body.clientChallenge, sourceIp: ipOf(req) }, services.clock, trail));
      if (s.bindingToken !== null) {
        // Lax: the IdP sends the browser back with a cross-site top-level GET.
        reply.setCookie(SSO_BINDING_COOKIE, s.bindingToken, { httpOnly: true, secure: true, sameSite: "lax", path: "/v1/auth/sso/callback", maxAge: SSO_TRANSACTION_TTL_SECONDS });
      }
      return { organizationID: s.orgId, authorizationURL: s.authorizationURL, expiresAt: s.expiresAt };
    },
  }),
  defineRoute({
    method: "GET", path: "/v1/auth/sso/callback", operationId: "ssoCallback", tag: "Single sign-on", auditType: "SsoLogin", signIn: true,
    summary: "The redirect URI registered at the identity provider: verifies the answer and opens a console session (or, for a CLI, sends the browser to its loopback listener with a one-time code).",
    access: "public",
    query: z.object({
      state: z.string().max(512).optional(), code: z.string().max(4096).optional(), iss: z.string().max(2048).optional(),
      error: z.string().max(256).optional(), error_description: z.string().max(1024).optional(),
    }).catchall(z.string().max(2048)),
    response: SessionAnswer.extend({ redirect: z.string().nullable() }),
    handler: async ({ query, services, req, reply, audit }) => {
      services.throttle.check({ source: ipOf(req) });
      const header = req.headers.cookie;
      const binding = header === undefined ? undefined : req.server.parseCookie(header)[SSO_BINDING_COOKIE];
      const r = await audited(services, req, audit, async (trail) => {
        const done = await completeSsoLogin(services.db, { query, bindingCookie: binding }, services.clock, trail);
        Object.assign(trail, { mode: done.mode, created: done.created, linked: done.linked, role: done.role, rolesRemoved: done.rolesRemoved, teamsAdded: done.teamsAdded, teamsRemoved: done.teamsRemoved });
        return done;
      });
      audit.actor = { type: "user", id: r.userId, email: r.email };
      audit.resource = { type: "User", id: r.userId };
      if (r.mode === "cli") return new Redirect(r.location);
      reply.clearCookie(SSO_BINDING_COOKIE, { path: "/v1/auth/sso/callback", httpOnly: true, secure: true, sameSite: "lax" });
      return { ...(await openSession(services, req, reply, audit, r)), redirect: r.redirect };
    },
  }),
  defineRoute({
    method: "POST", path: "/v1/auth/sso/token", operationId: "redeemSsoCode", tag: "Single sign-on", auditType: "SsoSessionExchange",
    summary: "CLI: exchanges the one-time code its loopback listener received (with its verifier) for a console session.",
    access: "public",
    body: z.object({ code: z.string().max(128), codeVerifier: z.string().min(43).max(128) }).strict(),
    response: SessionAnswer,
    handler: async ({ body, services, req, reply, audit }) => {
      services.throttle.check({ source: ipOf(req) });
      const r = await audited(services, req, audit, (trail) => redeemSsoHandoff(services.db, body, services.clock, trail));
      const user = await services.db.selectFrom("users").select("email").where("id", "=", r.userId).executeTakeFirst();
      return openSession(services, req, reply, audit, { ...r, email: user?.email ?? "" });
    },
  }),
];
