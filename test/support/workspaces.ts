import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import assert from "node:assert/strict";
import pg from "pg";
import type { TestPlatform } from "./platform.js";

export interface TestWorkspace {
  groupId: string;
  workspaceId: string;
  endpoint: string;
  port: number;
  adminPassword: string;
  caFile: string;
}

/** Polls GET /v1/workspaces/{id} until the state is reached (fails on FAILED or timeout). */
export async function waitForState(tp: TestPlatform, id: string, state: string, timeoutMs = 60_000): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await tp.call("GET", `/v1/workspaces/${id}`);
    assert.equal(r.status, 200, r.text);
    if (r.body.state === state) return r.body;
    if (r.body.state === "FAILED" && state !== "FAILED") assert.fail(`workspace FAILED: ${r.body.stateReason}`);
    if (Date.now() > deadline) assert.fail(`workspace still ${r.body.state} after ${timeoutMs} ms (wanted ${state})`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

/** Creates a group and a workspace through the API and waits for ACTIVE. */
export async function createTestWorkspace(tp: TestPlatform, opts: { group?: Record<string, unknown>; name?: string; size?: string } = {}): Promise<TestWorkspace> {
  const regionID = (await tp.call("GET", "/v1/regions")).body[0].regionID;
  const g = await tp.call("POST", "/v1/workspaceGroups", { body: { name: `g-${Math.random().toString(36).slice(2, 8)}`, regionID, ...(opts.group ?? {}) } });
  assert.equal(g.status, 200, g.text);
  const w = await tp.call("POST", "/v1/workspaces", { body: { workspaceGroupID: g.body.workspaceGroupID, name: opts.name ?? "main", ...(opts.size ? { size: opts.size } : {}) } });
  assert.equal(w.status, 200, w.text);
  const ws = await waitForState(tp, w.body.workspaceID, "ACTIVE");
  const caFile = join(tp.dataDir, "tls", "ca.crt");
  return { groupId: g.body.workspaceGroupID, workspaceId: w.body.workspaceID, endpoint: ws.endpoint, port: ws.port, adminPassword: g.body.adminPassword ?? String(opts.group?.["adminPassword"]), caFile };
}

/** A `pg` client to the workspace through the gateway with verified TLS and SNI. */
export function gatewayClient(tp: TestPlatform, ws: TestWorkspace, o: { user?: string; password?: string; database?: string; sni?: boolean; applicationName?: string } = {}): pg.Client {
  const c = new pg.Client({
    host: "127.0.0.1", port: ws.port, user: o.user ?? "admin", password: o.password ?? ws.adminPassword, database: o.database ?? "postgres",
    ssl: { ca: tp.caPem, servername: o.sni === false ? undefined : ws.endpoint, rejectUnauthorized: o.sni !== false },
    ...(o.sni === false ? { options: `endpoint=${ws.workspaceId}` } : {}),
    ...(o.applicationName ? { application_name: o.applicationName } : {}),
    connectionTimeoutMillis: 10_000,
  } as pg.ClientConfig);
  c.on("error", () => undefined);
  return c;
}

/** Runs psql with a conninfo string; resolves with exit code, stdout and stderr. */
/** The rows of one statement run through the gateway in a session of its own (as the workspace admin unless `o` says). */
export async function gatewayRows(tp: TestPlatform, ws: TestWorkspace, sqlText: string, o: Parameters<typeof gatewayClient>[2] = {}): Promise<any[]> {
  const c = gatewayClient(tp, ws, o);
  await c.connect();
  try {
    return (await c.query(sqlText)).rows;
  } finally {
    await c.end();
  }
}

/**
 * The error a new session gets once the gateway refuses with SQLSTATE `code` (its route cache can take ~2 s to see a
 * state change), or null when it did not within `timeoutMs`.
 */
export async function gatewayRefusal(tp: TestPlatform, ws: TestWorkspace, code: string, timeoutMs = 10_000): Promise<{ code?: string; message: string } | null> {
  for (const until = Date.now() + timeoutMs; Date.now() < until;) {
    const c = gatewayClient(tp, ws);
    const e = await c.connect().then(async () => {
      await c.end();
      return null;
    }, (err: { code?: string; message: string }) => err);
    if (e?.code === code) return e;
    await new Promise((r) => setTimeout(r, 250));
  }
  return null;
}

export function psql(conninfo: string, args: string[], env: Record<string, string> = {}, opts: { onSpawn?: (pid: number) => void } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn("psql", ["-X", "-v", "ON_ERROR_STOP=1", ...args, conninfo], { env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
    if (child.pid !== undefined) opts.onSpawn?.(child.pid);
  });
}

/** The libpq conninfo for a workspace: SNI host name, loopback address, verify-full against parhelion's CA. */
export function conninfo(ws: TestWorkspace, extra = ""): string {
  return `host=${ws.endpoint} hostaddr=127.0.0.1 port=${ws.port} user=admin dbname=postgres sslmode=verify-full sslrootcert=${ws.caFile} ${extra}`.trim();
}

/** Writes a password to a 0600 file (for CLI --password-file). */
export function passwordFile(dir: string, name: string, pw: string): string {
  const p = join(dir, name);
  writeFileSync(p, pw + "\n", { mode: 0o600 });
  return p;
}
