import { test, before } from "node:test";
import assert from "node:assert/strict";
import { serialize } from "pg-protocol";
import { StatementClassifier } from "../../src/audit/sql/classify.js";
import { SessionStatements, type StatementRecord } from "../../src/gateway/statements.js";

let classifier: StatementClassifier;
before(async () => {
  classifier = await StatementClassifier.create();
});

/** Feeds whole client messages (as pg writes them) to a session's statement tracker. */
function feed(s: SessionStatements, ...messages: Buffer[]): void {
  for (const m of messages) s.onMessage(m[0]!, m.subarray(5));
}

function tracker(level: "ADMIN-ONLY" | "ALL-QUERIES"): { s: SessionStatements; got: StatementRecord[] } {
  const got: StatementRecord[] = [];
  return { s: new SessionStatements({ level, classifier, record: (r) => got.push(r) }), got };
}

test("the extended protocol: named and unnamed statements are recorded when executed, with their $n text", () => {
  const { s, got } = tracker("ALL-QUERIES");
  feed(s, serialize.parse({ name: "ins", text: "insert into t values ($1, 'lit')" }), serialize.parse({ text: "select $1::int" }));
  assert.equal(got.length, 0, "parsing executes nothing");
  feed(s, serialize.bind({ statement: "ins", portal: "p1", values: ["secret-value"] }), serialize.execute({ portal: "p1" }), serialize.bind({ values: ["7"] }), serialize.execute({}));
  assert.deepEqual(got.map((r) => [r.protocol, r.decision.text, r.classification.statements[0]!.class]), [
    ["extended", "insert into t values ($1, $2)", "WRITE"],
    ["extended", "select $1::int", "READ"],
  ]);
  assert.ok(!JSON.stringify(got).includes("secret-value"));
  feed(s, serialize.close({ type: "S", name: "ins" }), serialize.bind({ statement: "ins", portal: "p2", values: [] }), serialize.execute({ portal: "p2" }));
  assert.equal(got.length, 2, "a closed statement is forgotten (the server refuses its Bind anyway)");
});

test("ADMIN-ONLY records only DDL and role statements, whatever the protocol", () => {
  const { s, got } = tracker("ADMIN-ONLY");
  feed(s, serialize.query("select 1; insert into t values (2)"), serialize.query("create table x (a int)"), serialize.parse({ name: "g", text: "grant select on t to r" }), serialize.bind({ statement: "g" }), serialize.execute({}));
  assert.deepEqual(got.map((r) => r.classification.statements.map((x) => x.kind).join("+")), ["CreateStmt", "GrantStmt"]);
});

test("a session's statements cost bounded memory: past 256, the oldest are forgotten but an Execute of one is still recorded", () => {
  const { s, got } = tracker("ADMIN-ONLY");
  for (let i = 0; i < 300; i++) feed(s, serialize.parse({ name: `s${i}`, text: `select ${i} from t${i}` }));
  feed(s, serialize.bind({ statement: "s0", portal: "a" }), serialize.execute({ portal: "a" }));
  assert.equal(got.length, 1, "an unknown statement is recorded even at ADMIN-ONLY");
  assert.match(got[0]!.decision.text, /no longer held/);
  feed(s, serialize.bind({ statement: "s299", portal: "b" }), serialize.execute({ portal: "b" }));
  assert.equal(got.length, 1, "a statement still held is recorded by its class (a read: not at ADMIN-ONLY)");
  for (let i = 0; i < 1000; i++) feed(s, serialize.bind({ statement: "s299", portal: `portal-${i}` }));
  assert.equal((s as unknown as { portals: Map<string, string> }).portals.size, 256, "portals are bounded too");
  // A long statement name is no way around the audit.
  const admin = tracker("ADMIN-ONLY");
  const longName = "n".repeat(5000);
  feed(admin.s, serialize.parse({ name: longName, text: "drop table t" }), serialize.bind({ statement: longName, portal: longName }), serialize.execute({ portal: longName }));
  assert.deepEqual(admin.got.map((r) => r.classification.statements[0]!.kind), ["DropStmt"]);
  const huge = `select '${"x".repeat(100_000)}'`;
  const all = tracker("ALL-QUERIES");
  feed(all.s, serialize.parse({ name: "h", text: huge }), serialize.bind({ statement: "h" }), serialize.execute({}));
  assert.ok(Buffer.byteLength(all.got[0]!.decision.text) < 17_000, "texts are kept cut");
});

test("garbage message bodies are ignored, never thrown", () => {
  const { s, got } = tracker("ALL-QUERIES");
  for (const type of [0x51, 0x50, 0x42, 0x45, 0x43]) {
    for (const body of [Buffer.alloc(0), Buffer.from([0xff, 0xfe]), Buffer.from("no terminator"), Buffer.from([0, 0, 0])]) s.onMessage(type, body);
  }
  assert.ok(got.every((r) => typeof r.decision.text === "string"));
});
