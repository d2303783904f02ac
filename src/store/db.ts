import pg from "pg";
import { Kysely, PostgresDialect } from "kysely";
import { Migrator, type Migration, type MigrationProvider } from "kysely/migration";
import { ParhelionError } from "../lib/errors.js";
import type { Logger } from "../log/logger.js";
import type { Database, Db } from "./schema.js";
import * as m0001 from "./migrations/0001_foundation.js";
import * as m0002 from "./migrations/0002_audit_org_index.js";
import * as m0003 from "./migrations/0003_workspaces.js";
import * as m0004 from "./migrations/0004_mfa.js";
import * as m0005 from "./migrations/0005_sso.js";
import * as m0006 from "./migrations/0006_jwt_auth.js";
import * as m0007 from "./migrations/0007_keys.js";
import * as m0008 from "./migrations/0008_credential_keys.js";
import * as m0009 from "./migrations/0009_audit_level.js";
import * as m0010 from "./migrations/0010_user_audit_levels.js";
import * as m0011 from "./migrations/0011_audit_sinks.js";
import * as m0012 from "./migrations/0012_cmek.js";
import * as m0013 from "./migrations/0013_group_rekey.js";

export type { Db, Database } from "./schema.js";

// bigint (int8) columns come back as strings: audit sequence numbers exceed 2^53 only in theory,
// and strings keep them exact.

/** Versioned migrations, applied in name order. Append only; never edit a released one. */
const MIGRATIONS: Record<string, Migration> = {
  "0001_foundation": m0001,
  "0002_audit_org_index": m0002,
  "0003_workspaces": m0003,
  "0004_mfa": m0004,
  "0005_sso": m0005,
  "0006_jwt_auth": m0006,
  "0007_keys": m0007,
  "0008_credential_keys": m0008,
  "0009_audit_level": m0009,
  "0010_user_audit_levels": m0010,
  "0011_audit_sinks": m0011,
  "0012_cmek": m0012,
  "0013_group_rekey": m0013,
};

class StaticProvider implements MigrationProvider {
  async getMigrations(): Promise<Record<string, Migration>> {
    return MIGRATIONS;
  }
}

export interface OpenDbOptions {
  connectionString: string;
  max?: number;
  logger?: Logger;
}

/** Opens a pooled Kysely handle on the metadata store. */
export function openDb(opts: OpenDbOptions): { db: Db; pool: pg.Pool } {
  const pool = new pg.Pool({ connectionString: opts.connectionString, max: opts.max ?? 10, idleTimeoutMillis: 30_000, connectionTimeoutMillis: 10_000 });
  pool.on("error", (err) => {
    // pool.end() resolves before its idle connections have closed; the store's shutdown then terminates
    // them, which is expected while parhelion stops.
    if (pool.ending) return;
    opts.logger?.warn({ err: { message: err.message } }, "metadata store connection error");
  });
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  return { db, pool };
}

/**
 * Runs pending migrations. Kysely's PostgreSQL adapter holds a transaction-scoped advisory lock for the
 * whole run, so two processes starting against one store never both migrate: the second waits, then
 * finds nothing to do.
 */
export async function migrate(db: Db, logger?: Logger): Promise<string[]> {
  const migrator = new Migrator({ db, provider: new StaticProvider(), migrationTableName: "parhelion_migrations", migrationLockTableName: "parhelion_migrations_lock" });
  const { error, results } = await migrator.migrateToLatest();
  const applied = (results ?? []).filter((r) => r.status === "Success").map((r) => r.migrationName);
  for (const name of applied) logger?.info({ migration: name }, "applied migration");
  if (error) {
    throw new ParhelionError("ERR_STORE_UNAVAILABLE", `migration failed: ${(error as Error).message ?? String(error)}`, { cause: error });
  }
  return applied;
}
