import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import type { TLSSocket } from "node:tls";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serialize } from "pg-protocol";
import { startTestPlatform, type TestPlatform } from "../support/platform.js";
import { conninfo, createTestWorkspace, gatewayClient, type TestWorkspace } from "../support/workspaces.js";
import { BackendMessageReader } from "../../src/gateway/protocol/backend.js";

let tp: TestPlatform;
let ws: TestWorkspace;

before(async () => {
  tp = await startTestPlatform({ env: { PARHELION_WORKSPACE_FSYNC: "false" } });
  ws = await createTestWorkspace(tp, { group: { auditLevel: "ALL-QUERIES" } });
  await run(["create table oc_t (a int primary key, b text)", "create table oc_copy (a int)", "create table oc_pipe (a int)"]);
});

after(async () => {
  await tp?.stop();
});

/** The DatabaseStatement records whose statement matches, oldest first, once there are `count` of them (records are written asynchronously). */
async function records(match: RegExp, count: number): Promise<any[]> {
  let got: any[] = [];
  for (const deadline = Date.now() + 5000; Date.now() < deadline; ) {
    const r = await tp.call("GET", "/v1/auditLogs?type=DatabaseStatement&limit=1000");
    assert.equal(r.status, 200, r.text);
    got = (r.body.auditLogs as any[]).filter((x) => match.test(String(x.attributes.statement))).reverse();
    if (got.length >= count) return got;
    await new Promise((res) => setTimeout(res, 50));
  }
  assert.fail(`${got.length} records match ${match}, wanted ${count}: ${JSON.stringify(got.map((x) => x.attributes.statement))}`);
}

async function run(sqls: Array<string | { text: string; values: unknown[] }>, o: { user?: string; password?: string } = {}): Promise<void> {
  const c = gatewayClient(tp, ws, o);
  await c.connect();
  try {
    for (const q of sqls) await (c.query(q as string) as Promise<unknown>).catch(() => undefined);
  } finally {
    await c.end();
  }
}

/** A signed-in session taken over from pg after login: raw protocol messages out, whole server messages in. */
async function rawSession(): Promise<{ send: (...m: Buffer[]) => void; untilReady: (n: number) => Promise<string>; socket: TLSSocket; close: () => void }> {
  const c = gatewayClient(tp, ws);
  await c.connect();
  const socket = (c as any).connection.stream as TLSSocket;
  socket.removeAllListeners("data");
  const reader = new BackendMessageReader();
  let types = "";
  let ready = 0;
  let wake: (() => void) | null = null;
  socket.on("data", (d: Buffer) => {
    reader.push(d);
    for (let m = reader.next(); m; m = reader.next()) {
      types += String.fromCharCode(m.type);
      if (m.type === 0x5a) ready++;
    }
    wake?.();
  });
  return {
    socket,
    send: (...m) => socket.write(Buffer.concat(m)),
    untilReady: async (n) => {
      const deadline = Date.now() + 5000;
      while (ready < n) {
        if (Date.now() > deadline) assert.fail(`only ${ready} ReadyForQuery of ${n}: ${types}`);
        await new Promise<void>((res) => {
          wake = res;
          setTimeout(res, 100);
        });
      }
      return types;
    },
    close: () => socket.destroy(),
  };
}

/** Runs pgbench (asynchronously: the gateway under test runs in this process). */
function pgbench(args: string[], env: Record<string, string>): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn("pgbench", args, { env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", ...env }, stdio: ["ignore", "ignore", "pipe"], timeout: 20_000 });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("exit", (code) => resolve({ code, stderr }));
  });
}

const attrs = (rs: any[]) => rs.map((r) => ({ outcome: r.attributes.outcome, rows: r.attributes.rows, sqlstate: r.attributes.sqlstate, result: r.result }));

test("records carry the outcome: rows, SQLSTATE and duration for INSERT, UPDATE and SELECT, simple and extended", async () => {
  await run([
    "insert into oc_t values (1, 'x'), (2, 'y')",
    "update oc_t set b = 'z' where a = 1",
    "select * from oc_t",
    "insert into oc_t values (1, 'dup')",
    { text: "insert into oc_t values ($1, $2)", values: [3, "w"] },
    { text: "update oc_t set b = $1 where a >= $2", values: ["v", 2] },
    { text: "select a from oc_t where a > $1", values: [0] },
    "select pg_sleep(0.2)",
  ]);
  const rs = await records(/oc_t|pg_sleep/, 9); // the eight statements and the table's create
  const mine = rs.filter((r) => !/^create/.test(r.attributes.statement));
  assert.deepEqual(attrs(mine), [
    { outcome: "completed", rows: 2, sqlstate: undefined, result: "SUCCESS" },
    { outcome: "completed", rows: 1, sqlstate: undefined, result: "SUCCESS" },
    { outcome: "completed", rows: 2, sqlstate: undefined, result: "SUCCESS" },
    { outcome: "failed", rows: null, sqlstate: "23505", result: "FAILURE" },
    { outcome: "completed", rows: 1, sqlstate: undefined, result: "SUCCESS" },
    { outcome: "completed", rows: 2, sqlstate: undefined, result: "SUCCESS" },
    { outcome: "completed", rows: 3, sqlstate: undefined, result: "SUCCESS" },
    { outcome: "completed", rows: 1, sqlstate: undefined, result: "SUCCESS" },
  ]);
  assert.deepEqual(mine.map((r) => r.attributes.protocol), ["simple", "simple", "simple", "simple", "extended", "extended", "extended", "simple"]);
  assert.deepEqual(mine[1].attributes.results, [{ command: "UPDATE", rows: 1 }]);
  assert.ok(mine.every((r) => typeof r.attributes.durationMs === "number" && r.attributes.durationMs > 0));
  assert.ok(mine[7].attributes.durationMs >= 200 && mine[7].attributes.durationMs < 2000, `pg_sleep(0.2) took ${mine[7].attributes.durationMs} ms`);
  assert.equal(mine[3].attributes.errorMessage, undefined, "below the PLAINTEXT levels the error message (which can quote values) is not recorded");
  assert.match(mine[3].reason, /failed \(23505\)/);
});

test("an error in the middle of a multi-statement string: the statements before it, the failure, and the rest not executed (rolled back together)", async () => {
  await run(["insert into oc_t values (10, 'a'); select 1/0; insert into oc_t values (11, 'b')", "select count(*) from oc_t where a >= 10"]);
  const [r] = await records(/values \(\$1, \$2\); select/, 1);
  assert.equal(r.attributes.outcome, "failed");
  assert.equal(r.attributes.sqlstate, "22012");
  assert.deepEqual(r.attributes.results, [{ command: "INSERT", rows: 1 }, { command: null, rows: null, sqlstate: "22012" }]);
  assert.equal(r.attributes.notExecuted, 1);
  const [count] = await records(/a >= \$1/, 1);
  assert.equal(count.attributes.rows, 1, "one row: count(*)");
});

test("a pipelining raw client: Executes are matched to their answers in order, an error skips the rest of its batch, and the next batch is followed", async () => {
  const s = await rawSession();
  const exec = (text: string, ...values: string[]) => [serialize.parse({ text }), serialize.bind({ values }), serialize.describe({ type: "P" }), serialize.execute({})];
  s.send(
    ...exec("insert into oc_pipe values ($1)", "20"), ...exec("insert into oc_pipe values ($1)", "not-a-number"), ...exec("delete from oc_pipe where a = $1", "20"), serialize.sync(),
    ...exec("update oc_pipe set a = $1 where a = 20", "21"), ...exec("select a from oc_pipe where a = $1", "21"), serialize.sync(),
    serialize.query("select 'x' as oc_pipe_after"),
  );
  const types = await s.untilReady(3);
  assert.match(types, /E/, "the server answered the bad Bind with an error");
  s.close();
  const rs = (await records(/oc_pipe/, 7)).filter((r) => !/^create/.test(r.attributes.statement));
  // The failure rolled back the batch's implicit transaction: the first insert completed, then was undone.
  assert.deepEqual(rs.map((r) => [r.attributes.statement, r.attributes.outcome, r.attributes.rows, r.attributes.sqlstate ?? null]), [
    ["insert into oc_pipe values ($1)", "completed", 1, null],
    ["insert into oc_pipe values ($1)", "failed", null, "22P02"],
    ["delete from oc_pipe where a = $1", "not-executed", null, null],
    ["update oc_pipe set a = $1 where a = $2", "completed", 0, null],
    ["select a from oc_pipe where a = $1", "completed", 0, null],
    ["select $1 as oc_pipe_after", "completed", 1, null],
  ]);
  // libpq's pipeline mode (pgbench \startpipeline): every statement sent before the first answer is read.
  const dir = mkdtempSync(join(tmpdir(), "oc-pgbench-"));
  try {
    const script = join(dir, "pipeline.sql");
    writeFileSync(script, ["\\startpipeline", ...Array.from({ length: 10 }, (_, i) => `insert into oc_pipe values (${100 + i});`), "select a from oc_pipe where a >= 100;", "\\endpipeline", ""].join("\n"));
    const r = await pgbench(["-n", "-M", "extended", "-t", "1", "-f", script, conninfo(ws)], { PGPASSWORD: ws.adminPassword });
    assert.equal(r.code, 0, r.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const piped = (await records(/oc_pipe/, 18)).slice(7);
  assert.deepEqual(piped.map((r) => [r.attributes.statement, r.attributes.outcome, r.attributes.rows]), [
    ...Array.from({ length: 10 }, () => ["insert into oc_pipe values ($1);", "completed", 1]),
    ["select a from oc_pipe where a >= $1;", "completed", 10],
  ]);
});

test("COPY does not confuse the matching: COPY FROM STDIN by the simple and the extended protocol (libpq's Sync before the data), and COPY TO STDOUT", async () => {
  const s = await rawSession();
  s.send(serialize.query("copy oc_copy from stdin"));
  await new Promise((res) => setTimeout(res, 100));
  s.send(serialize.copyData(Buffer.from("1\n2\n3\n")), serialize.copyDone());
  s.send(serialize.parse({ text: "copy oc_copy from stdin" }), serialize.bind({}), serialize.describe({ type: "P" }), serialize.execute({}), serialize.sync());
  await new Promise((res) => setTimeout(res, 100));
  s.send(serialize.copyData(Buffer.from("4\n5\n")), serialize.copyDone(), serialize.sync());
  s.send(serialize.query("copy oc_copy to stdout"), serialize.query("copy oc_copy from stdin"));
  await new Promise((res) => setTimeout(res, 100));
  s.send(serialize.copyFail("the client gave up"), serialize.query("select count(*) as copied from oc_copy"));
  await s.untilReady(5);
  s.close();
  const rs = await records(/oc_copy/, 5);
  assert.deepEqual(rs.filter((r) => !/^create/.test(r.attributes.statement)).map((r) => [r.attributes.protocol, r.attributes.statement, r.attributes.outcome, r.attributes.rows, r.attributes.sqlstate ?? null]), [
    ["simple", "copy oc_copy from stdin", "completed", 3, null],
    ["extended", "copy oc_copy from stdin", "completed", 2, null],
    ["simple", "copy oc_copy to stdout", "completed", 5, null],
    ["simple", "copy oc_copy from stdin", "failed", null, "57014"],
    ["simple", "select count(*) as copied from oc_copy", "completed", 1, null],
  ]);
});

test("ALL-RESULTS records result metadata (column names and type OIDs) and row counts, never a value", async () => {
  await run(["create role oc_results login password 'Results-password-1'", "grant select on oc_t to oc_results"]);
  assert.equal((await tp.call("PATCH", `/v1/workspaces/${ws.workspaceId}/users/oc_results`, { body: { auditLevel: "ALL-RESULTS" } })).status, 200);
  await run(["select a, b as label, 'value-never-logged'::text as marker from oc_t where a = 1", { text: "select b, a from oc_t where a = $1", values: [1] }], { user: "oc_results", password: "Results-password-1" });
  const rs = await records(/as label|select b, a from oc_t/, 2);
  assert.deepEqual(rs.map((r) => r.attributes.results), [
    [{ command: "SELECT", rows: 1, columns: [{ name: "a", typeOid: 23 }, { name: "label", typeOid: 25 }, { name: "marker", typeOid: 25 }] }],
    [{ command: "SELECT", rows: 1, columns: [{ name: "b", typeOid: 25 }, { name: "a", typeOid: 23 }] }],
  ]);
  assert.equal(rs[0].attributes.plaintext, true);
  const json = JSON.stringify(rs.map((r) => r.attributes.results));
  assert.ok(!json.includes("value-never-logged") && !json.includes('"x"'), "no value from a row");
});

test("a session that ends with a statement pending records it as interrupted", async () => {
  const s = await rawSession();
  s.send(serialize.query("select pg_sleep(5) as oc_interrupted"));
  await new Promise((res) => setTimeout(res, 200));
  s.close();
  const started = Date.now();
  const [r] = await records(/oc_interrupted/, 1);
  assert.ok(Date.now() - started < 2000, "recorded when the session ended, not when the server finished");
  assert.equal(r.attributes.outcome, "interrupted");
  assert.equal(r.result, "FAILURE");
  assert.equal(r.attributes.durationMs, null);
});
