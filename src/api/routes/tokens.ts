import { z } from "zod";
import { createLocalJWKSet, type JSONWebKeySet } from "jose";
import { defineRoute } from "../route.js";
import { Id } from "../schemas.js";
import { ParhelionError } from "../../lib/errors.js";
import { JWT_ALGORITHMS, PLATFORM_MAX_TTL_SECONDS, type JwtAuthConfig } from "../../gateway/tokens.js";
import { validateTokenRoleName } from "../../engine/sql.js";
import { GroupParams, WorkspaceParams, groupResource, workspaceResource } from "./shared.js";
import type { EffectiveGrants } from "../../rbac/policy.js";


const HttpsUrl = z.string().max(2048).refine((u) => {
  try {
    return new URL(u).protocol === "https:";
  } catch {
    return false;
  }
}, { message: "must be an https:// URL" });
const RoleRef = z.string().regex(/^[A-Za-z_][A-Za-z0-9_$]{0,62}$/, { message: "must be a role name (identifier)" }).refine((r) => !/^(pg_execute_server_program|pg_read_server_files|pg_write_server_files|parhelion_system|parhelion_token_login)$/i.test(r), { message: "is not a role parhelion grants" });
const Jwk = z.record(z.string(), z.unknown());
const Pem = z.string().max(65_536).regex(/-----BEGIN CERTIFICATE-----/, { message: "must hold PEM certificates" });

const JwtAuthInput = z.object({
  jwksEndpoint: HttpsUrl.optional().describe("The issuer's JSON Web Key Set (Helios: jwks_endpoint). Fetched over HTTPS, cached, re-fetched on an unknown key id."),
  jwks: z.object({ keys: z.array(Jwk).min(1).max(100) }).strict().optional().describe("Inline public keys instead of an endpoint."),
  jwksCaPem: Pem.optional().describe("Certificates to trust for jwksEndpoint (a private issuer); default: the system's."),
  usernameField: z.string().min(1).max(128).optional().describe("The claim that names the database user (Helios: jwks_username_field); default sub."),
  issuer: z.string().min(1).max(2048).describe("The iss every token must carry."),
  audience: z.union([z.string().min(1).max(2048), z.array(z.string().min(1).max(2048)).min(1).max(20)]).describe("Accepted aud values (any one)."),
  algorithms: z.array(z.enum(JWT_ALGORITHMS)).min(1).max(JWT_ALGORITHMS.length).optional().describe("Accepted signature algorithms; default RS256 and ES256. Never none or HMAC."),
  provisionRoles: z.boolean().optional().describe("Create a database user on its first login (default false: the user must exist)."),
  defaultGrants: z.array(RoleRef).max(20).optional().describe("Roles granted to users on their first token login."),
  cacheMaxAgeSeconds: z.number().int().min(60).max(86_400).optional().describe("How long fetched keys are used (default 600)."),
  clockToleranceSeconds: z.number().int().min(0).max(300).optional().describe("Leeway for exp and nbf (default 30)."),
}).strict();

const JwtAuthView = z.object({
  workspaceGroupID: Id, jwksEndpoint: z.string().nullable(), jwks: z.object({ keys: z.array(Jwk) }).nullable(), jwksCaPem: z.string().nullable(),
  usernameField: z.string(), issuer: z.string(), audience: z.array(z.string()), algorithms: z.array(z.string()), provisionRoles: z.boolean(),
  defaultGrants: z.array(z.string()), cacheMaxAgeSeconds: z.number(), clockToleranceSeconds: z.number(), updatedAt: z.string(),
});

/** Builds the stored settings, refusing inline keys jose cannot use and private key material. */
function toConfig(b: z.infer<typeof JwtAuthInput>): JwtAuthConfig {
  if ((b.jwksEndpoint === undefined) === (b.jwks === undefined)) throw new ParhelionError("ERR_VALIDATION", "give exactly one of jwksEndpoint and jwks");
  if (b.jwksCaPem !== undefined && b.jwksEndpoint === undefined) throw new ParhelionError("ERR_VALIDATION", "jwksCaPem applies to jwksEndpoint only");
  if (b.jwks) {
    for (const [i, k] of b.jwks.keys.entries()) {
      if (typeof k["kty"] !== "string") throw new ParhelionError("ERR_VALIDATION", `jwks.keys[${i}] has no kty`);
      if (k["kty"] === "oct") throw new ParhelionError("ERR_VALIDATION", `jwks.keys[${i}] is a symmetric key: only public keys belong in a key set`);
      if (["d", "p", "q", "dp", "dq", "qi"].some((f) => f in k)) throw new ParhelionError("ERR_VALIDATION", `jwks.keys[${i}] holds private key material: give the public key only`);
    }
    try {
      createLocalJWKSet(b.jwks as JSONWebKeySet);
    } catch (err) {
      throw new ParhelionError("ERR_VALIDATION", `jwks is not a JSON Web Key Set: ${(err as Error).message}`);
    }
  }
  return {
    jwksEndpoint: b.jwksEndpoint ?? null, jwks: (b.jwks as JSONWebKeySet | undefined) ?? null, jwksCaPem: b.jwksCaPem ?? null,
    usernameField: b.usernameField ?? "sub", issuer: b.issuer, audience: Array.isArray(b.audience) ? b.audience : [b.audience],
    algorithms: b.algorithms ?? ["RS256", "ES256"], provisionRoles: b.provisionRoles ?? false, defaultGrants: b.defaultGrants ?? [],
    cacheMaxAgeSeconds: b.cacheMaxAgeSeconds ?? 600, clockToleranceSeconds: b.clockToleranceSeconds ?? 30,
  };
}

function view(groupId: string, c: JwtAuthConfig, updatedAt: Date): z.infer<typeof JwtAuthView> {
  return { workspaceGroupID: groupId, ...c, jwks: c.jwks as { keys: Record<string, unknown>[] } | null, updatedAt: updatedAt.toISOString() };
}

/**
 * The database roles a person's credential grants: full data access (membership in the workspace's admin
 * role: its privileges, not its CREATEROLE/CREATEDB) for organization Owners, Admins and Operators and the
 * group's Owners and Writers; read-only (pg_read_all_data) for Auditors and the group's Readers.
 */
function credentialGrants(grants: EffectiveGrants, groupId: string): string[] {
  const full = ["Owner", "Admin", "Operator"].some((r) => grants.orgRoles.has(r as never)) || ["Owner", "Writer"].some((r) => grants.resourceRoles.get(`Cluster:${groupId}`)?.has(r));
  return full ? ["admin"] : ["pg_read_all_data"];
}

const Credentials = z.object({
  workspaceID: Id, databaseUser: z.string().describe("The database user the token logs in as (your e-mail address, or apikey:<id>)."),
  token: z.string().describe("Use it as the password. TLS only; valid until expiresAt."), expiresAt: z.string(),
  endpoint: z.string(), port: z.number().int(), access: z.enum(["read-write", "read-only"]),
});

export const tokenRoutes = [
  defineRoute({
    method: "GET", path: "/v1/workspaceGroups/{workspaceGroupID}/jwtAuth", operationId: "getWorkspaceGroupJwtAuth", tag: "Database logins",
    summary: "The group's JWT login settings (404 when it accepts no JWTs).", access: "workspaceGroups:read", resource: groupResource, params: GroupParams, response: JwtAuthView,
    handler: async ({ params, principal, services }) => {
      await services.workspaces.groupRow(principal!.orgId, params.workspaceGroupID);
      const r = await services.db.selectFrom("workspace_group_jwt_auth").select(["config", "updated_at"]).where("group_id", "=", params.workspaceGroupID).where("org_id", "=", principal!.orgId).executeTakeFirst();
      if (!r) throw new ParhelionError("ERR_NOT_FOUND", "this workspace group accepts no JWTs");
      return view(params.workspaceGroupID, r.config as JwtAuthConfig, new Date(r.updated_at));
    },
  }),
  defineRoute({
    method: "PUT", path: "/v1/workspaceGroups/{workspaceGroupID}/jwtAuth", operationId: "setWorkspaceGroupJwtAuth", tag: "Database logins", auditType: "WorkspaceGroupJwtAuthUpdate", stepUp: true,
    summary: "Sets the group's JWT login settings: a JWKS endpoint or inline keys, issuer, audience, algorithms, the claim naming the database user, and first-login provisioning. Clients then send the JWT as the password (cleartext inside TLS).",
    access: "workspaceGroups:write", resource: groupResource, params: GroupParams, body: JwtAuthInput, response: JwtAuthView,
    handler: async ({ params, body, principal, services, audit }) => {
      audit.resource = { type: "WorkspaceGroup", id: params.workspaceGroupID };
      const g = await services.workspaces.groupRow(principal!.orgId, params.workspaceGroupID);
      if (g.state === "TERMINATED") throw new ParhelionError("ERR_CONFLICT", "the workspace group is terminated");
      const config = toConfig(body);
      audit.attributes = { jwksEndpoint: config.jwksEndpoint, inlineKeys: config.jwks?.keys.length ?? 0, issuer: config.issuer, audience: config.audience, algorithms: config.algorithms, usernameField: config.usernameField, provisionRoles: config.provisionRoles, defaultGrants: config.defaultGrants };
      const now = services.clock();
      await services.db.insertInto("workspace_group_jwt_auth").values({ group_id: g.id, org_id: g.org_id, config: JSON.stringify(config), created_at: now, updated_at: now })
        .onConflict((oc) => oc.column("group_id").doUpdateSet({ config: JSON.stringify(config), updated_at: now })).execute();
      services.tokens.invalidate(g.id);
      return view(g.id, config, now);
    },
  }),
  defineRoute({
    method: "DELETE", path: "/v1/workspaceGroups/{workspaceGroupID}/jwtAuth", operationId: "deleteWorkspaceGroupJwtAuth", tag: "Database logins", auditType: "WorkspaceGroupJwtAuthDelete", stepUp: true,
    summary: "Stops accepting JWTs in the group (platform credentials still work). Sessions already open stay open.", access: "workspaceGroups:write", resource: groupResource,
    params: GroupParams, response: z.object({ workspaceGroupID: Id }),
    handler: async ({ params, principal, services, audit }) => {
      audit.resource = { type: "WorkspaceGroup", id: params.workspaceGroupID };
      await services.workspaces.groupRow(principal!.orgId, params.workspaceGroupID);
      const r = await services.db.deleteFrom("workspace_group_jwt_auth").where("group_id", "=", params.workspaceGroupID).where("org_id", "=", principal!.orgId).executeTakeFirst();
      if (Number(r.numDeletedRows) === 0) throw new ParhelionError("ERR_NOT_FOUND", "this workspace group accepts no JWTs");
      services.tokens.invalidate(params.workspaceGroupID);
      return { workspaceGroupID: params.workspaceGroupID };
    },
  }),
  defineRoute({
    method: "POST", path: "/v1/workspaces/{workspaceID}/credentials", operationId: "createDatabaseCredentials", tag: "Database logins", auditType: "DatabaseCredentialsIssue",
    summary: "Mints a short-lived database credential (≤ 15 minutes) for the caller: a token that logs in as the caller's own database user, made on first use with read-write or read-only access by the caller's role. Use it as the password; `parhelion connect` does this for you.",
    access: "workspaces:connect", resource: workspaceResource, params: WorkspaceParams,
    body: z.object({ ttlSeconds: z.number().int().min(60).max(PLATFORM_MAX_TTL_SECONDS).optional().describe(`Lifetime; default and most ${PLATFORM_MAX_TTL_SECONDS}.`) }).strict(),
    response: Credentials,
    handler: async ({ params, body, principal, grants, services, audit }) => {
      const p = principal!;
      audit.resource = { type: "Workspace", id: params.workspaceID };
      const ws = await services.workspaces.getWorkspace(p.orgId, params.workspaceID);
      const groupId = ws.workspaceGroupID;
      const principalId = p.kind === "user" ? p.userId : p.apiKeyId;
      if (principalId === null) throw new ParhelionError("ERR_FORBIDDEN", "this credential has no identity a database user could be bound to");
      const role = validateTokenRoleName(p.kind === "user" && p.email ? p.email.toLowerCase() : `apikey:${p.apiKeyId}`);
      const dbGrants = credentialGrants(grants, groupId);
      // The user exists (with the grants the caller's role gives) before the token does, so it can be
      // granted more in SQL and the first login needs no extra step.
      await services.databases.ensureTokenRole(p.orgId, params.workspaceID, role, dbGrants);
      const minted = await services.credentials.mint({ workspaceId: params.workspaceID, orgId: p.orgId, principalId, email: p.email, role, grants: dbGrants, ttlSeconds: body.ttlSeconds ?? PLATFORM_MAX_TTL_SECONDS, now: services.clock() });
      const access = dbGrants.includes("admin") ? "read-write" : "read-only";
      audit.attributes = { databaseUser: role, credentialID: minted.id, expiresAt: minted.expiresAt.toISOString(), access, workspaceGroupID: groupId };
      return { workspaceID: ws.workspaceID, databaseUser: role, token: minted.token, expiresAt: minted.expiresAt.toISOString(), endpoint: ws.endpoint, port: ws.port, access };
    },
  }),
];
