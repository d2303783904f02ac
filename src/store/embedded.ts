import { spawn, execFile, execFileSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync, chownSync, chmodSync, openSync, closeSync, rmSync, readdirSync, readlinkSync, realpathSync, renameSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { EventEmitter } from "node:events";
import pg from "pg";
import { ParhelionError } from "../lib/errors.js";
import type { Logger } from "../log/logger.js";

const execFileAsync = promisify(execFile);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

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
    const u = Number(execFileSync("id", ["-u", serviceUser], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim());
    const g = Number(execFileSync("id", ["-g", serviceUser], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim());
    if (u === 0) throw new ParhelionError("ERR_CONFIG", `system user "${serviceUser}" is uid 0; PostgreSQL must run as an unprivileged user`);
    return { name: serviceUser, uid: u, gid: g };
  } catch (err) {
    if (err instanceof ParhelionError) throw err;
    throw new ParhelionError("ERR_CONFIG", `system user "${serviceUser}" does not exist; ./bin/parhelion creates it, or: useradd --system ${serviceUser}`);
  }
}

/** A process as seen in /proc. */
export interface ProcInfo {
  pid: number;
  uid: number;
  /** argv joined by spaces (PostgreSQL children rewrite theirs to "postgres: <role>"). */
  cmdline: string;
}

/** True when the process exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return false;
  }
  const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
  return state !== "Z" && state !== "X";
}

function readProc(pid: number): { exe: string; cwd: string; uid: number; cmdline: string } | undefined {
  try {
    const exe = readlinkSync(`/proc/${pid}/exe`).replace(/ \(deleted\)$/, "");
    const cwd = readlinkSync(`/proc/${pid}/cwd`);
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1] ?? NaN);
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean).join(" ");
    return { exe, cwd, uid, cmdline };
  } catch {
    return undefined; // gone, a zombie, or not ours to inspect
  }
}

/**
 * The live PostgreSQL processes working in a data directory. A postmaster chdirs into its data
 * directory and its children inherit that, so the working directory plus the executable identify a
 * server's processes without trusting the lock file.
 */
export function postgresProcessesIn(dataDir: string, postgresBin: string): ProcInfo[] {
  let dir: string;
  let exe: string;
  try {
    dir = realpathSync(dataDir);
    exe = realpathSync(postgresBin);
  } catch {
    return [];
  }
  const out: ProcInfo[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (pid === process.pid || !isAlive(pid)) continue;
    const p = readProc(pid);
    if (p && p.exe === exe && p.cwd === dir) out.push({ pid, uid: p.uid, cmdline: p.cmdline });
  }
  return out;
}

/** True when pid is the postmaster (not a child) of the server in dataDir. */
export function isPostmasterOf(pid: number, dataDir: string, postgresBin: string): boolean {
  const p = postgresProcessesIn(dataDir, postgresBin).find((x) => x.pid === pid);
  return p !== undefined && !p.cmdline.startsWith("postgres:");
}

async function waitGone(pids: number[], timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (pids.every((p) => !isAlive(p))) return true;
    if (Date.now() >= deadline) return false;
    await sleep(25);
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

export interface EmbeddedPostgresOptions {
  /** Root of this store: pgdata/, run/ (socket) and the log live beneath it. */
  dir: string;
  serviceUser: string;
  logger: Logger;
  /** Extra postgresql.conf settings. The listening settings cannot be overridden: no TCP, ever. */
  settings?: Record<string, string | number>;
  /** Database to create and connect to. */
  database?: string;
}

/**
 * A PostgreSQL server that parhelion initialises and supervises: unix socket only (no TCP), runs as an
 * unprivileged user, restarted if it dies, stopped when parhelion stops. An orphan left by a kill -9 of
 * parhelion is shut down cleanly and replaced at the next start.
 *
 * Events: "crash" ({code, signal}) when the server dies unexpectedly, "restarted" once it is back.
 */
export class EmbeddedPostgres extends EventEmitter {
  readonly dataDir: string;
  readonly socketDir: string;
  readonly logFile: string;
  readonly database: string;
  private child: ChildProcess | undefined;
  private stopping = false;
  private restarts = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  private starting: Promise<void> | undefined;
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

  /** The postmaster's pid while it runs. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** The OS account the server runs as. */
  get serviceAccount(): ServiceAccount {
    return { ...this.account };
  }

  /** The live processes (postmaster and children) of this store's server, wherever they came from. */
  processes(): ProcInfo[] {
    return postgresProcessesIn(this.dataDir, join(this.bin, "postgres"));
  }

  private get asRoot(): boolean {
    return process.getuid?.() === 0;
  }

  private own(path: string): void {
    if (this.asRoot) chownSync(path, this.account.uid, this.account.gid);
  }

  private ownDir(path: string, mode: number): void {
    mkdirSync(path, { recursive: true, mode });
    chmodSync(path, mode);
    this.own(path);
  }

  private async run(cmd: string, args: string[]): Promise<void> {
    try {
      await execFileAsync(join(this.bin, cmd), args, { uid: this.account.uid, gid: this.account.gid, cwd: this.opts.dir, env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", LANG: "C.UTF-8" } });
    } catch (err) {
      const stderr = String((err as { stderr?: unknown }).stderr ?? "").trim();
      throw new ParhelionError("ERR_STORE_UNAVAILABLE", `${cmd} failed: ${stderr || (err as Error).message}`, { cause: err });
    }
  }

  /**
   * Creates the cluster once. initdb runs into a scratch directory that is renamed into place only when
   * complete, so a data directory with PG_VERSION is always a whole one; anything else (an interrupted
   * initdb, here or by an older version) is discarded and made again.
   */
  private async initdb(): Promise<void> {
    this.ownDir(this.opts.dir, 0o700);
    if (existsSync(join(this.dataDir, "PG_VERSION"))) return;
    const scratch = `${this.dataDir}.initdb`;
    if (existsSync(this.dataDir)) {
      if (this.processes().length > 0) throw new ParhelionError("ERR_STORE_UNAVAILABLE", `${this.dataDir} has no PG_VERSION but PostgreSQL processes are running in it; stop them and retry`);
      this.opts.logger.warn({ dataDir: this.dataDir }, "incomplete metadata store data directory (interrupted initdb); initialising again");
      rmSync(this.dataDir, { recursive: true, force: true });
    }
    this.opts.logger.info({ dataDir: this.dataDir }, "initialising metadata store");
    rmSync(scratch, { recursive: true, force: true });
    this.ownDir(scratch, 0o700);
    await this.run("initdb", ["-D", scratch, "-U", "parhelion", "--auth-local=peer", "--auth-host=reject", "--data-checksums", "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions"]);
    const me = this.asRoot ? "root" : this.account.name;
    writeFileSync(join(scratch, "pg_ident.conf"), `# parhelion: the OS accounts allowed to connect as the store's owner\nparhelion ${me} parhelion\nparhelion ${this.account.name} parhelion\n`, { mode: 0o600 });
    writeFileSync(join(scratch, "pg_hba.conf"), "# parhelion: unix socket only, peer identity mapped\nlocal all parhelion peer map=parhelion\n", { mode: 0o600 });
    this.own(join(scratch, "pg_ident.conf"));
    this.own(join(scratch, "pg_hba.conf"));
    renameSync(scratch, this.dataDir);
  }

  private writeConf(): void {
    const settings: Record<string, string | number> = {
      max_connections: 40,
      shared_buffers: "'32MB'",
      password_encryption: "'scram-sha-256'",
      logging_collector: "off",
      log_min_messages: "warning",
      ...this.opts.settings,
      ...this.fixedSettings(),
    };
    const body = Object.entries(settings).map(([k, v]) => `${k} = ${v}`).join("\n") + "\n";
    const file = join(this.dataDir, "postgresql.auto.conf");
    writeFileSync(file, "# managed by parhelion; rewritten at every start\n" + body, { mode: 0o600 });
    this.own(file);
    for (const f of ["pg_hba.conf", "pg_ident.conf"]) this.own(join(this.dataDir, f));
  }

  /** Settings that keep the store private; applied after (over) the settings option. */
  private fixedSettings(): Record<string, string> {
    return { listen_addresses: "''", port: "5432", unix_socket_directories: `'${this.socketDir.replace(/'/g, "''")}'`, unix_socket_permissions: "0700" };
  }

  /**
   * Makes the data directory startable after an unclean end: stops a server left running by an earlier
   * parhelion that died without stopping it, ends the children of a postmaster that was killed, and
   * removes a lock file whose pid now belongs to an unrelated live process (PostgreSQL would refuse to
   * start; a lock file naming a dead process it discards itself).
   */
  private async reapOrphan(): Promise<void> {
    const postgres = join(this.bin, "postgres");
    const pidFile = join(this.dataDir, "postmaster.pid");
    let pid = 0;
    try {
      pid = Number(readFileSync(pidFile, "utf8").split("\n")[0]);
    } catch {
      // no lock file
    }
    if (!Number.isInteger(pid) || pid < 0) pid = 0;
    if (pid > 0 && isPostmasterOf(pid, this.dataDir, postgres)) {
      this.opts.logger.warn({ pid }, "metadata store left running by a previous parhelion; shutting it down");
      signal(pid, "SIGINT"); // fast shutdown: roll back open transactions, checkpoint, exit
      if (!(await waitGone([pid], 15_000))) {
        signal(pid, "SIGQUIT"); // immediate shutdown; crash recovery at the next start
        if (!(await waitGone([pid], 5_000))) {
          throw new ParhelionError("ERR_STORE_UNAVAILABLE", `an earlier metadata store server (pid ${pid}) did not stop; stop it and retry`);
        }
      }
    }
    await this.reapLeftovers();
    if (pid > 0 && isAlive(pid) && !isPostmasterOf(pid, this.dataDir, postgres)) {
      this.opts.logger.warn({ pid }, "stale postmaster.pid names an unrelated process; removing it");
      rmSync(pidFile, { force: true });
    }
  }

  /**
   * Ends server processes still working in the data directory with no postmaster: backends of a killed
   * postmaster keep the shared memory attached, and a new postmaster must not start beside them.
   */
  private async reapLeftovers(): Promise<void> {
    const left = this.processes().filter((p) => p.cmdline.startsWith("postgres:"));
    if (left.length === 0) return;
    const pids = left.map((p) => p.pid);
    this.opts.logger.warn({ pids }, "ending metadata store processes left without their postmaster");
    for (const p of pids) signal(p, "SIGQUIT");
    if (await waitGone(pids, 3_000)) return;
    for (const p of pids) signal(p, "SIGKILL");
    if (!(await waitGone(pids, 2_000))) {
      throw new ParhelionError("ERR_STORE_UNAVAILABLE", `metadata store processes ${pids.join(", ")} did not exit; stop them and retry`);
    }
  }

  private spawnServer(): ChildProcess {
    const fd = openSync(this.logFile, "a", 0o600);
    chmodSync(this.logFile, 0o600);
    this.own(this.logFile);
    // The command line outranks postgresql.conf, postgresql.auto.conf (ALTER SYSTEM) and the settings option.
    const args = ["-D", this.dataDir, "-c", "listen_addresses=", "-c", "unix_socket_permissions=0700"];
    let child: ChildProcess;
    try {
      child = spawn(join(this.bin, "postgres"), args, {
        uid: this.account.uid,
        gid: this.account.gid,
        cwd: this.dataDir,
        stdio: ["ignore", fd, fd],
        env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", LANG: "C.UTF-8", TZ: "UTC" },
      });
    } finally {
      closeSync(fd);
    }
    child.on("error", (err) => this.opts.logger.error({ err: { message: err.message } }, "metadata store server could not be started"));
    child.on("exit", (code, sig) => {
      if (this.child !== child) return;
      this.child = undefined;
      if (this.stopping) return;
      this.opts.logger.error({ code, signal: sig }, "metadata store server exited unexpectedly; restarting");
      this.emit("crash", { code, signal: sig });
      this.scheduleRestart();
    });
    return child;
  }

  private scheduleRestart(): void {
    if (this.stopping || this.restartTimer) return;
    const delay = Math.min(5000, 100 * 2 ** Math.min(this.restarts, 6));
    this.restarts += 1;
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.stopping || this.child) return;
      const p = this.startProcess();
      this.starting = p;
      p.then(
        () => {
          this.opts.logger.info({ pid: this.child?.pid }, "metadata store restarted");
          this.emit("restarted");
        },
        (err: unknown) => {
          if (this.stopping) return;
          this.opts.logger.error({ err: { message: (err as Error).message } }, "metadata store restart failed; retrying");
          this.scheduleRestart();
        },
      ).finally(() => {
        if (this.starting === p) this.starting = undefined;
      });
    }, delay);
    this.restartTimer.unref();
  }

  private async waitReady(child: ChildProcess, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) {
        throw new ParhelionError("ERR_STORE_UNAVAILABLE", `metadata store server failed to start; see ${this.logFile}`);
      }
      if (this.stopping) throw new ParhelionError("ERR_NOT_READY", "metadata store is stopping");
      const c = new pg.Client({ host: this.socketDir, user: "parhelion", database: "postgres", connectionTimeoutMillis: 2000 });
      c.on("error", () => undefined);
      try {
        await c.connect();
        await c.end();
        return;
      } catch {
        await c.end().catch(() => undefined);
        await sleep(50);
      }
    }
    throw new ParhelionError("ERR_STORE_UNAVAILABLE", `metadata store did not become ready within ${timeoutMs} ms; see ${this.logFile}`);
  }

  /** Ends a postmaster: fast shutdown, immediate after timeoutMs, SIGKILL 1.5 s later. */
  private terminate(child: ChildProcess, timeoutMs: number): Promise<void> {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const quit = setTimeout(() => child.kill("SIGQUIT"), timeoutMs);
      const kill = setTimeout(() => child.kill("SIGKILL"), timeoutMs + 1500);
      child.once("exit", () => {
        clearTimeout(quit);
        clearTimeout(kill);
        resolve();
      });
      child.kill("SIGINT");
    });
  }

  private async startProcess(): Promise<void> {
    await this.reapOrphan();
    if (this.stopping) throw new ParhelionError("ERR_NOT_READY", "metadata store is stopping");
    this.ownDir(this.socketDir, 0o700);
    this.writeConf();
    const child = this.spawnServer();
    this.child = child;
    try {
      await this.waitReady(child);
    } catch (err) {
      if (this.child === child) this.child = undefined;
      await this.terminate(child, 5000);
      throw err;
    }
    this.restarts = 0;
  }

  /** Initialises (first time), starts and waits until the server accepts connections. */
  async start(): Promise<void> {
    if (this.child) return;
    this.stopping = false;
    await this.initdb();
    const p = this.startProcess();
    this.starting = p;
    try {
      await p;
    } finally {
      if (this.starting === p) this.starting = undefined;
    }
    const c = new pg.Client({ host: this.socketDir, user: "parhelion", database: "postgres" });
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
    this.opts.logger.info({ pid: this.pid }, "metadata store ready");
  }

  /**
   * Stops the server and any restart in flight: fast shutdown, escalating to an immediate shutdown
   * after timeoutMs. Resolves once no process of the server is left.
   */
  async stop(timeoutMs = 7000): Promise<void> {
    this.stopping = true;
    if (this.restartTimer) {
      clearTimeout(this.restartTimer);
      this.restartTimer = undefined;
    }
    if (this.starting) await this.starting.catch(() => undefined);
    const child = this.child;
    this.child = undefined;
    if (child) await this.terminate(child, timeoutMs);
    await this.reapLeftovers().catch((err: unknown) => this.opts.logger.error({ err: { message: (err as Error).message } }, "metadata store processes left after stop"));
  }
}
