import { z } from "zod";
import { Id } from "../schemas.js";

export const UserInfo = z.object({ userID: Id, email: z.string(), firstName: z.string(), lastName: z.string() });
export const TeamInfo = z.object({ teamID: Id, name: z.string(), description: z.string() });
export const RoleGrant = z.object({ role: z.string().min(1).max(64), users: z.array(Id).max(1000).optional(), teams: z.array(Id).max(1000).optional() }).strict();
export const AccessControlAction = z.object({ grants: z.array(RoleGrant).max(100).optional(), revokes: z.array(RoleGrant).max(100).optional() }).strict();
export const ResourceRoleView = z.object({ role: z.string(), users: z.array(UserInfo), teams: z.array(TeamInfo) });
export const IdentityRole = z.object({ role: z.string(), resourceType: z.string(), resourceID: z.string(), viaTeamID: Id.optional() });
