import { sql, type Kysely } from "kysely";

/**
 * Re-keying a workspace group's data key (src/workspaces/rekey.ts): a new data key is made as `pending`
 * (never used by the keyring's active-key lookups), the group's volume is copied under the key derived from
 * it, and the switch retires the old key and activates the new one in one transaction. `group_rekeys` records
 * each operation's phase, its old and new key ids and its progress before every step, so a restart finds
 * where it stopped: before SWITCHING it rolls back (the old directory is untouched), from SWITCHING on it
 * finishes. At most one running operation per group (partial unique index).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE kms_keys DROP CONSTRAINT kms_keys_state_check`.execute(db);
  await sql`ALTER TABLE kms_keys ADD CONSTRAINT kms_keys_state_check CHECK (state IN ('active', 'retired', 'pending'))`.execute(db);
  await sql`ALTER TABLE kms_keys ADD CONSTRAINT kms_keys_pending_group_data CHECK (state <> 'pending' OR kind = 'group-data')`.execute(db);
  await sql`CREATE TABLE group_rekeys (
    id uuid PRIMARY KEY,
    group_id uuid NOT NULL REFERENCES workspace_groups(id),
    org_id uuid NOT NULL REFERENCES organizations(id),
    phase text NOT NULL CHECK (phase IN ('STOPPING', 'COPYING', 'SWITCHING', 'CLEANUP', 'DONE', 'FAILED')),
    old_key_id text NOT NULL,
    new_key_id text,
    old_identifier text,
    new_identifier text,
    bytes_total bigint NOT NULL DEFAULT 0,
    bytes_copied bigint NOT NULL DEFAULT 0,
    workspace_ids jsonb NOT NULL DEFAULT '[]',
    error text,
    requested_by text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
  )`.execute(db);
  await sql`CREATE UNIQUE INDEX group_rekeys_running ON group_rekeys (group_id) WHERE phase NOT IN ('DONE', 'FAILED')`.execute(db);
  await sql`CREATE INDEX group_rekeys_group_started ON group_rekeys (group_id, started_at DESC)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE group_rekeys`.execute(db);
  await sql`DELETE FROM kms_keys WHERE state = 'pending'`.execute(db);
  await sql`ALTER TABLE kms_keys DROP CONSTRAINT kms_keys_pending_group_data`.execute(db);
  await sql`ALTER TABLE kms_keys DROP CONSTRAINT kms_keys_state_check`.execute(db);
  await sql`ALTER TABLE kms_keys ADD CONSTRAINT kms_keys_state_check CHECK (state IN ('active', 'retired'))`.execute(db);
}
