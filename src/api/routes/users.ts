import { z } from "zod";
import { defineRoute } from "../route.js";
import { Id, PageQuery, pagedList } from "../schemas.js";
import { getUser, listUsers, removeUser, revokeApiKeysCreatedBy } from "../../identity/index.js";
import { assertNotLastOwner } from "../../rbac/accessControls.js";
import { identityRolesOfUser } from "../../rbac/grants.js";
import { IdentityRole } from "./shared.js";

const User = z.object({ userID: Id, email: z.string(), firstName: z.string(), lastName: z.string(), createdAt: z.string() });
const UserParams = z.object({ userID: Id }).strict();

export const userRoutes = [
  defineRoute({
    method: "GET", path: "/v1/users", operationId: "listUsers", tag: "Users",
    summary: "Users of the organization, by email.", access: "users:read",
    query: z.object({ ...PageQuery, email: z.string().max(254).optional().describe("Exact email to find.") }).strict(),
    response: z.array(User),
    handler: async ({ query, principal, services, reply }) => {
      return pagedList(query, reply, (page) => listUsers(services.db, principal!.orgId, { ...page, email: query.email }), (u) => u.userID);
    },
  }),
  defineRoute({
    method: "GET", path: "/v1/users/{userID}", operationId: "getUser", tag: "Users",
    summary: "One user.", access: "users:read", params: UserParams, response: User,
    handler: async ({ params, principal, services }) => getUser(services.db, principal!.orgId, params.userID),
  }),
  defineRoute({
    method: "DELETE", path: "/v1/users/{userID}", operationId: "removeUser", tag: "Users", auditType: "UserRemove",
    summary: "Removes a user from the organization, ends their sessions and revokes the API keys they created.", access: "users:write",
    params: UserParams, response: z.object({ userID: Id }),
    handler: async ({ params, principal, services, audit }) => {
      audit.resource = { type: "User", id: params.userID };
      await getUser(services.db, principal!.orgId, params.userID);
      await assertNotLastOwner(services.db, principal!.orgId, params.userID);
      await removeUser(services.db, principal!.orgId, params.userID);
      const revoked = await revokeApiKeysCreatedBy(services.db, principal!.orgId, params.userID, services.clock, services.apiKeys);
      audit.attributes = { revokedApiKeyIDs: revoked };
      return { userID: params.userID };
    },
  }),
  defineRoute({
    method: "GET", path: "/v1/users/{userID}/identityRoles", operationId: "getUserIdentityRoles", tag: "Users",
    summary: "The roles a user holds, directly and through teams.", access: "users:read",
    params: UserParams, query: z.object({ resourceType: z.string().max(64).optional() }).strict(), response: z.array(IdentityRole),
    handler: async ({ params, query, principal, services }) => {
      await getUser(services.db, principal!.orgId, params.userID);
      const roles = await identityRolesOfUser(services.db, principal!.orgId, params.userID);
      return query.resourceType ? roles.filter((r) => r.resourceType.toLowerCase() === query.resourceType!.toLowerCase()) : roles;
    },
  }),
];
