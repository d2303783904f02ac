import { randomBytes, randomUUID } from "node:crypto";
import { sql } from "kysely";
import { Secret, TOTP } from "otpauth";
import QRCode from "qrcode";
import { ParhelionError } from "../lib/errors.js";
import type { Db } from "../store/schema.js";
import { keyUnavailable, openColumn, sealColumn } from "../kms/index.js";
import { asDate, iso, isoNN, isUniqueViolation, isUuid, sha256, text } from "./internal.js";
import { systemClock, type Clock } from "./types.js";

// Second factors of console users: TOTP (RFC 6238), WebAuthn credentials (webauthn.ts) and single-use
// recovery codes; the per-session verification state that the request pipeline gates on.

/** What authenticator apps expect (Google Authenticator ignores anything else): SHA-1, 6 digits, 30 s. */
export const TOTP_PARAMS = { algorithm: "SHA1", digits: 6, period: 30 } as const;
/** Codes of the previous and next time step are accepted too (clock drift), never an already used step. */
export const TOTP_WINDOW = 1;
/** 160-bit shared secrets, the size RFC 4226 recommends. */
const TOTP_SECRET_BYTES = 20;
/** An unconfirmed TOTP enrollment expires after this long. */
export const TOTP_ENROLL_TTL_MS = 10 * 60_000;
export const RECOVERY_CODE_COUNT = 10;
/** Bounds of the organization's step-up window, in minutes. */
export const STEP_UP_MINUTES_MIN = 1;
export const STEP_UP_MINUTES_MAX = 1440;
const FACTOR_NAME_MAX = 64;
const INVALID = "The code is wrong, expired or already used.";

export type FactorType = "totp" | "webauthn";

/** A second factor as the API shows it: never a secret or a public key. */
export interface FactorView {
  factorID: string;
  type: FactorType;
  name: string;
  createdAt: string;
  lastUsedAt: string | null;
}

/** The MFA facts about one console session that the request pipeline decides on. */
export interface MfaSessionState {
  userId: string;
  /** The user has at least one confirmed second factor. */
  enrolled: boolean;
  /** When a second factor was last verified in this session; null if never. */
  verifiedAt: Date | null;
  /** The organization's policy: users must have a second factor. */
  orgRequired: boolean;
  /** How long a verification counts as fresh for step-up routes. */
  stepUpMinutes: number;
}

/** A new TOTP enrollment: the secret is in this answer only. */
export interface TotpEnrollment {
  factorID: string;
  secret: string;
  otpauthURI: string;
  /** The otpauth URI as an SVG QR code. */
  qrCodeSvg: string;
  expiresAt: string;
}

/** Reads a session's MFA state; ERR_SESSION_INVALID if the session row is gone. */
export async function mfaSessionState(db: Db, sessionId: string): Promise<MfaSessionState> {
  const row = await db
    .selectFrom("sessions as s")
    .innerJoin("organizations as o", "o.id", "s.org_id")
    .select((eb) => [
      "s.user_id",
      "s.mfa_verified_at",
      "o.mfa_required",
      "o.mfa_step_up_minutes",
      eb.exists(eb.selectFrom("mfa_totp as t").select("t.id").whereRef("t.user_id", "=", "s.user_id").where("t.confirmed_at", "is not", null)).as("has_totp"),
      eb.exists(eb.selectFrom("mfa_webauthn_credentials as w").select("w.id").whereRef("w.user_id", "=", "s.user_id")).as("has_webauthn"),
    ])
    .where("s.id", "=", sessionId)
    .executeTakeFirst();
  if (!row) throw new ParhelionError("ERR_SESSION_INVALID", "The session is invalid or has expired; sign in again.");
  return {
    userId: row.user_id,
    enrolled: Boolean(row.has_totp) || Boolean(row.has_webauthn),
    verifiedAt: row.mfa_verified_at === null ? null : asDate(row.mfa_verified_at),
    orgRequired: row.mfa_required,
    stepUpMinutes: row.mfa_step_up_minutes,
  };
}

/** Which sessions short of their second factor may call a route. */
export type MfaGateAllowance = ReadonlyArray<"verify" | "enroll">;

/**
 * The gate every session-authenticated request passes: a session whose user has a factor but has not
 * verified it in this session may only verify (ERR_MFA_REQUIRED); a user without a factor in an organization
 * that requires one may only enroll (ERR_MFA_ENROLLMENT_REQUIRED).
 */
export function checkMfaGate(state: MfaSessionState, allowed: MfaGateAllowance | undefined): void {
  if (state.enrolled && state.verifiedAt === null && !allowed?.includes("verify")) {
    throw new ParhelionError("ERR_MFA_REQUIRED", "This session is waiting for its second factor: verify a TOTP code, a security key or a recovery code (POST /v1/auth/mfa/.../verify).");
  }
  if (!state.enrolled && state.orgRequired && !allowed?.includes("enroll")) {
    throw new ParhelionError("ERR_MFA_ENROLLMENT_REQUIRED", "Your organization requires a second factor: enroll a TOTP authenticator or a security key first (POST /v1/auth/mfa/totp or /v1/auth/mfa/webauthn/registration/options).");
  }
}

/**
 * Step-up: a user with a second factor must have verified one within the organization's window. A user with
 * none has nothing to verify and passes (the mfaRequired policy, checked by the gate, is what forces one).
 */
export function checkStepUp(state: MfaSessionState, now: Date): void {
  if (!state.enrolled) return;
  const windowMs = state.stepUpMinutes * 60_000;
  if (state.verifiedAt === null || now.getTime() - state.verifiedAt.getTime() > windowMs) {
    throw new ParhelionError("ERR_STEP_UP_REQUIRED", `This action needs a second factor verified within the last ${state.stepUpMinutes} minutes: verify one (POST /v1/auth/mfa/totp/verify, the security key or a recovery code) and retry.`, {
      details: { stepUpWindowMinutes: state.stepUpMinutes, verifiedAt: state.verifiedAt?.toISOString() ?? null },
    });
  }
}

/** Records that a second factor was verified in this session now. */
export async function markSessionMfaVerified(db: Db, sessionId: string, clock: Clock = systemClock): Promise<Date> {
  const now = clock();
  const res = await db.updateTable("sessions").set({ mfa_verified_at: now }).where("id", "=", sessionId).where("revoked_at", "is", null).executeTakeFirst();
  if (res.numUpdatedRows !== 1n) throw new ParhelionError("ERR_SESSION_INVALID", "The session is invalid or has expired; sign in again.");
  return now;
}

/** Whether the user has a confirmed second factor. */
export async function userHasFactor(db: Db, userId: string): Promise<boolean> {
  const row = await db
    .selectNoFrom((eb) => [
      eb.exists(eb.selectFrom("mfa_totp").select("id").where("user_id", "=", userId).where("confirmed_at", "is not", null)).as("t"),
      eb.exists(eb.selectFrom("mfa_webauthn_credentials").select("id").where("user_id", "=", userId)).as("w"),
    ])
    .executeTakeFirstOrThrow();
  return Boolean(row.t) || Boolean(row.w);
}

/** The user's confirmed factors (TOTP first, then security keys by creation) and unused recovery codes left. */
export async function listFactors(db: Db, userId: string): Promise<{ factors: FactorView[]; recoveryCodesRemaining: number }> {
  if (!isUuid(userId)) throw new ParhelionError("ERR_NOT_FOUND", "user not found");
  const totp = await db.selectFrom("mfa_totp").select(["id", "name", "confirmed_at", "last_used_at"]).where("user_id", "=", userId).where("confirmed_at", "is not", null).execute();
  const keys = await db.selectFrom("mfa_webauthn_credentials").select(["id", "name", "created_at", "last_used_at"]).where("user_id", "=", userId).orderBy("created_at").orderBy("id").execute();
  const codes = await db.selectFrom("mfa_recovery_codes").select((eb) => eb.fn.countAll<string>().as("n")).where("user_id", "=", userId).where("used_at", "is", null).executeTakeFirstOrThrow();
  return {
    factors: [
      ...totp.map((t) => ({ factorID: t.id, type: "totp" as const, name: t.name, createdAt: isoNN(t.confirmed_at!), lastUsedAt: iso(t.last_used_at) })),
      ...keys.map((k) => ({ factorID: k.id, type: "webauthn" as const, name: k.name, createdAt: isoNN(k.created_at), lastUsedAt: iso(k.last_used_at) })),
    ],
    recoveryCodesRemaining: Number(codes.n),
  };
}

/** Checks a factor's display name (1..64 characters, no control characters). */
export function factorName(name: unknown, fallback: string): string {
  if (name === undefined || name === null) return fallback;
  return text(name, "name", { max: FACTOR_NAME_MAX, allowEmpty: false });
}

function totpOf(secret: string, issuer: string, label: string): TOTP {
  return new TOTP({ issuer, label, ...TOTP_PARAMS, secret: Secret.fromBase32(secret) });
}

/**
 * Starts a TOTP enrollment: a fresh 160-bit secret, its otpauth:// URI and a QR code of it. Replaces an
 * unconfirmed enrollment of the user; ERR_CONFLICT if the user already has a TOTP authenticator.
 */
export async function beginTotpEnrollment(
  db: Db,
  input: { userId: string; email: string; issuer: string; name?: string | undefined },
  clock: Clock = systemClock,
): Promise<TotpEnrollment> {
  const name = factorName(input.name, "Authenticator app");
  const secret = new Secret({ size: TOTP_SECRET_BYTES }).base32;
  const now = clock();
  const expiresAt = new Date(now.getTime() + TOTP_ENROLL_TTL_MS);
  const factorID = randomUUID();
  const user = await db.selectFrom("users").select("org_id").where("id", "=", input.userId).executeTakeFirst();
  if (!user) throw new ParhelionError("ERR_NOT_FOUND", "user not found");
  // Sealed before the transaction: a first secret of the organization makes its keys (their own writes).
  const secretEnc = await sealColumn(db, user.org_id, "mfa_totp.secret", factorID, secret);
  await db.transaction().execute(async (trx) => {
    // Serializes enrollments of one user.
    await sql`SELECT pg_advisory_xact_lock(hashtext('mfa_totp'), hashtext(${input.userId}))`.execute(trx);
    const confirmed = await trx.selectFrom("mfa_totp").select("id").where("user_id", "=", input.userId).where("confirmed_at", "is not", null).executeTakeFirst();
    if (confirmed) throw new ParhelionError("ERR_CONFLICT", "You already have a TOTP authenticator; remove it first to enroll another.");
    await trx.deleteFrom("mfa_totp").where("user_id", "=", input.userId).where("confirmed_at", "is", null).execute();
    await trx.insertInto("mfa_totp").values({ id: factorID, user_id: input.userId, name, secret: null, secret_enc: secretEnc, enroll_expires_at: expiresAt, confirmed_at: null, last_used_step: null, last_used_at: null }).execute();
  });
  const otpauthURI = totpOf(secret, input.issuer, input.email).toString();
  const qrCodeSvg = await QRCode.toString(otpauthURI, { type: "svg", errorCorrectionLevel: "M", margin: 2 });
  return { factorID, secret, otpauthURI, qrCodeSvg, expiresAt: expiresAt.toISOString() };
}

/** The stored TOTP secret of a factor, opened from its envelope (ERR_KEY_UNAVAILABLE if it cannot be). */
async function totpSecret(db: Db, row: { id: string; secret_enc: Buffer | null }): Promise<string> {
  if (row.secret_enc === null) throw keyUnavailable();
  return openColumn(db, "mfa_totp.secret", row.id, row.secret_enc);
}

/** The absolute time step a code matches (current ± TOTP_WINDOW), or null. */
function matchStep(secret: string, code: string, now: Date): number | null {
  if (!/^\d{6}$/.test(code)) return null;
  const totp = new TOTP({ ...TOTP_PARAMS, secret: Secret.fromBase32(secret) });
  const delta = totp.validate({ token: code, timestamp: now.getTime(), window: TOTP_WINDOW });
  // validate() answers the step offset: 0 is a match, null is none.
  if (delta === null) return null;
  return totp.counter({ timestamp: now.getTime() }) + delta;
}

/** Normalizes what a user typed as a TOTP code: digits only, spaces and dashes dropped. */
export function normalizeTotpCode(code: string): string {
  return code.replace(/[\s-]/g, "");
}

/**
 * Confirms a TOTP enrollment with a code from the authenticator, marks the session verified, and, if the
 * user has no unused recovery codes, issues a new set (answered once). ERR_MFA_INVALID for a wrong code or a
 * missing or expired enrollment.
 */
export async function confirmTotpEnrollment(
  db: Db,
  input: { userId: string; sessionId: string; code: string },
  clock: Clock = systemClock,
): Promise<{ factorID: string; recoveryCodes: string[] | null }> {
  const now = clock();
  const row = await db.selectFrom("mfa_totp").select(["id", "secret_enc", "enroll_expires_at"]).where("user_id", "=", input.userId).where("confirmed_at", "is", null).executeTakeFirst();
  if (!row || row.enroll_expires_at === null || asDate(row.enroll_expires_at).getTime() <= now.getTime()) {
    throw new ParhelionError("ERR_MFA_INVALID", "No TOTP enrollment is waiting (it expires after 10 minutes): start one again.");
  }
  const step = matchStep(await totpSecret(db, row), normalizeTotpCode(input.code), now);
  if (step === null) throw new ParhelionError("ERR_MFA_INVALID", INVALID);
  try {
    return await db.transaction().execute(async (trx) => {
      const res = await trx
        .updateTable("mfa_totp")
        .set({ confirmed_at: now, enroll_expires_at: null, last_used_step: String(step), last_used_at: now })
        .where("id", "=", row.id)
        .where("confirmed_at", "is", null)
        .executeTakeFirst();
      if (res.numUpdatedRows !== 1n) throw new ParhelionError("ERR_MFA_INVALID", "No TOTP enrollment is waiting: start one again.");
      await markSessionMfaVerified(trx, input.sessionId, () => now);
      const recoveryCodes = (await unusedRecoveryCodes(trx, input.userId)) === 0 ? await replaceRecoveryCodes(trx, input.userId) : null;
      return { factorID: row.id, recoveryCodes };
    });
  } catch (err) {
    if (isUniqueViolation(err, "mfa_totp_one_per_user")) throw new ParhelionError("ERR_CONFLICT", "You already have a TOTP authenticator.", { cause: err });
    throw err;
  }
}

/**
 * Verifies a TOTP code of the user's authenticator and marks the session verified. A code is accepted once:
 * its time step must be later than the last accepted one (a compare-and-set, so two concurrent requests with
 * one code cannot both pass). ERR_MFA_INVALID otherwise.
 */
export async function verifyTotp(db: Db, input: { userId: string; sessionId: string; code: string }, clock: Clock = systemClock): Promise<Date> {
  const now = clock();
  const row = await db.selectFrom("mfa_totp").select(["id", "secret_enc"]).where("user_id", "=", input.userId).where("confirmed_at", "is not", null).executeTakeFirst();
  // No authenticator and a wrong code look the same.
  const step = matchStep(row ? await totpSecret(db, row) : new Secret({ size: TOTP_SECRET_BYTES }).base32, normalizeTotpCode(input.code), now);
  if (!row || step === null) throw new ParhelionError("ERR_MFA_INVALID", INVALID);
  return db.transaction().execute(async (trx) => {
    const res = await trx
      .updateTable("mfa_totp")
      .set({ last_used_step: String(step), last_used_at: now })
      .where("id", "=", row.id)
      .where((eb) => eb.or([eb("last_used_step", "is", null), eb("last_used_step", "<", String(step))]))
      .executeTakeFirst();
    if (res.numUpdatedRows !== 1n) throw new ParhelionError("ERR_MFA_INVALID", INVALID);
    return markSessionMfaVerified(trx, input.sessionId, () => now);
  });
}

// Recovery codes: 80 random bits, RFC 4648 base32 in four groups of four (xxxx-xxxx-xxxx-xxxx), stored as
// sha256 of the 16 upper-case characters. High entropy, so a plain digest is enough (as for tokens).
const B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

function newRecoveryCode(): string {
  const bytes = randomBytes(10);
  let bits = 0;
  let value = 0;
  let out = "";
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += B32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return out.toLowerCase().match(/.{4}/g)!.join("-");
}

/** The canonical form of a typed recovery code (upper case, no dashes or blanks), or null if it cannot be one. */
export function normalizeRecoveryCode(code: string): string | null {
  const c = code.replace(/[\s-]/g, "").toUpperCase();
  return /^[A-Z2-7]{16}$/.test(c) ? c : null;
}

async function unusedRecoveryCodes(db: Db, userId: string): Promise<number> {
  const r = await db.selectFrom("mfa_recovery_codes").select((eb) => eb.fn.countAll<string>().as("n")).where("user_id", "=", userId).where("used_at", "is", null).executeTakeFirstOrThrow();
  return Number(r.n);
}

/** Replaces all of the user's recovery codes with RECOVERY_CODE_COUNT new ones; answers them (shown once). */
export async function replaceRecoveryCodes(db: Db, userId: string): Promise<string[]> {
  const codes = Array.from({ length: RECOVERY_CODE_COUNT }, newRecoveryCode);
  await db.deleteFrom("mfa_recovery_codes").where("user_id", "=", userId).execute();
  await db
    .insertInto("mfa_recovery_codes")
    .values(codes.map((c) => ({ id: randomUUID(), user_id: userId, code_hash: sha256(normalizeRecoveryCode(c)!), used_at: null })))
    .execute();
  return codes;
}

/** Regenerates recovery codes for a user who has a second factor (ERR_CONFLICT otherwise). */
export async function regenerateRecoveryCodes(db: Db, userId: string): Promise<string[]> {
  return db.transaction().execute(async (trx) => {
    if (!(await userHasFactor(trx, userId))) throw new ParhelionError("ERR_CONFLICT", "Recovery codes back up a second factor: enroll one first.");
    return replaceRecoveryCodes(trx, userId);
  });
}

/**
 * Spends one recovery code (single use: a conditional UPDATE, so a code cannot be spent twice even
 * concurrently) and marks the session verified. Answers how many unused codes remain.
 */
export async function useRecoveryCode(db: Db, input: { userId: string; sessionId: string; code: string }, clock: Clock = systemClock): Promise<{ verifiedAt: Date; remaining: number }> {
  const now = clock();
  const canonical = normalizeRecoveryCode(input.code);
  // A malformed code is looked up like any other, as a digest nobody has.
  const hash = sha256(canonical ?? `invalid:${randomUUID()}`);
  return db.transaction().execute(async (trx) => {
    const used = await trx
      .updateTable("mfa_recovery_codes")
      .set({ used_at: now })
      .where("user_id", "=", input.userId)
      .where("code_hash", "=", hash)
      .where("used_at", "is", null)
      .returning("id")
      .executeTakeFirst();
    if (!used || canonical === null) throw new ParhelionError("ERR_MFA_INVALID", "The recovery code is wrong or already used.");
    const verifiedAt = await markSessionMfaVerified(trx, input.sessionId, () => now);
    return { verifiedAt, remaining: await unusedRecoveryCodes(trx, input.userId) };
  });
}

/**
 * Removes one of the user's factors. When the last one goes, the recovery codes go too (they back up a
 * factor). ERR_NOT_FOUND if the user has no such factor.
 */
export async function removeFactor(db: Db, userId: string, factorId: string): Promise<{ type: FactorType; name: string; remainingFactors: number }> {
  if (!isUuid(factorId)) throw new ParhelionError("ERR_NOT_FOUND", "factor not found");
  return db.transaction().execute(async (trx) => {
    const t = await trx.deleteFrom("mfa_totp").where("id", "=", factorId).where("user_id", "=", userId).where("confirmed_at", "is not", null).returning(["name"]).executeTakeFirst();
    const w = t ? undefined : await trx.deleteFrom("mfa_webauthn_credentials").where("id", "=", factorId).where("user_id", "=", userId).returning(["name"]).executeTakeFirst();
    const removed = t ? { type: "totp" as const, name: t.name } : w ? { type: "webauthn" as const, name: w.name } : undefined;
    if (!removed) throw new ParhelionError("ERR_NOT_FOUND", "factor not found");
    const left = await trx.selectNoFrom((eb) => [
      eb.selectFrom("mfa_totp").select((e) => e.fn.countAll<string>().as("n")).where("user_id", "=", userId).where("confirmed_at", "is not", null).as("t"),
      eb.selectFrom("mfa_webauthn_credentials").select((e) => e.fn.countAll<string>().as("n")).where("user_id", "=", userId).as("w"),
    ]).executeTakeFirstOrThrow();
    const remainingFactors = Number(left.t ?? 0) + Number(left.w ?? 0);
    if (remainingFactors === 0) await trx.deleteFrom("mfa_recovery_codes").where("user_id", "=", userId).execute();
    return { ...removed, remainingFactors };
  });
}

/** Removes every factor and recovery code of a user (an administrator's reset for a lost device). */
export async function resetUserMfa(db: Db, userId: string): Promise<number> {
  return db.transaction().execute(async (trx) => {
    const t = await trx.deleteFrom("mfa_totp").where("user_id", "=", userId).executeTakeFirst();
    const w = await trx.deleteFrom("mfa_webauthn_credentials").where("user_id", "=", userId).executeTakeFirst();
    await trx.deleteFrom("mfa_recovery_codes").where("user_id", "=", userId).execute();
    await trx.deleteFrom("mfa_challenges").where("user_id", "=", userId).execute();
    return Number(t.numDeletedRows) + Number(w.numDeletedRows);
  });
}

/** The organization's MFA policy. */
export interface OrgMfaPolicy {
  mfaRequired: boolean;
  mfaStepUpMinutes: number;
}

/** Changes the organization's MFA policy; answers the new one. */
export async function updateOrgMfaPolicy(db: Db, orgId: string, change: Partial<OrgMfaPolicy>): Promise<OrgMfaPolicy> {
  if (change.mfaStepUpMinutes !== undefined && (!Number.isInteger(change.mfaStepUpMinutes) || change.mfaStepUpMinutes < STEP_UP_MINUTES_MIN || change.mfaStepUpMinutes > STEP_UP_MINUTES_MAX)) {
    throw new ParhelionError("ERR_VALIDATION", `mfaStepUpMinutes must be an integer between ${STEP_UP_MINUTES_MIN} and ${STEP_UP_MINUTES_MAX}`);
  }
  const set: { mfa_required?: boolean; mfa_step_up_minutes?: number } = {};
  if (change.mfaRequired !== undefined) set.mfa_required = change.mfaRequired;
  if (change.mfaStepUpMinutes !== undefined) set.mfa_step_up_minutes = change.mfaStepUpMinutes;
  let q = db.updateTable("organizations").where("id", "=", orgId);
  q = Object.keys(set).length > 0 ? q.set(set) : q.set({ mfa_required: sql<boolean>`mfa_required` });
  const row = await q.returning(["mfa_required", "mfa_step_up_minutes"]).executeTakeFirst();
  if (!row) throw new ParhelionError("ERR_NOT_FOUND", "organization not found");
  return { mfaRequired: row.mfa_required, mfaStepUpMinutes: row.mfa_step_up_minutes };
}
