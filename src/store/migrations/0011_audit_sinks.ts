import { sql, type Kysely } from "kysely";

/**
 * Audit sinks (where an organization's audit stream goes) and the Ed25519 keys that sign each stream's
 * checkpoints. Secrets (webhook HMAC keys, object-store secret keys) and each sink's file key are sealed
 * under the organization's data key (src/kms); the config column holds no secret.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE TABLE audit_sinks (
    id uuid PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations(id),
    group_id uuid REFERENCES workspace_groups(id),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    kind text NOT NULL CHECK (kind IN ('file', 'syslog', 'webhook', 's3')),
    config jsonb NOT NULL,
    secrets_enc bytea,
    file_key_enc bytea NOT NULL,
    fail_mode text NOT NULL DEFAULT 'open' CHECK (fail_mode IN ('open', 'closed')),
    enabled boolean NOT NULL DEFAULT true,
    created_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
  )`.execute(db);
  await sql`CREATE UNIQUE INDEX audit_sinks_org_name ON audit_sinks (org_id, name) WHERE deleted_at IS NULL`.execute(db);
  await sql`CREATE TABLE audit_signing_keys (
    org_id uuid PRIMARY KEY REFERENCES organizations(id),
    kid text NOT NULL UNIQUE,
    public_key text NOT NULL,
    private_key_enc bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
  )`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE audit_signing_keys`.execute(db);
  await sql`DROP TABLE audit_sinks`.execute(db);
}
