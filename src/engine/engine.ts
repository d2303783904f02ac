import { chmodSync, existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { isAbsolute, join, normalize } from "node:path";
import { EventEmitter } from "node:events";
import pg from "pg";
import { ParhelionError } from "../lib/errors.js";
import { isUuid } from "../lib/ids.js";
import type { Logger } from "../log/logger.js";
import { PostgresServer, findPgBin, peerIdentMap, resolveServiceAccount, syncDir, type ServiceAccount, type Settings } from "./postgres.js";
import { CsvlogTailer } from "./csvlog.js";
import { nestedStatementOf, pgauditLogSetting, type NestedStatement } from "../audit/pgaudit.js";
import { SparePool } from "./spare.js";
import { detectMemoryLimiter, type MemoryLimiter } from "./cgroup.js";
import { WORKSPACE_SIZES, isWorkspaceSize, sizeSettings, type WorkspaceSize } from "./sizes.js";
import * as sql from "./sql.js";
import { LoginInfoCache } from "./logincache.js";
import type { EngineOptions, WorkspaceEngine, WorkspaceLimits, WorkspaceSpec, CrashEvent } from "./index.js";

/** The shared libraries every workspace server preloads; the engine refuses to start one without them. */
export const PRELOAD_LIBRARIES = ["parhelion_guard", "pgaudit"] as const;

const HBA = [
  "# parhelion: unix socket only. The platform's role by peer identity (root and the service user),",
  "# token-login roles without a password, every other role by SCRAM-SHA-256. Nothing else.",
  `local all ${sql.SYSTEM_ROLE} peer map=system`,
  "# Roles that log in with tokens (parhelion_token_login, granted only by parhelion): the gateway has",
  "# verified the token; this socket's directory is 0700, so only parhelion and the server reach it.",
  `local all +${sql.TOKEN_LOGIN_ROLE} trust`,
  "local all all scram-sha-256",
  "",
].join("\n");

interface Workspace {
  server: PostgresServer | undefined;
  size: WorkspaceSize;
  verifier: string;
  appliedVerifier: string | undefined;
  /** pgaudit.log's classes in force (the gateway sets them for the levels of its sessions); none at first. */
  auditClasses: string[];
  /** Serializes changes of pgaudit.log. */
  auditChange: Promise<unknown>;
  /** The csvlog follower while the server runs. */
  tailer: CsvlogTailer | undefined;
  /** The directory holding `<id>/pgdata` and the server's logs beside it (the engine's own, or a group's encrypted volume). */
  storage: string;
}

/**
 * Logging every workspace server runs with, on the command line (nothing inside the server can change it):
 * the logging collector writes the usual text log to `<storage>/<id>/postgres.log` and a CSV copy to
 * `<storage>/<id>/postgres.csv` (0600, beside the data directory, not in it: on the group's encrypted volume,
 * as the logs hold statement text and key values), which the engine follows for pgaudit's records. No size or
 * age rotation: the engine rotates the CSV file itself once it has read it (csvlog.ts). `verbose` puts the C source location
 * in every record: that is how pgaudit's own lines are told from `RAISE LOG 'AUDIT: ...'`. pgaudit: one line
 * per statement (no per-relation lines), never parameter values, nothing to the client, at level LOG.
 */
function loggingSettings(dir: string): Record<string, string> {
  return {
    logging_collector: "on", log_destination: "stderr,csvlog", log_directory: dir, log_filename: "postgres.log", log_file_mode: "0600",
    log_rotation_age: "0", log_rotation_size: "0", log_truncate_on_rotation: "off", log_error_verbosity: "verbose", log_timezone: "UTC",
    "pgaudit.log_relation": "off", "pgaudit.log_parameter": "off", "pgaudit.log_client": "off", "pgaudit.log_level": "log",
    "pgaudit.log_statement_once": "off", "pgaudit.log_catalog": "on",
  };
}

/** A storage root must be an absolute path (it is joined with workspace ids and handed to root's rm). */
function checkStorage(storage: unknown): string {
  if (typeof storage !== "string" || !isAbsolute(storage) || normalize(storage) !== storage || storage === "/") throw new ParhelionError("ERR_VALIDATION", "a workspace storage root must be an absolute, normalised path");
  return storage;
}

function checkId(id: unknown): string {
  if (!isUuid(id)) throw new ParhelionError("ERR_VALIDATION", "workspace id must be a UUID");
  return id.toLowerCase();
}

/** The workspace engine: one supervised PostgreSQL server per workspace, its socket under `<dir>/<id>/run`, its data and logs under `<storage>/<id>`. */
export class PostgresWorkspaceEngine extends EventEmitter implements WorkspaceEngine {
  private readonly dir: string;
  private readonly account: ServiceAccount;
  private readonly bin: string;
  private readonly libDir: string;
  private readonly logger: Logger;
  /** One spare per storage root: a spare is renamed into place, so it must be made on the filesystem (the encrypted volume) it serves. */
  private readonly spares = new Map<string, SparePool>();
  private readonly limiter: MemoryLimiter;
  private readonly workspaces = new Map<string, Workspace>();
  /**
   * One small pool of system connections per running workspace for getLoginInfo: the gateway asks on every
   * login, and a new connection would start a backend (~50 ms of CPU here) each time.
   */
  private readonly loginPools = new Map<string, pg.Pool>();
  /** What those logins found, kept while a session listening for role changes is up (see logincache.ts). */
  private readonly loginCaches = new Map<string, LoginInfoCache>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly extensions: readonly string[];
  private readonly nestedListeners: Array<(e: NestedStatement) => void> = [];
  private closing = false;

  constructor(private readonly opts: EngineOptions) {
    super();
    this.dir = opts.dir;
    this.logger = opts.logger;
    this.account = resolveServiceAccount(opts.serviceUser);
    this.bin = opts.pgBin ?? findPgBin("ERR_ENGINE");
    this.libDir = opts.libDir ?? join(this.bin, "..", "lib");
    this.extensions = opts.extensions ?? sql.ALLOWED_EXTENSIONS;
    for (const e of this.extensions) {
      if (!/^[a-z0-9_-]{1,63}$/.test(e)) throw new ParhelionError("ERR_CONFIG", `extension name "${e}" is not valid`);
    }
    // The servers may traverse this directory but not change it: a workspace's server (all run as the same
    // OS user) cannot rename or plant siblings, such as the spare.
    mkdirSync(this.dir, { recursive: true, mode: 0o711 });
    chmodSync(this.dir, 0o711);
    this.limiter = opts.memoryLimiter ?? detectMemoryLimiter(this.logger);
    if (this.limiter.mechanism === "none") this.logger.warn({ reason: this.limiter.reason }, "workspace memory limits are not enforced on this host");
    // Discards what a dead engine left half-made in its own directory (a storage root's pool does so when first used).
    this.spareFor(this.dir);
  }

  /** The spare pool of a storage root (none when spares are off or the engine is stopping). */
  private spareFor(storage: string): SparePool | undefined {
    if (this.opts.spare === false || this.closing) return undefined;
    let pool = this.spares.get(storage);
    if (!pool) {
      pool = new SparePool({ dir: storage, bin: this.bin, account: this.account, superuser: sql.SYSTEM_ROLE, logger: this.logger });
      this.spares.set(storage, pool);
    }
    return pool;
  }

  /** Where a workspace's `<id>/pgdata` lives: the storage given, the one it runs from, or the engine's own directory. */
  private storageOf(id: string, storage?: string): string {
    if (storage !== undefined) return checkStorage(storage);
    return this.workspaces.get(id)?.storage ?? this.dir;
  }

  private pgdata(id: string, storage: string): string {
    return join(storage, id, "pgdata");
  }

  /** Where a workspace server's logs (postgres.log, postgres.csv and the follower's postgres.csv.pos) live: beside its pgdata. */
  private logDir(id: string, storage: string): string {
    return join(storage, id);
  }

  /** Runs fn after every earlier operation on the same workspace has settled. */
  private serial<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(id) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(fn);
    const tail = next.catch(() => undefined);
    this.locks.set(id, tail);
    void tail.then(() => {
      if (this.locks.get(id) === tail) this.locks.delete(id);
    });
    return next;
  }

  private wsDir(id: string): string {
    return join(this.dir, id);
  }

  socketDir(id: string): string {
    return join(this.wsDir(checkId(id)), "run");
  }

  isRunning(id: string): boolean {
    return this.workspaces.get(checkId(id))?.server?.running === true;
  }

  listOnDisk(storage?: string): string[] {
    let names: string[];
    try {
      names = readdirSync(storage === undefined ? this.dir : checkStorage(storage));
    } catch {
      return [];
    }
    return names.filter((n) => isUuid(n)).sort();
  }

  /** Refuses to go on unless the modules every workspace preloads are installed. */
  private checkLibraries(): void {
    for (const lib of PRELOAD_LIBRARIES) {
      if (!existsSync(join(this.libDir, `${lib}.so`))) {
        const fix = lib === "parhelion_guard" ? "make -C engine/guard && make -C engine/guard install" : "apt-get install postgresql-15-pgaudit";
        throw new ParhelionError("ERR_ENGINE", `PostgreSQL module ${lib} is not installed in ${this.libDir}; workspaces never start without it. Run ./bin/parhelion (its bootstrap installs it) or: ${fix}`);
      }
    }
  }

  private newServer(id: string, ws: Workspace): PostgresServer {
    // Read at every start (restarts after a crash included): the classes set since stay in force.
    const settings: Settings = {
      password_encryption: "'scram-sha-256'",
      log_min_messages: "warning",
      ...sizeSettings(ws.size),
      ...this.opts.settings,
    };
    Object.defineProperty(settings, "pgaudit.log", { enumerable: true, get: () => `'${pgauditLogSetting(ws.auditClasses)}'` });
    const server = new PostgresServer({
      dir: this.wsDir(id),
      dataDir: this.pgdata(id, ws.storage),
      logDir: this.logDir(id, ws.storage),
      account: this.account,
      logger: this.logger.child({ workspace: id }),
      name: `workspace ${id}`,
      errorCode: "ERR_ENGINE",
      superuser: sql.SYSTEM_ROLE,
      hba: HBA,
      ident: peerIdentMap("system", sql.SYSTEM_ROLE, this.account),
      settings,
      fixedSettings: {
        shared_preload_libraries: PRELOAD_LIBRARIES.join(","),
        "parhelion_guard.extensions": this.extensions.join(","),
        ...loggingSettings(this.logDir(id, ws.storage)),
      },
      afterStart: () => this.setup(id, ws),
      provision: async (dataDir) => (await this.spareFor(ws.storage)?.take(dataDir)) ?? false,
      cgroupProcs: () => this.limiter.prepare(id, WORKSPACE_SIZES[ws.size].memoryLimitBytes),
      bin: this.bin,
    });
    server.on("crash", (info: { code: number | null; signal: string | null }) => this.emit("crash", { id, ...info } satisfies CrashEvent));
    server.on("restarted", () => this.emit("restarted", { id }));
    return server;
  }

  /** The idempotent setup after every start: the admin role, its password and its grants. */
  private async setup(id: string, ws: Workspace): Promise<void> {
    const verifier = ws.verifier;
    await this.connectSystem(id, "postgres", async (c) => {
      const r = await c.query<{ libs: string }>("SELECT current_setting('shared_preload_libraries') AS libs");
      const libs = (r.rows[0]?.libs ?? "").split(",").map((s) => s.trim());
      if (!libs.includes("parhelion_guard")) throw new ParhelionError("ERR_ENGINE", `workspace ${id} runs without parhelion_guard`);
      await c.query(sql.adminSetupSql(verifier));
    });
    ws.appliedVerifier = verifier;
  }

  private async connectSystem<T>(id: string, database: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
    const c = new pg.Client({ host: join(this.wsDir(id), "run"), user: sql.SYSTEM_ROLE, database, application_name: "parhelion", connectionTimeoutMillis: 10_000 });
    c.on("error", () => undefined);
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  async ensureRunning(spec: WorkspaceSpec): Promise<void> {
    const id = checkId(spec.id);
    if (!isWorkspaceSize(spec.size)) throw new ParhelionError("ERR_VALIDATION", `size must be one of ${Object.keys(WORKSPACE_SIZES).join(", ")}`);
    const verifier = sql.validateVerifier(spec.adminVerifier, "adminVerifier");
    const storage = spec.storage === undefined ? this.dir : checkStorage(spec.storage);
    return this.serial(id, async () => {
      let ws = this.workspaces.get(id);
      if (ws && ws.storage !== storage) {
        if (ws.server?.running) throw new ParhelionError("ERR_ENGINE", `workspace ${id} runs from ${ws.storage}, not ${storage}; stop it first`);
        // Its logs are on the old storage too: the follower of those ends after the server that wrote them.
        if (ws.server) await ws.server.stop();
        ws.server = undefined;
        ws.tailer?.stop();
        ws.tailer = undefined;
        ws.storage = storage;
      }
      if (ws?.server?.running) {
        ws.verifier = verifier;
        if (ws.size !== spec.size) {
          this.logger.info({ workspace: id, from: ws.size, to: spec.size }, "resizing workspace: restarting its server");
          await ws.server.stop();
          ws.server = undefined;
        } else {
          if (ws.appliedVerifier !== verifier) await this.setup(id, ws);
          return;
        }
      }
      this.checkLibraries();
      if (storage !== this.dir && existsSync(join(this.wsDir(id), "pgdata"))) {
        // Never start a fresh (encrypted) data directory beside a plaintext one, nor leave that one behind silently.
        throw new ParhelionError("ERR_ENGINE", `workspace ${id} has a plaintext data directory in ${join(this.wsDir(id), "pgdata")} (made with volumeEncryption none or before encryption at rest); it is not moved onto the encrypted volume automatically: see docs/operations.md`);
      }
      if (!ws) {
        ws = { server: undefined, size: spec.size, verifier, appliedVerifier: undefined, auditClasses: [], auditChange: Promise.resolve(), tailer: undefined, storage };
        this.workspaces.set(id, ws);
      }
      ws.size = spec.size;
      ws.verifier = verifier;
      // A server object left from a crash (restarting with backoff) carries its old settings: replace it.
      if (ws.server) await ws.server.stop();
      const server = this.newServer(id, ws);
      ws.server = server;
      try {
        await server.start();
      } catch (err) {
        await server.stop().catch(() => undefined);
        if (ws.server === server) ws.server = undefined;
        throw err instanceof ParhelionError ? err : new ParhelionError("ERR_ENGINE", `workspace ${id} did not start: ${(err as Error).message}`, { cause: err });
      }
      this.logger.info({ workspace: id, pid: server.pid, size: ws.size }, "workspace server ready");
      this.follow(id, ws);
      // The engine's own directory serves every workspace: keep a spare there. A group's volume gets one once
      // it holds several workspaces (a spare per one-workspace group would be an initdb, ~1-3 s of CPU, wasted).
      if (storage === this.dir || this.listOnDisk(storage).length > 1) void this.spareFor(storage)?.fill();
    });
  }

  /** Stops whatever server runs in the workspace's data directory (ours, or one a killed parhelion left). */
  private async stopServer(id: string, storage: string): Promise<void> {
    const cache = this.loginCaches.get(id);
    if (cache) {
      this.loginCaches.delete(id);
      await cache.close();
    }
    const pool = this.loginPools.get(id);
    if (pool) {
      this.loginPools.delete(id);
      await pool.end().catch(() => undefined);
    }
    const ws = this.workspaces.get(id);
    if (ws?.server) {
      await ws.server.stop();
      ws.server = undefined;
    }
    ws?.tailer?.stop(); // after the server stopped: everything it logged is read
    this.workspaces.delete(id);
    for (const where of new Set([storage, this.dir])) {
      if (!existsSync(this.pgdata(id, where))) continue;
      const probe = this.newServer(id, { server: undefined, size: "S-00", verifier: "", appliedVerifier: undefined, auditClasses: [], auditChange: Promise.resolve(), tailer: undefined, storage: where });
      await probe.shutdownStray();
    }
    this.limiter.remove(id);
  }

  async ensureStopped(id: string, storage?: string): Promise<void> {
    const wid = checkId(id);
    const where = this.storageOf(wid, storage);
    return this.serial(wid, () => this.stopServer(wid, where));
  }

  async destroy(id: string, storage?: string): Promise<void> {
    const wid = checkId(id);
    const where = this.storageOf(wid, storage);
    return this.serial(wid, async () => {
      await this.stopServer(wid, where);
      if (where !== this.dir) {
        rmSync(join(where, wid), { recursive: true, force: true });
        syncDir(where);
      }
      rmSync(this.wsDir(wid), { recursive: true, force: true });
      syncDir(this.dir);
      this.logger.info({ workspace: wid }, "workspace destroyed");
    });
  }

  async withSystem<T>(id: string, database: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
    const wid = checkId(id);
    if (!this.isRunning(wid)) throw new ParhelionError("ERR_WORKSPACE_UNAVAILABLE", `workspace ${wid} is not running`);
    if (typeof database !== "string" || database.length === 0 || Buffer.byteLength(database) > 63) throw new ParhelionError("ERR_VALIDATION", "database name must be 1 to 63 bytes");
    return this.connectSystem(wid, database, fn);
  }

  prepare(storage?: string): void {
    void this.spareFor(storage === undefined ? this.dir : checkStorage(storage))?.fill();
  }

  async releaseStorage(storage: string): Promise<void> {
    const where = checkStorage(storage);
    const pool = this.spares.get(where);
    this.spares.delete(where);
    await pool?.close();
  }

  async stopAll(): Promise<void> {
    this.closing = true;
    await Promise.all([...this.spares.values()].map((p) => p.close()));
    this.spares.clear();
    await Promise.all([...this.workspaces.entries()].map(([id, ws]) => this.serial(id, () => this.stopServer(id, ws.storage))));
    this.closing = false;
  }

  limits(id: string): WorkspaceLimits {
    const wid = checkId(id);
    const ws = this.workspaces.get(wid);
    const size = ws?.size ?? null;
    return {
      size,
      settings: size ? { ...WORKSPACE_SIZES[size] } : null,
      memory: this.limiter.enforced(wid, ws?.server?.pid),
    };
  }

  /** Runs a database/role operation on the workspace's `postgres` database, mapping PostgreSQL's errors. */
  private async api<T>(id: string, what: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
    try {
      return await this.withSystem(id, "postgres", fn);
    } catch (err) {
      throw sql.mapPgError(err, what);
    }
  }

  async listDatabases(id: string): Promise<sql.DatabaseInfo[]> {
    return this.api(id, "listing databases", (c) => sql.listDatabases(c));
  }

  async createDatabase(id: string, name: string, owner: string = sql.ADMIN_ROLE): Promise<void> {
    const db = sql.validateName(name, "database name");
    const own = sql.validateRoleRef(owner, "owner");
    await this.api(id, `creating database "${db}"`, (c) => sql.createDatabase(c, db, own));
  }

  async dropDatabase(id: string, name: string): Promise<void> {
    const db = sql.validateName(name, "database name");
    await this.api(id, `dropping database "${db}"`, (c) => sql.dropDatabase(c, db));
  }

  async listUsers(id: string): Promise<sql.UserInfo[]> {
    return this.api(id, "listing users", (c) => sql.listUsers(c));
  }

  async createUser(id: string, name: string, verifier: string, opts: sql.CreateUserOptions = {}): Promise<void> {
    const user = sql.validateName(name, "user name");
    const v = sql.validateVerifier(verifier);
    const memberOf = (opts.memberOf ?? []).map((m) => sql.validateRoleRef(m, "memberOf"));
    if (opts.connectionLimit !== undefined && (!Number.isInteger(opts.connectionLimit) || opts.connectionLimit < -1)) throw new ParhelionError("ERR_VALIDATION", "connectionLimit must be an integer >= -1");
    if (opts.validUntil && !Number.isFinite(opts.validUntil.getTime())) throw new ParhelionError("ERR_VALIDATION", "validUntil must be a valid date");
    await this.api(id, `creating user "${user}"`, (c) => sql.createUser(c, user, v, { ...opts, memberOf }));
  }

  async setUserPassword(id: string, name: string, verifier: string): Promise<void> {
    const user = sql.validateName(name, "user name");
    const v = sql.validateVerifier(verifier);
    await this.api(id, `setting the password of "${user}"`, (c) => sql.setUserPassword(c, user, v));
  }

  async dropUser(id: string, name: string): Promise<void> {
    const user = sql.validateName(name, "user name");
    await this.api(id, `dropping user "${user}"`, (c) => sql.dropUser(c, user));
  }

  async ensureTokenRole(id: string, role: string, o: { create: boolean; grants: readonly string[]; revoke?: readonly string[] }): Promise<sql.TokenRoleResult | null> {
    return this.api(id, `preparing token login role ${JSON.stringify(role)}`, (c) => sql.ensureTokenRole(c, role, o));
  }

  /** Follows the workspace server's csvlog while the engine knows the workspace: pgaudit's nested statements go to the listeners. */
  private follow(id: string, ws: Workspace): void {
    if (ws.tailer) return;
    const dir = this.logDir(id, ws.storage);
    ws.tailer = new CsvlogTailer({
      file: join(dir, "postgres.csv"),
      companions: [join(dir, "postgres.log")],
      rotateBytes: this.opts.logRotateBytes ?? 16 * 1024 * 1024,
      logger: this.logger.child({ workspace: id }),
      rotate: () => this.connectSystem(id, "postgres", async (c) => void (await c.query("SELECT pg_rotate_logfile()"))),
      onRecords: (records) => {
        for (const f of records) {
          const e = nestedStatementOf(id, f);
          // The platform's own connections (parhelion_system) are the platform's: what it does is audited by
          // the API records of the operations it carries out.
          if (e === null || e.user === sql.SYSTEM_ROLE) continue;
          for (const l of this.nestedListeners) {
            try {
              l(e);
            } catch (err) {
              this.logger.error({ err: { message: (err as Error).message } }, "a nested statement listener failed");
            }
          }
        }
      },
    });
    ws.tailer.start();
  }

  onNestedStatement(listener: (e: NestedStatement) => void): void {
    this.nestedListeners.push(listener);
  }

  auditClasses(id: string): readonly string[] {
    return this.workspaces.get(checkId(id))?.auditClasses ?? [];
  }

  async setAuditClasses(id: string, classes: readonly string[]): Promise<void> {
    const wid = checkId(id);
    const ws = this.workspaces.get(wid);
    if (!ws?.server?.running) throw new ParhelionError("ERR_WORKSPACE_UNAVAILABLE", `workspace ${wid} is not running`);
    const value = pgauditLogSetting(classes);
    if (!/^[a-z_,]+$/.test(value)) throw new ParhelionError("ERR_VALIDATION", "pgaudit classes are lower-case class names");
    const change = ws.auditChange.catch(() => undefined).then(async () => {
      if (pgauditLogSetting(ws.auditClasses) === value) return;
      // ALTER SYSTEM, then a reload; the change counts once this session's backend shows it: the postmaster
      // re-reads the file and signals every backend at once, and each applies it before its next command.
      await this.connectSystem(wid, "postgres", async (c) => {
        await c.query(`ALTER SYSTEM SET pgaudit.log = '${value}'`);
        await c.query("SELECT pg_reload_conf()");
        for (const deadline = Date.now() + 5000; ; ) {
          const r = await c.query<{ v: string }>("SELECT current_setting('pgaudit.log') AS v");
          if (r.rows[0]?.v === value) break;
          if (Date.now() > deadline) throw new ParhelionError("ERR_ENGINE", `workspace ${wid} did not apply pgaudit.log = '${value}' within 5 s`);
          await new Promise((res) => setTimeout(res, 5));
        }
      });
      ws.auditClasses = value === "none" ? [] : value.split(",");
    });
    ws.auditChange = change;
    return change;
  }

  async getLoginInfo(id: string, role: string): Promise<sql.LoginInfo | null> {
    if (typeof role !== "string" || role.length === 0 || Buffer.byteLength(role) > 63) return null;
    const wid = checkId(id);
    if (!this.isRunning(wid)) throw new ParhelionError("ERR_WORKSPACE_UNAVAILABLE", `workspace ${wid} is not running`);
    const host = join(this.wsDir(wid), "run");
    let pool = this.loginPools.get(wid);
    if (!pool) {
      pool = new pg.Pool({ host, user: sql.SYSTEM_ROLE, database: "postgres", application_name: "parhelion", max: 2, idleTimeoutMillis: 60_000, connectionTimeoutMillis: 10_000 });
      pool.on("error", () => undefined); // a connection lost while idle (server restart) is dropped by the pool
      this.loginPools.set(wid, pool);
    }
    let cache = this.loginCaches.get(wid);
    if (!cache) {
      cache = new LoginInfoCache({
        connect: () => new pg.Client({ host, user: sql.SYSTEM_ROLE, database: "postgres", application_name: "parhelion listener", connectionTimeoutMillis: 10_000 }),
        logger: this.logger,
      });
      this.loginCaches.set(wid, cache);
    }
    const from = pool;
    return cache.get(role, async () => {
      try {
        return await sql.getLoginInfo(from as unknown as pg.Client, role);
      } catch (err) {
        throw sql.mapPgError(err, "reading login information");
      }
    });
  }
}
