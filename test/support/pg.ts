import { mkdtempSync, rmSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EmbeddedPostgres } from "../../src/store/embedded.js";
import { createLogger } from "../../src/log/logger.js";
import { openDb, migrate, type Db } from "../../src/store/db.js";
import { Keyring, LocalKeyProvider, attachKeyring } from "../../src/kms/index.js";
import type pg from "pg";

export interface TestPostgres {
  server: EmbeddedPostgres;
  connectionString: string;
  dir: string;
  stop(): Promise<void>;
}

/** A real PostgreSQL server in a fresh temporary directory (unix socket only), for one test file. */
export async function startTestPostgres(): Promise<TestPostgres> {
  const dir = mkdtempSync(join(tmpdir(), "parhelion-pg-"));
  chmodSync(dir, 0o711); // the service user must traverse it when tests run as root
  const server = new EmbeddedPostgres({ dir: join(dir, "store"), serviceUser: "parhelion", logger: createLogger({ level: "silent" }), settings: { fsync: "off", synchronous_commit: "off", full_page_writes: "off" } });
  try {
    await server.start();
  } catch (err) {
    await server.stop().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    server,
    dir,
    connectionString: server.connectionString,
    async stop() {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A migrated metadata store on a test server. */
export async function startTestStore(): Promise<{ pg: TestPostgres; db: Db; pool: pg.Pool; stop(): Promise<void> }> {
  const tp = await startTestPostgres();
  const { db, pool } = openDb({ connectionString: tp.connectionString });
  await migrate(db);
  // Secret columns are sealed as in the platform: a local root key in the test's own directory.
  attachKeyring(db, new Keyring({ db, provider: LocalKeyProvider.open(join(tp.dir, "keys", "root.key")) }));
  return {
    pg: tp,
    db,
    pool,
    async stop() {
      await db.destroy().catch(() => undefined);
      await tp.stop();
    },
  };
}
