import { test, before } from "node:test";
import assert from "node:assert/strict";
import { serialize } from "pg-protocol";
import { StatementClassifier, type AuditLevel } from "../../src/audit/sql/classify.js";
import { SessionStatements, StatementFrontendScanner, type StatementRecord } from "../../src/gateway/statements.js";
import { BackendScanner, errorResponse, readyForQuery } from "../../src/gateway/protocol/backend.js";
import { bytes, int32, msg } from "./protocol/helpers.js";

let classifier: StatementClassifier;
before(async () => {
  classifier = await StatementClassifier.create();
});

// Server messages (§53.7).
const cc = (tag: string) => msg("C", `${tag}\0`);
const z = (status: "I" | "T" | "E" = "I") => readyForQuery(status);
const err = (sqlstate: string, message = "boom") => errorResponse({ severity: "ERROR", sqlstate, message });
const parseComplete = msg("1");
const bindComplete = msg("2");
const noData = msg("n");
const emptyQuery = msg("I");
const suspended = msg("s");
const copyIn = msg("G", bytes([0], [0, 1], [0, 0]));
const int16 = (n: number) => Buffer.from([(n >> 8) & 0xff, n & 0xff]);
function rowDescription(cols: Array<[string, number]>): Buffer {
  return msg("T", bytes(int16(cols.length), ...cols.map(([name, oid]) => bytes(`${name}\0`, int32(0), int16(0), int32(oid), int16(4), int32(-1), int16(0)))));
}
function dataRow(...values: string[]): Buffer {
  return msg("D", bytes(int16(values.length), ...values.map((v) => bytes(int32(Buffer.byteLength(v)), v))));
}

/** A tracker between the two real scanners, with a clock the test moves. */
function session(level: AuditLevel, o: { count?: Map<string, number> } = {}) {
  const got: StatementRecord[] = [];
  let t = 1000;
  const count = o.count;
  const record = count ? (r: StatementRecord) => void count.set(r.outcome, (count.get(r.outcome) ?? 0) + 1) : (r: StatementRecord) => void got.push(r);
  const s = new SessionStatements({ level, classifier, record, now: () => t });
  const fe = new StatementFrontendScanner({}, s);
  const be = new BackendScanner({ observer: s.observer });
  return {
    s, got,
    send: (...m: Buffer[]) => fe.scan(Buffer.concat(m)),
    answer: (...m: Buffer[]) => be.scan(Buffer.concat(m)),
    tick: (ms: number) => {
      t += ms;
    },
    pending: () => (s as unknown as { size: number }).size,
  };
}

const summary = (r: StatementRecord) => [r.decision.text, r.outcome, r.rows, r.sqlstate];

test("the extended protocol: named and unnamed statements are recorded when they complete, with their $n text, rows and duration", () => {
  const x = session("ALL-QUERIES");
  x.send(serialize.parse({ name: "ins", text: "insert into t values ($1, 'lit')" }), serialize.parse({ text: "select $1::int" }));
  x.send(serialize.bind({ statement: "ins", portal: "p1", values: ["secret-value"] }), serialize.execute({ portal: "p1" }), serialize.bind({ values: ["7"] }), serialize.execute({}), serialize.sync());
  assert.equal(x.got.length, 0, "nothing is recorded before the server answers");
  x.tick(2.5);
  x.answer(parseComplete, parseComplete, bindComplete, cc("INSERT 0 1"));
  x.tick(1);
  x.answer(bindComplete, dataRow("7"), cc("SELECT 1"), z());
  assert.deepEqual(x.got.map((r) => [r.protocol, ...summary(r), r.classification.statements[0]!.class, r.durationMs]), [
    ["extended", "insert into t values ($1, $2)", "completed", 1, null, "WRITE", 2.5],
    ["extended", "select $1::int", "completed", 1, null, "READ", 3.5],
  ]);
  assert.deepEqual(x.got[0]!.results, [{ command: "INSERT", rows: 1 }]);
  assert.ok(!JSON.stringify(x.got).includes("secret-value"));
  assert.equal(x.pending(), 0);
  x.send(serialize.close({ type: "S", name: "ins" }), serialize.bind({ statement: "ins", portal: "p2", values: [] }), serialize.execute({ portal: "p2" }), serialize.sync());
  x.answer(msg("3"), err("26000", 'prepared statement "ins" does not exist'), z());
  assert.equal(x.got.length, 2, "a closed statement is forgotten (the server refuses its Bind anyway)");
  assert.equal(x.pending(), 0);
});

test("ADMIN-ONLY records only DDL and role statements, whatever the protocol", () => {
  const x = session("ADMIN-ONLY");
  x.send(serialize.query("select 1; insert into t values (2)"), serialize.query("create table x (a int)"));
  x.send(serialize.parse({ name: "g", text: "grant select on t to r" }), serialize.bind({ statement: "g" }), serialize.execute({}), serialize.sync());
  x.answer(msg("T", bytes(int16(0))), cc("SELECT 1"), cc("INSERT 0 1"), z(), cc("CREATE TABLE"), z(), parseComplete, bindComplete, cc("GRANT"), z());
  assert.deepEqual(x.got.map((r) => [r.classification.statements.map((s) => s.kind).join("+"), r.outcome, r.results[0]?.command]), [["CreateStmt", "completed", "CREATE TABLE"], ["GrantStmt", "completed", "GRANT"]]);
});

test("a simple query of several statements: each statement's outcome in order; an error ends the string and the rest are counted as not executed", () => {
  const x = session("ALL-QUERIES");
  x.send(serialize.query("insert into t values (1); select 1/0; update t set a = 2"));
  x.tick(4);
  x.answer(cc("INSERT 0 1"), err("22012", "division by zero"), z("I"));
  const [r] = x.got;
  assert.equal(r!.outcome, "failed");
  assert.equal(r!.sqlstate, "22012");
  assert.deepEqual(r!.results, [{ command: "INSERT", rows: 1 }, { command: null, rows: null, sqlstate: "22012" }]);
  assert.equal(r!.notExecuted, 1);
  assert.equal(r!.rows, 1);
  assert.equal(r!.durationMs, 4);
  assert.equal(r!.errorMessage, null, "the message can quote values: not below the PLAINTEXT levels");
  const plain = session("ALL-QUERIES-PLAINTEXT");
  plain.send(serialize.query("select 1/0"));
  plain.answer(err("22012", "division by zero"), z());
  assert.equal(plain.got[0]!.errorMessage, "division by zero");
});

test("pipelined Executes are matched to their answers in order; after an error the server skips to the Sync and those statements are not executed", () => {
  const x = session("ALL-QUERIES");
  const exec = (text: string, v: string) => [serialize.parse({ text }), serialize.bind({ values: [v] }), serialize.describe({ type: "P" }), serialize.execute({})];
  x.send(...exec("insert into t values ($1)", "1"), ...exec("insert into t values ($1::int)", "x"), ...exec("delete from t where a = $1", "1"), serialize.sync());
  x.send(...exec("update t set a = $1", "3"), serialize.sync(), serialize.query("select 'after'"));
  assert.equal(x.got.length, 0);
  // The second Bind fails (22P02): its Execute, and the third statement, are skipped until the Sync.
  x.answer(parseComplete, bindComplete, noData, cc("INSERT 0 1"), parseComplete, err("22P02", "invalid input syntax for type integer: \"x\""));
  assert.deepEqual(x.got.map(summary), [
    ["insert into t values ($1)", "completed", 1, null],
    ["insert into t values ($1::int)", "failed", null, "22P02"],
    ["delete from t where a = $1", "not-executed", null, null],
  ]);
  assert.equal(x.got[2]!.durationMs, null);
  x.answer(z(), parseComplete, bindComplete, noData, cc("UPDATE 2"), z(), rowDescription([["?column?", 25]]), dataRow("after"), cc("SELECT 1"), z());
  assert.deepEqual(x.got.slice(3).map(summary), [["update t set a = $1", "completed", 2, null], ["select $1", "completed", 1, null]]);
  assert.equal(x.pending(), 0);
});

test("an error with no Sync sent yet: later messages up to the Sync are skipped too, and a Query among them is never answered", () => {
  const x = session("ALL-QUERIES");
  x.send(serialize.parse({ text: "select 1/0" }), serialize.bind({}), serialize.execute({}));
  x.answer(parseComplete, bindComplete, err("22012", "division by zero"));
  assert.deepEqual(x.got.map(summary), [["select $1/$2", "failed", null, "22012"]]);
  x.send(serialize.query("create table skipped (a int)"), serialize.parse({ text: "select 2" }), serialize.bind({}), serialize.execute({}), serialize.sync(), serialize.query("select 3"));
  assert.deepEqual(x.got.map((r) => r.outcome), ["failed", "not-executed", "not-executed"], "the Query and the Execute before the Sync");
  x.answer(z(), rowDescription([["?column?", 23]]), dataRow("3"), cc("SELECT 1"), z());
  assert.deepEqual(x.got.map(summary).at(-1), ["select $1", "completed", 1, null]);
  assert.equal(x.pending(), 0);
});

test("COPY FROM STDIN: the Sync libpq sends before the data is ignored by the server and does not shift the answers", () => {
  const x = session("ALL-QUERIES");
  // Extended protocol, as libpq's PQexecParams: Parse/Bind/Describe/Execute/Sync, then the data, CopyDone, Sync.
  x.send(serialize.parse({ text: "copy t from stdin" }), serialize.bind({}), serialize.describe({ type: "P" }), serialize.execute({}), serialize.sync());
  x.answer(parseComplete, bindComplete, noData, copyIn);
  x.send(serialize.copyData(Buffer.from("1\n2\n3\n")), serialize.copyDone(), serialize.sync());
  x.send(serialize.query("select 42"));
  x.answer(cc("COPY 3"), z(), rowDescription([["?column?", 23]]), dataRow("42"), cc("SELECT 1"), z());
  assert.deepEqual(x.got.map(summary), [["copy t from stdin", "completed", 3, null], ["select $1", "completed", 1, null]]);
  // Simple protocol, data sent before the server asked for it, then a failing COPY.
  x.send(serialize.query("copy t from stdin"), serialize.copyData(Buffer.from("4\n")), serialize.copyDone(), serialize.query("copy t from stdin"), serialize.copyFail("client gave up"));
  x.answer(copyIn, cc("COPY 1"), z(), copyIn, err("57014", "COPY from stdin failed: client gave up"), z());
  assert.deepEqual(x.got.slice(2).map(summary), [["copy t from stdin", "completed", 1, null], ["copy t from stdin", "failed", null, "57014"]]);
  assert.equal(x.pending(), 0);
});

test("ALL-RESULTS records result metadata (column names and type OIDs), never row values; a suspended portal reports the rows sent so far", () => {
  const x = session("ALL-RESULTS");
  x.send(serialize.query("select 'v1' as name, 7 as n"));
  x.answer(rowDescription([["name", 25], ["n", 23]]), dataRow("row-value-1", "7"), cc("SELECT 1"), z());
  assert.deepEqual(x.got[0]!.results, [{ command: "SELECT", rows: 1, columns: [{ name: "name", typeOid: 25 }, { name: "n", typeOid: 23 }] }]);
  x.send(serialize.parse({ text: "select a from t" }), serialize.bind({}), serialize.describe({ type: "P" }), serialize.execute({ rows: 2 }), serialize.execute({ rows: 2 }), serialize.sync());
  x.answer(parseComplete, bindComplete, rowDescription([["a", 23]]), dataRow("row-value-2"), dataRow("2"), suspended, dataRow("3"), cc("SELECT 1"), z());
  assert.deepEqual(x.got.slice(1).map((r) => [r.outcome, r.rows, r.results[0]!.columns]), [
    ["suspended", 2, [{ name: "a", typeOid: 23 }]],
    ["completed", 1, [{ name: "a", typeOid: 23 }]],
  ]);
  assert.ok(!JSON.stringify(x.got).includes("row-value"), "no row value reaches a record");
  const y = session("ALL-QUERIES");
  y.send(serialize.query("select 1 as n"));
  y.answer(rowDescription([["n", 23]]), dataRow("1"), cc("SELECT 1"), z());
  assert.equal(y.got[0]!.results[0]!.columns, undefined, "metadata only at ALL-RESULTS");
});

test("an empty query lines up (it is not recorded), and statements still owed an answer when the session ends are recorded as interrupted", () => {
  const x = session("ALL-QUERIES");
  x.send(serialize.query(""), serialize.query("select 1"));
  x.answer(emptyQuery, z(), rowDescription([["?column?", 23]]), dataRow("1"), cc("SELECT 1"), z());
  assert.deepEqual(x.got.map((r) => [r.outcome, r.results]), [["completed", [{ command: "SELECT", rows: 1 }]]]);
  x.send(serialize.query("select pg_sleep(10)"), serialize.parse({ text: "insert into t values (1)" }), serialize.bind({}), serialize.execute({}), serialize.sync());
  x.s.close();
  assert.deepEqual(x.got.slice(1).map((r) => [r.outcome, r.durationMs]), [["interrupted", null], ["interrupted", null]]);
  x.s.close();
  assert.equal(x.got.length, 3, "once");
});

test("bounded memory: a client pipelining a million statements without reading is followed up to a limit, the rest recorded as untracked; tracking resumes once the server caught up", () => {
  const count = new Map<string, number>();
  const x = session("ALL-QUERIES", { count });
  x.send(serialize.parse({ name: "s", text: "insert into t values ($1)" }));
  const batch = Buffer.concat([serialize.bind({ statement: "s", values: ["1"] }), serialize.execute({}), serialize.sync()]);
  const n = 1_000_000;
  const chunk = Buffer.concat(Array.from({ length: 1000 }, () => batch));
  for (let i = 0; i < n / 1000; i++) x.send(chunk);
  assert.ok(x.pending() <= SessionStatements.MAX_PENDING_MESSAGES, `${x.pending()} pending`);
  const untracked = count.get("untracked") ?? 0;
  assert.equal(count.size, 1, "nothing answered yet: only untracked records");
  assert.ok(untracked > n - SessionStatements.MAX_PENDING_MESSAGES && untracked < n, `${untracked} untracked`);
  // The server answers everything.
  const answer = Buffer.concat([bindComplete, cc("INSERT 0 1"), z()]);
  x.answer(parseComplete);
  const answers = Buffer.concat(Array.from({ length: 1000 }, () => answer));
  for (let i = 0; i < n / 1000; i++) x.answer(answers);
  assert.deepEqual(Object.fromEntries(count), { untracked, completed: n - untracked }, "each Execute is recorded once: the followed ones when answered, the others at once");
  assert.equal(x.pending(), 0);
  x.send(batch);
  x.answer(answer);
  assert.equal(count.get("completed"), n - untracked + 1, "followed again");
});

test("a session's statements cost bounded memory: past 256, the oldest are forgotten but an Execute of one is still recorded", () => {
  const x = session("ADMIN-ONLY");
  for (let i = 0; i < 300; i++) x.send(serialize.parse({ name: `s${i}`, text: `select ${i} from t${i}` }));
  x.send(serialize.bind({ statement: "s0", portal: "a" }), serialize.execute({ portal: "a" }), serialize.sync());
  x.answer(...Array.from({ length: 300 }, () => parseComplete), bindComplete, cc("SELECT 0"), z());
  assert.equal(x.got.length, 1, "an unknown statement is recorded even at ADMIN-ONLY");
  assert.match(x.got[0]!.decision.text, /no longer held/);
  x.send(serialize.bind({ statement: "s299", portal: "b" }), serialize.execute({ portal: "b" }), serialize.sync());
  x.answer(bindComplete, cc("SELECT 0"), z());
  assert.equal(x.got.length, 1, "a statement still held is recorded by its class (a read: not at ADMIN-ONLY)");
  for (let i = 0; i < 1000; i++) x.send(serialize.bind({ statement: "s299", portal: `portal-${i}` }));
  assert.equal((x.s as unknown as { portals: Map<string, string> }).portals.size, 256, "portals are bounded too");
  // A long statement name is no way around the audit.
  const admin = session("ADMIN-ONLY");
  const longName = "n".repeat(5000);
  admin.send(serialize.parse({ name: longName, text: "drop table t" }), serialize.bind({ statement: longName, portal: longName }), serialize.execute({ portal: longName }), serialize.sync());
  admin.answer(parseComplete, bindComplete, cc("DROP TABLE"), z());
  assert.deepEqual(admin.got.map((r) => r.classification.statements[0]!.kind), ["DropStmt"]);
  const huge = `select '${"x".repeat(100_000)}'`;
  const all = session("ALL-QUERIES");
  all.send(serialize.parse({ name: "h", text: huge }), serialize.bind({ statement: "h" }), serialize.execute({}), serialize.sync());
  all.answer(parseComplete, bindComplete, cc("SELECT 1"), z());
  assert.ok(Buffer.byteLength(all.got[0]!.decision.text) < 17_000, "texts are kept cut");
});

test("garbage message bodies are ignored, never thrown, and still line up with the server's answers", () => {
  const x = session("ALL-QUERIES");
  for (const type of [0x51, 0x50, 0x42, 0x45, 0x43]) {
    for (const body of [Buffer.alloc(0), Buffer.from([0xff, 0xfe]), Buffer.from("no terminator"), Buffer.from([0, 0, 0])]) x.s.onMessage(type, body);
  }
  assert.ok(x.got.every((r) => typeof r.decision.text === "string"));
  // Garbage from the server side too: a malformed ErrorResponse and RowDescription are recorded without details.
  const y = session("ALL-RESULTS");
  y.send(serialize.query("select 1"));
  y.answer(msg("T", "\x00"), msg("E", "garbage"), z());
  assert.deepEqual(y.got.map((r) => [r.outcome, r.sqlstate]), [["failed", null]]);
});
