import { sql } from "kysely";
import type { Db } from "../store/db.js";
import type { OrgRole, Principal } from "../identity/types.js";
import { isOrgRole } from "./roles.js";
import type { EffectiveGrants } from "./policy.js";

/** Every team a user belongs to, directly or through nested teams. */
export async function teamsOfUser(db: Db, userId: string): Promise<string[]> {
  const r = await sql<{ team_id: string }>`
    WITH RECURSIVE t(team_id) AS (
      SELECT team_id FROM team_members WHERE member_type = 'user' AND member_id = ${userId}
      UNION
      SELECT m.team_id FROM team_members m JOIN t ON m.member_type = 'team' AND m.member_id = t.team_id
    ) SELECT team_id FROM t`.execute(db);
  return r.rows.map((x) => x.team_id);
}

export interface IdentityRole {
  role: string;
  resourceType: string;
  resourceID: string;
  /** parhelion: the team the grant comes through, when it is not direct. */
  viaTeamID?: string;
}

/** The grants a user holds directly and through teams (Helios identityRoles shape). */
export async function identityRolesOfUser(db: Db, orgId: string, userId: string): Promise<IdentityRole[]> {
  const teams = await teamsOfUser(db, userId);
  let q = db.selectFrom("access_controls").select(["role", "resource_type", "resource_id", "principal_type", "principal_id"]).where("org_id", "=", orgId);
  q = q.where((eb) => {
    const ors = [eb.and([eb("principal_type", "=", "user"), eb("principal_id", "=", userId)])];
    if (teams.length > 0) ors.push(eb.and([eb("principal_type", "=", "team"), eb("principal_id", "in", teams)]));
    return eb.or(ors);
  });
  const rows = await q.execute();
  return rows.map((r) => ({
    role: r.role,
    resourceType: r.resource_type,
    resourceID: r.resource_id,
    ...(r.principal_type === "team" ? { viaTeamID: r.principal_id } : {}),
  }));
}

/** Grants of a team itself (Helios identityRoles for teams). */
export async function identityRolesOfTeam(db: Db, orgId: string, teamId: string): Promise<IdentityRole[]> {
  const rows = await db.selectFrom("access_controls").select(["role", "resource_type", "resource_id"]).where("org_id", "=", orgId).where("principal_type", "=", "team").where("principal_id", "=", teamId).execute();
  return rows.map((r) => ({ role: r.role, resourceType: r.resource_type, resourceID: r.resource_id }));
}

/** Computes what a principal holds. An API key holds exactly its own role. */
export async function loadGrants(db: Db, principal: Principal): Promise<EffectiveGrants> {
  if (principal.kind === "apiKey") {
    return { orgRoles: new Set(principal.keyRole ? [principal.keyRole] : []), resourceRoles: new Map() };
  }
  if (principal.userId === null) return { orgRoles: new Set(), resourceRoles: new Map() };
  const roles = await identityRolesOfUser(db, principal.orgId, principal.userId);
  const orgRoles = new Set<OrgRole>();
  const resourceRoles = new Map<string, Set<string>>();
  for (const r of roles) {
    if (r.resourceType === "Organization") {
      if (r.resourceID === principal.orgId && isOrgRole(r.role)) orgRoles.add(r.role);
      continue;
    }
    const key = `${r.resourceType}:${r.resourceID}`;
    const set = resourceRoles.get(key) ?? new Set<string>();
    set.add(r.role);
    resourceRoles.set(key, set);
  }
  return { orgRoles, resourceRoles };
}
