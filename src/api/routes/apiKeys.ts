import { z } from "zod";
import { defineRoute } from "../route.js";
import { Id, Name, PageQuery, pagedList } from "../schemas.js";
import { ParhelionError } from "../../lib/errors.js";
import { ORG_ROLES } from "../../identity/types.js";
import { createApiKey, getApiKey, listApiKeys, revokeApiKey } from "../../identity/index.js";
import { orgRoleRank } from "../../rbac/roles.js";

const ApiKey = z.object({
  apiKeyID: Id, name: z.string(), prefix: z.string(), role: z.enum(ORG_ROLES), createdBy: Id.nullable(), createdAt: z.string(),
  expiresAt: z.string(), lastUsedAt: z.string().nullable(), revokedAt: z.string().nullable(), state: z.enum(["ACTIVE", "EXPIRED", "REVOKED"]),
});
const KeyParams = z.object({ apiKeyID: Id }).strict();

export const apiKeyRoutes = [
  defineRoute({
    method: "POST", path: "/v1/apiKeys", operationId: "createApiKey", tag: "API keys", auditType: "ApiKeyCreate", stepUp: true,
    summary: "Creates an API key. The key is in this answer only; parhelion keeps a hash.", access: "apiKeys:write",
    body: z.object({ name: Name, role: z.enum(ORG_ROLES), expiresAt: z.iso.datetime({ offset: true }).describe("When the key stops working (at most 2 years ahead).") }).strict(),
    response: ApiKey.extend({ key: z.string() }), status: 201,
    handler: async ({ body, principal, grants, services, audit }) => {
      const strongest = Math.min(...[...grants.orgRoles].map(orgRoleRank));
      if (orgRoleRank(body.role) < strongest) throw new ParhelionError("ERR_FORBIDDEN", `a key cannot have a stronger role than its creator (${body.role})`);
      const r = await createApiKey(services.db, { orgId: principal!.orgId, name: body.name, role: body.role, expiresAt: new Date(body.expiresAt), createdBy: principal!.userId }, services.clock);
      audit.resource = { type: "ApiKey", id: r.key.apiKeyID };
      audit.attributes = { name: body.name, role: body.role, prefix: r.key.prefix, expiresAt: r.key.expiresAt };
      return { ...r.key, key: r.token };
    },
  }),
  defineRoute({
    method: "GET", path: "/v1/apiKeys", operationId: "listApiKeys", tag: "API keys",
    summary: "API keys (prefix, creator, dates; never the key).", access: "apiKeys:read",
    query: z.object(PageQuery).strict(), response: z.array(ApiKey),
    handler: async ({ query, principal, services, reply }) => {
      return pagedList(query, reply, (page) => listApiKeys(services.db, principal!.orgId, page, services.clock), (k) => k.apiKeyID);
    },
  }),
  defineRoute({
    method: "GET", path: "/v1/apiKeys/{apiKeyID}", operationId: "getApiKey", tag: "API keys",
    summary: "One API key.", access: "apiKeys:read", params: KeyParams, response: ApiKey,
    handler: async ({ params, principal, services }) => getApiKey(services.db, principal!.orgId, params.apiKeyID, services.clock),
  }),
  defineRoute({
    method: "DELETE", path: "/v1/apiKeys/{apiKeyID}", operationId: "revokeApiKey", tag: "API keys", auditType: "ApiKeyRevoke",
    summary: "Revokes an API key; it fails from the next request on.", access: "apiKeys:write", params: KeyParams, response: z.object({ apiKeyID: Id }),
    handler: async ({ params, principal, services, audit }) => {
      audit.resource = { type: "ApiKey", id: params.apiKeyID };
      await revokeApiKey(services.db, principal!.orgId, params.apiKeyID, services.clock, services.apiKeys);
      return { apiKeyID: params.apiKeyID };
    },
  }),
];
