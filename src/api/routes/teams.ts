import { z } from "zod";
import { defineRoute } from "../route.js";
import { Id, Name, Email, PageQuery, pagedList } from "../schemas.js";
import { createTeam, deleteTeam, getTeam, listTeams, updateTeam } from "../../rbac/teams.js";
import { listAccessControls, updateAccessControls } from "../../rbac/accessControls.js";
import { identityRolesOfTeam } from "../../rbac/grants.js";
import { AccessControlAction, IdentityRole, ResourceRoleView, TeamInfo, UserInfo } from "./shared.js";

const Team = TeamInfo.extend({ createdAt: z.string(), memberUsers: z.array(UserInfo), memberTeams: z.array(TeamInfo) });
const TeamParams = z.object({ teamID: Id }).strict();
const teamResource = (p: { teamID: string }) => ({ type: "Team" as const, id: p.teamID });
const Description = z.string().max(4096);
const Ids = z.array(Id).max(1000).optional();
const Emails = z.array(Email).max(1000).optional();

export const teamRoutes = [
  defineRoute({
    method: "POST", path: "/v1/teams", operationId: "createTeam", tag: "Teams", auditType: "TeamCreate",
    summary: "Creates a team.", access: "teams:write",
    body: z.object({ name: Name, description: Description.optional() }).strict(), response: z.object({ teamID: Id }),
    handler: async ({ body, principal, services, audit }) => {
      const r = await createTeam(services.db, principal!.orgId, body);
      audit.resource = { type: "Team", id: r.teamID };
      audit.attributes = { name: body.name };
      return r;
    },
  }),
  defineRoute({
    method: "GET", path: "/v1/teams", operationId: "listTeams", tag: "Teams",
    summary: "Teams of the organization, by name (a Member sees the teams it holds a role on).", access: "teams:read", listOf: "Team",
    query: z.object(PageQuery).strict(), response: z.array(Team),
    handler: async ({ query, principal, services, reply, visible }) => {
      return pagedList(query, reply, (page) => listTeams(services.db, principal!.orgId, { ...page, only: visible === "all" ? undefined : visible }), (t) => t.name);
    },
  }),
  defineRoute({
    method: "GET", path: "/v1/teams/{teamID}", operationId: "getTeam", tag: "Teams",
    summary: "One team with its members.", access: "teams:read", resource: teamResource, params: TeamParams, response: Team,
    handler: async ({ params, principal, services }) => getTeam(services.db, principal!.orgId, params.teamID),
  }),
  defineRoute({
    method: "PATCH", path: "/v1/teams/{teamID}", operationId: "updateTeam", tag: "Teams", auditType: "TeamUpdate",
    summary: "Renames a team or changes its members.", access: "teams:write", resource: teamResource, params: TeamParams,
    body: z.object({ name: Name.optional(), description: Description.optional(), addMemberUserIDs: Ids, removeMemberUserIDs: Ids, addMemberUserEmails: Emails, removeMemberUserEmails: Emails, addMemberTeamIDs: Ids, removeMemberTeamIDs: Ids }).strict(),
    response: z.object({ teamID: Id }),
    handler: async ({ params, body, principal, services, audit }) => {
      audit.resource = { type: "Team", id: params.teamID };
      audit.attributes = { change: body };
      return updateTeam(services.db, principal!.orgId, params.teamID, body);
    },
  }),
  defineRoute({
    method: "DELETE", path: "/v1/teams/{teamID}", operationId: "deleteTeam", tag: "Teams", auditType: "TeamDelete",
    summary: "Deletes a team and every grant to it.", access: "teams:write", resource: teamResource, params: TeamParams, response: z.object({ teamID: Id }),
    handler: async ({ params, principal, services, audit }) => {
      audit.resource = { type: "Team", id: params.teamID };
      return deleteTeam(services.db, principal!.orgId, params.teamID);
    },
  }),
  defineRoute({
    method: "GET", path: "/v1/teams/{teamID}/accessControls", operationId: "getTeamAccessControls", tag: "Access control",
    summary: "Roles on a team and who holds them.", access: "accessControls:read", resource: teamResource, params: TeamParams, response: z.array(ResourceRoleView),
    handler: async ({ params, principal, services }) => {
      await getTeam(services.db, principal!.orgId, params.teamID);
      return listAccessControls(services.db, principal!.orgId, "Team", params.teamID);
    },
  }),
  defineRoute({
    method: "PATCH", path: "/v1/teams/{teamID}/accessControls", operationId: "updateTeamAccessControls", tag: "Access control", auditType: "TeamAccessControlsUpdate",
    summary: "Grant and revoke roles on a team.", access: "accessControls:write", resource: teamResource, params: TeamParams, body: AccessControlAction, response: z.object({ resourceID: Id }),
    handler: async ({ params, body, principal, grants, services, audit }) => {
      audit.resource = { type: "Team", id: params.teamID };
      audit.attributes = { grants: body.grants ?? [], revokes: body.revokes ?? [] };
      await getTeam(services.db, principal!.orgId, params.teamID);
      return updateAccessControls(services.db, principal!.orgId, "Team", params.teamID, body, { userId: principal!.userId, orgRoles: grants.orgRoles });
    },
  }),
  defineRoute({
    method: "GET", path: "/v1/teams/{teamID}/identityRoles", operationId: "getTeamIdentityRoles", tag: "Teams",
    summary: "The roles a team holds.", access: "teams:read", resource: teamResource, params: TeamParams, response: z.array(IdentityRole),
    handler: async ({ params, principal, services }) => {
      await getTeam(services.db, principal!.orgId, params.teamID);
      return identityRolesOfTeam(services.db, principal!.orgId, params.teamID);
    },
  }),
];
