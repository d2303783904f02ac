import { sql, type Kysely } from "kysely";

/**
 * Customer-managed keys (CMEK) per workspace group: the customer's key (AWS KMS or PKCS#11) that wraps the
 * group's data key instead of the organization's KEK. `kms_keys.wrap` says what wraps a data key ('kek': the
 * organization's KEK, an envelope; 'aws-kms' / 'pkcs11': the group's customer key, whose id is wrapped_by);
 * re-wrapping (rotation, moving to or from a customer key) updates the row in place and counts wrap_version.
 * The data key itself never changes, so the volume key derived from it does not either.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE kms_keys ADD COLUMN wrap text NOT NULL DEFAULT 'kek' CHECK (wrap IN ('kek', 'aws-kms', 'pkcs11'))`.execute(db);
  await sql`ALTER TABLE kms_keys ADD CONSTRAINT kms_keys_cmek_group_data CHECK (wrap = 'kek' OR kind = 'group-data')`.execute(db);
  await sql`ALTER TABLE kms_keys ADD COLUMN wrap_version integer NOT NULL DEFAULT 1`.execute(db);
  await sql`ALTER TABLE kms_keys ADD COLUMN wrapped_at timestamptz NOT NULL DEFAULT now()`.execute(db);
  await sql`CREATE TABLE group_kms_keys (
    group_id uuid PRIMARY KEY REFERENCES workspace_groups(id),
    org_id uuid NOT NULL REFERENCES organizations(id),
    provider text NOT NULL CHECK (provider IN ('aws-kms', 'pkcs11')),
    key_ref text NOT NULL,
    key_id text NOT NULL,
    settings jsonb NOT NULL,
    credential_enc bytea,
    status text NOT NULL DEFAULT 'ENABLED' CHECK (status IN ('ENABLED', 'UNAVAILABLE')),
    status_detail text,
    checked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
  )`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE group_kms_keys`.execute(db);
  await sql`ALTER TABLE kms_keys DROP CONSTRAINT kms_keys_cmek_group_data`.execute(db);
  await sql`ALTER TABLE kms_keys DROP COLUMN wrapped_at`.execute(db);
  await sql`ALTER TABLE kms_keys DROP COLUMN wrap_version`.execute(db);
  await sql`ALTER TABLE kms_keys DROP COLUMN wrap`.execute(db);
}
