import { sql } from "kysely";
import type { Db } from "../store/db.js";
import { ParhelionError } from "../lib/errors.js";
import type { OrgRole } from "../identity/types.js";
import { isRole, type ResourceType } from "./roles.js";
import type { UserInfo, TeamInfo } from "./teams.js";

export interface RoleGrant { role: string; users?: string[] | undefined; teams?: string[] | undefined }
export interface AccessControlAction { grants?: RoleGrant[] | undefined; revokes?: RoleGrant[] | undefined }
export interface ResourceRoleView { role: string; users: UserInfo[]; teams: TeamInfo[] }

/** The roles on a resource with who holds each (Helios ResourceRole, extended with grantees). */
export async function listAccessControls(db: Db, orgId: string, type: ResourceType, resourceId: string): Promise<ResourceRoleView[]> {
  const rows = await db.selectFrom("access_controls").select(["role", "principal_type", "principal_id"]).where("org_id", "=", orgId).where("resource_type", "=", type).where("resource_id", "=", resourceId).execute();
  const userIds = rows.filter((r) => r.principal_type === "user").map((r) => r.principal_id);
  const teamIds = rows.filter((r) => r.principal_type === "team").map((r) => r.principal_id);
  const users = userIds.length ? await db.selectFrom("users").select(["id", "email", "first_name", "last_name"]).where("id", "in", userIds).where("removed_at", "is", null).execute() : [];
  const teams = teamIds.length ? await db.selectFrom("teams").select(["id", "name", "description"]).where("id", "in", teamIds).execute() : [];
  const byRole = new Map<string, ResourceRoleView>();
  for (const r of rows) {
    const v = byRole.get(r.role) ?? { role: r.role, users: [], teams: [] };
    if (r.principal_type === "user") {
      const u = users.find((x) => x.id === r.principal_id);
      if (u) v.users.push({ userID: u.id, email: u.email, firstName: u.first_name, lastName: u.last_name });
    } else {
      const t = teams.find((x) => x.id === r.principal_id);
      if (t) v.teams.push({ teamID: t.id, name: t.name, description: t.description });
    }
    byRole.set(r.role, v);
  }
  return [...byRole.values()].sort((a, b) => a.role.localeCompare(b.role));
}

/** Users holding organization Owner directly or through any team. */
async function ownerCount(db: Db, orgId: string): Promise<number> {
  const r = await sql<{ n: number }>`
    WITH RECURSIVE owner_teams(id) AS (
      SELECT principal_id FROM access_controls WHERE org_id = ${orgId} AND resource_type = 'Organization' AND role = 'Owner' AND principal_type = 'team'
      UNION SELECT m.member_id FROM team_members m JOIN owner_teams o ON m.team_id = o.id AND m.member_type = 'team'
    )
    SELECT count(DISTINCT u.id)::int AS n FROM users u WHERE u.org_id = ${orgId} AND u.removed_at IS NULL AND (
      EXISTS (SELECT 1 FROM access_controls a WHERE a.org_id = ${orgId} AND a.resource_type = 'Organization' AND a.role = 'Owner' AND a.principal_type = 'user' AND a.principal_id = u.id)
      OR EXISTS (SELECT 1 FROM team_members m JOIN owner_teams o ON m.team_id = o.id WHERE m.member_type = 'user' AND m.member_id = u.id))`.execute(db);
  return r.rows[0]?.n ?? 0;
}

/** Fails with ERR_LAST_OWNER when the organization would be left without an Owner. */
export async function assertOwnerRemains(db: Db, orgId: string): Promise<void> {
  if ((await ownerCount(db, orgId)) === 0) throw new ParhelionError("ERR_LAST_OWNER");
}

/**
 * Applies grants and revokes on one resource in a transaction. `actorOrgRoles` gates Owner: only an
 * Owner grants or revokes organization Owner. The organization always keeps an Owner.
 */
export async function updateAccessControls(db: Db, orgId: string, type: ResourceType, resourceId: string, action: AccessControlAction, actor: { userId: string | null; orgRoles: ReadonlySet<OrgRole> }): Promise<{ resourceID: string }> {
  const all = [...(action.grants ?? []), ...(action.revokes ?? [])];
  for (const g of all) {
    if (!isRole(type, g.role)) throw new ParhelionError("ERR_VALIDATION", `"${g.role}" is not a role on ${type}`);
    if (type === "Organization" && g.role === "Owner" && !actor.orgRoles.has("Owner")) throw new ParhelionError("ERR_FORBIDDEN", "only an Owner grants or revokes Owner");
  }
  await db.transaction().execute(async (trx) => {
    await sql`SELECT pg_advisory_xact_lock(hashtext('parhelion.access_controls'), hashtext(${orgId}))`.execute(trx);
    const userIds = [...new Set((action.grants ?? []).flatMap((g) => g.users ?? []))];
    const teamIds = [...new Set((action.grants ?? []).flatMap((g) => g.teams ?? []))];
    if (userIds.length) {
      const n = await trx.selectFrom("users").select("id").where("org_id", "=", orgId).where("removed_at", "is", null).where("id", "in", userIds).execute();
      if (n.length !== userIds.length) throw new ParhelionError("ERR_NOT_FOUND", "one or more users do not exist");
    }
    if (teamIds.length) {
      const n = await trx.selectFrom("teams").select("id").where("org_id", "=", orgId).where("id", "in", teamIds).execute();
      if (n.length !== teamIds.length) throw new ParhelionError("ERR_NOT_FOUND", "one or more teams do not exist");
    }
    for (const r of action.revokes ?? []) {
      const principals = [...(r.users ?? []).map((id) => ["user", id] as const), ...(r.teams ?? []).map((id) => ["team", id] as const)];
      for (const [ptype, pid] of principals) {
        await trx.deleteFrom("access_controls").where("org_id", "=", orgId).where("resource_type", "=", type).where("resource_id", "=", resourceId).where("role", "=", r.role).where("principal_type", "=", ptype).where("principal_id", "=", pid).execute();
      }
    }
    const rows = (action.grants ?? []).flatMap((g) => [
      ...(g.users ?? []).map((id) => ({ org_id: orgId, resource_type: type, resource_id: resourceId, principal_type: "user" as const, principal_id: id, role: g.role, granted_by: actor.userId })),
      ...(g.teams ?? []).map((id) => ({ org_id: orgId, resource_type: type, resource_id: resourceId, principal_type: "team" as const, principal_id: id, role: g.role, granted_by: actor.userId })),
    ]);
    if (rows.length) await trx.insertInto("access_controls").values(rows).onConflict((oc) => oc.doNothing()).execute();
    if (type === "Organization") await assertOwnerRemains(trx, orgId);
  });
  return { resourceID: resourceId };
}

/** Grants an organization role to a user (bootstrap, invitation acceptance). */
export async function grantOrgRole(db: Db, orgId: string, userId: string, role: OrgRole, grantedBy: string | null): Promise<void> {
  await db.insertInto("access_controls").values({ org_id: orgId, resource_type: "Organization", resource_id: orgId, principal_type: "user", principal_id: userId, role, granted_by: grantedBy }).onConflict((oc) => oc.doNothing()).execute();
}

/** Fails with ERR_LAST_OWNER when removing this user would leave the organization without an Owner. */
export async function assertNotLastOwner(db: Db, orgId: string, userId: string): Promise<void> {
  const total = await ownerCount(db, orgId);
  const r = await sql<{ n: number }>`
    WITH RECURSIVE t(team_id) AS (
      SELECT team_id FROM team_members WHERE member_type = 'user' AND member_id = ${userId}
      UNION SELECT m.team_id FROM team_members m JOIN t ON m.member_type = 'team' AND m.member_id = t.team_id
    )
    SELECT count(*)::int AS n FROM access_controls a WHERE a.org_id = ${orgId} AND a.resource_type = 'Organization' AND a.role = 'Owner'
      AND ((a.principal_type = 'user' AND a.principal_id = ${userId}) OR (a.principal_type = 'team' AND a.principal_id IN (SELECT team_id FROM t)))`.execute(db);
  const isOwner = (r.rows[0]?.n ?? 0) > 0;
  if (isOwner && total <= 1) throw new ParhelionError("ERR_LAST_OWNER");
}
