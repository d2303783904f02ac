import { z } from "zod";
import { defineRoute } from "../route.js";
import { Id } from "../schemas.js";
import { ParhelionError } from "../../lib/errors.js";
import { parseResourceType, roleDefinitions, RESOURCE_TYPES } from "../../rbac/roles.js";
import { listAccessControls, updateAccessControls } from "../../rbac/accessControls.js";
import { AccessControlAction, ResourceRoleView } from "./shared.js";

const Organization = z.object({ orgID: Id, name: z.string(), createdAt: z.string() });

export const orgRoutes = [
  defineRoute({
    method: "GET", path: "/v1/organizations/current", operationId: "getCurrentOrganization", tag: "Organizations",
    summary: "The organization the caller belongs to.", access: "org:read", response: Organization,
    handler: async ({ services, principal }) => services.orgs.get(principal!.orgId),
  }),
  defineRoute({
    method: "GET", path: "/v1/roles/{resourceType}", operationId: "listRoles", tag: "Roles",
    summary: "Role definitions for a resource type (Organization, Cluster, Team).", access: "roles:read",
    params: z.object({ resourceType: z.string().max(64) }).strict(),
    response: z.array(z.object({ role: z.string(), resourceType: z.enum(RESOURCE_TYPES), description: z.string(), permissions: z.array(z.string()), inherits: z.array(z.object({ resourceType: z.string(), role: z.string() })), isCustom: z.boolean() })),
    handler: async ({ params }) => {
      const t = parseResourceType(params.resourceType);
      if (t === undefined) throw new ParhelionError("ERR_NOT_FOUND", `unknown resource type "${params.resourceType}"; use one of ${RESOURCE_TYPES.join(", ")}`);
      return roleDefinitions(t);
    },
  }),
  defineRoute({
    method: "GET", path: "/v1/organizations/{organizationID}/accessControls", operationId: "getOrganizationAccessControls", tag: "Access control",
    summary: "Roles on the organization and who holds them.", access: "accessControls:read",
    params: z.object({ organizationID: Id }).strict(), response: z.array(ResourceRoleView),
    handler: async ({ params, principal, services }) => {
      if (params.organizationID !== principal!.orgId) throw new ParhelionError("ERR_NOT_FOUND", "organization not found");
      return listAccessControls(services.db, principal!.orgId, "Organization", params.organizationID);
    },
  }),
  defineRoute({
    method: "PATCH", path: "/v1/organizations/{organizationID}/accessControls", operationId: "updateOrganizationAccessControls", tag: "Access control",
    summary: "Grant and revoke organization roles.", access: "accessControls:write", auditType: "OrganizationAccessControlsUpdate",
    params: z.object({ organizationID: Id }).strict(), body: AccessControlAction, response: z.object({ resourceID: Id }),
    handler: async ({ params, body, principal, grants, services, audit }) => {
      if (params.organizationID !== principal!.orgId) throw new ParhelionError("ERR_NOT_FOUND", "organization not found");
      audit.resource = { type: "Organization", id: params.organizationID };
      audit.attributes = { grants: body.grants ?? [], revokes: body.revokes ?? [] };
      return updateAccessControls(services.db, principal!.orgId, "Organization", params.organizationID, body, { userId: principal!.userId, orgRoles: grants.orgRoles });
    },
  }),
];
