import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, rmdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { createWorkspaceEngine, type EngineOptions, type WorkspaceEngine } from "../../src/engine/index.js";
import { findPgBin, postgresProcessesIn } from "../../src/engine/postgres.js";
import { makeScramVerifier } from "../../src/gateway/protocol/scram.js";
import { createLogger } from "../../src/log/logger.js";
import { isUuid } from "../../src/lib/ids.js";

export const SERVICE_USER = "parhelion";
/** Fast and unsafe against power loss only: fine for throwaway test servers. */
export const FAST = { fsync: "off", synchronous_commit: "off", full_page_writes: "off" } as const;
export const POSTGRES = join(findPgBin(), "postgres");

export function serviceUid(): number {
  return Number(execFileSync("id", ["-u", SERVICE_USER], { encoding: "utf8" }).trim());
}

/** A temporary root the service user can traverse; workspaces go in `<root>/ws`. */
export function tempRoot(): string {
  const dir = mkdtempSync(join(tmpdir(), "parhelion-engine-test-"));
  chmodSync(dir, 0o711);
  return dir;
}

export function newEngine(root: string, opts: Partial<EngineOptions> = {}): WorkspaceEngine {
  return createWorkspaceEngine({ dir: join(root, "ws"), serviceUser: SERVICE_USER, logger: createLogger({ level: "silent" }), settings: { ...FAST }, ...opts });
}

/** Stops the engines, kills whatever still runs in any workspace under root, removes cgroups and the root. */
export async function cleanup(root: string, ...engines: WorkspaceEngine[]): Promise<void> {
  for (const e of engines) await e.stopAll().catch(() => undefined);
  const ws = join(root, "ws");
  const ids = existsSync(ws) ? readdirSync(ws).filter((n) => isUuid(n)) : [];
  for (const id of ids) {
    for (const p of postgresProcessesIn(join(ws, id, "pgdata"), POSTGRES)) {
      try {
        process.kill(p.pid, "SIGKILL");
      } catch {
        // gone
      }
    }
  }
  await new Promise((r) => setTimeout(r, ids.length > 0 ? 100 : 0));
  for (const id of ids) {
    for (const base of ["/sys/fs/cgroup/memory/parhelion", "/sys/fs/cgroup/parhelion"]) {
      try {
        rmdirSync(join(base, id));
      } catch {
        // none
      }
    }
  }
  rmSync(root, { recursive: true, force: true });
}

export const ADMIN_PASSWORD = "correct horse battery staple";
export const ADMIN_VERIFIER = makeScramVerifier(ADMIN_PASSWORD);

/** A client logged in over SCRAM on the workspace's socket. */
export async function connectAs(engine: WorkspaceEngine, id: string, user: string, password: string, database = "postgres"): Promise<pg.Client> {
  const c = new pg.Client({ host: engine.socketDir(id), user, password, database });
  c.on("error", () => undefined);
  await c.connect();
  return c;
}

/** Runs fn with a client logged in as admin, closed afterwards. */
export async function asAdmin<T>(engine: WorkspaceEngine, id: string, fn: (c: pg.Client) => Promise<T>, database = "postgres"): Promise<T> {
  const c = await connectAs(engine, id, "admin", ADMIN_PASSWORD, database);
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** The pids of a workspace's live server processes, postmaster first. */
export function serverProcesses(root: string, id: string): { pid: number; uid: number; cmdline: string }[] {
  return postgresProcessesIn(join(root, "ws", id, "pgdata"), POSTGRES).sort((a, b) => Number(a.cmdline.startsWith("postgres:")) - Number(b.cmdline.startsWith("postgres:")));
}

export function postmasters(root: string, id: string): number[] {
  return serverProcesses(root, id).filter((p) => !p.cmdline.startsWith("postgres:")).map((p) => p.pid);
}

/** Inodes of the sockets the processes hold open. */
export function socketInodes(pids: number[]): Set<string> {
  const out = new Set<string>();
  for (const pid of pids) {
    let fds: string[] = [];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m?.[1]) out.add(m[1]);
      } catch {
        // closed meanwhile
      }
    }
  }
  return out;
}

/** Inodes of every TCP socket (any state) in /proc/net/tcp and tcp6. */
export function tcpInodes(): Set<string> {
  const out = new Set<string>();
  for (const f of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    if (!existsSync(f)) continue;
    for (const line of readFileSync(f, "utf8").split("\n").slice(1)) {
      const inode = line.trim().split(/\s+/)[9];
      if (inode && inode !== "0") out.add(inode);
    }
  }
  return out;
}

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

/** The SQLSTATE of a rejected query. */
export async function sqlstate(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return String((err as { code?: unknown }).code);
  }
  return "no error";
}
