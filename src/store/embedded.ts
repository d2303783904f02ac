import { EventEmitter } from "node:events";
import { dirname } from "node:path";
import pg from "pg";
import { PostgresServer, findPgBin as findBin, peerIdentMap, resolveServiceAccount, type ProcInfo, type ServiceAccount } from "../engine/postgres.js";
import type { Logger } from "../log/logger.js";

export { isAlive, postgresProcessesIn, isPostmasterOf, resolveServiceAccount, type ProcInfo, type ServiceAccount } from "../engine/postgres.js";

/** Where the distribution's PostgreSQL binaries live (Debian: /usr/lib/postgresql/<major>/bin). */
export function findPgBin(): string {
  return findBin("ERR_STORE_UNAVAILABLE");
}

export interface EmbeddedPostgresOptions {
  /** Root of this store: run/ (socket) and, unless `dataDir` says otherwise, pgdata/ and the log live beneath it. */
  dir: string;
  /**
   * The data directory when it lives elsewhere (the store's encrypted volume); default `<dir>/pgdata`. The log
   * (`postgres.log`, which holds statement text and key values) is then written beside it, on the same volume.
   */
  dataDir?: string;
  serviceUser: string;
  logger: Logger;
  /** Extra postgresql.conf settings. The listening settings cannot be overridden: no TCP, ever. */
  settings?: Record<string, string | number>;
  /** Database to create and connect to. */
  database?: string;
}

const SUPERUSER = "parhelion";

/**
 * The metadata store's own PostgreSQL server: a PostgresServer (src/engine/postgres.ts) whose only role is
 * the `parhelion` superuser, reachable by peer authentication from root and the service user over a
 * unix socket (no TCP), with one database for the store.
 *
 * Events: "crash" ({code, signal}) when the server dies unexpectedly, "restarted" once it is back.
 */
export class EmbeddedPostgres extends EventEmitter {
  readonly dataDir: string;
  readonly socketDir: string;
  readonly logFile: string;
  readonly database: string;
  private readonly server: PostgresServer;
  private readonly logger: Logger;

  constructor(opts: EmbeddedPostgresOptions) {
    super();
    this.logger = opts.logger;
    this.database = opts.database ?? "parhelion";
    const account = resolveServiceAccount(opts.serviceUser);
    this.server = new PostgresServer({
      dir: opts.dir,
      ...(opts.dataDir !== undefined ? { dataDir: opts.dataDir, logDir: dirname(opts.dataDir) } : {}),
      account,
      logger: opts.logger,
      name: "metadata store",
      errorCode: "ERR_STORE_UNAVAILABLE",
      superuser: SUPERUSER,
      hba: "# parhelion: unix socket only, peer identity mapped\nlocal all parhelion peer map=parhelion\n",
      ident: peerIdentMap("parhelion", SUPERUSER, account),
      settings: { max_connections: 40, shared_buffers: "'32MB'", password_encryption: "'scram-sha-256'", log_min_messages: "warning", ...opts.settings },
      afterStart: () => this.ensureDatabase(),
      bin: findPgBin(),
    });
    this.dataDir = this.server.dataDir;
    this.socketDir = this.server.socketDir;
    this.logFile = this.server.logFile;
    this.server.on("crash", (info) => this.emit("crash", info));
    this.server.on("restarted", () => this.emit("restarted"));
  }

  /** libpq-style connection string over the unix socket. */
  get connectionString(): string {
    return `postgresql://${SUPERUSER}@/${this.database}?host=${encodeURIComponent(this.socketDir)}`;
  }

  /** The postmaster's pid while it runs. */
  get pid(): number | undefined {
    return this.server.pid;
  }

  /** The OS account the server runs as. */
  get serviceAccount(): ServiceAccount {
    return { ...this.server.account };
  }

  /** The live processes (postmaster and children) of this store's server, wherever they came from. */
  processes(): ProcInfo[] {
    return this.server.processes();
  }

  /** Creates the store's database when missing (after every start; cheap when it exists). */
  private async ensureDatabase(): Promise<void> {
    const c = new pg.Client({ host: this.socketDir, user: SUPERUSER, database: "postgres" });
    await c.connect();
    try {
      const r = await c.query("SELECT 1 FROM pg_database WHERE datname = $1", [this.database]);
      if (r.rowCount === 0) await c.query(`CREATE DATABASE ${pg.escapeIdentifier(this.database)}`);
    } catch (err) {
      // Two starts racing on one new store: the loser's CREATE DATABASE fails with duplicate_database.
      if ((err as { code?: string }).code !== "42P04") throw err;
    } finally {
      await c.end();
    }
  }

  /** Initialises (first time), starts and waits until the server accepts connections. */
  async start(): Promise<void> {
    if (this.server.running) return;
    await this.server.start();
    this.logger.info({ pid: this.pid }, "metadata store ready");
  }

  /**
   * Stops the server and any restart in flight: fast shutdown, escalating to an immediate shutdown
   * after timeoutMs. Resolves once no process of the server is left.
   */
  async stop(timeoutMs = 7000): Promise<void> {
    await this.server.stop(timeoutMs);
  }
}
