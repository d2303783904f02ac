import { sql, type Kysely } from "kysely";

/** Each workspace group's statement audit level (Helios's names), ADMIN-ONLY from the first workspace. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE workspace_groups ADD COLUMN audit_level text NOT NULL DEFAULT 'ADMIN-ONLY'
    CHECK (audit_level IN ('OFF', 'LOGINS-ONLY', 'ADMIN-ONLY', 'WRITES-ONLY', 'ALL-QUERIES', 'ALL-QUERIES-PLAINTEXT', 'ALL-RESULTS',
      'ADMIN-ONLY-INCLUDING-PARSE-FAILS', 'WRITES-ONLY-INCLUDING-PARSE-FAILS', 'ALL-QUERIES-INCLUDING-PARSE-FAILS',
      'ALL-QUERIES-PLAINTEXT-INCLUDING-PARSE-FAILS', 'ALL-RESULTS-INCLUDING-PARSE-FAILS'))`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE workspace_groups DROP COLUMN audit_level`.execute(db);
}
