import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { startTestPlatform, type TestPlatform } from "../support/platform.js";
import { ROUTES } from "../../src/api/routes/index.js";
import { ORG_ROLES, type OrgRole } from "../../src/identity/types.js";

const ALL = ORG_ROLES;
const READERS: OrgRole[] = ["Owner", "Admin", "Auditor"];
const WRITERS: OrgRole[] = ["Owner", "Admin"];
const WS_READERS: OrgRole[] = ["Owner", "Admin", "Operator", "Auditor"];
const WS_WRITERS: OrgRole[] = ["Owner", "Admin", "Operator"];
/** Console sessions only: every API key is refused (ERR_FORBIDDEN), whatever its role. */
const SESSION_ONLY: OrgRole[] = [];

/**
 * Who may call each route with an organization-level API key. Every route must be here: a new route
 * without an entry fails this suite.
 */
const EXPECTED: Record<string, readonly OrgRole[] | "public"> = {
  "GET /v1/organizations/current": ALL,
  "PATCH /v1/organizations/current": WRITERS,
  "GET /v1/roles/{resourceType}": ALL,
  "GET /v1/organizations/{organizationID}/accessControls": READERS,
  "PATCH /v1/organizations/{organizationID}/accessControls": WRITERS,
  "GET /v1/users": READERS,
  "GET /v1/users/{userID}": READERS,
  "DELETE /v1/users/{userID}": WRITERS,
  "GET /v1/users/{userID}/identityRoles": READERS,
  "POST /v1/invitations": WRITERS,
  "GET /v1/invitations": READERS,
  "GET /v1/invitations/{invitationID}": READERS,
  "DELETE /v1/invitations/{invitationID}": WRITERS,
  "POST /v1/auth/invitations/accept": "public",
  "POST /v1/teams": WRITERS,
  "GET /v1/teams": READERS,
  "GET /v1/teams/{teamID}": READERS,
  "PATCH /v1/teams/{teamID}": WRITERS,
  "DELETE /v1/teams/{teamID}": WRITERS,
  "GET /v1/teams/{teamID}/accessControls": READERS,
  "PATCH /v1/teams/{teamID}/accessControls": WRITERS,
  "GET /v1/teams/{teamID}/identityRoles": READERS,
  "POST /v1/apiKeys": WRITERS,
  "GET /v1/apiKeys": READERS,
  "GET /v1/apiKeys/{apiKeyID}": READERS,
  "DELETE /v1/apiKeys/{apiKeyID}": WRITERS,
  "GET /v1/auditLogs": READERS,
  "GET /v1/auditLogs/verify": READERS,
  "GET /v1/auditLogs/export": READERS,
  "POST /v1/auth/login": "public",
  "POST /v1/auth/logout": ALL,
  "GET /v1/auth/whoami": ALL,
  "POST /v1/auth/password": ALL,
  "GET /v1/regions": WS_READERS,
  "POST /v1/workspaceGroups": WS_WRITERS,
  "GET /v1/workspaceGroups": WS_READERS,
  "GET /v1/workspaceGroups/{workspaceGroupID}": WS_READERS,
  "PATCH /v1/workspaceGroups/{workspaceGroupID}": WS_WRITERS,
  "DELETE /v1/workspaceGroups/{workspaceGroupID}": WS_WRITERS,
  "GET /v1/workspaceGroups/{workspaceGroupID}/keys": WS_READERS,
  "POST /v1/workspaceGroups/{workspaceGroupID}/keys/rotate": WS_WRITERS,
  "POST /v1/workspaceGroups/{workspaceGroupID}/keys/rekey": WS_WRITERS,
  "GET /v1/workspaceGroups/{workspaceGroupID}/accessControls": READERS,
  "PATCH /v1/workspaceGroups/{workspaceGroupID}/accessControls": WRITERS,
  "POST /v1/workspaces": WS_WRITERS,
  "GET /v1/workspaces": WS_READERS,
  "GET /v1/workspaces/{workspaceID}": WS_READERS,
  "PATCH /v1/workspaces/{workspaceID}": WS_WRITERS,
  "DELETE /v1/workspaces/{workspaceID}": WS_WRITERS,
  "POST /v1/workspaces/{workspaceID}/suspend": WS_WRITERS,
  "POST /v1/workspaces/{workspaceID}/resume": WS_WRITERS,
  "GET /v1/workspaces/{workspaceID}/databases": WS_READERS,
  "POST /v1/workspaces/{workspaceID}/databases": WS_WRITERS,
  "DELETE /v1/workspaces/{workspaceID}/databases/{databaseName}": WS_WRITERS,
  "GET /v1/workspaces/{workspaceID}/users": WS_READERS,
  "POST /v1/workspaces/{workspaceID}/users": WS_WRITERS,
  "PATCH /v1/workspaces/{workspaceID}/users/{userName}": WS_WRITERS,
  "DELETE /v1/workspaces/{workspaceID}/users/{userName}": WS_WRITERS,
  "GET /v1/workspaceGroups/{workspaceGroupID}/jwtAuth": WS_READERS,
  "PUT /v1/workspaceGroups/{workspaceGroupID}/jwtAuth": WS_WRITERS,
  "DELETE /v1/workspaceGroups/{workspaceGroupID}/jwtAuth": WS_WRITERS,
  "POST /v1/workspaces/{workspaceID}/credentials": WS_READERS,
  "GET /v1/organizations/current/sso": READERS,
  "PUT /v1/organizations/current/sso": WRITERS,
  "DELETE /v1/organizations/current/sso": WRITERS,
  "POST /v1/auth/sso/start": "public",
  "GET /v1/auth/sso/callback": "public",
  "POST /v1/auth/sso/token": "public",
  "GET /v1/auth/mfa": SESSION_ONLY,
  "POST /v1/auth/mfa/totp": SESSION_ONLY,
  "POST /v1/auth/mfa/totp/confirm": SESSION_ONLY,
  "POST /v1/auth/mfa/totp/verify": SESSION_ONLY,
  "POST /v1/auth/mfa/recovery/verify": SESSION_ONLY,
  "POST /v1/auth/mfa/recoveryCodes": SESSION_ONLY,
  "POST /v1/auth/mfa/webauthn/registration/options": SESSION_ONLY,
  "POST /v1/auth/mfa/webauthn/registration": SESSION_ONLY,
  "POST /v1/auth/mfa/webauthn/authentication/options": SESSION_ONLY,
  "POST /v1/auth/mfa/webauthn/authentication": SESSION_ONLY,
  "DELETE /v1/auth/mfa/factors/{factorID}": SESSION_ONLY,
  "DELETE /v1/users/{userID}/mfa": WRITERS,
  "GET /v1/keys/status": READERS,
  "GET /v1/auditSinks": READERS,
  "POST /v1/auditSinks": WRITERS,
  "GET /v1/auditSinks/{auditSinkID}": READERS,
  "PATCH /v1/auditSinks/{auditSinkID}": WRITERS,
  "DELETE /v1/auditSinks/{auditSinkID}": WRITERS,
  "GET /v1/auditSinks/{auditSinkID}/export": READERS,
  "GET /v1/auditSigningKeys": READERS,
};

let tp: TestPlatform;
const keys = new Map<OrgRole, string>();
let orgId = "";
let teamId = "";
let ownerId = "";
let invitationId = "";
let spareKeyId = "";
let groupId = "";

before(async () => {
  tp = await startTestPlatform();
  const who = await tp.call("GET", "/v1/auth/whoami");
  orgId = who.body.orgID;
  ownerId = who.body.userID;
  const expiresAt = new Date(Date.now() + 86400_000).toISOString();
  for (const role of ORG_ROLES) {
    const r = await tp.call("POST", "/v1/apiKeys", { body: { name: `rbac-${role}`, role, expiresAt } });
    assert.equal(r.status, 201, r.text);
    keys.set(role, r.body.key);
  }
  const spare = await tp.call("POST", "/v1/apiKeys", { body: { name: "spare", role: "Member", expiresAt } });
  spareKeyId = spare.body.apiKeyID;
  teamId = (await tp.call("POST", "/v1/teams", { body: { name: "rbac-team" } })).body.teamID;
  invitationId = (await tp.call("POST", "/v1/invitations", { body: { email: "rbac-invitee@example.com" } })).body.invitationID;
  const regionID = (await tp.call("GET", "/v1/regions")).body[0].regionID;
  const g = await tp.call("POST", "/v1/workspaceGroups", { body: { name: "rbac-group", regionID } });
  assert.equal(g.status, 200, g.text);
  groupId = g.body.workspaceGroupID;
});

after(async () => {
  await tp?.stop();
});

test("every route has an entry in the expected allow/deny table, and every entry a route", () => {
  const registered = ROUTES.map((r) => `${r.method} ${r.path}`).sort();
  assert.deepEqual(registered, Object.keys(EXPECTED).sort());
});

function concretePath(path: string): string {
  return path
    .replace("{organizationID}", orgId)
    .replace("{resourceType}", "Organization")
    .replace("{userID}", path.endsWith("{userID}") ? randomUUID() : ownerId)
    .replace("{teamID}", teamId)
    .replace("{invitationID}", path.startsWith("/v1/invitations/") ? invitationId : randomUUID())
    .replace("{apiKeyID}", spareKeyId)
    // A real group for reads and validated mutations; DELETE gets an unknown one (allowed: 404).
    .replace("{workspaceGroupID}", groupId)
    .replace("{workspaceID}", randomUUID())
    .replace("{databaseName}", "nodb")
    .replace("{userName}", "nouser")
    .replace("{factorID}", randomUUID());
}

test("every route × every role answers as the policy table says", async () => {
  const failures: string[] = [];
  for (const route of ROUTES) {
    const key = `${route.method} ${route.path}`;
    const expected = EXPECTED[key];
    if (expected === "public" || expected === undefined) continue;
    for (const role of ORG_ROLES) {
      const isMutation = route.method !== "GET";
      // Mutations get a body that fails validation *after* authorization (or a random id that is not found),
      // so an allowed call changes nothing and a denied one answers 403.
      let path = concretePath(route.path);
      if (route.method === "DELETE" && route.path.endsWith("{userID}")) path = path.replace(ownerId, randomUUID());
      if (route.method === "DELETE" && route.path === "/v1/users/{userID}/mfa") path = path.replace(ownerId, randomUUID());
      if (route.method === "DELETE" && route.path.endsWith("{apiKeyID}")) path = path.replace(spareKeyId, randomUUID());
      if (route.method === "DELETE" && route.path.endsWith("{teamID}")) path = path.replace(teamId, randomUUID());
      if (route.method === "DELETE" && route.path.endsWith("{invitationID}")) path = path.replace(invitationId, randomUUID());
      if (route.method === "DELETE" && route.path.endsWith("{workspaceGroupID}")) path = path.replace(groupId, randomUUID());
      const body = isMutation && route.body ? { "not-a-field": true } : undefined;
      const res = await tp.call(route.method, path, { key: keys.get(role)!, ...(body ? { body } : {}) });
      const allowed = expected.includes(role);
      if (route.path === "/v1/auth/logout" && res.status < 300) continue;
      const ok = allowed ? res.status !== 403 && res.status !== 401 && res.status < 500 : res.status === 403 && res.body?.code === "ERR_FORBIDDEN";
      if (!ok) failures.push(`${key} as ${role}: expected ${allowed ? "allow" : "deny"}, got ${res.status} ${res.body?.code ?? ""}`);
    }
  }
  assert.deepEqual(failures, []);
});

test("public routes answer without a credential", async () => {
  const r = await tp.call("POST", "/v1/auth/login", { key: null, body: { email: "nobody@example.com", password: "wrong-password-123" } });
  assert.equal(r.status, 401);
  assert.equal(r.body.code, "ERR_INVALID_CREDENTIALS");
  const a = await tp.call("POST", "/v1/auth/invitations/accept", { key: null, body: { token: "bogus", password: "x" } });
  assert.equal(a.status, 400);
  assert.equal(a.body.code, "ERR_INVITATION_INVALID");
});

test("a route without a credential answers 401 ERR_UNAUTHENTICATED and is audited as a failed attempt", async () => {
  const r = await tp.call("GET", "/v1/organizations/current", { key: null });
  assert.equal(r.status, 401);
  assert.equal(r.body.code, "ERR_UNAUTHENTICATED");
  assert.equal(r.headers["content-type"], "application/problem+json; charset=utf-8");
  const logs = await tp.call("GET", "/v1/auditLogs?type=AuthFailure");
  assert.ok(logs.body.auditLogs.some((l: { requestID: string }) => l.requestID === r.body.requestId), "the denied attempt is in the audit log");
});
