import { randomUUID } from "node:crypto";
import { sql } from "kysely";
import { ParhelionError } from "../lib/errors.js";
import type { Db } from "../store/schema.js";
import { checkPasswordPolicy, hashPassword, verifyPassword } from "./passwords.js";
import { revokeUserSessions } from "./sessions.js";
import { isUuid, isoNN, isUniqueViolation, normalizeEmail, pageLimit, requireUuid, text } from "./internal.js";
import { systemClock, type Clock } from "./types.js";

/** A user as the API shows it (Helios shape plus `createdAt`). Never carries the password hash. */
export interface UserView {
  userID: string;
  email: string;
  firstName: string;
  lastName: string;
  createdAt: string;
}

/** An active user with what sign-in needs: the organization and the stored password hash. */
export interface UserAccount extends UserView {
  orgId: string;
  passwordHash: string | null;
}

const NAME_MAX = 200;

interface UserRow {
  id: string;
  org_id: string;
  email: string;
  first_name: string;
  last_name: string;
  password_hash: string | null;
  created_at: Date | string;
}

function view(r: UserRow): UserView {
  return { userID: r.id, email: r.email, firstName: r.first_name, lastName: r.last_name, createdAt: isoNN(r.created_at) };
}

const COLUMNS = ["id", "org_id", "email", "first_name", "last_name", "password_hash", "created_at"] as const;

/** Creates a user (email lower-cased and trimmed); ERR_CONFLICT if an active user already has the email. */
export async function createUser(
  db: Db,
  input: { orgId: string; email: string; firstName: string; lastName: string; passwordHash: string | null },
): Promise<UserView> {
  const orgId = requireUuid(input.orgId, "orgId");
  const email = normalizeEmail(input.email);
  const firstName = text(input.firstName, "firstName", { max: NAME_MAX, allowEmpty: true });
  const lastName = text(input.lastName, "lastName", { max: NAME_MAX, allowEmpty: true });
  if (input.passwordHash !== null && typeof input.passwordHash !== "string") {
    throw new ParhelionError("ERR_VALIDATION", "passwordHash must be a PHC string or null");
  }
  try {
    const row = await db
      .insertInto("users")
      .values({
        id: randomUUID(),
        org_id: orgId,
        email,
        first_name: firstName,
        last_name: lastName,
        password_hash: input.passwordHash,
        password_changed_at: input.passwordHash === null ? null : sql<Date>`now()`,
        removed_at: null,
      })
      .returning(COLUMNS)
      .executeTakeFirstOrThrow();
    return view(row);
  } catch (err) {
    if (isUniqueViolation(err, "users_active_email")) {
      throw new ParhelionError("ERR_CONFLICT", "A user with this email already exists.", { cause: err });
    }
    throw err;
  }
}

/** Returns an active user of the organization; ERR_NOT_FOUND otherwise. */
export async function getUser(db: Db, orgId: string, userId: string): Promise<UserView> {
  if (!isUuid(orgId) || !isUuid(userId)) throw new ParhelionError("ERR_NOT_FOUND", "user not found");
  const row = await db
    .selectFrom("users")
    .select(COLUMNS)
    .where("id", "=", userId)
    .where("org_id", "=", orgId)
    .where("removed_at", "is", null)
    .executeTakeFirst();
  if (!row) throw new ParhelionError("ERR_NOT_FOUND", "user not found");
  return view(row);
}

/** Finds the active user with this email (any organization), with the password hash sign-in needs; undefined if none. */
export async function findUserByEmail(db: Db, email: string): Promise<UserAccount | undefined> {
  let normalized: string;
  try {
    normalized = normalizeEmail(email);
  } catch {
    return undefined;
  }
  const row = await db.selectFrom("users").select(COLUMNS).where("email", "=", normalized).where("removed_at", "is", null).executeTakeFirst();
  return row ? { ...view(row), orgId: row.org_id, passwordHash: row.password_hash } : undefined;
}

/**
 * Checks an email and password; throws ERR_INVALID_CREDENTIALS (one message for every cause). An unknown
 * email or a user without a password costs the same argon2 computation as a wrong password.
 */
export async function verifyUserPassword(db: Db, email: string, password: string): Promise<UserAccount> {
  const account = await findUserByEmail(db, email);
  const ok = await verifyPassword(password, account?.passwordHash ?? null);
  if (!ok || !account) throw new ParhelionError("ERR_INVALID_CREDENTIALS", "The email or password is wrong.");
  return account;
}

/** Lists the organization's active users by (created_at, id); `after` is the last userID of the previous page. */
export async function listUsers(db: Db, orgId: string, opts: { limit: number; after?: string; email?: string }): Promise<UserView[]> {
  const limit = pageLimit(opts.limit);
  const org = requireUuid(orgId, "orgId");
  let q = db.selectFrom("users").select(COLUMNS).where("org_id", "=", org).where("removed_at", "is", null);
  if (opts.email !== undefined) q = q.where("email", "=", normalizeEmail(opts.email));
  if (opts.after !== undefined) {
    const after = requireUuid(opts.after, "after");
    const exists = await db.selectFrom("users").select("id").where("id", "=", after).where("org_id", "=", org).executeTakeFirst();
    if (!exists) throw new ParhelionError("ERR_VALIDATION", "after: no such user in this organization");
    // Compare in SQL: created_at has microseconds a JS Date would lose.
    q = q.where(sql<boolean>`(created_at, id) > (select c.created_at, c.id from users c where c.id = ${after})`);
  }
  const rows = await q.orderBy("created_at").orderBy("id").limit(limit).execute();
  return rows.map(view);
}

/** Removes a user (soft: sets removed_at) and revokes all their sessions, atomically; ERR_NOT_FOUND if not active. */
export async function removeUser(db: Db, orgId: string, userId: string, clock: Clock = systemClock): Promise<UserView> {
  if (!isUuid(orgId) || !isUuid(userId)) throw new ParhelionError("ERR_NOT_FOUND", "user not found");
  return db.transaction().execute(async (trx) => {
    const now = clock();
    const row = await trx
      .updateTable("users")
      .set({ removed_at: now })
      .where("id", "=", userId)
      .where("org_id", "=", orgId)
      .where("removed_at", "is", null)
      .returning(COLUMNS)
      .executeTakeFirst();
    if (!row) throw new ParhelionError("ERR_NOT_FOUND", "user not found");
    await revokeUserSessions(trx, userId, { clock });
    return view(row);
  });
}

/** Stores a new password hash (PHC string) for an active user; ERR_NOT_FOUND otherwise. Does not touch sessions. */
export async function setPassword(db: Db, userId: string, phc: string, clock: Clock = systemClock): Promise<void> {
  if (!isUuid(userId)) throw new ParhelionError("ERR_NOT_FOUND", "user not found");
  const res = await db
    .updateTable("users")
    .set({ password_hash: phc, password_changed_at: clock() })
    .where("id", "=", userId)
    .where("removed_at", "is", null)
    .executeTakeFirst();
  if (res.numUpdatedRows === 0n) throw new ParhelionError("ERR_NOT_FOUND", "user not found");
}

/**
 * Changes a user's password: the current one must verify if one is set (else ERR_INVALID_CREDENTIALS), the
 * new one must pass the policy (against the stored email, and `email` too if given), and every session but
 * `exceptSessionID` is revoked.
 */
export async function changePassword(
  db: Db,
  input: { userId: string; currentPassword: string | null; newPassword: string; email?: string; exceptSessionID?: string | null },
  clock: Clock = systemClock,
): Promise<void> {
  if (!isUuid(input.userId)) throw new ParhelionError("ERR_NOT_FOUND", "user not found");
  const row = await db
    .selectFrom("users")
    .select(["email", "password_hash"])
    .where("id", "=", input.userId)
    .where("removed_at", "is", null)
    .executeTakeFirst();
  if (!row) throw new ParhelionError("ERR_NOT_FOUND", "user not found");
  if (row.password_hash !== null) {
    const ok = await verifyPassword(input.currentPassword ?? "", row.password_hash);
    if (!ok) throw new ParhelionError("ERR_INVALID_CREDENTIALS", "The current password is wrong.");
  }
  checkPasswordPolicy(input.newPassword, { email: row.email });
  if (typeof input.email === "string" && input.email.trim().toLowerCase() !== row.email) checkPasswordPolicy(input.newPassword, { email: input.email });
  const phc = await hashPassword(input.newPassword);
  await db.transaction().execute(async (trx) => {
    // Compare-and-set: a concurrent change between our read and this write makes this one fail.
    const res = await trx
      .updateTable("users")
      .set({ password_hash: phc, password_changed_at: clock() })
      .where("id", "=", input.userId)
      .where("removed_at", "is", null)
      .where(sql<boolean>`password_hash is not distinct from ${row.password_hash}`)
      .executeTakeFirst();
    if (res.numUpdatedRows === 0n) throw new ParhelionError("ERR_CONFLICT", "The password changed concurrently; try again.");
    await revokeUserSessions(trx, input.userId, { clock, exceptSessionID: input.exceptSessionID ?? undefined });
  });
}
