import { sql, type Kysely } from "kysely";

/**
 * Second factors: TOTP authenticators, WebAuthn credentials (security keys, passkeys), single-use recovery
 * codes and server-side WebAuthn challenges; the organization's MFA policy and step-up window; and, on each
 * console session, when a second factor was last verified in it.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE organizations
    ADD COLUMN mfa_required boolean NOT NULL DEFAULT false,
    ADD COLUMN mfa_step_up_minutes integer NOT NULL DEFAULT 10 CHECK (mfa_step_up_minutes BETWEEN 1 AND 1440)`.execute(db);
  await sql`ALTER TABLE sessions ADD COLUMN mfa_verified_at timestamptz`.execute(db);
  // One confirmed TOTP authenticator per user; an enrollment is a row with confirmed_at null that expires.
  // secret: the RFC 4648 base32 shared secret. Not yet encrypted at rest (no key hierarchy exists yet); never
  // returned by the API after the enrollment answer.
  await sql`CREATE TABLE mfa_totp (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users(id),
    name text NOT NULL,
    secret text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    enroll_expires_at timestamptz,
    confirmed_at timestamptz,
    last_used_step bigint,
    last_used_at timestamptz
  )`.execute(db);
  await sql`CREATE UNIQUE INDEX mfa_totp_one_per_user ON mfa_totp (user_id) WHERE confirmed_at IS NOT NULL`.execute(db);
  await sql`CREATE INDEX mfa_totp_user ON mfa_totp (user_id)`.execute(db);
  await sql`CREATE TABLE mfa_webauthn_credentials (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users(id),
    name text NOT NULL,
    credential_id text NOT NULL UNIQUE,
    public_key bytea NOT NULL,
    counter bigint NOT NULL,
    transports text[] NOT NULL DEFAULT '{}',
    aaguid text NOT NULL,
    device_type text NOT NULL,
    backed_up boolean NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
  )`.execute(db);
  await sql`CREATE INDEX mfa_webauthn_user ON mfa_webauthn_credentials (user_id)`.execute(db);
  await sql`CREATE TABLE mfa_recovery_codes (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users(id),
    code_hash bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    used_at timestamptz
  )`.execute(db);
  await sql`CREATE UNIQUE INDEX mfa_recovery_codes_hash ON mfa_recovery_codes (user_id, code_hash)`.execute(db);
  // A WebAuthn challenge belongs to one session and one ceremony, is consumed by its first use and expires.
  await sql`CREATE TABLE mfa_challenges (
    id uuid PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES users(id),
    ceremony text NOT NULL CHECK (ceremony IN ('registration', 'authentication')),
    challenge text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
  )`.execute(db);
  await sql`CREATE INDEX mfa_challenges_session ON mfa_challenges (session_id, ceremony)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE mfa_challenges`.execute(db);
  await sql`DROP TABLE mfa_recovery_codes`.execute(db);
  await sql`DROP TABLE mfa_webauthn_credentials`.execute(db);
  await sql`DROP TABLE mfa_totp`.execute(db);
  await sql`ALTER TABLE sessions DROP COLUMN mfa_verified_at`.execute(db);
  await sql`ALTER TABLE organizations DROP COLUMN mfa_step_up_minutes, DROP COLUMN mfa_required`.execute(db);
}
