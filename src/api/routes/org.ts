import { z } from "zod";
import { defineRoute } from "../route.js";
import { Id } from "../schemas.js";
import { ParhelionError } from "../../lib/errors.js";
import { parseResourceType, roleDefinitions, RESOURCE_TYPES } from "../../rbac/roles.js";
import { listAccessControls, updateAccessControls } from "../../rbac/accessControls.js";
import { AccessControlAction, ResourceRoleView } from "./shared.js";
import { STEP_UP_MINUTES_MAX, STEP_UP_MINUTES_MIN, updateOrgMfaPolicy } from "../../identity/index.js";

const Organization = z.object({
  orgID: Id, name: z.string(), createdAt: z.string(),
  mfaRequired: z.boolean().describe("parhelion: users must have a second factor; a user without one can only enroll one."),
  mfaStepUpMinutes: z.number().int().describe("parhelion: minutes a verified second factor counts for step-up actions."),
});

export const orgRoutes = [
  defineRoute({
    method: "GET", path: "/v1/organizations/current", operationId: "getCurrentOrganization", tag: "Organizations",
    summary: "The organization the caller belongs to.", access: "org:read", response: Organization,
    handler: async ({ services, principal }) => services.orgs.get(principal!.orgId),
  }),
  defineRoute({
    method: "PATCH", path: "/v1/organizations/current", operationId: "updateCurrentOrganization", tag: "Organizations", auditType: "OrganizationUpdate",
    summary: "parhelion: changes the organization's MFA policy (mfaRequired, mfaStepUpMinutes). Needs a fresh second factor.", access: "org:write", stepUp: true,
    body: z.object({
      mfaRequired: z.boolean().optional(),
      mfaStepUpMinutes: z.number().int().min(STEP_UP_MINUTES_MIN).max(STEP_UP_MINUTES_MAX).optional(),
    }).strict(),
    response: Organization,
    handler: async ({ body, principal, services, audit, mfa }) => {
      const orgId = principal!.orgId;
      audit.resource = { type: "Organization", id: orgId };
      const before = await services.orgs.get(orgId);
      audit.attributes = { change: body, before: { mfaRequired: before.mfaRequired, mfaStepUpMinutes: before.mfaStepUpMinutes } };
      // Requiring MFA from a session without a factor would lock its own user out of everything but enrollment.
      if (body.mfaRequired === true && mfa !== null && !mfa.enrolled) {
        throw new ParhelionError("ERR_CONFLICT", "enroll a second factor yourself before requiring one from everybody");
      }
      await updateOrgMfaPolicy(services.db, orgId, body);
      services.orgs.invalidate(orgId);
      return services.orgs.get(orgId);
    },
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
