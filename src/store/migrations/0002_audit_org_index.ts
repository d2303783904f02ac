import { sql, type Kysely } from "kysely";

/** Audit listing filters by organization and walks seq backwards. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE INDEX audit_log_org_seq ON audit_log (org_id, seq DESC)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP INDEX audit_log_org_seq`.execute(db);
}
