import { randomUUID } from "node:crypto";
import { sql, type Transaction } from "kysely";
import { ParhelionError } from "../lib/errors.js";
import type { Database, Db } from "../store/schema.js";
import { checkPasswordPolicy, hashPassword } from "./passwords.js";
import { createUser, type UserView } from "./users.js";
import { asDate, decodeToken, isUuid, iso, isoNN, normalizeEmail, pageLimit, randomToken, requireRole, requireUuid, sha256, text, ttl } from "./internal.js";
import { systemClock, type Clock, type OrgRole } from "./types.js";

export const INVITATION_TTL_MIN = 60;
export const INVITATION_TTL_MAX = 30 * 24 * 3600;
const MESSAGE_MAX = 1000;
const INVALID = "The invitation is unknown, expired, revoked or already used.";

export type InvitationState = "Pending" | "Accepted" | "Refused" | "Revoked";
const STATES: readonly InvitationState[] = ["Pending", "Accepted", "Refused", "Revoked"];

/** An invitation as the API shows it (Helios shape plus `expiresAt`, `role` and `expired`). */
export interface InvitationView {
  invitationID: string;
  email: string;
  state: InvitationState;
  teamIDs: string[];
  message: string | null;
  createdAt: string;
  actedAt: string | null;
  expiresAt: string;
  role: OrgRole;
  /** True when the invitation is still Pending but past its expiry: it can no longer be accepted. */
  expired: boolean;
}

const COLUMNS = ["id", "email", "state", "team_ids", "message", "created_at", "acted_at", "expires_at", "role"] as const;

interface Row {
  id: string;
  email: string;
  state: InvitationState;
  team_ids: string[];
  message: string | null;
  created_at: Date | string;
  acted_at: Date | string | null;
  expires_at: Date | string;
  role: string;
}

function view(r: Row, now: Date): InvitationView {
  return {
    invitationID: r.id,
    email: r.email,
    state: r.state,
    teamIDs: [...r.team_ids],
    message: r.message,
    createdAt: isoNN(r.created_at),
    actedAt: iso(r.acted_at),
    expiresAt: isoNN(r.expires_at),
    role: r.role as OrgRole,
    expired: r.state === "Pending" && asDate(r.expires_at).getTime() <= now.getTime(),
  };
}

/**
 * Invites an email to the organization and returns the single-use token once (stored as sha256).
 * ERR_CONFLICT if an active user has the email or a Pending unexpired invitation for it exists in the org.
 */
export async function createInvitation(
  db: Db,
  input: { orgId: string; email: string; role: OrgRole; teamIDs: string[]; message?: string | null; createdBy: string | null; ttlSeconds: number },
  clock: Clock = systemClock,
): Promise<{ invitation: InvitationView; token: string }> {
  const orgId = requireUuid(input.orgId, "orgId");
  const email = normalizeEmail(input.email);
  const role = requireRole(input.role);
  if (!Array.isArray(input.teamIDs)) throw new ParhelionError("ERR_VALIDATION", "teamIDs must be an array");
  const teamIDs = [...new Set(input.teamIDs.map((t) => requireUuid(t, "teamIDs[]")))];
  const message = input.message === undefined || input.message === null ? null : text(input.message, "message", { max: MESSAGE_MAX, allowEmpty: true });
  const createdBy = input.createdBy === null ? null : requireUuid(input.createdBy, "createdBy");
  const seconds = ttl(input.ttlSeconds, "ttlSeconds", INVITATION_TTL_MIN, INVITATION_TTL_MAX);
  const now = clock();
  const token = randomToken();

  const row = await db.transaction().execute(async (trx) => {
    // Serialize invitations of one email in one organization, so two concurrent creates cannot both pass the check.
    await sql`select pg_advisory_xact_lock(hashtextextended(${`parhelion.invitation:${orgId}:${email}`}, 0))`.execute(trx);
    if (teamIDs.length > 0) {
      const teams = await trx.selectFrom("teams").select("id").where("org_id", "=", orgId).where("id", "in", teamIDs).execute();
      if (teams.length !== teamIDs.length) throw new ParhelionError("ERR_VALIDATION", "teamIDs: every team must exist in the organization");
    }
    const user = await trx.selectFrom("users").select("id").where("email", "=", email).where("removed_at", "is", null).executeTakeFirst();
    if (user) throw new ParhelionError("ERR_CONFLICT", "A user with this email already exists.");
    const pending = await trx
      .selectFrom("invitations")
      .select("id")
      .where("org_id", "=", orgId)
      .where("email", "=", email)
      .where("state", "=", "Pending")
      .where("expires_at", ">", now)
      .executeTakeFirst();
    if (pending) throw new ParhelionError("ERR_CONFLICT", "A pending invitation for this email already exists.");
    return trx
      .insertInto("invitations")
      .values({
        id: randomUUID(),
        org_id: orgId,
        email,
        role,
        team_ids: teamIDs,
        message,
        token_hash: sha256(Buffer.from(token, "base64url")),
        state: "Pending",
        created_by: createdBy,
        created_at: now,
        expires_at: new Date(now.getTime() + seconds * 1000),
        acted_at: null,
        user_id: null,
      })
      .returning(COLUMNS)
      .executeTakeFirstOrThrow();
  });
  return { invitation: view(row, now), token };
}

/** Lists the organization's invitations by (created_at, id), optionally of one state; `after` is the last invitationID of the previous page. */
export async function listInvitations(
  db: Db,
  orgId: string,
  opts: { limit: number; after?: string; state?: InvitationState },
  clock: Clock = systemClock,
): Promise<InvitationView[]> {
  const limit = pageLimit(opts.limit);
  const org = requireUuid(orgId, "orgId");
  let q = db.selectFrom("invitations").select(COLUMNS).where("org_id", "=", org);
  if (opts.state !== undefined) {
    if (!STATES.includes(opts.state)) throw new ParhelionError("ERR_VALIDATION", `state must be one of ${STATES.join(", ")}`);
    q = q.where("state", "=", opts.state);
  }
  if (opts.after !== undefined) {
    const after = requireUuid(opts.after, "after");
    const exists = await db.selectFrom("invitations").select("id").where("id", "=", after).where("org_id", "=", org).executeTakeFirst();
    if (!exists) throw new ParhelionError("ERR_VALIDATION", "after: no such invitation in this organization");
    q = q.where(sql<boolean>`(created_at, id) > (select c.created_at, c.id from invitations c where c.id = ${after})`);
  }
  const rows = await q.orderBy("created_at").orderBy("id").limit(limit).execute();
  const now = clock();
  return rows.map((r) => view(r, now));
}

/** Returns one invitation of the organization; ERR_NOT_FOUND otherwise. */
export async function getInvitation(db: Db, orgId: string, invitationId: string, clock: Clock = systemClock): Promise<InvitationView> {
  if (!isUuid(orgId) || !isUuid(invitationId)) throw new ParhelionError("ERR_NOT_FOUND", "invitation not found");
  const row = await db.selectFrom("invitations").select(COLUMNS).where("id", "=", invitationId).where("org_id", "=", orgId).executeTakeFirst();
  if (!row) throw new ParhelionError("ERR_NOT_FOUND", "invitation not found");
  return view(row, clock());
}

/** Revokes a Pending invitation; ERR_NOT_FOUND if missing, ERR_CONFLICT if it is no longer Pending. */
export async function revokeInvitation(db: Db, orgId: string, invitationId: string, clock: Clock = systemClock): Promise<InvitationView> {
  if (!isUuid(orgId) || !isUuid(invitationId)) throw new ParhelionError("ERR_NOT_FOUND", "invitation not found");
  const now = clock();
  const row = await db
    .updateTable("invitations")
    .set({ state: "Revoked", acted_at: now })
    .where("id", "=", invitationId)
    .where("org_id", "=", orgId)
    .where("state", "=", "Pending")
    .returning(COLUMNS)
    .executeTakeFirst();
  if (row) return view(row, now);
  const existing = await db.selectFrom("invitations").select("state").where("id", "=", invitationId).where("org_id", "=", orgId).executeTakeFirst();
  if (!existing) throw new ParhelionError("ERR_NOT_FOUND", "invitation not found");
  throw new ParhelionError("ERR_CONFLICT", `The invitation is ${existing.state}, not Pending.`);
}

/** Grants what an accepted invitation carries (role, teams) inside the acceptance transaction. */
export type OnInvitationAccepted = (
  trx: Transaction<Database>,
  user: UserView,
  invitation: { invitationID: string; orgId: string; role: OrgRole; teamIDs: string[] },
) => Promise<void>;

/**
 * Accepts an invitation: checks the password policy first (the invitation stays Pending if it fails), then in
 * one transaction consumes the token with a single conditional UPDATE, creates the user and runs `onAccepted`.
 * Single-use and race-free: of concurrent accepts of one token exactly one succeeds. ERR_INVITATION_INVALID
 * (one message) for unknown, expired, revoked or used tokens.
 */
export async function acceptInvitation(
  db: Db,
  input: { token: string; password: string; firstName: string; lastName: string },
  clock: Clock = systemClock,
  onAccepted?: OnInvitationAccepted,
): Promise<{ user: UserView; role: OrgRole; teamIDs: string[]; orgId: string }> {
  const bytes = decodeToken(input.token);
  if (!bytes) throw new ParhelionError("ERR_INVITATION_INVALID", INVALID);
  const tokenHash = sha256(bytes);
  const firstName = text(input.firstName, "firstName", { max: 200, allowEmpty: true });
  const lastName = text(input.lastName, "lastName", { max: 200, allowEmpty: true });

  // Read without consuming, to check the password against the invited email before anything changes.
  const peek = await db
    .selectFrom("invitations")
    .select(["email"])
    .where("token_hash", "=", tokenHash)
    .where("state", "=", "Pending")
    .where("expires_at", ">", clock())
    .executeTakeFirst();
  if (!peek) throw new ParhelionError("ERR_INVITATION_INVALID", INVALID);
  checkPasswordPolicy(input.password, { email: peek.email });
  const phc = await hashPassword(input.password);

  return db.transaction().execute(async (trx) => {
    const now = clock();
    // The single-use gate: concurrent accepts serialize on the row lock and all but one match no row.
    const inv = await trx
      .updateTable("invitations")
      .set({ state: "Accepted", acted_at: now })
      .where("token_hash", "=", tokenHash)
      .where("state", "=", "Pending")
      .where("expires_at", ">", now)
      .returning(["id", "org_id", "email", "role", "team_ids"])
      .executeTakeFirst();
    if (!inv) throw new ParhelionError("ERR_INVITATION_INVALID", INVALID);
    const role = requireRole(inv.role);
    const user = await createUser(trx, { orgId: inv.org_id, email: inv.email, firstName, lastName, passwordHash: phc });
    await trx.updateTable("invitations").set({ user_id: user.userID }).where("id", "=", inv.id).execute();
    const teamIDs = [...inv.team_ids];
    if (onAccepted) await onAccepted(trx, user, { invitationID: inv.id, orgId: inv.org_id, role, teamIDs: [...teamIDs] });
    return { user, role, teamIDs, orgId: inv.org_id };
  });
}
