import { sql } from "kysely";
import type { Logger } from "../log/logger.js";
import { ParhelionError } from "../lib/errors.js";
import type { Db } from "../store/db.js";
import type { Keyring } from "./keyring.js";

/**
 * Secret columns of the metadata store. Each value is sealed under its organization's data key and bound to
 * `<table>.<column>:<row id>`, so a value copied to another row, column or table does not open.
 */
export type SecretColumn = "mfa_totp.secret" | "sso_providers.client_secret";

/** The purpose string an envelope of a secret column is bound to. */
export function columnPurpose(column: SecretColumn, rowId: string): string {
  return `${column}:${rowId}`;
}

// The keyring belongs to the metadata store handle whose secrets it seals: code that has the store has the
// keyring, without every identity function growing a parameter.
const keyrings = new WeakMap<object, Keyring>();

/** Attaches the keyring that seals this store's secret columns (once, at start). */
export function attachKeyring(db: Db, keyring: Keyring): void {
  keyrings.set(db, keyring);
}

/** The keyring attached to a store handle; ERR_INTERNAL when none is (a start-up bug, not a user error). */
export function keyringOf(db: Db): Keyring {
  const k = keyrings.get(db);
  if (!k) throw new ParhelionError("ERR_INTERNAL", "no keyring is attached to this metadata store handle");
  return k;
}

/** Seals a secret column's value for a row of an organization. */
export async function sealColumn(db: Db, orgId: string, column: SecretColumn, rowId: string, value: string): Promise<Buffer> {
  return keyringOf(db).seal(orgId, columnPurpose(column, rowId), Buffer.from(value, "utf8"));
}

/** Opens a secret column's value; ERR_KEY_UNAVAILABLE on any failure. */
export async function openColumn(db: Db, column: SecretColumn, rowId: string, envelope: Buffer): Promise<string> {
  const plain = await keyringOf(db).open(columnPurpose(column, rowId), envelope);
  try {
    return plain.toString("utf8");
  } finally {
    plain.fill(0);
  }
}

/**
 * Encrypts rows written in plaintext before migration 0007_keys. Each row is converted by one
 * compare-and-set UPDATE (the plaintext moves to the envelope column only if it is still the value read), so
 * a crash leaves every row either plaintext or encrypted, and the next start finishes the job. Rows already
 * encrypted are skipped: running it again changes nothing.
 */
export async function encryptLegacySecrets(db: Db, logger?: Logger): Promise<{ mfaTotp: number; ssoProviders: number }> {
  let mfaTotp = 0;
  let ssoProviders = 0;
  const totps = await db.selectFrom("mfa_totp as t").innerJoin("users as u", "u.id", "t.user_id").select(["t.id", "t.secret", "u.org_id"]).where("t.secret", "is not", null).execute();
  for (const r of totps) {
    if (r.secret === null) continue;
    const enc = await sealColumn(db, r.org_id, "mfa_totp.secret", r.id, r.secret);
    const res = await db.updateTable("mfa_totp").set({ secret: null, secret_enc: enc }).where("id", "=", r.id).where("secret", "=", r.secret).executeTakeFirst();
    if (res.numUpdatedRows === 1n) mfaTotp++;
  }
  const ssos = await db.selectFrom("sso_providers").select(["org_id", "client_secret"]).where("client_secret", "is not", null).execute();
  for (const r of ssos) {
    if (r.client_secret === null) continue;
    const enc = await sealColumn(db, r.org_id, "sso_providers.client_secret", r.org_id, r.client_secret);
    const res = await db.updateTable("sso_providers").set({ client_secret: null, client_secret_enc: enc }).where("org_id", "=", r.org_id).where("client_secret", "=", r.client_secret).executeTakeFirst();
    if (res.numUpdatedRows === 1n) ssoProviders++;
  }
  if (mfaTotp + ssoProviders > 0) {
    logger?.info({ mfaTotp, ssoProviders }, "encrypted secret columns written before the key hierarchy existed");
    // The old row versions still hold the plaintext until the table is rewritten.
    try {
      await sql`VACUUM FULL mfa_totp, sso_providers`.execute(db);
    } catch (err) {
      logger?.warn({ err: { message: (err as Error).message } }, "could not rewrite mfa_totp and sso_providers: old row versions may keep plaintext secrets until the next VACUUM FULL");
    }
  }
  return { mfaTotp, ssoProviders };
}
