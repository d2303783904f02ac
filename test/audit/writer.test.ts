import { test, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { sql } from "kysely";
import { startTestStore } from "../support/pg.js";
import { openDb } from "../../src/store/db.js";
import { createAuditLog, StoreAuditLog, chainHash, GENESIS_HASH } from "../../src/audit/index.js";
import { fieldsFromRow } from "../../src/audit/chain.js";
import { ev, captureLogger, silentLogger, ORG_A } from "./helpers.js";

let store: Awaited<ReturnType<typeof startTestStore>>;

before(async () => {
  store = await startTestStore();
});
after(async () => {
  await store?.stop();
});
beforeEach(async () => {
  await sql`truncate audit_log`.execute(store.db);
});

async function seqs(): Promise<string[]> {
  const rows = await store.db.selectFrom("audit_log").select("seq").orderBy("seq").execute();
  return rows.map((r) => String(r.seq));
}

function range(n: number): string[] {
  return Array.from({ length: n }, (_, i) => String(i + 1));
}

test("records land with consecutive seqs from 1 and a valid chain", async () => {
  const audit = createAuditLog({ db: store.db, logger: silentLogger() });
  for (let i = 0; i < 5; i++) assert.equal(await audit.record(ev({ reason: `r${i}` })), true);
  const rows = await store.db.selectFrom("audit_log").selectAll().orderBy("seq").execute();
  assert.deepEqual(rows.map((r) => String(r.seq)), range(5));
  assert.deepEqual(rows.map((r) => r.reason), ["r0", "r1", "r2", "r3", "r4"]);
  let prev = GENESIS_HASH;
  for (const r of rows) {
    assert.deepEqual(r.prev_hash, prev);
    assert.deepEqual(r.hash, chainHash(prev, fieldsFromRow(r)));
    prev = r.hash;
  }
  const v = await audit.verify();
  assert.deepEqual(v, { ok: true, checked: 5, headSeq: "5", headHash: prev.toString("hex"), problems: [], truncated: false });
  await audit.close();
});

test("the stored record keeps every field of the event", async () => {
  const t = new Date("2024-05-01T12:00:00.123Z");
  const audit = new StoreAuditLog({ db: store.db, logger: silentLogger(), clock: () => t });
  const e = ev({ type: "ApiKeyCreate", source: "API", result: "DENIED", resource: { type: "ApiKey", id: "k1" }, attributes: { role: "Admin", nested: { a: [1, "x"] } } });
  assert.equal(await audit.record(e), true);
  const r = await store.db.selectFrom("audit_log").selectAll().executeTakeFirstOrThrow();
  assert.equal(r.created_at.toISOString(), t.toISOString());
  assert.equal(r.type, "ApiKeyCreate");
  assert.equal(r.source, "API");
  assert.equal(r.result, "DENIED");
  assert.equal(r.org_id, ORG_A);
  assert.equal(r.actor_type, "user");
  assert.equal(r.actor_id, e.actor.id);
  assert.equal(r.actor_email, "ada@example.com");
  assert.equal(r.resource_type, "ApiKey");
  assert.equal(r.resource_id, "k1");
  assert.equal(r.source_ip, "192.0.2.7");
  assert.equal(r.request_id, e.requestId);
  assert.deepEqual(r.attributes, { role: "Admin", nested: { a: [1, "x"] } });
  await audit.close();
});

test("2,000 concurrent record() calls all resolve true, in one gap-free chain", async () => {
  const audit = createAuditLog({ db: store.db, logger: silentLogger() });
  const results = await Promise.all(Array.from({ length: 2000 }, (_, i) => audit.record(ev({ reason: `c${i}` }))));
  assert.equal(results.filter((x) => x === true).length, 2000);
  assert.deepEqual(await seqs(), range(2000));
  // Queue order is seq order.
  const first = await store.db.selectFrom("audit_log").select("reason").where("seq", "=", "1").executeTakeFirstOrThrow();
  const last = await store.db.selectFrom("audit_log").select("reason").where("seq", "=", "2000").executeTakeFirstOrThrow();
  assert.equal(first.reason, "c0");
  assert.equal(last.reason, "c1999");
  const v = await audit.verify();
  assert.equal(v.ok, true);
  assert.equal(v.checked, 2000);
  assert.equal(v.headSeq, "2000");
  await audit.close();
});

test("two writers on separate pools (two processes) keep one valid chain", async () => {
  const a = openDb({ connectionString: store.pg.connectionString, max: 3 });
  const b = openDb({ connectionString: store.pg.connectionString, max: 3 });
  try {
    const wa = createAuditLog({ db: a.db, logger: silentLogger(), maxBatch: 50 });
    const wb = createAuditLog({ db: b.db, logger: silentLogger(), maxBatch: 50 });
    // Several waves so the writers' transactions interleave rather than run one after the other.
    const all: Array<Promise<boolean>> = [];
    for (let wave = 0; wave < 10; wave++) {
      for (let i = 0; i < 60; i++) {
        all.push(wa.record(ev({ reason: `a${wave}.${i}` })));
        all.push(wb.record(ev({ reason: `b${wave}.${i}` })));
      }
      await new Promise((r) => setImmediate(r));
    }
    const results = await Promise.all(all);
    assert.equal(results.every((x) => x), true);
    await Promise.all([wa.close(), wb.close()]);
    assert.deepEqual(await seqs(), range(1200));
    const v = await wa.verify();
    assert.equal(v.ok, true, JSON.stringify(v.problems));
    assert.equal(v.checked, 1200);
    // Both writers really took part.
    const n = await sql<{ a: number; b: number }>`select count(*) filter (where reason like 'a%')::int as a, count(*) filter (where reason like 'b%')::int as b from audit_log`.execute(store.db);
    assert.deepEqual(n.rows[0], { a: 600, b: 600 });
    // ...and their batches interleave in the chain rather than running one after the other.
    const order = await store.db.selectFrom("audit_log").select("reason").orderBy("seq").execute();
    let switches = 0;
    for (let i = 1; i < order.length; i++) if (order[i]!.reason[0] !== order[i - 1]!.reason[0]) switches++;
    assert.ok(switches >= 3, `only ${switches} switches between writers`);
  } finally {
    await a.db.destroy();
    await b.db.destroy();
  }
});

test("attacker-controlled text with NUL and lone surrogates still lands and verifies", async () => {
  const audit = createAuditLog({ db: store.db, logger: silentLogger() });
  const ok = await audit.record(ev({ type: "AuthFailure", result: "DENIED", actor: { type: "anonymous", email: "x\u0000@evil\ud800" }, reason: "bad password", attributes: { ua: "curl\u0000\udfff", "k\u0000": 1 } }));
  assert.equal(ok, true);
  const r = await store.db.selectFrom("audit_log").selectAll().executeTakeFirstOrThrow();
  assert.equal(r.actor_email, "x\ufffd@evil\ufffd");
  assert.deepEqual(r.attributes, { ua: "curl\ufffd\ufffd", "k\ufffd": 1 });
  assert.equal((await audit.verify()).ok, true);
  await audit.close();
});

test("a record that breaks the contract resolves false and does not sink its batch", async () => {
  const { logger, lines } = captureLogger();
  const audit = createAuditLog({ db: store.db, logger });
  const results = await Promise.all([
    audit.record(ev({ reason: "good1" })),
    audit.record(ev({ actor: { type: "user", id: "not-a-uuid" }, attributes: { secretMarker: "s3cr3t-attr" } })),
    audit.record(ev({ reason: "good2" })),
  ]);
  assert.deepEqual(results, [true, false, true]);
  assert.deepEqual(await seqs(), ["1", "2"]);
  const log = lines.join("");
  assert.match(log, /audit event rejected/);
  assert.match(log, /actor\.id/);
  assert.doesNotMatch(log, /s3cr3t-attr/);
  await audit.close();
});

test("a row the store refuses is isolated: its batch neighbours still land", async () => {
  // Year -271821 is outside timestamptz's range: PostgreSQL rejects that one row (SQLSTATE 22008).
  const times = [new Date(), new Date(-8.64e15), new Date()];
  let i = 0;
  const { logger, lines } = captureLogger();
  const audit = createAuditLog({ db: store.db, logger, clock: () => times[Math.min(i++, 2)]! });
  const results = await Promise.all([audit.record(ev({ reason: "n1" })), audit.record(ev({ reason: "bad" })), audit.record(ev({ reason: "n2" })), audit.record(ev({ reason: "n3" }))]);
  assert.deepEqual(results, [true, false, true, true]);
  const rows = await store.db.selectFrom("audit_log").select(["seq", "reason"]).orderBy("seq").execute();
  assert.deepEqual(rows.map((r) => [String(r.seq), r.reason]), [["1", "n1"], ["2", "n2"], ["3", "n3"]]);
  assert.equal((await audit.verify()).ok, true);
  assert.match(lines.join(""), /audit batch could not be written/);
  await audit.close();
});

test("close() flushes what is queued; record() after close resolves false", async () => {
  const audit = createAuditLog({ db: store.db, logger: silentLogger() });
  const pending = Array.from({ length: 300 }, (_, i) => audit.record(ev({ reason: `q${i}` })));
  await audit.close();
  assert.equal((await seqs()).length, 300);
  assert.equal((await Promise.all(pending)).every((x) => x), true);
  assert.equal(await audit.record(ev()), false);
  assert.equal((await seqs()).length, 300);
});

test("store unreachable (pool closed): record() resolves false, never throws, logs no attributes", async () => {
  const { db } = openDb({ connectionString: store.pg.connectionString, max: 2 });
  const { logger, lines } = captureLogger();
  const audit = createAuditLog({ db, logger });
  assert.equal(await audit.record(ev()), true);
  await db.destroy();
  let threw = false;
  let results: boolean[] = [];
  try {
    results = await Promise.all(Array.from({ length: 5 }, () => audit.record(ev({ attributes: { secretMarker: "s3cr3t-attr" } }))));
  } catch {
    threw = true;
  }
  assert.equal(threw, false);
  assert.deepEqual(results, [false, false, false, false, false]);
  const log = lines.join("");
  assert.match(log, /audit batch could not be written/);
  assert.doesNotMatch(log, /s3cr3t-attr/);
  assert.deepEqual(await seqs(), ["1"]);
  await audit.close();
});

test("a throwing clock or logger cannot make record() throw or hang", async () => {
  const throwing = { warn: () => { throw new Error("log down"); }, error: () => { throw new Error("log down"); } } as unknown as ReturnType<typeof silentLogger>;
  const badClock = createAuditLog({ db: store.db, logger: throwing, clock: () => { throw new Error("clock down"); } });
  assert.equal(await badClock.record(ev()), false);
  const { db, pool } = openDb({ connectionString: store.pg.connectionString, max: 1 });
  await pool.end();
  const deadStore = createAuditLog({ db, logger: throwing });
  assert.deepEqual(await Promise.all([deadStore.record(ev()), deadStore.record(ev())]), [false, false]);
  assert.deepEqual(await seqs(), []);
});

test("a writer picks up the chain head another writer left", async () => {
  const w1 = createAuditLog({ db: store.db, logger: silentLogger() });
  assert.equal(await w1.record(ev()), true);
  await w1.close();
  const w2 = createAuditLog({ db: store.db, logger: silentLogger() });
  assert.equal(await w2.record(ev()), true);
  const rows = await store.db.selectFrom("audit_log").select(["seq", "prev_hash", "hash"]).orderBy("seq").execute();
  assert.deepEqual(rows[1]?.prev_hash, rows[0]?.hash);
  assert.equal((await w2.verify()).ok, true);
  await w2.close();
});

test("constructor checks its options", () => {
  assert.throws(() => new StoreAuditLog({ db: store.db, logger: silentLogger(), maxBatch: 0 }), TypeError);
  assert.throws(() => new StoreAuditLog({ db: store.db, logger: silentLogger(), maxBatch: 1001 }), TypeError);
  assert.throws(() => new StoreAuditLog({ db: undefined as never, logger: silentLogger() }), TypeError);
  assert.throws(() => new StoreAuditLog({ db: store.db, logger: silentLogger(), lingerMs: -1 }), TypeError);
  assert.throws(() => new StoreAuditLog({ db: store.db, logger: silentLogger(), lingerMs: Number.NaN }), TypeError);
});

test("under a steady stream, records gather for the linger time: one INSERT per interval, not one per record", async () => {
  const w = new StoreAuditLog({ db: store.db, logger: silentLogger(), lingerMs: 200 });
  const before = await seqs();
  assert.equal(await w.record(ev()), true, "after a quiet spell the first record is written at once");
  const started = Date.now();
  // Five records, one every 20 ms: all arrive within the next interval and go in one batch.
  const pending: Promise<boolean>[] = [];
  for (let i = 0; i < 5; i++) {
    pending.push(w.record(ev()));
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.deepEqual(await Promise.all(pending), [true, true, true, true, true]);
  assert.ok(Date.now() - started >= 150, "they waited for the interval");
  const rows = await store.db.selectFrom("audit_log").select(["seq", "xmin" as never]).where("seq", ">", String(before.at(-1) ?? 0) as never).orderBy("seq").execute();
  const txids = new Set(rows.slice(1).map((r: any) => r.xmin));
  assert.equal(rows.length, 6);
  assert.equal(txids.size, 1, "the five later records were written by one INSERT");
  assert.equal((await w.verify()).ok, true);
  await w.close();
});
