import { z } from "zod";
import { Id } from "../schemas.js";
import type { Services } from "../context.js";
import type { Principal } from "../../identity/types.js";

export const GroupParams = z.object({ workspaceGroupID: Id }).strict();
export const WorkspaceParams = z.object({ workspaceID: Id }).strict();
/** Where a request that names no existing group is authorized: organization roles decide. */
export const NO_GROUP = "00000000-0000-0000-0000-000000000000";
/** A workspace group is authorized as itself (Helios's "Cluster"). */
export const groupResource = (p: { workspaceGroupID: string }) => ({ type: "Cluster" as const, id: p.workspaceGroupID });
/** A workspace is authorized against its group; an unknown one against no group (organization roles decide, then 404). */
export const workspaceResource = async (p: { workspaceID: string }, ctx: { services: Services; principal: Principal }) => ({
  type: "Cluster" as const, id: (await ctx.services.workspaces.groupOfWorkspace(ctx.principal.orgId, p.workspaceID)) ?? NO_GROUP,
});

export const UserInfo = z.object({ userID: Id, email: z.string(), firstName: z.string(), lastName: z.string() });
export const TeamInfo = z.object({ teamID: Id, name: z.string(), description: z.string() });
export const RoleGrant = z.object({ role: z.string().min(1).max(64), users: z.array(Id).max(1000).optional(), teams: z.array(Id).max(1000).optional() }).strict();
export const AccessControlAction = z.object({ grants: z.array(RoleGrant).max(100).optional(), revokes: z.array(RoleGrant).max(100).optional() }).strict();
export const ResourceRoleView = z.object({ role: z.string(), users: z.array(UserInfo), teams: z.array(TeamInfo) });
export const IdentityRole = z.object({ role: z.string(), resourceType: z.string(), resourceID: z.string(), viaTeamID: Id.optional() });
