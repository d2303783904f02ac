import { existsSync, readdirSync, rmSync, rmdirSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import { createWorkspaceEngine, type EngineOptions, type WorkspaceEngine } from "../../src/engine/index.js";
import { findPgBin, postgresProcessesIn } from "../../src/engine/postgres.js";
import { makeScramVerifier } from "../../src/gateway/protocol/scram.js";
import { createLogger } from "../../src/log/logger.js";
import { isUuid } from "../../src/lib/ids.js";
import { SERVICE_USER, serviceUid, socketInodes, tcpInodes, tempRoot as tempRootIn, withTimeout } from "../support/proc.js";

export { SERVICE_USER, serviceUid, socketInodes, tcpInodes, withTimeout };

/** Fast and unsafe against power loss only: fine for throwaway test servers. */
export const FAST = { fsync: "off", synchronous_commit: "off", full_page_writes: "off" } as const;
export const POSTGRES = join(findPgBin(), "postgres");

/** A temporary root the service user can traverse; workspaces go in `<root>/ws`. */
export function tempRoot(): string {
  return tempRootIn("parhelion-engine-test-");
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

/** The SQLSTATE of a rejected query. */
export async function sqlstate(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return String((err as { code?: unknown }).code);
  }
  return "no error";
}
