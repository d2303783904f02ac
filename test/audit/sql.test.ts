import { test, before } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { shapeOf, shapeOfAscii } from "../../src/audit/sql/shape.js";
import { AUDIT_LEVELS, StatementClassifier, decide, truncate, type AuditLevel } from "../../src/audit/sql/classify.js";

let classifier: StatementClassifier;
before(async () => {
  classifier = await StatementClassifier.create();
});

test("shapes replace every constant with $n and keep the rest", () => {
  const cases: Array<[string, string]> = [
    ["select 1", "select $1"],
    ["SELECT abalance FROM pgbench_accounts WHERE aid = 123;", "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"],
    ["select 'it''s', E'a\\'b\\\\', B'1010', X'ff', N'nat', U&'d\\0061t'", "select $1, $2, $3, $4, $5, $6"],
    ["select 1.5, .5, 6., 1.5e3, 2E-7, 0x1F, 0o17, 0b101, 1_000_000", "select $1, $2, $3, $4, $5, $6, $7, $8, $9"],
    ["select $$a 'b' 1$$, $fn$ x $$ y $fn$, $1", "select $2, $3, $1"],
    ["select t1.c2 from t1 where \"Quoted\"\"Id 7\" = $2", "select t1.c2 from t1 where \"Quoted\"\"Id 7\" = $2"],
    ["select 1 -- secret 'x' 42\n, 2 /* a /* nested 'y' */ 3 */ + 4", "select $1  \n, $2   + $3"],
    ["update t set a = -5 where b in (1, 2)", "update t set a = -$1 where b in ($2, $3)"],
    ["select interval '1 day', date '2026-01-01'", "select interval $1, date $2"],
    ["select 'unterminated", "select $1"],
    ["", ""],
  ];
  for (const [sql, want] of cases) assert.equal(shapeOf(sql).text, want, sql);
  assert.equal(shapeOf("select 1, 'a', $$b$$").constants, 3);
});

test("statements are classified by PostgreSQL's parser, pgaudit's classes", () => {
  const cases: Array<[string, string]> = [
    ["select 1", "SelectStmt:READ"],
    ["select * into t2 from t", "SelectStmt:DDL"],
    ["with x as (delete from t returning *) select * from x", "SelectStmt:WRITE"],
    ["insert into t values (1)", "InsertStmt:WRITE"],
    ["update t set a = 1", "UpdateStmt:WRITE"],
    ["delete from t", "DeleteStmt:WRITE"],
    ["truncate t", "TruncateStmt:WRITE"],
    ["copy t from stdin", "CopyStmt:WRITE"],
    ["copy t to stdout", "CopyStmt:READ"],
    ["explain select 1", "ExplainStmt:READ"],
    ["explain analyze delete from t", "ExplainStmt:WRITE"],
    ["prepare p as update t set a = $1", "PrepareStmt:WRITE"],
    ["do $$ begin perform 1; end $$", "DoStmt:FUNCTION"],
    ["call p()", "CallStmt:FUNCTION"],
    ["create table t (a int)", "CreateStmt:DDL"],
    ["alter table t add column b int", "AlterTableStmt:DDL"],
    ["drop table t", "DropStmt:DDL"],
    ["create index on t (a)", "IndexStmt:DDL"],
    ["create view v as select 1", "ViewStmt:DDL"],
    ["create function f() returns int language sql as 'select 1'", "CreateFunctionStmt:DDL"],
    ["comment on table t is 'x'", "CommentStmt:DDL"],
    ["create role r", "CreateRoleStmt:ROLE"],
    ["alter role r nologin", "AlterRoleStmt:ROLE"],
    ["drop role r", "DropRoleStmt:ROLE"],
    ["grant select on t to r", "GrantStmt:ROLE"],
    ["revoke r from s", "GrantRoleStmt:ROLE"],
    ["alter default privileges grant select on tables to r", "AlterDefaultPrivilegesStmt:ROLE"],
    ["begin", "TransactionStmt:MISC"],
    ["set work_mem = '8MB'", "VariableSetStmt:MISC"],
    ["vacuum t", "VacuumStmt:MISC"],
  ];
  for (const [sql, want] of cases) {
    const c = classifier.classify(sql);
    assert.equal(c.parseError, null, sql);
    assert.equal(c.statements.map((s) => `${s.kind}:${s.class}`).join(","), want, sql);
  }
  const multi = classifier.classify("begin; insert into t values (1); create table u (a int); commit");
  assert.deepEqual(multi.statements.map((s) => s.class), ["MISC", "WRITE", "DDL", "MISC"]);
  const bad = classifier.classify("selec 1 from");
  assert.equal(bad.statements.length, 0);
  assert.match(bad.parseError ?? "", /syntax error/);
});

test("levels decide what is recorded, and how", () => {
  const read = "select * from t where secret_col = 'v1'";
  const ddl = "create table t (a int default 42)";
  const write = "insert into t values ('v2')";
  const fn = "do $$ begin perform 1; end $$";
  const broken = "selec 'v3'";
  const logs = (level: AuditLevel, sql: string) => decide(level, sql, classifier.classify(sql)).log;
  for (const level of ["OFF", "LOGINS-ONLY"] as const) for (const s of [read, ddl, write, fn, broken]) assert.equal(logs(level, s), false, `${level} ${s}`);
  assert.deepEqual([read, ddl, write, fn].map((s) => logs("ADMIN-ONLY", s)), [false, true, false, false]);
  assert.deepEqual([read, ddl, write, fn].map((s) => logs("WRITES-ONLY", s)), [false, true, true, true]);
  assert.deepEqual([read, ddl, write, fn].map((s) => logs("ALL-QUERIES", s)), [true, true, true, true]);
  assert.equal(logs("ALL-QUERIES", broken), false, "parse failures only at the INCLUDING-PARSE-FAILS levels");
  assert.equal(logs("ALL-QUERIES-INCLUDING-PARSE-FAILS", broken), true);
  assert.equal(logs("ADMIN-ONLY-INCLUDING-PARSE-FAILS", broken), true);
  // Below PLAINTEXT no constant reaches the text; at PLAINTEXT the text is as sent.
  assert.equal(decide("ALL-QUERIES", read, classifier.classify(read)).text, "select * from t where secret_col = $1");
  assert.equal(decide("ALL-QUERIES-INCLUDING-PARSE-FAILS", broken, classifier.classify(broken)).text, "selec $1");
  const plain = decide("ALL-QUERIES-PLAINTEXT", read, classifier.classify(read));
  assert.equal(plain.text, read);
  assert.equal(plain.plaintext, true);
  assert.equal(decide("ALL-RESULTS", read, classifier.classify(read)).results, true);
  assert.equal(decide("ALL-QUERIES", read, classifier.classify(read)).results, false);
});

test("a password never reaches the text, at any level", () => {
  const secrets = [
    "CREATE ROLE app LOGIN PASSWORD 'hunter2-secret'",
    "alter user app with password 'hunter2-secret'",
    "ALTER ROLE app PASSWORD 'hunter2-secret' VALID UNTIL 'infinity'",
    "create user mapping for app server s options (user 'u', password 'hunter2-secret')",
    "CREAT ROLE app PASSWORD 'hunter2-secret'", // a parse failure
  ];
  for (const sql of secrets) {
    for (const level of AUDIT_LEVELS) {
      const d = decide(level, sql, classifier.classify(sql));
      assert.ok(!d.text.includes("hunter2-secret"), `${level}: ${sql} → ${d.text}`);
    }
  }
});

test("huge texts are cut with a marker on a character boundary", () => {
  assert.equal(truncate("abc", 10), "abc");
  const t = truncate("é".repeat(100), 11);
  assert.match(t, /^é{5}…\[truncated 190 bytes\]$/);
  const big = `select ${"1, ".repeat(50_000)}1`;
  const d = decide("ALL-QUERIES", big, classifier.classify(big), 1024);
  assert.ok(Buffer.byteLength(d.text) < 1100);
  assert.match(d.text, /…\[truncated \d+ bytes\]$/);
});

test("fuzz: no input makes the lexer or the classifier throw, and constants never survive in a shape", () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 200 }), (s) => {
      shapeOf(s);
      const c = classifier.classify(s);
      assert.ok(Array.isArray(c.statements));
    }),
    { numRuns: 3000 },
  );
  const word = fc.stringMatching(/^[a-z]{3,12}$/);
  fc.assert(
    fc.property(fc.integer({ min: 100_000, max: 2 ** 31 }), fc.string({ minLength: 6, maxLength: 30 }).filter((v) => /^[A-Za-z0-9 !#%&()*+,./:;<=>?@^_`{|}~-]+$/.test(v) && /[A-Za-z]{3}/.test(v)), word, (n, v, col) => {
      const expected = `select ${col} from t where a = $1 and b = $2 and c = $3`;
      // A value that is itself part of the statement's text (a column named like it) proves nothing either way.
      fc.pre(!expected.includes(v));
      const sql = `select ${col} from t where a = ${n} and b = '${v.replace(/'/g, "''")}' and c = $$${v}$$`;
      const shape = shapeOf(sql).text;
      assert.ok(!shape.includes(String(n)), shape);
      assert.ok(!shape.includes(v), shape);
      assert.equal(shape, expected);
    }),
    { numRuns: 2000 },
  );
});

test("the shape of an ASCII text made from its bytes is shapeOf's, and other texts are left to shapeOf", () => {
  // Texts built from the pieces the lexer tells apart, run together in any order: every rule meets every other.
  const piece = fc.constantFrom(
    " ", "\n", "--c", "/*", "*/", "/* a /* b */ c */", "'", "''", "'x''y'", "\\", "\"", "\"Q\"\"x\"", "E'", "e'a\\'b'", "B'01'", "x'ff'", "N'n'",
    "U&'d'", "u&\"i\"", "U&", "0", "1", "42", "1.5", ".5", "1..2", "1e10", "2E+3", "3e-", "4e", "0x1F", "0o7", "0b1", "0x", "1_000", "_a", "a1",
    "select", "from", "t", "=", ",", ";", "(", ")", "::", "-", "+", ".", "E", "x", "n", "b",
  );
  fc.assert(
    fc.property(fc.array(piece, { maxLength: 30 }), (pieces) => {
      const text = pieces.join("");
      const body = Buffer.from(`${text}\0`);
      assert.equal(shapeOfAscii(body, 0, body.length - 1), shapeOf(text).text, text);
    }),
    { numRuns: 20_000 },
  );
  fc.assert(
    fc.property(fc.string({ maxLength: 60, unit: fc.constantFrom(..."ab1.'\"-/*eEx$\u00e9 ") }), (text) => {
      const bytes = Buffer.from(text);
      const shape = shapeOfAscii(bytes, 0, bytes.length);
      if (/[$\u0080-\uffff]/.test(text)) assert.equal(shape, null, text);
      else assert.equal(shape, shapeOf(text).text, text);
    }),
    { numRuns: 10_000 },
  );
  const long = Buffer.from(`select ${"1,".repeat(9000)}1`);
  assert.equal(shapeOfAscii(long, 0, long.length), null, "texts longer than any cached shape take the general path");
  // The bytes of a message body: the text ends where the caller says, not at the end of the buffer.
  const q = Buffer.from("select 1 /* c */ , 'a' from t\0trailing");
  assert.equal(shapeOfAscii(q, 0, q.indexOf(0)), "select $1   , $2 from t");
});

test("classifying a text's bytes gives what classifying the text gives, and parses a shape once", async () => {
  const cl = await StatementClassifier.create();
  const texts = ["select abalance from pgbench_accounts where aid = 17", "select abalance from pgbench_accounts where aid = 99", "insert into t values ('é', $1)", "create role r password 'p'", "selec 1"];
  for (const t of texts) {
    const b = Buffer.from(`${t}\0`);
    assert.deepEqual(cl.classifyBytes(b, 0, b.length - 1), classifier.classify(t), t);
  }
  assert.equal(cl.stats.parses, 4, "the second pgbench text is the first one's shape");
  assert.equal(cl.stats.hits, 1);
});

test("texts that differ only in constants are parsed once (the cache is keyed by shape)", async () => {
  const fresh = await StatementClassifier.create({ maxEntries: 100 });
  for (let i = 0; i < 2000; i++) fresh.classify(`select abalance from pgbench_accounts where aid = ${i}`);
  assert.deepEqual(fresh.stats, { hits: 1999, parses: 1 });
  for (let i = 0; i < 150; i++) fresh.classify(`select c${i} from t${i}`);
  assert.equal(fresh.stats.parses, 151, "a new shape is parsed");
  fresh.classify("select abalance from pgbench_accounts where aid = 7");
  assert.equal(fresh.stats.parses, 152, "the bounded cache was cleared when full");
  // A shape over 16 KB is never cached; the cache also holds at most maxBytes of shapes.
  const big = `select ${"a + ".repeat(5000)}1`;
  fresh.classify(big);
  fresh.classify(big);
  assert.equal(fresh.stats.parses, 154, "a huge statement is parsed each time");
  const small = await StatementClassifier.create({ maxBytes: 100 });
  small.classify("select a_rather_long_column_name_number_one from some_table_with_a_long_name");
  small.classify("select a_rather_long_column_name_number_two from some_table_with_a_long_name");
  small.classify("select a_rather_long_column_name_number_one from some_table_with_a_long_name");
  assert.equal(small.stats.parses, 3, "the byte bound evicted the first shape");
});
