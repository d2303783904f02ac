import { sql, type Kysely } from "kysely";

/**
 * Single sign-on (OpenID Connect): one identity provider per organization with its claim, team and role
 * mappings and the "SSO only" policy; server-side login transactions (single use); links from users to
 * their external identity (issuer + subject).
 *
 * `sso_providers.client_secret` is held in clear, like every other reversible secret in the store today
 * (TOTP secrets, migration 0004): the keys issue encrypts it with the organization's key-encryption key.
 * The API never returns it.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE TABLE sso_providers (
    org_id uuid PRIMARY KEY REFERENCES organizations(id) ON DELETE CASCADE,
    issuer text NOT NULL,
    client_id text NOT NULL,
    client_secret text,
    redirect_uri text NOT NULL,
    ca_pem text,
    scopes text[] NOT NULL,
    email_claim text NOT NULL,
    groups_claim text NOT NULL,
    first_name_claim text NOT NULL,
    last_name_claim text NOT NULL,
    jit boolean NOT NULL,
    default_role text CHECK (default_role IN ('Admin', 'Operator', 'Auditor', 'Member')),
    team_mappings jsonb NOT NULL DEFAULT '[]',
    role_mappings jsonb NOT NULL DEFAULT '[]',
    sso_only boolean NOT NULL DEFAULT false,
    break_glass_user_ids uuid[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
  )`.execute(db);
  await sql`CREATE TABLE sso_login_transactions (
    id uuid PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    state_hash bytea NOT NULL UNIQUE,
    nonce text NOT NULL,
    code_verifier text NOT NULL,
    redirect text,
    client_challenge text,
    binding_hash bytea,
    source_ip text,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    handoff_hash bytea UNIQUE,
    handoff_user_id uuid REFERENCES users(id),
    handoff_expires_at timestamptz,
    handoff_used_at timestamptz
  )`.execute(db);
  await sql`CREATE INDEX sso_login_transactions_expiry ON sso_login_transactions (expires_at)`.execute(db);
  await sql`CREATE INDEX sso_login_transactions_source ON sso_login_transactions (source_ip, expires_at)`.execute(db);
  await sql`CREATE TABLE user_external_identities (
    org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    issuer text NOT NULL,
    subject text NOT NULL,
    user_id uuid NOT NULL REFERENCES users(id),
    created_at timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz,
    PRIMARY KEY (org_id, issuer, subject),
    UNIQUE (user_id, issuer)
  )`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE user_external_identities`.execute(db);
  await sql`DROP TABLE sso_login_transactions`.execute(db);
  await sql`DROP TABLE sso_providers`.execute(db);
}
