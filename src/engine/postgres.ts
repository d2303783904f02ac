import { spawn, spawnSync, execFile, execFileSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync, chownSync, chmodSync, openSync, closeSync, fsyncSync, fstatSync, rmSync, readdirSync, readlinkSync, realpathSync, renameSync } from "node:fs";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { EventEmitter } from "node:events";
import pg from "pg";
import { ParhelionError, type ErrorCode } from "../lib/errors.js";
import { readAt } from "../lib/files.js";
import type { Logger } from "../log/logger.js";

const execFileAsync = promisify(execFile);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Where the distribution's PostgreSQL binaries live (Debian: /usr/lib/postgresql/<major>/bin). */
export function findPgBin(code: ErrorCode = "ERR_ENGINE"): string {
  const root = "/usr/lib/postgresql";
  if (existsSync(root)) {
    const majors = readdirSync(root).filter((d) => /^\d+$/.test(d)).sort((a, b) => Number(b) - Number(a));
    for (const m of majors) {
      const dir = join(root, m, "bin");
      if (existsSync(join(dir, "postgres"))) return dir;
    }
  }
  throw new ParhelionError(code, "PostgreSQL server binaries not found under /usr/lib/postgresql; run ./bin/parhelion up to bootstrap them");
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

/**
 * Refuses (ERR_CONFIG, naming the directory and the fix) a directory the account PostgreSQL runs as cannot reach:
 * every directory above it must let that account pass. A home directory is 0700 by default on Debian 12, so a data
 * directory inside one fails here, clearly, rather than as initdb's "Permission denied". Only when we are root.
 */
export function assertReachable(dir: string, account: ServiceAccount): void {
  if (process.getuid?.() !== 0) return;
  const passes = (d: string) => spawnSync("/usr/bin/test", ["-x", d], { uid: account.uid, gid: account.gid, stdio: "ignore" }).status === 0;
  if (passes(dir)) return;
  let blocking = dir;
  for (let d = dirname(dir), prev = dir; d !== prev; prev = d, d = dirname(d)) {
    if (!passes(d)) blocking = d;
  }
  throw new ParhelionError("ERR_CONFIG", `the system user "${account.name}" that runs PostgreSQL cannot reach the data directory ${dir}: ${blocking} does not let it pass. Let it pass and nothing more: setfacl -m u:${account.name}:x ${blocking} (./bin/parhelion does this when it runs up through sudo), or chmod o+x ${blocking}; or choose a --data-dir it can reach (e.g. /var/lib/parhelion)`);
}

/**
 * pg_ident.conf lines mapping the OS accounts parhelion connects from (root, or the current user, and
 * the service user) to one database role, for `peer map=<map>` lines in pg_hba.conf.
 */
export function peerIdentMap(map: string, role: string, account: ServiceAccount): string {
  const me = process.getuid?.() === 0 ? "root" : account.name;
  const users = [...new Set([me, account.name])];
  return `# parhelion: the OS accounts allowed to connect as ${role}\n` + users.map((u) => `${map} ${u} ${role}\n`).join("");
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

const asRoot = (): boolean => process.getuid?.() === 0;

/** Makes a directory with a mode, owned by the account (when we are root). */
export function ownDir(path: string, mode: number, account: ServiceAccount): void {
  mkdirSync(path, { recursive: true, mode });
  chmodSync(path, mode);
  if (asRoot()) chownSync(path, account.uid, account.gid);
}

/** fsyncs a directory, so a rename or removal inside it survives a power loss. */
export function syncDir(path: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(path, "r");
    fsyncSync(fd);
  } catch {
    // best effort: some filesystems refuse fsync on directories
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** The environment PostgreSQL programs run with: nothing inherited from parhelion but PATH. */
function pgEnv(extra: Record<string, string> = {}): Record<string, string> {
  return { PATH: process.env["PATH"] ?? "/usr/bin:/bin", LANG: "C.UTF-8", TZ: "UTC", ...extra };
}

export interface InitdbOptions {
  bin: string;
  account: ServiceAccount;
  /** The directory to create; must not exist or be empty. */
  target: string;
  superuser: string;
  extraArgs?: readonly string[];
  errorCode: ErrorCode;
  signal?: AbortSignal;
}

/**
 * Runs initdb as the service account. Authentication is replaced at every start (pg_hba.conf is
 * rewritten), so the methods given here only matter until then.
 */
export async function runInitdb(o: InitdbOptions): Promise<void> {
  ownDir(o.target, 0o700, o.account);
  const args = ["-D", o.target, "-U", o.superuser, "--auth-local=peer", "--auth-host=reject", "--data-checksums", "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions", ...(o.extraArgs ?? [])];
  try {
    await execFileAsync(join(o.bin, "initdb"), args, { uid: o.account.uid, gid: o.account.gid, cwd: dirname(o.target), env: pgEnv(), ...(o.signal ? { signal: o.signal } : {}) });
  } catch (err) {
    const stderr = String((err as { stderr?: unknown }).stderr ?? "").trim();
    throw new ParhelionError(o.errorCode, `initdb failed: ${stderr || (err as Error).message}`, { cause: err });
  }
}

export type Settings = Record<string, string | number>;

export interface PostgresServerOptions {
  /** Root of this server: run/ (the socket) and, unless `dataDir` and `logDir` say otherwise, pgdata/ and postgres.log live beneath it. */
  dir: string;
  /**
   * The data directory when it is not `<dir>/pgdata` (a workspace's on its group's encrypted volume). Its parent
   * is made 0700 for the service account; initdb's scratch directory is its sibling, on the same filesystem.
   */
  dataDir?: string;
  /**
   * Where the postmaster's stderr file `postgres.log` is written when not in `dir` (beside a data directory on an
   * encrypted volume: the log holds statement text and key values). Made 0700 for the service account; the file is 0600.
   */
  logDir?: string;
  /** The OS account the server runs as (never root). */
  account: ServiceAccount;
  logger: Logger;
  /** Names the server in log messages and errors ("metadata store", "workspace <id>"). */
  name: string;
  /** The code of the errors this server raises. */
  errorCode: ErrorCode;
  /** initdb's bootstrap superuser; readiness checks connect as it (peer authentication). */
  superuser: string;
  /** Extra initdb arguments. */
  initdbArgs?: readonly string[];
  /** pg_hba.conf and pg_ident.conf, rewritten at every start. */
  hba: string;
  ident: string;
  /** postgresql.auto.conf, rewritten at every start (ALTER SYSTEM changes do not survive a restart). Values are written as given: quote strings. */
  settings?: Settings;
  /**
   * Settings on the postmaster's command line, which outrank every configuration file: nothing inside
   * the server can change them. Values unquoted. The listening settings are always fixed: no TCP, ever.
   */
  fixedSettings?: Record<string, string>;
  /** Runs after every start, restarts after a crash included, before the start counts as done. */
  afterStart?: () => Promise<void>;
  /** Called when the data directory is missing: may move a whole data directory into place and return true. */
  provision?: (dataDir: string) => Promise<boolean> | boolean;
  /** A cgroup.procs file the postmaster enters before it execs (only when parhelion runs as root). */
  cgroupProcs?: () => string | undefined;
  /** PostgreSQL's bin directory (default: findPgBin()). */
  bin?: string;
}

/** Starts the postmaster as the service account: it enters its cgroup first and shields itself from the OOM killer. */
const LAUNCH_SCRIPT = [
  'procs="$1"; uid="$2"; gid="$3"; shift 3',
  'if [ -n "$procs" ]; then echo $$ > "$procs" || exit 70; fi',
  // The postmaster must outlive the OOM killer; its children reset themselves to 0 (PG_OOM_ADJUST_*).
  "{ echo -1000 > /proc/self/oom_score_adj; } 2>/dev/null || true",
  'exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"',
].join("\n");

/**
 * One PostgreSQL server that parhelion initialises and supervises: unix socket only (no TCP), runs as
 * an unprivileged account, restarted if it dies, stopped when asked. A server left running by a
 * parhelion that was killed (an orphan) is shut down cleanly and replaced at the next start.
 *
 * Events: "crash" ({code, signal}) when the server dies unexpectedly, "restarted" once it is back.
 */
export class PostgresServer extends EventEmitter {
  readonly dataDir: string;
  readonly socketDir: string;
  readonly logDir: string;
  readonly logFile: string;
  readonly account: ServiceAccount;
  readonly bin: string;
  private child: ChildProcess | undefined;
  private stopping = false;
  private restarts = 0;
  /** Where the log stood when the current server was spawned: what follows is this start's. */
  private logStart = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  private starting: Promise<void> | undefined;

  constructor(private readonly opts: PostgresServerOptions) {
    super();
    this.dataDir = opts.dataDir ?? join(opts.dir, "pgdata");
    this.socketDir = join(opts.dir, "run");
    this.logDir = opts.logDir ?? opts.dir;
    this.logFile = join(this.logDir, "postgres.log");
    this.account = opts.account;
    this.bin = opts.bin ?? findPgBin(opts.errorCode);
  }

  /** The postmaster's pid while it runs. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** True while a postmaster this object started runs. */
  get running(): boolean {
    return this.child !== undefined;
  }

  /** The live processes (postmaster and children) working in this data directory, wherever they came from. */
  processes(): ProcInfo[] {
    return postgresProcessesIn(this.dataDir, join(this.bin, "postgres"));
  }

  private fail(message: string, cause?: unknown): ParhelionError {
    return new ParhelionError(this.opts.errorCode, message, cause === undefined ? undefined : { cause });
  }

  private own(path: string): void {
    if (asRoot()) chownSync(path, this.account.uid, this.account.gid);
  }

  /**
   * Creates the cluster once. initdb runs into a scratch directory that is renamed into place only when
   * complete (or the provision hook moves a whole one into place), so a data directory with PG_VERSION
   * is always a whole one; anything else (an interrupted initdb) is discarded and made again. The server's
   * directory, the data directory's parent and the log directory are made 0700 for the service account first.
   */
  private async initdb(): Promise<void> {
    ownDir(this.opts.dir, 0o700, this.account);
    const parent = dirname(this.dataDir);
    if (parent !== this.opts.dir) ownDir(parent, 0o700, this.account);
    if (this.logDir !== this.opts.dir && this.logDir !== parent) ownDir(this.logDir, 0o700, this.account);
    if (existsSync(join(this.dataDir, "PG_VERSION"))) return;
    const scratch = `${this.dataDir}.initdb`;
    if (existsSync(this.dataDir)) {
      if (this.processes().length > 0) throw this.fail(`${this.dataDir} has no PG_VERSION but PostgreSQL processes are running in it; stop them and retry`);
      this.opts.logger.warn({ dataDir: this.dataDir }, `incomplete ${this.opts.name} data directory (interrupted initdb); initialising again`);
      rmSync(this.dataDir, { recursive: true, force: true });
    }
    rmSync(scratch, { recursive: true, force: true });
    if (this.opts.provision && (await this.opts.provision(this.dataDir)) && existsSync(join(this.dataDir, "PG_VERSION"))) return;
    this.opts.logger.info({ dataDir: this.dataDir }, `initialising ${this.opts.name}`);
    await runInitdb({ bin: this.bin, account: this.account, target: scratch, superuser: this.opts.superuser, extraArgs: this.opts.initdbArgs ?? [], errorCode: this.opts.errorCode });
    renameSync(scratch, this.dataDir);
    syncDir(parent);
  }

  /** The command-line settings: the caller's fixed ones, then the listening ones, which nothing overrides. */
  private commandLineSettings(): Record<string, string> {
    const dir = this.socketDir;
    const socketDirs = /[\s,"]/.test(dir) ? `"${dir.replace(/"/g, '""')}"` : dir;
    return { ...this.opts.fixedSettings, listen_addresses: "", port: "5432", unix_socket_directories: socketDirs, unix_socket_permissions: "0700" };
  }

  private writeConf(): void {
    const fixed = this.commandLineSettings();
    const settings: Settings = { logging_collector: "off", ...this.opts.settings };
    // Settings fixed on the command line would be overridden anyway; leaving them out keeps the file honest.
    const body = Object.entries(settings).filter(([k]) => !(k in fixed)).map(([k, v]) => `${k} = ${v}`).join("\n") + "\n";
    const files: [string, string][] = [
      ["postgresql.auto.conf", "# managed by parhelion; rewritten at every start\n" + body],
      ["pg_hba.conf", this.opts.hba],
      ["pg_ident.conf", this.opts.ident],
    ];
    for (const [name, content] of files) {
      const file = join(this.dataDir, name);
      writeFileSync(file, content, { mode: 0o600 });
      chmodSync(file, 0o600);
      this.own(file);
    }
  }

  /**
   * Stops a server left running in this data directory by an earlier parhelion that died without
   * stopping it, ends the children of a postmaster that was killed, and removes a lock file whose pid
   * now belongs to an unrelated live process (PostgreSQL would refuse to start; a lock file naming a
   * dead process it discards itself). Does nothing when the data directory is idle.
   */
  async shutdownStray(): Promise<void> {
    const postgres = join(this.bin, "postgres");
    const pidFile = join(this.dataDir, "postmaster.pid");
    let pid = 0;
    try {
      pid = Number(readFileSync(pidFile, "utf8").split("\n")[0]);
    } catch {
      // no lock file
    }
    if (!Number.isInteger(pid) || pid < 0) pid = 0;
    if (pid > 0 && pid !== this.child?.pid && isPostmasterOf(pid, this.dataDir, postgres)) {
      this.opts.logger.warn({ pid }, `${this.opts.name} left running by a previous parhelion; shutting it down`);
      signal(pid, "SIGINT"); // fast shutdown: roll back open transactions, checkpoint, exit
      if (!(await waitGone([pid], 15_000))) {
        signal(pid, "SIGQUIT"); // immediate shutdown; crash recovery at the next start
        if (!(await waitGone([pid], 5_000))) {
          throw this.fail(`an earlier ${this.opts.name} server (pid ${pid}) did not stop; stop it and retry`);
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
    this.opts.logger.warn({ pids }, `ending ${this.opts.name} processes left without their postmaster`);
    for (const p of pids) signal(p, "SIGQUIT");
    if (await waitGone(pids, 3_000)) return;
    for (const p of pids) signal(p, "SIGKILL");
    if (!(await waitGone(pids, 2_000))) {
      throw this.fail(`${this.opts.name} processes ${pids.join(", ")} did not exit; stop them and retry`);
    }
  }

  private spawnServer(): ChildProcess {
    const fd = openSync(this.logFile, "a", 0o600);
    chmodSync(this.logFile, 0o600);
    this.own(this.logFile);
    this.logStart = fstatSync(fd).size;
    const postgres = join(this.bin, "postgres");
    const args = ["-D", this.dataDir];
    for (const [k, v] of Object.entries(this.commandLineSettings())) args.push("-c", `${k}=${v}`);
    let child: ChildProcess;
    try {
      if (asRoot()) {
        // As root: a shell enters the cgroup and sets the OOM score, then setpriv drops to the service
        // account and execs the postmaster (same pid throughout).
        const procs = this.opts.cgroupProcs?.() ?? "";
        child = spawn("/bin/sh", ["-c", LAUNCH_SCRIPT, "parhelion-postgres", procs, String(this.account.uid), String(this.account.gid), postgres, ...args], {
          cwd: this.dataDir,
          stdio: ["ignore", fd, fd],
          env: pgEnv({ PG_OOM_ADJUST_FILE: "/proc/self/oom_score_adj", PG_OOM_ADJUST_VALUE: "0" }),
        });
      } else {
        child = spawn(postgres, args, { cwd: this.dataDir, stdio: ["ignore", fd, fd], env: pgEnv() });
      }
    } finally {
      closeSync(fd);
    }
    child.on("error", (err) => this.opts.logger.error({ err: { message: err.message } }, `${this.opts.name} server could not be started`));
    child.on("exit", (code, sig) => {
      if (this.child !== child) return;
      this.child = undefined;
      if (this.stopping) return;
      this.opts.logger.error({ code, signal: sig }, `${this.opts.name} server exited unexpectedly; restarting`);
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
          this.opts.logger.info({ pid: this.child?.pid }, `${this.opts.name} restarted`);
          this.emit("restarted");
        },
        (err: unknown) => {
          if (this.stopping) return;
          this.opts.logger.error({ err: { message: (err as Error).message } }, `${this.opts.name} restart failed; retrying`);
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
        this.logThisStart();
        throw this.fail(`${this.opts.name} server failed to start; its log of this start is in parhelion's log, and in ${this.logFile}`);
      }
      if (this.stopping) throw new ParhelionError("ERR_NOT_READY", `${this.opts.name} is stopping`);
      const c = new pg.Client({ host: this.socketDir, user: this.opts.superuser, database: "postgres", connectionTimeoutMillis: 2000 });
      c.on("error", () => undefined);
      try {
        await c.connect();
        await c.end();
        return;
      } catch {
        await c.end().catch(() => undefined);
        await sleep(25);
      }
    }
    this.logThisStart();
    throw this.fail(`${this.opts.name} did not become ready within ${timeoutMs} ms; its log of this start is in parhelion's log, and in ${this.logFile}`);
  }

  /**
   * A start that failed: what the server wrote since it was spawned (its last 40 lines, 8 KiB at most) goes to
   * parhelion's log, for the operator. The file itself may be on an encrypted volume that a failed start of the
   * platform unmounts again; the lines of a start are the server's own (settings, ports, recovery), not the
   * statements and values earlier runs logged, which stay in the file.
   */
  private logThisStart(): void {
    let text = "";
    try {
      const fd = openSync(this.logFile, "r");
      try {
        const end = fstatSync(fd).size;
        const from = Math.max(this.logStart, end - 8192);
        text = readAt(fd, from, end - from).toString("utf8");
      } finally {
        closeSync(fd);
      }
    } catch {
      return; // no log to read: the error names the file
    }
    const lines = text.split("\n").filter((l) => l.length > 0).slice(-40);
    if (lines.length > 0) this.opts.logger.error({ serverLog: lines, file: this.logFile }, `${this.opts.name} server's log of this start`);
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
    await this.shutdownStray();
    if (this.stopping) throw new ParhelionError("ERR_NOT_READY", `${this.opts.name} is stopping`);
    ownDir(this.socketDir, 0o700, this.account);
    this.writeConf();
    const child = this.spawnServer();
    this.child = child;
    try {
      await this.waitReady(child);
      if (this.opts.afterStart) await this.opts.afterStart();
    } catch (err) {
      if (this.child === child) this.child = undefined;
      await this.terminate(child, 5000);
      throw err;
    }
    this.restarts = 0;
  }

  /** Initialises (first time), starts and waits until the server accepts connections and afterStart is done. */
  async start(): Promise<void> {
    if (this.child) return;
    if (this.starting) {
      // A restart after a crash is in flight: let it finish rather than start a second postmaster.
      await this.starting.catch(() => undefined);
      if (this.child) return;
    }
    if (this.restartTimer) {
      clearTimeout(this.restartTimer);
      this.restartTimer = undefined;
    }
    this.stopping = false;
    await this.initdb();
    const p = this.startProcess();
    this.starting = p;
    try {
      await p;
    } finally {
      if (this.starting === p) this.starting = undefined;
    }
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
    await this.reapLeftovers().catch((err: unknown) => this.opts.logger.error({ err: { message: (err as Error).message } }, `${this.opts.name} processes left after stop`));
  }
}
