import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestPlatform, type TestPlatform } from "../support/platform.js";
import { createTestWorkspace, gatewayClient, type TestWorkspace } from "../support/workspaces.js";

let tp: TestPlatform;
let ws: TestWorkspace;

before(async () => {
  tp = await startTestPlatform({ env: { PARHELION_WORKSPACE_FSYNC: "false" } });
  ws = await createTestWorkspace(tp, { group: { auditLevel: "ALL-QUERIES" } });
  await session([
    "create table nt (a int, b text)", "grant all on nt to public",
    // For the top-level SELECT/DML tests at the end: a trigger, a function, a function partition pruning calls.
    "create table nt_seen (a int)", "create table nt_mark (a int)", "create table nt_trig (a int)",
    "create function nt_trg() returns trigger language plpgsql as $$ begin insert into nt_seen values (new.a); return new; end $$",
    "create trigger nt_trg after insert on nt_trig for each row execute function nt_trg()",
    "create function nt_count(x int) returns bigint language plpgsql as $$ begin return (select count(*) from nt_seen where a = x); end $$",
    "create function nt_pick(x int) returns int stable language plpgsql as $$ begin return (select coalesce(max(a), x) from nt_seen where a < 0); end $$",
    // Immutable (a lie the planner believes): called with a constant, it runs while the calling statement is planned.
    "create function nt_fold(x int) returns int immutable language plpgsql as $$ begin return (select count(*) from nt_mark where a = x); end $$",
    "create table nt_pt (k int) partition by list (k)", "create table nt_pt1 partition of nt_pt for values in (1)", "create table nt_pt2 partition of nt_pt for values in (2)",
  ]);
  // Each role's own level, set before its first login (the gateway looks it up as a session starts).
  for (const [role, level, options] of [["nt_off", "OFF", ""], ["nt_admin", "ADMIN-ONLY", ""], ["nt_plain", "ALL-QUERIES-PLAINTEXT", "createrole"]] as const) {
    await session([`create role ${role} login ${options} password 'Nested-password-1'`]);
    const r = await tp.call("PATCH", `/v1/workspaces/${ws.workspaceId}/users/${role}`, { body: { auditLevel: level } });
    assert.equal(r.status, 200, r.text);
  }
});

after(async () => {
  await tp?.stop();
});

/** Runs statements in one session; answers what each returned. */
async function session(sqls: string[], user?: string): Promise<any[][]> {
  const c = gatewayClient(tp, ws, user ? { user, password: "Nested-password-1" } : {});
  await c.connect();
  try {
    const out: any[][] = [];
    for (const q of sqls) out.push((await c.query(q)).rows);
    return out;
  } finally {
    await c.end();
  }
}

/** DatabaseStatement records matching, oldest first, once there are `count` (nested ones arrive through the server's log, ~100 ms later). */
async function records(match: (r: any) => boolean, count: number): Promise<any[]> {
  let got: any[] = [];
  for (const deadline = Date.now() + 8000; Date.now() < deadline; ) {
    const r = await tp.call("GET", "/v1/auditLogs?type=DatabaseStatement&limit=1000");
    assert.equal(r.status, 200, r.text);
    got = (r.body.auditLogs as any[]).filter(match).reverse();
    if (got.length >= count) return got;
    await new Promise((res) => setTimeout(res, 50));
  }
  assert.fail(`${got.length} records match, wanted ${count}: ${JSON.stringify(got.map((x) => x.attributes.statement))}`);
}

const nested = (r: any) => r.attributes.nested === true;

test("a DO block's and a function's inner statements are nested records of the session that ran them (a pooled backend's next session gets its own), literals never in clear below PLAINTEXT", async () => {
  const [[first]] = (await session(["select pg_backend_pid() as pid", "do $$ begin insert into nt values (1, 'do-literal-1'); end $$"])) as [[{ pid: number }]];
  await new Promise((r) => setTimeout(r, 200)); // the backend goes back to the pool
  const [[second]] = (await session([
    "select pg_backend_pid() as pid",
    "create function nt_fn(x int) returns int language plpgsql as $$ begin insert into nt values (x, 'fn-literal-2'); return x; end $$",
    "select nt_fn(2)",
  ])) as [[{ pid: number }]];
  assert.equal(first.pid, second.pid, "the second session ran on the pooled backend of the first (the case to tell apart)");
  const rs = await records((r) => nested(r), 3);
  assert.deepEqual(rs.map((r) => [r.attributes.statement, r.attributes.statementClasses, r.attributes.pgauditCommand, r.attributes.objectName ?? null, r.attributes.plaintext]), [
    ["insert into nt values ($1, $2)", ["WRITE"], "INSERT", null, false],
    ["select nt_fn($1)", ["FUNCTION"], "EXECUTE", "public.nt_fn", false],
    ["insert into nt values (x, $1)", ["WRITE"], "INSERT", null, false],
  ]);
  const [doRecord] = await records((r) => !nested(r) && r.attributes.commands[0] === "DoStmt", 1);
  const [callRecord] = await records((r) => !nested(r) && r.attributes.statement === "select nt_fn($1)", 1);
  assert.equal(rs[0].attributes.sessionID, doRecord.attributes.sessionID, "the DO block's session");
  assert.equal(rs[2].attributes.sessionID, callRecord.attributes.sessionID, "the function call's session");
  assert.notEqual(doRecord.attributes.sessionID, callRecord.attributes.sessionID);
  for (const r of rs) {
    assert.equal(r.type, "DatabaseStatement");
    assert.equal(r.attributes.databaseUser, "admin");
    assert.equal(r.attributes.database, "postgres");
    assert.equal(r.attributes.workspaceGroupID, ws.groupId);
    assert.equal(r.sourceIP, "127.0.0.1");
    assert.ok(r.attributes.substatementID >= 1 && Date.parse(r.attributes.serverTime) > 0);
  }
  assert.equal(rs.filter((r) => r.attributes.statementClasses[0] === "WRITE").length, 2, "the top-level statements are the gateway's records, not duplicated from the log");
  const json = JSON.stringify(await records(() => true, 1));
  assert.ok(!json.includes("do-literal-1") && !json.includes("fn-literal-2"), "no literal below the PLAINTEXT levels");
});

test("each session's level applies to its nested statements: none at OFF, DDL and role changes only at ADMIN-ONLY, texts in clear at PLAINTEXT except a password", async () => {
  const before = (await records(nested, 0)).length;
  const both = "do $$ begin insert into nt values (3, 'lvl'); execute 'create temp table ' || current_user || '_t (a int)'; end $$";
  await session([both], "nt_off");
  await session([both], "nt_admin");
  await session([both, "do $$ begin execute 'create role nt_made login password ''never-in-clear-pw'''; end $$"], "nt_plain");
  // A later line of an ALL-QUERIES session: once it is recorded, every line before it has been read.
  await session(["do $$ begin insert into nt values (4, 'marker'); end $$"]);
  const rs = (await records(nested, before + 5)).slice(before);
  assert.deepEqual(rs.map((r) => [r.attributes.databaseUser, r.attributes.statement, r.attributes.plaintext]), [
    ["nt_admin", "create temp table nt_admin_t (a int)", false],
    ["nt_plain", "insert into nt values (3, 'lvl')", true],
    ["nt_plain", "create temp table nt_plain_t (a int)", true],
    ["nt_plain", "create role nt_made login password <REDACTED>", false], // pgaudit redacts it; and a secret is never recorded in clear
    ["admin", "insert into nt values ($1, $2)", false],
  ]);
  assert.ok(!JSON.stringify(rs).includes("never-in-clear-pw"));
});

test("pgaudit.log follows the gateway's sessions: the classes their levels need are in force while they run", async () => {
  const engine = tp.platform.engine;
  const c = gatewayClient(tp, ws);
  await c.connect();
  try {
    assert.deepEqual([...engine.auditClasses(ws.workspaceId)].sort(), ["ddl", "function", "misc", "misc_set", "read", "role", "write"]);
    const r = await c.query("select current_setting('pgaudit.log') as v");
    assert.equal(r.rows[0].v, "ddl,function,misc,misc_set,read,role,write");
  } finally {
    await c.end();
  }
});

test("a top-level statement that runs another inside it (CREATE TABLE AS, CALL, EXECUTE) is only the gateway's record: from the log come only the procedure's own statements", async () => {
  const before = (await records(nested, 0)).length;
  await session([
    "create table nt_ctas as select 1 as a",
    "create procedure nt_proc() language plpgsql as $$ begin update nt set b = 'proc' where a = 7; end $$",
    "call nt_proc()",
    "prepare nt_p as select count(*) from nt",
    "execute nt_p",
    "do $$ begin insert into nt values (9, 'marker'); end $$",
  ]);
  // pgaudit numbers the inner query (or the procedure) before the statement itself, so the statement's own line is
  // not SUBSTATEMENT_ID 1; parhelion_guard drops it all the same. The DO block's insert is the session's last line.
  const rs = (await records(nested, before + 2)).slice(before);
  assert.deepEqual(rs.map((r) => [r.attributes.statement, r.attributes.pgauditCommand]), [
    ["update nt set b = $1 where a = $2", "UPDATE"],
    ["insert into nt values ($1, $2)", "INSERT"],
  ]);
  for (const start of ["create table nt_ctas", "call nt_proc", "execute nt_p"]) {
    await records((r) => !nested(r) && String(r.attributes.statement).startsWith(start), 1);
  }
});

/** The nested records after the first `before`, once one whose statement is `last` (the last one expected) is among them. */
async function nestedThrough(before: number, last: string): Promise<any[]> {
  for (const deadline = Date.now() + 8000; Date.now() < deadline; ) {
    const rs = (await records(nested, before + 1)).slice(before);
    if (rs.some((r) => r.attributes.statement === last)) return rs;
    await new Promise((res) => setTimeout(res, 50));
  }
  assert.fail(`no nested record of ${last}`);
}

test("a top-level SELECT or DML is never a nested record, and what runs inside it or while it is planned is, exactly once, numbered from 1 by pgaudit (simple and extended protocol)", async () => {
  const before = (await records(nested, 0)).length;
  const c = gatewayClient(tp, ws);
  await c.connect();
  try {
    await c.query("insert into nt_trig values (1)"); // (a) its AFTER trigger's insert is the first line pgaudit numbers
    await c.query("select nt_count(1)"); // (b) the function's EXECUTE, then its inner SELECT
    await c.query("select nt_count($1)", [2]); // (c) the same through Parse/Bind/Execute
    await c.query("select count(*) from nt_seen"); // (d) nothing
    await c.query("select count(*) from nt_seen where a = nt_fold(7)"); // (e) nt_fold's SELECT, run while the statement is planned
    await c.query("do $$ begin insert into nt_mark values (1); end $$"); // the last nested line of the session
  } finally {
    await c.end();
  }
  // pgaudit never builds the top-level statement's line any more (parhelion_guard), so the first nested line is
  // SUBSTATEMENT_ID 1; under a DO block the block's own line is still 1 (and dropped), its insert 2.
  const rs = await nestedThrough(before, "insert into nt_mark values ($1)");
  assert.deepEqual(rs.map((r) => [r.attributes.statement, r.attributes.pgauditCommand, r.attributes.objectName ?? null, r.attributes.substatementID]), [
    ["insert into nt_seen values (new.a)", "INSERT", null, 1],
    ["select nt_count($1)", "EXECUTE", "public.nt_count", 1],
    ["(select count(*) from nt_seen where a = x)", "SELECT", null, 2],
    ["select nt_count($1)", "EXECUTE", "public.nt_count", 1],
    ["(select count(*) from nt_seen where a = x)", "SELECT", null, 2],
    ["(select count(*) from nt_mark where a = x)", "SELECT", null, 1],
    ["insert into nt_mark values ($1)", "INSERT", null, 2],
  ]);
  await records((r) => !nested(r) && r.attributes.statement === "select count(*) from nt_seen", 1); // the gateway's own record of (d)
});

test("parhelion_guard keeps pgaudit from even building a top-level SELECT's or DML's line (pgaudit's lines sent to the client show it) and puts pgaudit back for statements started inside one", async () => {
  const notices: string[] = [];
  await tp.platform.engine.withSystem(ws.workspaceId, "postgres", async (c) => {
    c.on("notice", (n: { message?: string }) => notices.push(String(n.message)));
    // pgaudit's lines as NOTICEs to this client too: parhelion_guard's emit_log_hook only ever drops them from the server's log.
    await c.query("set pgaudit.log = 'read,write,function'; set pgaudit.log_client = on; set pgaudit.log_level = notice; set plan_cache_mode = force_generic_plan");
    const lines = async (sql: string, values?: unknown[]) => {
      notices.length = 0;
      await c.query(sql, values);
      // AUDIT: SESSION,<statement id>,<substatement id>,... : the statement ids differ from run to run
      return notices.map((m) => m.replace(/^AUDIT: SESSION,\d+,/, ""));
    };
    assert.deepEqual(await lines("select count(*) from nt_seen"), [], "a top-level SELECT: no line built");
    assert.deepEqual(await lines("insert into nt_trig values (2)"), ["1,WRITE,INSERT,,,insert into nt_seen values (new.a),<not logged>"], "a top-level INSERT: only its trigger's");
    assert.deepEqual(await lines("select nt_count(2)"), [
      "1,FUNCTION,EXECUTE,FUNCTION,public.nt_count,select nt_count(2),<not logged>",
      "2,READ,SELECT,,,(select count(*) from nt_seen where a = x),<not logged>",
    ]);
    // A generic plan (nothing folded while planning): the executor's initial partition pruning calls nt_pick as the
    // top-level statement starts, and the SELECT inside nt_pick, started then, is checked and logged by pgaudit.
    // (The EXECUTE lines are pgaudit's of the pruning step's call and of the scan's filter, set up after it.)
    assert.deepEqual(await lines("select * from nt_pt where k = nt_pick($1)", [1]), [
      "1,FUNCTION,EXECUTE,FUNCTION,public.nt_pick,select * from nt_pt where k = nt_pick($1),<not logged>",
      "2,READ,SELECT,,,\"(select coalesce(max(a), x) from nt_seen where a < 0)\",<not logged>",
      "3,FUNCTION,EXECUTE,FUNCTION,public.nt_pick,select * from nt_pt where k = nt_pick($1),<not logged>",
    ]);
    // pgaudit's check is in place again after a top-level statement failed as it started (the pruning's 1/0).
    await assert.rejects(c.query("select * from nt_pt where k = nt_pick(1 / $1::int)", [0]), /division by zero/);
    assert.deepEqual(await lines("select count(*) from nt_seen"), []);
    assert.deepEqual(await lines("do $$ begin perform count(*) from nt_seen; end $$"), [
      "1,FUNCTION,DO,,,do $$ begin perform count(*) from nt_seen; end $$,<not logged>",
      "2,READ,SELECT,,,SELECT count(*) from nt_seen,<not logged>",
    ]);
  });
});
