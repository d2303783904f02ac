import { sql, type Kysely } from "kysely";

/**
 * The key hierarchy (src/kms): organizations' key-encryption keys wrapped by the root key provider, and
 * data keys wrapped by their organization's KEK. Secret columns get an encrypted twin (`*_enc`, a
 * src/kms/envelope.ts envelope); the plaintext columns stay only until the start-up pass re-encrypts the
 * rows written before this migration (src/kms/secrets.ts), and no code writes them any more.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE TABLE kms_keys (
    id text PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('org-kek', 'org-data', 'group-data')),
    org_id uuid NOT NULL REFERENCES organizations(id),
    group_id uuid REFERENCES workspace_groups(id),
    wrapped_by text NOT NULL,
    provider text,
    wrapped bytea NOT NULL,
    state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'retired')),
    created_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz,
    CHECK ((kind = 'group-data') = (group_id IS NOT NULL)),
    CHECK ((kind = 'org-kek') = (provider IS NOT NULL))
  )`.execute(db);
  await sql`CREATE UNIQUE INDEX kms_keys_active_org_kek ON kms_keys (org_id) WHERE kind = 'org-kek' AND state = 'active'`.execute(db);
  await sql`CREATE UNIQUE INDEX kms_keys_active_org_data ON kms_keys (org_id) WHERE kind = 'org-data' AND state = 'active'`.execute(db);
  await sql`CREATE UNIQUE INDEX kms_keys_active_group_data ON kms_keys (group_id) WHERE kind = 'group-data' AND state = 'active'`.execute(db);

  await sql`ALTER TABLE mfa_totp ALTER COLUMN secret DROP NOT NULL`.execute(db);
  await sql`ALTER TABLE mfa_totp ADD COLUMN secret_enc bytea`.execute(db);
  await sql`ALTER TABLE mfa_totp ADD CONSTRAINT mfa_totp_secret_once CHECK ((secret IS NULL) <> (secret_enc IS NULL))`.execute(db);
  await sql`ALTER TABLE sso_providers ADD COLUMN client_secret_enc bytea`.execute(db);
  await sql`ALTER TABLE sso_providers ADD CONSTRAINT sso_providers_client_secret_once CHECK (client_secret IS NULL OR client_secret_enc IS NULL)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE sso_providers DROP CONSTRAINT sso_providers_client_secret_once`.execute(db);
  await sql`ALTER TABLE sso_providers DROP COLUMN client_secret_enc`.execute(db);
  await sql`ALTER TABLE mfa_totp DROP CONSTRAINT mfa_totp_secret_once`.execute(db);
  await sql`ALTER TABLE mfa_totp DROP COLUMN secret_enc`.execute(db);
  await sql`DROP TABLE kms_keys`.execute(db);
}
