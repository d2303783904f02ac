import { test, before } from "node:test";
import assert from "node:assert/strict";
import { CsvRecords, decideNested, nestedStatementOf, parseLogTime, parsePgauditMessage, pgauditClassesFor, pgauditLogSetting, type NestedStatement } from "../../src/audit/pgaudit.js";
import { StatementClassifier } from "../../src/audit/sql/classify.js";
import { BackendSessions, PgauditDemand } from "../../src/gateway/statements.js";

let classifier: StatementClassifier;
before(async () => {
  classifier = await StatementClassifier.create();
});

const WS = "11111111-1111-4111-8111-111111111111";

/** A csvlog line as PostgreSQL 15 writes it (26 columns; fields with quotes, commas or newlines quoted). */
function csvLine(o: { user?: string; pid?: number; message: string; location?: string; severity?: string; backend?: string; time?: string; line?: number }): string {
  const q = (v: string) => (/[",\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);
  const f = [o.time ?? "2026-11-28 03:27:20.669 UTC", o.user ?? "admin", "postgres", String(o.pid ?? 4242), "[local]", "6b0a4a18.510a", String(o.line ?? 5), "DO",
    "2026-11-28 03:27:20 UTC", "3/5", "0", o.severity ?? "LOG", "00000", o.message, "", "", "", "", "", "", "", o.location ?? "log_audit_event, pgaudit.c:783", "psql", o.backend ?? "client backend", "", "0"];
  return f.map(q).join(",") + "\n";
}

const pgauditMessage = (sub: number, cls: string, cmd: string, stmt: string, obj = ["", ""]) =>
  `AUDIT: SESSION,4,${sub},${cls},${cmd},${obj[0]},${obj[1]},${/[",\n]/.test(stmt) ? `"${stmt.replace(/"/g, '""')}"` : stmt},<not logged>`;

test("csvlog records are split whole whatever the chunking: quoted fields with commas, doubled quotes and newlines", () => {
  const stmt = `insert into t values (1, 'a,"b"\nc')`;
  const text = csvLine({ message: pgauditMessage(2, "WRITE", "INSERT", stmt) }) + csvLine({ message: "plain, \"quoted\"\nline", severity: "ERROR", location: "x.c:1" });
  const whole = new CsvRecords().push(text);
  assert.equal(whole.length, 2);
  assert.equal(whole[0]!.length, 26);
  assert.equal(whole[1]![13], 'plain, "quoted"\nline');
  for (let cut = 0; cut <= text.length; cut++) {
    const csv = new CsvRecords();
    const got = [...csv.push(text.slice(0, cut)), ...csv.push(text.slice(cut))];
    assert.deepEqual(got, whole, `cut at ${cut}`);
    assert.equal(csv.tailBytes, 0);
  }
  const csv = new CsvRecords();
  csv.push(text.slice(0, 40));
  assert.equal(csv.tailBytes, Buffer.byteLength(text.slice(0, 40)), "bytes since the last whole record: read again after a restart");
  const small = new CsvRecords(100);
  assert.deepEqual(small.push(`${"x".repeat(200)}\na,b\n`), [["a", "b"]], "a record over the limit is dropped whole, the next is kept");
  assert.equal(small.dropped, 1);
});

test("pgaudit's lines become nested statements, SUBSTATEMENT_ID 1 included (parhelion_guard keeps top-level ones out of the log); other messages and RAISE LOG 'AUDIT: ...' do not", () => {
  const stmt = `insert into t values (1, 'secret,"lit"\nnewline')`;
  const [rec] = new CsvRecords().push(csvLine({ message: pgauditMessage(2, "WRITE", "INSERT", stmt), pid: 777, line: 9 }));
  const e = nestedStatementOf(WS, rec!);
  assert.deepEqual(e, {
    workspaceId: WS, at: Date.parse("2026-11-28T03:27:20.669Z"), pid: 777, user: "admin", database: "postgres", logLine: "6b0a4a18.510a:9",
    statementId: 4, substatementId: 2, class: "WRITE", command: "INSERT", objectType: null, objectName: null, statement: stmt,
  });
  const one = (o: Parameters<typeof csvLine>[0]) => nestedStatementOf(WS, new CsvRecords().push(csvLine(o))[0]!);
  // The guard never lets pgaudit build a top-level SELECT's or DML's line, so the first nested line pgaudit numbers
  // is 1 (the EXECUTE of a function a top-level SELECT calls, a trigger's first statement): the reader keeps it.
  assert.equal(one({ message: pgauditMessage(1, "FUNCTION", "EXECUTE", "select f(5)", ["FUNCTION", "public.f"]) })?.substatementId, 1, "SUBSTATEMENT_ID 1: a nested line too");
  assert.equal(one({ message: pgauditMessage(2, "WRITE", "INSERT", "forged"), location: "exec_stmt_raise, pl_exec.c:3891" }), null, "RAISE LOG cannot forge a line");
  assert.equal(one({ message: pgauditMessage(2, "WRITE", "INSERT", "x"), severity: "ERROR" }), null);
  assert.equal(one({ message: pgauditMessage(2, "WRITE", "INSERT", "x"), backend: "autovacuum worker" }), null);
  assert.equal(one({ message: "AUDIT: nonsense" }), null);
  assert.equal(one({ message: pgauditMessage(2, "WRITE", "INSERT", "x"), time: "yesterday" }), null);
  assert.deepEqual(parsePgauditMessage(pgauditMessage(3, "FUNCTION", "EXECUTE", "select f(5);", ["FUNCTION", "public.f"])), {
    statementId: 4, substatementId: 3, class: "FUNCTION", command: "EXECUTE", objectType: "FUNCTION", objectName: "public.f", statement: "select f(5);",
  });
  assert.ok(Number.isNaN(parseLogTime("2026-11-28 03:27:20.669 CET")));
});

test("levels: the pgaudit classes they need, and what they record of a nested statement (shapes below PLAINTEXT, secrets always shaped)", () => {
  assert.deepEqual(pgauditClassesFor("OFF"), []);
  assert.deepEqual(pgauditClassesFor("LOGINS-ONLY"), []);
  assert.deepEqual(pgauditClassesFor("ADMIN-ONLY-INCLUDING-PARSE-FAILS"), ["ddl", "role"]);
  assert.deepEqual(pgauditClassesFor("WRITES-ONLY"), ["ddl", "function", "role", "write"]);
  assert.equal(pgauditLogSetting([...pgauditClassesFor("ALL-RESULTS"), "ddl"]), "ddl,function,misc,misc_set,read,role,write");
  assert.equal(pgauditLogSetting([]), "none");
  const e = (cls: string, command: string, statement: string): NestedStatement => ({ workspaceId: WS, at: 0, pid: 1, user: "u", database: "d", logLine: "x:1", statementId: 1, substatementId: 2, class: cls, command, objectType: null, objectName: null, statement });
  const ins = e("WRITE", "INSERT", "insert into t values (1, 'literal-value')");
  const ddl = e("DDL", "CREATE TABLE", "create table t2 (a int default 42)");
  assert.equal(decideNested("ADMIN-ONLY", ins, classifier).decision.log, false);
  assert.deepEqual(decideNested("ADMIN-ONLY", ddl, classifier).decision, { log: true, text: "create table t2 (a int default $1)", plaintext: false, results: false });
  assert.equal(decideNested("WRITES-ONLY", ins, classifier).decision.text, "insert into t values ($1, $2)");
  assert.equal(decideNested("ALL-QUERIES", e("MISC_SET", "SET", "set search_path = x"), classifier).decision.log, true);
  assert.deepEqual(decideNested("ALL-QUERIES-PLAINTEXT", ins, classifier).decision, { log: true, text: "insert into t values (1, 'literal-value')", plaintext: true, results: false });
  const role = decideNested("ALL-QUERIES-PLAINTEXT", e("ROLE", "CREATE ROLE", "create role r login password 'never-in-clear'"), classifier);
  assert.deepEqual([role.decision.text, role.decision.plaintext], ["create role r login password $1", false], "a password is shaped at every level");
  assert.deepEqual(role.classification.statements, [{ kind: "CreateRoleStmt", class: "ROLE" }]);
  for (const level of ["OFF", "LOGINS-ONLY"] as const) assert.equal(decideNested(level, ddl, classifier).decision.log, false);
});

test("session windows: a pooled backend's lines go to the session that held it then; a closed backend's late lines to its last session", () => {
  const w = new BackendSessions(1000);
  const base = { workspaceId: WS, pid: 10, orgId: "o", groupId: "g", user: "u", database: "d", peer: undefined, level: "ALL-QUERIES" as const };
  const a = w.open({ ...base, sessionId: "a", start: 1000 });
  w.close(a, true, 2000); // back to the pool
  const b = w.open({ ...base, sessionId: "b", start: 2500 });
  assert.equal(w.find(WS, 10, 998), null, "before any session (1 ms allowed for the log's truncation)");
  assert.equal(w.find(WS, 10, 1500)?.sessionId, "a");
  assert.equal(w.find(WS, 10, 2200), null, "the pool's reset between sessions");
  assert.equal(w.find(WS, 10, 2600)?.sessionId, "b");
  assert.equal(w.find(WS, 11, 2600), null, "another backend");
  w.close(b, false, 3000); // the server session was closed with the client: it may still be finishing
  assert.equal(w.find(WS, 10, 3500)?.sessionId, "b");
  w.prune(3500);
  assert.equal(w.size, 1, "a's window is forgotten 1 s after its session ended");
  w.prune(4100);
  assert.equal(w.size, 0);
});

test("pgaudit classes: raised before a session that needs more starts, kept while any session needs them, lowered a while after", async () => {
  let applied: string[] = [];
  const calls: string[][] = [];
  let now = 0;
  const demand = new PgauditDemand({
    engine: { auditClasses: () => applied, setAuditClasses: async (_id, c) => void calls.push((applied = [...c].sort())) },
    logger: { error: () => undefined, warn: () => undefined }, shrinkAfterMs: 60_000, now: () => now,
  });
  const off = await demand.acquire(WS, pgauditClassesFor("OFF"));
  assert.deepEqual(calls, [], "OFF needs nothing");
  const admin = await demand.acquire(WS, pgauditClassesFor("ADMIN-ONLY"));
  assert.deepEqual(applied, ["ddl", "role"]);
  const all = await demand.acquire(WS, pgauditClassesFor("ALL-QUERIES"));
  assert.deepEqual(applied, pgauditClassesFor("ALL-QUERIES"));
  const admin2 = await demand.acquire(WS, pgauditClassesFor("ADMIN-ONLY"));
  assert.equal(calls.length, 2, "already covered: no change");
  all();
  all(); // idempotent
  demand.sweep();
  now += 59_000;
  demand.sweep();
  assert.deepEqual(applied, pgauditClassesFor("ALL-QUERIES"), "kept for a while after the last session needing it");
  now += 2_000;
  demand.sweep();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(applied, ["ddl", "role"], "then lowered to what the open sessions need");
  admin();
  admin2();
  off();
  now += 61_000;
  demand.sweep();
  now += 61_000;
  demand.sweep();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(applied, []);
  // A failing engine is logged, never thrown into the login.
  const errors: string[] = [];
  const broken = new PgauditDemand({ engine: { auditClasses: () => [], setAuditClasses: async () => Promise.reject(new Error("server down")) }, logger: { error: (_o: unknown, m: string) => void errors.push(m), warn: () => undefined } as never });
  const release = await broken.acquire(WS, ["ddl"]);
  release();
  assert.equal(errors.length, 1);
});
