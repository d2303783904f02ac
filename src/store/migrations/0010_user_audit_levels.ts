import { sql, type Kysely } from "kysely";

/** Per database user overrides of the workspace group's statement audit level. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE TABLE database_user_audit_levels (
    workspace_id uuid NOT NULL REFERENCES workspaces(id),
    role_name text NOT NULL CHECK (length(role_name) BETWEEN 1 AND 63),
    audit_level text NOT NULL CHECK (audit_level IN ('OFF', 'LOGINS-ONLY', 'ADMIN-ONLY', 'WRITES-ONLY', 'ALL-QUERIES', 'ALL-QUERIES-PLAINTEXT', 'ALL-RESULTS',
      'ADMIN-ONLY-INCLUDING-PARSE-FAILS', 'WRITES-ONLY-INCLUDING-PARSE-FAILS', 'ALL-QUERIES-INCLUDING-PARSE-FAILS',
      'ALL-QUERIES-PLAINTEXT-INCLUDING-PARSE-FAILS', 'ALL-RESULTS-INCLUDING-PARSE-FAILS')),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, role_name)
  )`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE database_user_audit_levels`.execute(db);
}
