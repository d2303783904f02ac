import { sql, type Kysely } from "kysely";

/**
 * Database logins with JWTs, per workspace group: where the keys come from (a JWKS URL or inline keys),
 * which issuer, audiences and algorithms are accepted, which claim names the database role, and whether
 * missing roles are made on first login. One row per group; the configuration is JSON validated by the API.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE TABLE workspace_group_jwt_auth (
    group_id uuid PRIMARY KEY REFERENCES workspace_groups(id),
    org_id uuid NOT NULL REFERENCES organizations(id),
    config jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
  )`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE workspace_group_jwt_auth`.execute(db);
}
