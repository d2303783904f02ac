import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync, chownSync, chmodSync, openSync, closeSync, rmSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { EventEmitter } from "node:events";
import pg from "pg";
import { ParhelionError } from "../lib/errors.js";
import type { Logger } from "../log/logger.js";

/** Where the distribution's PostgreSQL binaries live (Debian: /usr/lib/postgresql/<major>/bin). */
export function findPgBin(): string {
  const root = "/usr/lib/postgresql";
  if (existsSync(root)) {
    const majors = readdirSync(root).filter((d) => /^\d+$/.test(d)).sort((a, b) => Number(b) - Number(a));
    for (const m of majors) {
      const dir = join(root, m, "bin");
      if (existsSync(join(dir, "postgres"))) return dir;
    }
  }
  throw new ParhelionError("ERR_STORE_UNAVAILABLE", "PostgreSQL server binaries not found under /usr/lib/postgresql; run ./bin/parhelion up to bootstrap them");
}

export interface ServiceAccount {
  name: string;
  uid: number;
  gid: number;
}

/**
 * The OS account PostgreSQL runs as: the service user when we are root (PostgreSQL refuses root),
 * otherwise the current user.
 */
export function resolveServiceAccount(serviceUser: string): ServiceAccount {
  const uid = process.getuid?.() ?? 0;
  if (uid !== 0) {
    const name = execFileSync("id", ["-un"], { encoding: "utf8" }).trim();
    return { name, uid, gid: process.getgid?.() ?? uid };
  }
  try {
    const u = Number(execFileSync("id", ["-u", serviceUser], { encoding: "utf8" }).trim());
    const g = Number(execFileSync("id", ["-g", serviceUser], { encoding: "utf8" }).trim());
    return { name: serviceUser, uid: u, gid: g };
  } catch {
    throw new ParhelionError("ERR_CONFIG", `system user "${serviceUser}" does not exist; ./bin/parhelion creates it, or: useradd --system ${serviceUser}`);
  }
}

export interface EmbeddedPostgresOptions {
  /** Root of this store: pgdata/, run/ (socket) and the log live beneath it. */
  dir: string;
  serviceUser: string;
  logger: Logger;
  /** Extra postgresql.conf settings. */
  settings?: Record<string, string | number>;
  /** Database to create and connect to. */
  database?: string;
}

/**
 * A PostgreSQL server that parhelion initialises and supervises: unix socket only (no TCP), runs as an
 * unprivileged user, restarted if it dies, stopped when parhelion stops. An orphan left by a kill -9 of
 * parhelion is shut down cleanly and replaced at the next start.
 */
export class EmbeddedPostgres extends EventEmitter {
  readonly dataDir: string;
  readonly socketDir: string;
  readonly logFile: string;
  readonly database: string;
  private child: ChildProcess | undefined;
  private stopping = false;
  private restarts = 0;
  private readonly account: ServiceAccount;
  private readonly bin: string;

  constructor(private readonly opts: EmbeddedPostgresOptions) {
    super();
    this.dataDir = join(opts.dir, "pgdata");
    this.socketDir = join(opts.dir, "run");
    this.logFile = join(opts.dir, "postgres.log");
    this.database = opts.database ?? "parhelion";
    this.account = resolveServiceAccount(opts.serviceUser);
    this.bin = findPgBin();
  }

  /** libpq-style connection string over the unix socket. */
  get connectionString(): string {
    return `postgresql://parhelion@/${this.database}?host=${encodeURIComponent(this.socketDir)}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  private ownDir(path: string, mode: number): void {
    mkdirSync(path, { recursive: true });
    chmodSync(path, mode);
    if (process.getuid?.() === 0) chownSync(path, this.account.uid, this.account.gid);
  }

  private run(cmd: string, args: string[]): void {
    execFileSync(join(this.bin, cmd), args, { uid: this.account.uid, gid: this.account.gid, stdio: ["ignore", "pipe", "pipe"], env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", LANG: "C.UTF-8" } });
  }

  private initdb(): void {
    if (existsSync(join(this.dataDir, "PG_VERSION"))) return;
    this.opts.logger.info({ dataDir: this.dataDir }, "initialising metadata store");
    this.ownDir(this.opts.dir, 0o700);
    rmSync(this.dataDir, { recursive: true, force: true }); // a half-made directory from an interrupted initdb
    this.ownDir(this.dataDir, 0o700);
    this.run("initdb", ["-D", this.dataDir, "-U", "parhelion", "--auth-local=peer", "--auth-host=reject", "--data-checksums", "--encoding=UTF8", "--locale=C.UTF-8"]);
    const me = process.getuid?.() === 0 ? "root" : this.account.name;
    writeFileSync(join(this.dataDir, "pg_ident.conf"), `# parhelion: the OS accounts allowed to connect as the store's owner\nparhelion ${me} parhelion\nparhelion ${this.account.name} parhelion\n`);
    writeFileSync(join(this.dataDir, "pg_hba.conf"), "# parhelion: unix socket only, peer identity mapped\nlocal all parhelion peer map=parhelion\n");
  }

  private writeConf(): void {
    const settings: Record<string, string | number> = {
      listen_addresses: "''",
      unix_socket_directories: `'${this.socketDir}'`,
      unix_socket_permissions: "0700",
      max_connections: 40,
      shared_buffers: "'32MB'",
      password_encryption: "'scram-sha-256'",
      logging_collector: "off",
      log_min_messages: "warning",
      ...this.opts.settings,
    };
    const body = Object.entries(settings).map(([k, v]) => `${k} = ${v}`).join("\n") + "\n";
    writeFileSync(join(this.dataDir, "postgresql.auto.conf"), "# managed by parhelion; rewritten at every start\n" + body);
    if (process.getuid?.() === 0) chownSync(join(this.dataDir, "postgresql.auto.conf"), this.account.uid, this.account.gid);
    for (const f of ["pg_hba.conf", "pg_ident.conf"]) {
      if (process.getuid?.() === 0) chownSync(join(this.dataDir, f), this.account.uid, this.account.gid);
    }
  }

  /** Stops a server left running by an earlier parhelion that died without stopping it. */
  private async reapOrphan(): Promise<void> {
    const pidFile = join(this.dataDir, "postmaster.pid");
    if (!existsSync(pidFile)) return;
    const pid = Number(readFileSync(pidFile, "utf8").split("\n")[0]);
    if (!Number.isInteger(pid) || pid <= 0) return;
    let cmdline = "";
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    } catch {
      return; // not running: PostgreSQL itself discards a stale lock file whose process is gone
    }
    if (!cmdline.includes("postgres")) return;
    this.opts.logger.warn({ pid }, "metadata store left running by a previous parhelion; shutting it down");
    try {
      process.kill(pid, "SIGINT"); // fast shutdown: roll back open transactions, checkpoint, exit
    } catch {
      return;
    }
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      if (!existsSync(`/proc/${pid}`)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new ParhelionError("ERR_STORE_UNAVAILABLE", `an earlier metadata store server (pid ${pid}) did not stop; stop it and retry`);
  }

  private spawnServer(): ChildProcess {
    const fd = openSync(this.logFile, "a", 0o600);
    if (process.getuid?.() === 0) chownSync(this.logFile, this.account.uid, this.account.gid);
    const child = spawn(join(this.bin, "postgres"), ["-D", this.dataDir], {
      uid: this.account.uid,
      gid: this.account.gid,
      stdio: ["ignore", fd, fd],
      env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", LANG: "C.UTF-8", TZ: "UTC" },
    });
    closeSync(fd);
    child.on("exit", (code, signal) => {
      if (this.child !== child) return;
      this.child = undefined;
      if (this.stopping) return;
      this.opts.logger.error({ code, signal }, "metadata store server exited unexpectedly; restarting");
      this.emit("crash", { code, signal });
      const delay = Math.min(5000, 200 * 2 ** Math.min(this.restarts, 5));
      this.restarts += 1;
      setTimeout(() => {
        if (this.stopping) return;
        this.startProcess().then(
          () => this.emit("restarted"),
          (err: unknown) => this.opts.logger.error({ err: { message: (err as Error).message } }, "metadata store restart failed"),
        );
      }, delay).unref();
    });
    return child;
  }

  private async waitReady(child: ChildProcess, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let exited = false;
    child.once("exit", () => (exited = true));
    while (Date.now() < deadline) {
      if (exited) throw new ParhelionError("ERR_STORE_UNAVAILABLE", `metadata store server failed to start; see ${this.logFile}`);
      const c = new pg.Client({ host: this.socketDir, user: "parhelion", database: "postgres" });
      try {
        await c.connect();
        await c.end();
        return;
      } catch {
        await c.end().catch(() => undefined);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    throw new ParhelionError("ERR_STORE_UNAVAILABLE", `metadata store did not become ready within ${timeoutMs} ms; see ${this.logFile}`);
  }

  private async startProcess(): Promise<void> {
    await this.reapOrphan();
    this.ownDir(this.socketDir, 0o700);
    this.writeConf();
    const child = this.spawnServer();
    this.child = child;
    await this.waitReady(child);
    this.restarts = 0;
  }

  /** Initialises (first time), starts and waits until the server accepts connections. */
  async start(): Promise<void> {
    this.stopping = false;
    this.initdb();
    await this.startProcess();
    const c = new pg.Client({ host: this.socketDir, user: "parhelion", database: "postgres" });
    await c.connect();
    try {
      const r = await c.query("SELECT 1 FROM pg_database WHERE datname = $1", [this.database]);
      if (r.rowCount === 0) await c.query(`CREATE DATABASE ${pg.escapeIdentifier(this.database)}`);
    } finally {
      await c.end();
    }
    this.opts.logger.info({ pid: this.child?.pid }, "metadata store ready");
  }

  /** Fast shutdown; escalates to an immediate shutdown after timeoutMs. */
  async stop(timeoutMs = 8000): Promise<void> {
    this.stopping = true;
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => child.kill("SIGQUIT"), timeoutMs);
      child.once("exit", () => {
        clearTimeout(t);
        resolve();
      });
      child.kill("SIGINT");
    });
    this.child = undefined;
  }
}
