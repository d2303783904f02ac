import { randomUUID, timingSafeEqual } from "node:crypto";
import { ParhelionError } from "../lib/errors.js";
import type { Db } from "../store/schema.js";
import { asDate, decodeToken, isUuid, randomToken, requireUuid, sha256, ttl } from "./internal.js";
import { systemClock, type Clock, type Principal } from "./types.js";

/** Name of the console session cookie (its attributes are set by the API layer). */
export const SESSION_COOKIE = "parhelion_session";

export const SESSION_TTL_MIN = 60;
export const SESSION_TTL_MAX = 30 * 24 * 3600;
/** last_seen_at is written at most this often per session. */
const LAST_SEEN_INTERVAL_MS = 60_000;
const CSRF_MAX = 256;

const INVALID = "The session is invalid or has expired; sign in again.";

/** A new session: the token goes in the cookie, the CSRF token to the console; neither is stored in clear. */
export interface NewSession {
  sessionID: string;
  token: string;
  csrfToken: string;
  expiresAt: string;
}

/** An authenticated console session. */
export interface SessionAuth {
  principal: Principal;
  /** sha256 of the session's CSRF token, for checkCsrf. */
  csrfHash: Buffer;
  sessionID: string;
}

/** Opens a session for an active user of the organization (ERR_NOT_FOUND otherwise); tokens are 32 random bytes, stored as sha256. */
export async function createSession(
  db: Db,
  input: { userId: string; orgId: string; sourceIp: string | null; ttlSeconds: number },
  clock: Clock = systemClock,
): Promise<NewSession> {
  const userId = requireUuid(input.userId, "userId");
  const orgId = requireUuid(input.orgId, "orgId");
  const seconds = ttl(input.ttlSeconds, "ttlSeconds", SESSION_TTL_MIN, SESSION_TTL_MAX);
  const now = clock();
  const expiresAt = new Date(now.getTime() + seconds * 1000);
  const token = randomToken();
  const csrfToken = randomToken();
  const sessionID = randomUUID();
  const sourceIp = input.sourceIp === null ? null : String(input.sourceIp).slice(0, 64);
  // Insert only if the user is active in this organization.
  const res = await db
    .insertInto("sessions")
    .columns(["id", "token_hash", "csrf_hash", "user_id", "org_id", "source_ip", "created_at", "expires_at", "last_seen_at", "revoked_at"])
    .expression((eb) =>
      eb
        .selectFrom("users")
        .select([
          eb.val(sessionID).as("id"),
          eb.val(sha256(Buffer.from(token, "base64url"))).as("token_hash"),
          eb.val(sha256(Buffer.from(csrfToken, "base64url"))).as("csrf_hash"),
          "users.id",
          "users.org_id",
          eb.val(sourceIp).as("source_ip"),
          eb.val(now).as("created_at"),
          eb.val(expiresAt).as("expires_at"),
          eb.val(now).as("last_seen_at"),
          eb.val(null).as("revoked_at"),
        ])
        .where("users.id", "=", userId)
        .where("users.org_id", "=", orgId)
        .where("users.removed_at", "is", null),
    )
    .executeTakeFirst();
  if (res.numInsertedOrUpdatedRows !== 1n) throw new ParhelionError("ERR_NOT_FOUND", "user not found");
  return { sessionID, token, csrfToken, expiresAt: expiresAt.toISOString() };
}

/** Resolves a session cookie token; ERR_SESSION_INVALID (one message) if malformed, unknown, expired, revoked or the user is removed. */
export async function authenticateSession(db: Db, token: string, clock: Clock = systemClock): Promise<SessionAuth> {
  const bytes = decodeToken(token);
  if (!bytes) throw new ParhelionError("ERR_SESSION_INVALID", INVALID);
  const now = clock();
  // Looked up by sha256 of the token: an index probe on a digest reveals nothing useful through timing.
  const row = await db
    .selectFrom("sessions as s")
    .innerJoin("users as u", "u.id", "s.user_id")
    .select(["s.id", "s.org_id", "s.user_id", "s.csrf_hash", "s.expires_at", "s.revoked_at", "s.last_seen_at", "u.email", "u.removed_at"])
    .where("s.token_hash", "=", sha256(bytes))
    .executeTakeFirst();
  if (!row || row.revoked_at !== null || row.removed_at !== null || asDate(row.expires_at).getTime() <= now.getTime()) {
    throw new ParhelionError("ERR_SESSION_INVALID", INVALID);
  }
  if (row.last_seen_at === null || now.getTime() - asDate(row.last_seen_at).getTime() >= LAST_SEEN_INTERVAL_MS) {
    // Bookkeeping only: a failed write must not fail the request.
    await db.updateTable("sessions").set({ last_seen_at: now }).where("id", "=", row.id).execute().catch(() => undefined);
  }
  return {
    principal: { kind: "user", orgId: row.org_id, userId: row.user_id, email: row.email, apiKeyId: null, sessionId: row.id, keyRole: null },
    csrfHash: row.csrf_hash,
    sessionID: row.id,
  };
}

/** Checks the CSRF header against the session's CSRF hash in constant time; throws ERR_CSRF if missing or wrong. */
export function checkCsrf(csrfHash: Buffer, headerValue: string | undefined): void {
  if (typeof headerValue !== "string" || headerValue.length === 0 || headerValue.length > CSRF_MAX || csrfHash.length !== 32) {
    throw new ParhelionError("ERR_CSRF", "The CSRF token is missing or does not match the session.");
  }
  // Both sides are 32-byte digests, so the comparison length never depends on the input.
  const bytes = decodeToken(headerValue);
  const same = timingSafeEqual(sha256(bytes ?? Buffer.alloc(32)), csrfHash);
  if (!same || bytes === null) {
    throw new ParhelionError("ERR_CSRF", "The CSRF token is missing or does not match the session.");
  }
}

/** Revokes one session (sign-out); answers whether an active session was revoked. */
export async function revokeSession(db: Db, sessionID: string, clock: Clock = systemClock): Promise<boolean> {
  if (!isUuid(sessionID)) return false;
  const res = await db.updateTable("sessions").set({ revoked_at: clock() }).where("id", "=", sessionID).where("revoked_at", "is", null).executeTakeFirst();
  return res.numUpdatedRows > 0n;
}

/** Revokes every active session of a user, optionally sparing one; answers how many were revoked. */
export async function revokeUserSessions(db: Db, userId: string, opts: { exceptSessionID?: string | undefined; clock?: Clock } = {}): Promise<number> {
  if (!isUuid(userId)) return 0;
  let q = db
    .updateTable("sessions")
    .set({ revoked_at: (opts.clock ?? systemClock)() })
    .where("user_id", "=", userId)
    .where("revoked_at", "is", null);
  if (opts.exceptSessionID !== undefined && isUuid(opts.exceptSessionID)) q = q.where("id", "<>", opts.exceptSessionID);
  const res = await q.executeTakeFirst();
  return Number(res.numUpdatedRows);
}
