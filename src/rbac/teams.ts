import { randomUUID } from "node:crypto";
import { sql } from "kysely";
import type { Db } from "../store/db.js";
import { ParhelionError, found } from "../lib/errors.js";

export interface UserInfo { userID: string; email: string; firstName: string; lastName: string }
export interface TeamInfo { teamID: string; name: string; description: string }
export interface TeamView extends TeamInfo { createdAt: string; memberUsers: UserInfo[]; memberTeams: TeamInfo[] }

export interface TeamUpdate {
  name?: string | undefined;
  description?: string | undefined;
  addMemberUserIDs?: string[] | undefined;
  removeMemberUserIDs?: string[] | undefined;
  addMemberUserEmails?: string[] | undefined;
  removeMemberUserEmails?: string[] | undefined;
  addMemberTeamIDs?: string[] | undefined;
  removeMemberTeamIDs?: string[] | undefined;
}

function uniqueViolation(err: unknown): boolean {
  return typeof err === "object" && err !== null && (err as { code?: string }).code === "23505";
}

/** Creates a team (Helios: name and description only; members come by PATCH). */
export async function createTeam(db: Db, orgId: string, input: { name: string; description?: string | undefined }): Promise<{ teamID: string }> {
  const id = randomUUID();
  try {
    await db.insertInto("teams").values({ id, org_id: orgId, name: input.name, description: input.description ?? "" }).execute();
  } catch (err) {
    if (uniqueViolation(err)) throw new ParhelionError("ERR_CONFLICT", `a team named "${input.name}" already exists`);
    throw err;
  }
  return { teamID: id };
}

async function views(db: Db, orgId: string, teamIds: string[]): Promise<Map<string, TeamView>> {
  const out = new Map<string, TeamView>();
  if (teamIds.length === 0) return out;
  const teams = await db.selectFrom("teams").selectAll().where("org_id", "=", orgId).where("id", "in", teamIds).execute();
  for (const t of teams) out.set(t.id, { teamID: t.id, name: t.name, description: t.description, createdAt: new Date(t.created_at).toISOString(), memberUsers: [], memberTeams: [] });
  const users = await db.selectFrom("team_members as m").innerJoin("users as u", "u.id", "m.member_id").select(["m.team_id", "u.id", "u.email", "u.first_name", "u.last_name"]).where("m.member_type", "=", "user").where("u.removed_at", "is", null).where("m.team_id", "in", teamIds).orderBy("u.email").execute();
  for (const u of users) out.get(u.team_id)?.memberUsers.push({ userID: u.id, email: u.email, firstName: u.first_name, lastName: u.last_name });
  const subs = await db.selectFrom("team_members as m").innerJoin("teams as t", "t.id", "m.member_id").select(["m.team_id", "t.id", "t.name", "t.description"]).where("m.member_type", "=", "team").where("m.team_id", "in", teamIds).orderBy("t.name").execute();
  for (const s of subs) out.get(s.team_id)?.memberTeams.push({ teamID: s.id, name: s.name, description: s.description });
  return out;
}

/** Lists teams by name, keyset-paginated after a team name; `only` restricts it to those ids. */
export async function listTeams(db: Db, orgId: string, opts: { limit: number; after?: string | undefined; only?: string[] | undefined }): Promise<TeamView[]> {
  if (opts.only !== undefined && opts.only.length === 0) return [];
  let q = db.selectFrom("teams").select(["id", "name"]).where("org_id", "=", orgId).orderBy("name").limit(opts.limit);
  if (opts.only !== undefined) q = q.where("id", "in", opts.only);
  if (opts.after !== undefined) q = q.where("name", ">", opts.after);
  const ids = (await q.execute()).map((r) => r.id);
  const v = await views(db, orgId, ids);
  return ids.map((id) => v.get(id)).filter((t): t is TeamView => t !== undefined);
}

export async function getTeam(db: Db, orgId: string, teamId: string): Promise<TeamView> {
  return found((await views(db, orgId, [teamId])).get(teamId), "team");
}

async function userIdsByEmail(db: Db, orgId: string, emails: string[]): Promise<string[]> {
  if (emails.length === 0) return [];
  const norm = emails.map((e) => e.trim().toLowerCase());
  const rows = await db.selectFrom("users").select(["id", "email"]).where("org_id", "=", orgId).where("removed_at", "is", null).where("email", "in", norm).execute();
  const missing = norm.filter((e) => !rows.some((r) => r.email === e));
  if (missing.length > 0) throw new ParhelionError("ERR_NOT_FOUND", `no user with email ${missing.join(", ")}`);
  return rows.map((r) => r.id);
}

/** Applies a Helios TeamUpdate in one transaction; rejects unknown members and membership cycles. */
export async function updateTeam(db: Db, orgId: string, teamId: string, u: TeamUpdate): Promise<{ teamID: string }> {
  await db.transaction().execute(async (trx) => {
    const team = await trx.selectFrom("teams").select("id").where("org_id", "=", orgId).where("id", "=", teamId).forUpdate().executeTakeFirst();
    found(team, "team");
    if (u.name !== undefined || u.description !== undefined) {
      try {
        await trx.updateTable("teams").set({ ...(u.name !== undefined ? { name: u.name } : {}), ...(u.description !== undefined ? { description: u.description } : {}) }).where("id", "=", teamId).execute();
      } catch (err) {
        if (uniqueViolation(err)) throw new ParhelionError("ERR_CONFLICT", `a team named "${u.name}" already exists`);
        throw err;
      }
    }
    const addUsers = [...(u.addMemberUserIDs ?? []), ...(await userIdsByEmail(trx, orgId, u.addMemberUserEmails ?? []))];
    const removeUsers = [...(u.removeMemberUserIDs ?? []), ...(await userIdsByEmail(trx, orgId, u.removeMemberUserEmails ?? []))];
    if (addUsers.length > 0) {
      const ok = await trx.selectFrom("users").select("id").where("org_id", "=", orgId).where("removed_at", "is", null).where("id", "in", addUsers).execute();
      if (ok.length !== new Set(addUsers).size) throw new ParhelionError("ERR_NOT_FOUND", "one or more users to add do not exist");
      await trx.insertInto("team_members").values([...new Set(addUsers)].map((id) => ({ team_id: teamId, member_type: "user" as const, member_id: id }))).onConflict((oc) => oc.doNothing()).execute();
    }
    if (removeUsers.length > 0) {
      await trx.deleteFrom("team_members").where("team_id", "=", teamId).where("member_type", "=", "user").where("member_id", "in", removeUsers).execute();
    }
    const addTeams = [...new Set(u.addMemberTeamIDs ?? [])];
    if (addTeams.length > 0) {
      if (addTeams.includes(teamId)) throw new ParhelionError("ERR_CONFLICT", "a team cannot contain itself");
      const ok = await trx.selectFrom("teams").select("id").where("org_id", "=", orgId).where("id", "in", addTeams).execute();
      if (ok.length !== addTeams.length) throw new ParhelionError("ERR_NOT_FOUND", "one or more teams to add do not exist");
      // A cycle appears if teamId is (transitively) a member of a team being added.
      const cyc = await sql<{ n: number }>`
        WITH RECURSIVE sub(id) AS (
          SELECT member_id FROM team_members WHERE member_type = 'team' AND team_id IN (${sql.join(addTeams)})
          UNION SELECT m.member_id FROM team_members m JOIN sub ON m.team_id = sub.id AND m.member_type = 'team'
        ) SELECT count(*)::int AS n FROM sub WHERE id = ${teamId}`.execute(trx);
      if ((cyc.rows[0]?.n ?? 0) > 0) throw new ParhelionError("ERR_CONFLICT", "adding these teams would make a membership cycle");
      await trx.insertInto("team_members").values(addTeams.map((id) => ({ team_id: teamId, member_type: "team" as const, member_id: id }))).onConflict((oc) => oc.doNothing()).execute();
    }
    if ((u.removeMemberTeamIDs ?? []).length > 0) {
      await trx.deleteFrom("team_members").where("team_id", "=", teamId).where("member_type", "=", "team").where("member_id", "in", u.removeMemberTeamIDs ?? []).execute();
    }
  });
  return { teamID: teamId };
}

/** Deletes a team, its memberships and every grant to or on it. */
export async function deleteTeam(db: Db, orgId: string, teamId: string): Promise<{ teamID: string }> {
  await db.transaction().execute(async (trx) => {
    const t = await trx.deleteFrom("teams").where("org_id", "=", orgId).where("id", "=", teamId).returning("id").executeTakeFirst();
    found(t, "team");
    await trx.deleteFrom("team_members").where("member_type", "=", "team").where("member_id", "=", teamId).execute();
    await trx.deleteFrom("access_controls").where("principal_type", "=", "team").where("principal_id", "=", teamId).execute();
    await trx.deleteFrom("access_controls").where("resource_type", "=", "Team").where("resource_id", "=", teamId).execute();
  });
  return { teamID: teamId };
}
