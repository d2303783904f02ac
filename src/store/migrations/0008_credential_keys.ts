import { sql, type Kysely } from "kysely";

/**
 * The Ed25519 keys that sign an organization's short-lived database credentials: the public key in clear
 * (verification needs nothing else), the private key sealed under the organization's data key (src/kms).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE TABLE db_credential_keys (
    org_id uuid PRIMARY KEY REFERENCES organizations(id),
    kid text NOT NULL UNIQUE,
    public_key text NOT NULL,
    private_key_enc bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
  )`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE db_credential_keys`.execute(db);
}
