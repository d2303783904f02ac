import { test, before } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { StatementClassifier, decide, type AuditLevel } from "../../src/audit/sql/classify.js";
import { directFields, streamRecordJson } from "../../src/audit/stream/pipeline.js";
import { inScope } from "../../src/audit/stream/pipeline.js";
import { StatementRecordEncoder, statementEvent, type StatementSession } from "../../src/gateway/statementRecord.js";
import type { StatementRecord } from "../../src/gateway/statements.js";

let classifier: StatementClassifier;
before(async () => {
  classifier = await StatementClassifier.create();
});

function record(level: AuditLevel, text: string, over: Partial<StatementRecord> = {}): StatementRecord {
  const c = classifier.classify(text);
  return {
    protocol: "simple", classification: c, decision: decide(level, text, c), outcome: "completed", results: [{ command: "SELECT", rows: 1 }], moreResults: 0,
    rows: 1, sqlstate: null, errorMessage: null, durationMs: 0.123, notExecuted: 0, ...over,
  };
}

const session = (over: Partial<StatementSession> = {}): StatementSession => ({
  orgId: randomUUID().toUpperCase(), workspaceId: randomUUID(), groupId: randomUUID(), database: "app", user: "alice", peer: "127.0.0.1", sessionId: randomUUID(), ...over,
});

/** The general path's bytes for the same record (the event the audit log would take, as the streams serialize it), with the encoder's id and time. */
function general(s: StatementSession, r: StatementRecord, now: number, id: string): string {
  const f = directFields(statementEvent(s, r), now);
  assert.ok(f, "the general path takes the event");
  return streamRecordJson({ ...f, id });
}

test("the statement record encoder writes the general path's bytes, for every shape of record", () => {
  const now = Date.UTC(2026, 10, 28, 6, 30, 0, 7);
  const cases: Array<[StatementSession, StatementRecord]> = [
    [session(), record("ALL-QUERIES", "SELECT abalance FROM pgbench_accounts WHERE aid = 4242")],
    [session({ peer: undefined }), record("ALL-QUERIES-PLAINTEXT", "SELECT 'it''s \"quoted\" \\ and ünïcödé ✓'")],
    [session({ extra: { platformPrincipalID: randomUUID(), platformEmail: "bob@example.test" } }), record("WRITES-ONLY", "INSERT INTO t VALUES (1); UPDATE t SET a = 2", { protocol: "extended" })],
    [session({ user: "we\"ird\u0001i\u0001e user", database: "d\nb" }), record("ALL-QUERIES", "DELETE FROM t", { outcome: "failed", sqlstate: "23503", rows: null, durationMs: null, errorMessage: "violates \"fk\"", results: [{ command: null, rows: null, sqlstate: "23503" }], notExecuted: 2 })],
    [session(), record("ALL-QUERIES-INCLUDING-PARSE-FAILS", "SELEC oops")],
    [session(), record("ALL-RESULTS", "SELECT 1 AS one", { results: [{ command: "SELECT", rows: 1, columns: [{ name: "one", typeOid: 23 }] }], moreResults: 3 })],
    [session(), record("ALL-QUERIES", "SELECT 1", { outcome: "interrupted", results: [], rows: null, durationMs: null })],
  ];
  // Each again with another outcome (the same classification), and all of them twice: the encoder keeps a
  // classification's reason per outcome and its shape's JSON, and a second record must not take the first's.
  const again = cases.map(([s, r]): [StatementSession, StatementRecord] => [s, { ...r, outcome: r.outcome === "interrupted" ? "completed" : "interrupted", sqlstate: null }]);
  for (const [s, r] of [...cases, ...again, ...cases, ...again]) {
    const enc = new StatementRecordEncoder(s).encode(r, now);
    const id = (JSON.parse(enc.json) as { auditID: string }).auditID;
    assert.equal(enc.json, general(s, r, now, id), `${r.decision.text}`);
    // The scope fields the pipeline reads.
    assert.ok(inScope({ orgId: s.orgId.toLowerCase(), groupId: s.groupId }, enc.scope));
    assert.ok(!inScope({ orgId: s.orgId.toLowerCase(), groupId: randomUUID() }, enc.scope));
    assert.ok(!inScope({ orgId: randomUUID(), groupId: null }, enc.scope));
  }
});

test("each encoded record has its own id and the time it was encoded", () => {
  const enc = new StatementRecordEncoder(session());
  const r = record("ALL-QUERIES", "SELECT 1");
  const a = JSON.parse(enc.encode(r, Date.UTC(2026, 0, 1)).json) as { auditID: string; createdAt: string; attributes: { statement: string } };
  const b = JSON.parse(enc.encode(r, Date.UTC(2026, 0, 2, 3, 4, 5, 6)).json) as { auditID: string; createdAt: string };
  assert.notEqual(a.auditID, b.auditID);
  assert.equal(a.createdAt, "2026-01-01T00:00:00.000Z");
  assert.equal(b.createdAt, "2026-01-02T03:04:05.006Z");
  assert.equal(a.attributes.statement, "SELECT $1");
});

test("a deferred record is serialized when asked, with the time the statement ended and the encoder's bytes", () => {
  const s = session();
  const enc = new StatementRecordEncoder(s);
  const r = record("ALL-QUERIES", "SELECT abalance FROM pgbench_accounts WHERE aid = 7");
  const ended = Date.UTC(2026, 10, 28, 13, 0, 0, 1);
  const d = enc.defer(r, ended);
  assert.equal(d.scope, enc.scope, "placed in sinks' scopes as the session's records");
  const json = d.json(); // later than `ended`: the pipeline serializes at its next flush
  const parsed = JSON.parse(json) as { auditID: string; createdAt: string };
  assert.equal(parsed.createdAt, "2026-11-28T13:00:00.001Z", "the time the statement ended, not the time of serialization");
  assert.equal(json, general(s, r, ended, parsed.auditID));
});
