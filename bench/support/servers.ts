/**
 * The servers the gateway benchmark starts beside parhelion: `parhelion up` itself as a subprocess, a second
 * PostgreSQL server that listens on 127.0.0.1 with TLS (the "direct TLS" baseline: a workspace server listens
 * on no TCP port by design), and PgBouncer in front of a workspace's unix socket. Each registers its own
 * cleanup (see run.ts).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, chownSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import { Agent, request } from "undici";
import { findPgBin, peerIdentMap, runInitdb, type ServiceAccount } from "../../src/engine/postgres.js";
import { SYSTEM_ROLE, adminSetupSql } from "../../src/engine/sql.js";
import { alive, onCleanup, runCommand, say, sleep, stopChild } from "./run.js";
import { pidsNamed, processesIn } from "./proc.js";
import { plainStoreDataDir, volumeStoreDataDir } from "../../src/volumes/store.js";

// ---------------------------------------------------------------------------------------------- parhelion up

export interface ParhelionProcess {
  child: ChildProcess;
  pid: number;
  dataDir: string;
  apiUrl: string;
  caPem: string;
  caFile: string;
  gatewayPort: number;
  ownerKey: string;
  storePgdata: string;
  /** The last lines parhelion wrote (for error messages). */
  logTail(): string;
  /** A Management API call with the owner API key. */
  call(method: string, path: string, body?: unknown): Promise<{ status: number; body: any; text: string }>;
}

/** Starts `node dist/src/cli/main.js up` on a fresh data directory and waits until its API answers. */
export async function startParhelion(o: { root: string; dataDir: string; nodeArgs?: string[]; extraArgs?: string[] }): Promise<ParhelionProcess> {
  const main = join(o.root, "dist", "src", "cli", "main.js");
  if (!existsSync(main)) throw new Error(`${main} does not exist (build first)`);
  const env: Record<string, string | undefined> = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith("PARHELION_")) delete env[k];
  const args = [...(o.nodeArgs ?? []), main, "up", "--data-dir", o.dataDir, "--api-port", "0", "--gateway-port", "0", "--log-format", "json", "--log-level", "warn", ...(o.extraArgs ?? [])];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"], env, cwd: o.dataDir });
  let log = "";
  const keep = (d: Buffer) => {
    log += d.toString("utf8");
    if (log.length > 200_000) log = log.slice(-100_000);
  };
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  // The store on its encrypted volume (the default), or on plain disk (volumeEncryption none).
  const plain = (o.extraArgs ?? []).join(" ").includes("--volume-encryption none");
  const storePgdata = plain ? plainStoreDataDir(o.dataDir) : volumeStoreDataDir(o.dataDir);
  onCleanup("parhelion up", async () => {
    const wsRoot = join(o.dataDir, "workspaces");
    const pgdatas = [storePgdata];
    try {
      for (const d of readdirSync(wsRoot)) pgdatas.push(join(wsRoot, d, "pgdata"));
    } catch {
      // no workspaces
    }
    const before = pgdatas.flatMap((d) => processesIn(d));
    await stopChild(child, 60_000);
    // Had it to be killed, its servers would be left running: end what is left of them.
    for (const pid of before.filter(alive)) process.kill(pid, "SIGQUIT");
  });
  const deadline = Date.now() + 120_000;
  const rtFile = join(o.dataDir, "runtime.json");
  type Runtime = { apiUrl: string; caFile: string | null; gatewayPort?: number };
  let rt: Runtime | undefined;
  let caPem = "";
  let agent: Agent | undefined;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`parhelion up exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${log.slice(-2000)}`);
    if (Date.now() > deadline) throw new Error(`parhelion up was not ready within 120 s:\n${log.slice(-2000)}`);
    // runtime.json is written once when the API listens and again, with gatewayPort, when all is ready.
    if (rt === undefined && existsSync(rtFile)) {
      try {
        const r = JSON.parse(readFileSync(rtFile, "utf8")) as Runtime;
        if (typeof r.gatewayPort === "number" && r.gatewayPort > 0) {
          rt = r;
          caPem = readFileSync(r.caFile ?? join(o.dataDir, "tls", "ca.crt"), "utf8");
          agent = new Agent({ connect: { ca: caPem }, pipelining: 0 });
          const a = agent;
          onCleanup("API client", () => a.close().catch(() => undefined));
        }
      } catch {
        rt = undefined; // half-written; try again
      }
    }
    if (rt !== undefined && agent !== undefined) {
      try {
        const r = await request(`${rt.apiUrl}/healthz`, { dispatcher: agent });
        await r.body.text();
        if (r.statusCode === 200) break;
      } catch {
        // not yet
      }
    }
    await sleep(200);
  }
  const ownerKey = readFileSync(join(o.dataDir, "bootstrap", "owner-api-key"), "utf8").trim();
  const a = agent!;
  const apiUrl = rt!.apiUrl;
  return {
    child, pid: child.pid!, dataDir: o.dataDir, apiUrl, caPem, caFile: rt!.caFile ?? join(o.dataDir, "tls", "ca.crt"), gatewayPort: rt!.gatewayPort!,
    ownerKey, storePgdata,
    logTail: () => log.slice(-3000),
    async call(method, path, body) {
      const headers: Record<string, string> = { authorization: `Bearer ${ownerKey}` };
      if (body !== undefined) headers["content-type"] = "application/json";
      const r = await request(apiUrl + path, { method: method as never, headers, body: body === undefined ? undefined : JSON.stringify(body), dispatcher: a });
      const text = await r.body.text();
      let parsed: unknown;
      try {
        parsed = text ? JSON.parse(text) : undefined;
      } catch {
        parsed = undefined;
      }
      return { status: r.statusCode, body: parsed, text };
    },
  };
}

// ---------------------------------------------------------------------------------------------- direct TLS PostgreSQL

export interface TlsPostgres {
  pgdata: string;
  socketDir: string;
  port: number;
  logFile: string;
  pid: number;
  stop(): Promise<void>;
}

function writeOwned(path: string, content: string, account: ServiceAccount): void {
  writeFileSync(path, content, { mode: 0o600 });
  chmodSync(path, 0o600);
  chownSync(path, account.uid, account.gid);
}

function mkdirOwned(path: string, account: ServiceAccount): void {
  mkdirSync(path, { recursive: true, mode: 0o700 });
  chmodSync(path, 0o700);
  chownSync(path, account.uid, account.gid);
}

/** A pg client as the platform role over a server's unix socket (peer authentication as root). */
export async function withSystemClient<T>(socketDir: string, port: number, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ host: socketDir, port, user: SYSTEM_ROLE, database: "postgres", application_name: "parhelion-bench", connectionTimeoutMillis: 10_000 });
  c.on("error", () => undefined);
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

/**
 * A PostgreSQL server configured as a workspace server is (same initdb options, the same preloaded modules
 * and size settings, the same admin role and SCRAM verifier) but listening on 127.0.0.1:port with ssl=on.
 * Runs as the service account; initdb into dir/pgdata.
 */
export async function startTlsPostgres(o: {
  dir: string;
  account: ServiceAccount;
  port: number;
  settings: Record<string, string | number>;
  preload: string;
  extensions: string;
  certPem: string;
  keyPem: string;
  adminVerifier: string;
}): Promise<TlsPostgres> {
  const bin = findPgBin();
  mkdirOwned(o.dir, o.account);
  const pgdata = join(o.dir, "pgdata");
  const socketDir = join(o.dir, "run");
  const tlsDir = join(o.dir, "tls");
  const logFile = join(o.dir, "postgres.log");
  await runInitdb({ bin, account: o.account, target: pgdata, superuser: SYSTEM_ROLE, errorCode: "ERR_ENGINE" });
  mkdirOwned(socketDir, o.account);
  mkdirOwned(tlsDir, o.account);
  writeOwned(join(tlsDir, "server.crt"), o.certPem, o.account);
  writeOwned(join(tlsDir, "server.key"), o.keyPem, o.account);
  const q = (s: string) => `'${s.replace(/'/g, "''")}'`;
  const settings: Record<string, string | number> = {
    logging_collector: "off",
    password_encryption: "'scram-sha-256'",
    log_min_messages: "warning",
    "pgaudit.log": "'none'",
    ...o.settings,
    shared_preload_libraries: q(o.preload),
    "parhelion_guard.extensions": q(o.extensions),
    listen_addresses: "'127.0.0.1'",
    port: o.port,
    unix_socket_directories: q(socketDir),
    unix_socket_permissions: "0700",
    ssl: "on",
    ssl_cert_file: q(join(tlsDir, "server.crt")),
    ssl_key_file: q(join(tlsDir, "server.key")),
  };
  writeOwned(join(pgdata, "postgresql.auto.conf"), "# parhelion benchmark: direct TLS baseline\n" + Object.entries(settings).map(([k, v]) => `${k} = ${v}`).join("\n") + "\n", o.account);
  writeOwned(join(pgdata, "pg_hba.conf"), [
    `local all ${SYSTEM_ROLE} peer map=system`,
    "local all all scram-sha-256",
    "hostssl all all 127.0.0.1/32 scram-sha-256",
    "",
  ].join("\n"), o.account);
  writeOwned(join(pgdata, "pg_ident.conf"), peerIdentMap("system", SYSTEM_ROLE, o.account), o.account);
  const fd = openSync(logFile, "a", 0o600);
  chownSync(logFile, o.account.uid, o.account.gid);
  let child: ChildProcess;
  try {
    child = spawn(join(bin, "postgres"), ["-D", pgdata], {
      uid: o.account.uid, gid: o.account.gid, cwd: pgdata, stdio: ["ignore", fd, fd],
      env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", LANG: "C.UTF-8", TZ: "UTC" },
    });
  } finally {
    closeSync(fd);
  }
  const stop = async () => {
    // Fast shutdown, then immediate (SIGQUIT), then SIGKILL.
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    child.kill("SIGINT");
    const quit = setTimeout(() => child.kill("SIGQUIT"), 15_000);
    const kill = setTimeout(() => child.kill("SIGKILL"), 20_000);
    await exited;
    clearTimeout(quit);
    clearTimeout(kill);
    for (const pid of processesIn(pgdata)) process.kill(pid, "SIGKILL");
  };
  onCleanup("direct-TLS PostgreSQL", stop);
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the direct-TLS PostgreSQL server exited at start:\n${readFileSync(logFile, "utf8").slice(-2000)}`);
    if (Date.now() > deadline) throw new Error(`the direct-TLS PostgreSQL server was not ready within 60 s:\n${readFileSync(logFile, "utf8").slice(-2000)}`);
    try {
      await withSystemClient(socketDir, o.port, async (c) => {
        await c.query(adminSetupSql(o.adminVerifier));
      });
      break;
    } catch {
      await sleep(100);
    }
  }
  return { pgdata, socketDir, port: o.port, logFile, pid: child.pid!, stop };
}

// ---------------------------------------------------------------------------------------------- PgBouncer

export const PGBOUNCER_BIN = "/usr/sbin/pgbouncer";

function systemdRunning(): boolean {
  return existsSync("/run/systemd/system");
}

/**
 * Makes sure PgBouncer is installed (apt-get install -y pgbouncer when it is not, said on stderr). If the
 * package started the distribution's service, it is stopped and disabled; a PgBouncer that was already
 * running before is someone else's and left alone. Answers the version and what was done.
 */
export async function ensurePgBouncer(): Promise<{ version: string; notes: string[] }> {
  const notes: string[] = [];
  const before = new Set(pidsNamed("pgbouncer"));
  if (before.size > 0) notes.push(`PgBouncer processes already running before the benchmark (pids ${[...before].join(", ")}): not ours, left alone`);
  if (!existsSync(PGBOUNCER_BIN)) {
    say("pgbouncer is not installed: running `apt-get install -y pgbouncer`");
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    let r = await runCommand("apt-get", ["install", "-y", "--no-install-recommends", "pgbouncer"], { env });
    if (r.code !== 0) {
      say("apt-get install failed; running `apt-get update` and trying again");
      await runCommand("apt-get", ["update"], { env });
      r = await runCommand("apt-get", ["install", "-y", "--no-install-recommends", "pgbouncer"], { env });
    }
    if (r.code !== 0 || !existsSync(PGBOUNCER_BIN)) throw new Error(`apt-get install -y pgbouncer failed (exit ${r.code}):\n${(r.stderr || r.stdout).slice(-2000)}`);
    notes.push("installed the pgbouncer package (apt-get install -y pgbouncer)");
    await sleep(500);
    const started = pidsNamed("pgbouncer").filter((p) => !before.has(p));
    if (systemdRunning()) {
      await runCommand("systemctl", ["stop", "pgbouncer"]);
      await runCommand("systemctl", ["disable", "pgbouncer"]);
      notes.push("stopped and disabled the distribution's pgbouncer service (systemctl)");
    } else {
      if (started.length > 0) {
        await runCommand("/etc/init.d/pgbouncer", ["stop"]);
        for (const p of started.filter(alive)) process.kill(p, "SIGTERM");
        notes.push(`stopped the pgbouncer the package started (pids ${started.join(", ")})`);
      }
      // No systemd here: keep it from starting at the next boot all the same.
      await runCommand("update-rc.d", ["pgbouncer", "disable"]).catch(() => undefined);
      if (existsSync("/usr/bin/deb-systemd-helper")) await runCommand("deb-systemd-helper", ["disable", "pgbouncer.service"]).catch(() => undefined);
      notes.push(`the package started ${started.length === 0 ? "no service (no systemd; policy-rc.d)" : "a service, stopped"}; its service is disabled`);
    }
  }
  const v = await runCommand(PGBOUNCER_BIN, ["--version"]);
  const version = (v.stdout.split("\n")[0] ?? "").trim() || "unknown";
  return { version, notes };
}

export interface PgBouncerProcess {
  pid: number;
  port: number;
  logFile: string;
  stop(): Promise<void>;
}

/**
 * PgBouncer in session mode, TLS required of clients, SCRAM-SHA-256 against an auth_file holding the role's
 * verifier (which PgBouncer also uses to log in upstream), in front of a unix socket. Runs as the service
 * account (it refuses root) with its own ini in dir.
 */
export async function startPgBouncer(o: {
  dir: string;
  account: ServiceAccount;
  port: number;
  upstreamSocketDir: string;
  upstreamPort: number;
  database: string;
  user: string;
  verifier: string;
  password: string;
  certPem: string;
  keyPem: string;
  poolSize: number;
}): Promise<PgBouncerProcess> {
  mkdirOwned(o.dir, o.account);
  const f = (n: string) => join(o.dir, n);
  writeOwned(f("server.crt"), o.certPem, o.account);
  writeOwned(f("server.key"), o.keyPem, o.account);
  writeOwned(f("userlist.txt"), `"${o.user}" "${o.verifier}"\n`, o.account);
  const ini = [
    "[databases]",
    `${o.database} = host=${o.upstreamSocketDir} port=${o.upstreamPort} dbname=${o.database}`,
    "",
    "[pgbouncer]",
    "listen_addr = 127.0.0.1",
    `listen_port = ${o.port}`,
    "unix_socket_dir =",
    `logfile = ${f("pgbouncer.log")}`,
    `pidfile = ${f("pgbouncer.pid")}`,
    "auth_type = scram-sha-256",
    `auth_file = ${f("userlist.txt")}`,
    "pool_mode = session",
    `default_pool_size = ${o.poolSize}`,
    `max_client_conn = ${Math.max(100, o.poolSize * 4)}`,
    "client_tls_sslmode = require",
    `client_tls_cert_file = ${f("server.crt")}`,
    `client_tls_key_file = ${f("server.key")}`,
    "",
  ].join("\n");
  writeOwned(f("pgbouncer.ini"), ini, o.account);
  const child = spawn(PGBOUNCER_BIN, [f("pgbouncer.ini")], { uid: o.account.uid, gid: o.account.gid, cwd: o.dir, stdio: ["ignore", "pipe", "pipe"], env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin" } });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString("utf8")));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString("utf8")));
  const stop = () => stopChild(child, 5000, "SIGINT");
  onCleanup("pgbouncer", stop);
  const deadline = Date.now() + 30_000;
  let lastErr = "";
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`pgbouncer exited at start (${child.exitCode ?? child.signalCode}):\n${out.slice(-2000)}`);
    if (Date.now() > deadline) throw new Error(`pgbouncer did not let admin in within 30 s (${lastErr}):\n${out.slice(-2000)}`);
    const c = new pg.Client({ host: "127.0.0.1", port: o.port, user: o.user, password: o.password, database: o.database, ssl: { rejectUnauthorized: false }, connectionTimeoutMillis: 5000 });
    c.on("error", () => undefined);
    try {
      await c.connect();
      await c.query("select 1");
      await c.end();
      break;
    } catch (err) {
      lastErr = (err as Error).message;
      await c.end().catch(() => undefined);
      await sleep(200);
    }
  }
  return { pid: child.pid!, port: o.port, logFile: f("pgbouncer.log"), stop };
}
