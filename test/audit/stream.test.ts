import { test } from "node:test";
import assert from "node:assert/strict";
import { generateKeyPairSync, randomBytes, randomUUID, type KeyObject } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, appendFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkpointLine, GENESIS, recordLine, verifyStream, type StreamHead } from "../../src/audit/stream/format.js";
import { SegmentLog } from "../../src/audit/stream/segments.js";
import { AuditPipeline, DEFAULT_STREAM_SETTINGS, streamRecord, streamRecordJson, type SinkDefinition, type StoreReader } from "../../src/audit/stream/pipeline.js";
import { DeliveryError, type SinkTransport, type StreamBatch } from "../../src/audit/stream/transport.js";
import type { ChainFields } from "../../src/audit/chain.js";
import type { AuditEvent } from "../../src/audit/types.js";
import { until } from "../support/wait.js";
import { captureLogger, ORG_A, ORG_B, silentLogger } from "./helpers.js";

const GROUP = "33333333-3333-4333-8333-333333333333";
const CANARY = `canary-${randomUUID()}`;

function fields(seq: number, over: Partial<ChainFields> = {}): ChainFields {
  return {
    seq: String(seq), id: randomUUID(), orgId: ORG_A, createdAt: new Date(1_800_000_000_000 + seq).toISOString(), type: "DatabaseStatement", source: "Gateway", result: "SUCCESS",
    actorType: "databaseUser", actorId: null, actorEmail: null, resourceType: "workspace", resourceId: randomUUID(), sourceIp: "192.0.2.1", requestId: null,
    reason: `statement ${seq}`, attributes: { workspaceGroupID: GROUP, statement: `select ${CANARY}` }, ...over,
  };
}

function signer(): { keyId: string; privateKey: KeyObject; publicKey: KeyObject } {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return { keyId: `k-${randomUUID().slice(0, 8)}`, privateKey, publicKey };
}

/** A stream of `n` records with a checkpoint after every `every` and one at the end. */
function stream(n: number, every: number, key = signer(), id: string = randomUUID()): { id: string; lines: string[]; key: ReturnType<typeof signer>; head: StreamHead } {
  const lines: string[] = [];
  let head: StreamHead = { seq: 0, hash: GENESIS };
  for (let i = 1; i <= n; i++) {
    const r = recordLine(id, head, new Date(), streamRecord(fields(i)));
    lines.push(r.line);
    head = r.head;
    if (i % every === 0 || i === n) {
      const c = checkpointLine(id, head, new Date(), key, String(i));
      lines.push(c.line);
      head = c.head;
    }
  }
  return { id, lines, key, head };
}

const keysOf = (k: { keyId: string; publicKey: KeyObject }) => new Map([[k.keyId, k.publicKey]]);
const kinds = (r: ReturnType<typeof verifyStream>) => r.problems.map((p) => p.kind);

test("a stream record's JSON is exactly the view's JSON, for records in the store and records only in streams", () => {
  for (const f of [fields(7), fields(8, { seq: "", orgId: null, reason: "quote \" newline \n é \u2028", actorType: "apiKey", actorId: randomUUID(), attributes: { a: [1, { b: null }], u: undefined, n: Number.NaN } })]) {
    assert.equal(streamRecordJson(f), JSON.stringify(streamRecord(f)));
  }
  assert.equal(JSON.parse(streamRecordJson(fields(3, { seq: "" }))).seq, null);
});

test("a whole stream verifies: records, signed checkpoints, the platform's head", () => {
  const s = stream(25, 10);
  const r = verifyStream(s.lines, { keys: keysOf(s.key), head: s.head, fromStart: true });
  assert.equal(r.ok, true, JSON.stringify(r.problems));
  assert.deepEqual([r.records, r.checkpoints, r.firstSeq, r.lastSeq, r.sealedSeq], [25, 3, 1, 28, 28]);
  assert.equal(r.problems.length, 0);
});

test("verify names a changed line, a deleted line, a reordering, an insertion, a forged checkpoint and a truncated tail", () => {
  const s = stream(30, 10);
  // changed: one character of a record
  const changed = [...s.lines];
  changed[4] = changed[4]!.replace("statement 5", "statement 6");
  let r = verifyStream(changed, { keys: keysOf(s.key) });
  assert.equal(r.ok, false);
  assert.deepEqual(r.problems[0]?.kind, "modified");
  assert.equal(r.problems[0]?.line, 5);

  // deleted: line 7 gone
  const deleted = s.lines.filter((_, i) => i !== 6);
  r = verifyStream(deleted, { keys: keysOf(s.key) });
  assert.ok(kinds(r).includes("deleted"), JSON.stringify(r.problems));
  assert.equal(r.problems.find((p) => p.kind === "deleted")?.seq, 7);

  // reordered: lines 3 and 4 swapped
  const swapped = [...s.lines];
  [swapped[2], swapped[3]] = [swapped[3]!, swapped[2]!];
  r = verifyStream(swapped, { keys: keysOf(s.key) });
  assert.equal(r.ok, false);
  assert.ok(kinds(r).includes("reordered") || kinds(r).includes("deleted"), JSON.stringify(r.problems));

  // inserted: a line re-hashed by someone without the signing key, squeezed in as seq 5
  const forgedHead = { seq: 4, hash: JSON.parse(s.lines[3]!).hash as string };
  const forged = recordLine(s.id, forgedHead, new Date(), streamRecord(fields(999))).line;
  const inserted = [...s.lines.slice(0, 4), forged, ...s.lines.slice(4)];
  r = verifyStream(inserted, { keys: keysOf(s.key) });
  assert.ok(kinds(r).includes("inserted"), JSON.stringify(r.problems));

  // A rewritten tail re-hashed and re-checkpointed with another key: the checkpoint does not verify.
  const other = signer();
  const rewritten = stream(30, 10, other, s.id);
  r = verifyStream(rewritten.lines, { keys: keysOf(s.key) });
  assert.ok(kinds(r).includes("unknown-key"));
  const sameKeyId = { ...other, keyId: s.key.keyId };
  r = verifyStream(stream(30, 10, sameKeyId, s.id).lines, { keys: keysOf(s.key) });
  assert.ok(kinds(r).includes("bad-signature"));

  // Tail truncation: the last 8 lines gone. Against the platform's head it is named; without it, the
  // unsealed records are reported (a truncation back to a checkpoint is only visible against the head).
  const cut = s.lines.slice(0, s.lines.length - 8);
  r = verifyStream(cut, { keys: keysOf(s.key), head: s.head });
  assert.equal(r.ok, false);
  assert.ok(kinds(r).includes("truncated"));
  r = verifyStream(cut, { keys: keysOf(s.key) });
  assert.ok(kinds(r).includes("unsealed-tail"));
  assert.equal(r.ok, true, "unsealed records alone are not a failure");

  // A redelivered batch is not a problem; garbage is.
  r = verifyStream([...s.lines.slice(0, 12), ...s.lines.slice(5, 12), ...s.lines.slice(12)], { keys: keysOf(s.key), head: s.head });
  assert.equal(r.ok, true, JSON.stringify(r.problems));
  assert.equal(r.duplicates, 7);
  r = verifyStream(["{not json", ...s.lines], { keys: keysOf(s.key) });
  assert.deepEqual(r.problems[0]?.kind, "malformed");
});

test("segment log: encrypted on disk, reads back in order, survives a torn write, prunes whole segments", async () => {
  const dir = mkdtempSync(join(tmpdir(), "ph-seg-"));
  try {
    const key = randomBytes(32);
    const id = randomUUID();
    const s = stream(200, 50, signer(), id);
    const log = new SegmentLog({ dir, streamId: id, key, maxSegmentBytes: 16 * 1024 });
    assert.equal(log.open(), null);
    for (let i = 0; i < s.lines.length; i += 20) log.append(s.lines.slice(i, i + 20), i + 1, 1000 + i, 1000 + i);
    assert.ok(log.pendingWrites > 0, "written off the event loop");
    await log.flushed();
    assert.equal(log.pendingWrites, 0);
    assert.ok(log.segmentCount > 2, "rotated by size");
    for (const f of readdirSync(dir)) {
      assert.equal(statSync(join(dir, f)).mode & 0o777, 0o600);
      assert.equal(readFileSync(join(dir, f)).includes(CANARY), false, "no plaintext on disk");
    }
    assert.ok([...log.lines()].every((l, i) => l === s.lines[i]), "every line back, in order");
    const b = log.read(37, 30)!;
    assert.equal(b.firstSeq, 37);
    assert.ok(b.lines.length >= 4 && b.lines.length <= 30, `whole frames up to the limit (${b.lines.length})`);
    assert.ok(b.lines.every((l, i) => l === s.lines[36 + i]));
    await log.close();

    // A torn frame at the end (a crash mid-write) is cut off at the next open.
    const last = readdirSync(dir).sort().pop()!;
    appendFileSync(join(dir, last), Buffer.from([0, 0, 1, 0, 9, 9, 9]));
    const again = new SegmentLog({ dir, streamId: id, key, maxSegmentBytes: 16 * 1024 });
    assert.equal(again.open(), s.lines[s.lines.length - 1]);
    again.append(["x"], s.lines.length + 1, 0, 0);
    await again.flushed();
    assert.equal(again.lastSeq, s.lines.length + 1);

    // A changed byte fails authentication; another stream's key does not open it.
    const wrong = new SegmentLog({ dir, streamId: id, key: randomBytes(32) });
    assert.throws(() => wrong.open(), /failed authentication/);

    const before = again.segmentCount;
    assert.ok(again.prune((lastSeq) => lastSeq <= 100) >= 1);
    assert.ok(again.segmentCount < before);
    assert.ok((again.firstSeq ?? 0) <= 101);
    await again.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** An in-memory receiver behind the SinkTransport interface: it can be down, and keeps what it took. */
class Receiver implements SinkTransport {
  received: string[] = [];
  batches = 0;
  down = false;
  fatal = false;
  async deliver(batch: StreamBatch, signal: AbortSignal): Promise<void> {
    if (signal.aborted) throw new DeliveryError("aborted");
    if (this.fatal) throw new DeliveryError("credentials refused", false);
    if (this.down) throw new DeliveryError("connection refused");
    this.batches++;
    for (const l of batch.lines) this.received.push(l);
  }
  async close(): Promise<void> {}
  describe(): string {
    return "memory://receiver";
  }
}

class MemoryStore implements StoreReader {
  rows: ChainFields[] = [];
  async after(orgId: string, after: bigint, limit: number): Promise<ChainFields[]> {
    return this.rows.filter((r) => BigInt(r.seq) > after && (r.orgId === orgId || r.orgId === null)).slice(0, limit);
  }
  async head(): Promise<bigint> {
    return BigInt(this.rows.length);
  }
  commit(n: number, over: Partial<ChainFields> = {}): ChainFields[] {
    const out: ChainFields[] = [];
    for (let i = 0; i < n; i++) out.push(fields(this.rows.length + out.length + 1, over));
    this.rows.push(...out);
    return out;
  }
}

function setup(dir: string, o: { receiver?: Receiver; store?: MemoryStore; events?: AuditEvent[]; logger?: ReturnType<typeof silentLogger> } = {}) {
  const key = signer();
  const store = o.store ?? new MemoryStore();
  const receiver = o.receiver ?? new Receiver();
  const events = o.events ?? [];
  const pipeline = new AuditPipeline({
    dir, store, logger: o.logger ?? silentLogger(), record: (e) => void events.push(e), transport: () => receiver, retryMinMs: 5, retryMaxMs: 40, tickMs: 20,
    signing: { privateKey: async () => ({ kid: key.keyId, key: key.privateKey }), cachedPrivateKey: () => ({ kid: key.keyId, key: key.privateKey }) },
  });
  return { pipeline, store, receiver, events, key };
}

function sink(over: Partial<SinkDefinition> = {}): SinkDefinition {
  return {
    id: randomUUID(), orgId: ORG_A, groupId: null, name: "s", kind: "webhook", failMode: "open", enabled: true,
    settings: { ...DEFAULT_STREAM_SETTINGS, checkpointEvery: 50, checkpointSeconds: 1 }, config: {}, secrets: {}, fileKey: randomBytes(32), ...over,
  };
}


test("pipeline: every record reaches a sink that was down, in order, once the sink returns; a restart catches up from the store", async () => {
  const dir = mkdtempSync(join(tmpdir(), "ph-pipe-"));
  try {
    const t = setup(dir);
    const def = sink();
    t.store.commit(5); // before the sink: not in its stream
    await t.pipeline.start([def]);
    t.pipeline.publish(t.store.commit(100));
    await until("delivery", () => t.receiver.received.filter((l) => l.includes(`"kind":"record"`)).length === 100);
    t.receiver.down = true;
    for (let i = 0; i < 30; i++) t.pipeline.publish(t.store.commit(10));
    t.pipeline.publish(t.store.commit(3, { orgId: ORG_B })); // another organization's: never in this stream
    await until("the sink is seen down", () => t.pipeline.status(def.id)?.state === "down");
    assert.ok(t.events.some((e) => e.type === "AuditSinkDown"));
    assert.ok((t.pipeline.status(def.id)?.pending ?? 0) >= 300);
    t.receiver.down = false;
    await until("recovery", () => t.pipeline.status(def.id)?.pending === 0 && t.pipeline.status(def.id)?.state === "up");
    assert.ok(t.events.some((e) => e.type === "AuditSinkRecovered"));

    // Stop; records committed while parhelion is down; a new pipeline on the same directory catches up.
    await t.pipeline.stop();
    t.store.commit(40);
    const t2 = setup(dir, { store: t.store, receiver: t.receiver });
    await t2.pipeline.start([{ ...def, fileKey: def.fileKey }]);
    await until("catch-up", () => t2.pipeline.status(def.id)?.pending === 0 && t.receiver.received.some((l) => l.includes(`"seq":"448"`)));
    await t2.pipeline.stop(); // seals the tail with a last checkpoint
    const head = { seq: JSON.parse(t.receiver.received[t.receiver.received.length - 1]!).seq as number, hash: JSON.parse(t.receiver.received[t.receiver.received.length - 1]!).hash as string };

    const storeSeqs = t.receiver.received.filter((l) => l.includes(`"kind":"record"`)).map((l) => Number((JSON.parse(l) as { record: { seq: string } }).record.seq));
    const unique = [...new Set(storeSeqs)];
    const expected = t.store.rows.filter((r) => r.orgId === ORG_A && Number(r.seq) > 5).map((r) => Number(r.seq));
    assert.deepEqual(unique, expected, "every record of the organization after the sink started, in order, none lost");
    const v = verifyStream(t.receiver.received, { keys: keysOf(t.key), fromStart: true, head });
    assert.equal(v.ok, true, JSON.stringify(v.problems.slice(0, 3)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("pipeline: a full spool drops records for that sink (alerted at 80 %, audited when it drains); failMode closed blocks the scope while that sink cannot record", async () => {
  const dir = mkdtempSync(join(tmpdir(), "ph-pipe-"));
  try {
    const t = setup(dir);
    const closed = sink({ failMode: "closed", groupId: GROUP, settings: { ...DEFAULT_STREAM_SETTINGS, maxBytes: 64 * 1024, checkpointEvery: 1000, checkpointSeconds: 3600 } });
    await t.pipeline.start([closed]);
    assert.equal(t.pipeline.isBlocked(ORG_A, GROUP), false);
    t.receiver.down = true;
    for (let i = 0; i < 40 && t.pipeline.status(closed.id)?.alerts.includes("spool-full") !== true; i++) t.pipeline.publish(t.store.commit(20));
    await until("down", () => t.pipeline.status(closed.id)?.state === "down");
    const st = t.pipeline.status(closed.id)!;
    assert.ok(st.alerts.includes("spool-high-water"), JSON.stringify(st));
    assert.ok(st.alerts.includes("spool-full"));
    assert.ok(st.dropped > 0);
    assert.ok(st.diskBytes <= 64 * 1024 + 32 * 1024, `the spool stays near its bound (${st.diskBytes})`);
    assert.ok(t.events.some((e) => e.type === "AuditSinkSpoolHighWater"));
    assert.equal(t.pipeline.isBlocked(ORG_A, GROUP), true, "closed: refuses while nothing can record");
    assert.equal(t.pipeline.isBlocked(ORG_A, "44444444-4444-4444-8444-444444444444"), false, "another group is not in the sink's scope");
    assert.equal(t.pipeline.isBlocked(ORG_B, GROUP), false);

    // Another sink that records does not lift it: a closed sink is required.
    const open = sink({ kind: "file" });
    await t.pipeline.add(open);
    assert.equal(t.pipeline.isBlocked(ORG_A, GROUP), true);
    await t.pipeline.remove(open.id, true);

    t.receiver.down = false;
    await until("drained", () => t.pipeline.status(closed.id)?.pending === 0);
    t.pipeline.publish(t.store.commit(1));
    await until("unblocked", () => !t.pipeline.isBlocked(ORG_A, GROUP));
    assert.ok(t.events.some((e) => e.type === "AuditSinkRecordsDropped" && typeof e.attributes?.fromStoreSeq === "string"));
    // The gap is visible in the stream: store seqs jump, stream seqs do not.
    const v = verifyStream(t.receiver.received, { keys: keysOf(t.key), fromStart: true });
    assert.equal(v.ok, true, JSON.stringify(v.problems.slice(0, 3)));

    // Down again: blocked; disabling the closed sink lifts it (an audited change through the API).
    t.receiver.down = true;
    t.pipeline.publish(t.store.commit(1));
    await until("blocked again", () => t.pipeline.isBlocked(ORG_A, GROUP));
    await t.pipeline.add({ ...closed, enabled: false });
    assert.equal(t.pipeline.isBlocked(ORG_A, GROUP), false);
    await t.pipeline.stop();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("pipeline: a file sink rotates, seals on a timer, keeps no plaintext, and a non-retryable error keeps retrying slowly without losing records", async () => {
  const dir = mkdtempSync(join(tmpdir(), "ph-pipe-"));
  const { logger, lines: logLines } = captureLogger();
  try {
    const t = setup(dir, { logger });
    const file = sink({ kind: "file", settings: { ...DEFAULT_STREAM_SETTINGS, rotateBytes: 64 * 1024, checkpointEvery: 100_000, checkpointSeconds: 1 } });
    const remote = sink();
    t.receiver.fatal = true;
    await t.pipeline.start([file, remote]);
    for (let i = 0; i < 20; i++) t.pipeline.publish(t.store.commit(50));
    await until("timed checkpoint", () => (t.pipeline.status(file.id)?.sealedSeq ?? 0) === t.pipeline.status(file.id)?.streamHead.seq, 4000);
    await t.pipeline.flushed(file.id);
    const st = t.pipeline.status(file.id)!;
    assert.equal(st.deliveredSeq, st.streamHead.seq);
    const files = readdirSync(join(dir, file.id)).filter((f) => f.endsWith(".seg"));
    assert.ok(files.length > 1, "rotated");
    for (const f of files) assert.equal(readFileSync(join(dir, file.id, f)).includes(CANARY), false);
    const v = verifyStream(t.pipeline.lines(file.id)!, { keys: keysOf(t.key), fromStart: true, head: st.streamHead });
    assert.equal(v.ok, true);
    assert.equal(v.records, 1000);
    assert.equal(v.sealedSeq, st.streamHead.seq);

    await until("remote down", () => t.pipeline.status(remote.id)?.state === "down");
    assert.match(t.pipeline.status(remote.id)!.lastError ?? "", /credentials refused/);
    t.receiver.fatal = false;
    await until("remote delivered", () => t.pipeline.status(remote.id)?.pending === 0, 5000);
    assert.equal(t.receiver.received.filter((l) => l.includes(`"kind":"record"`)).length, 1000);
    await t.pipeline.stop();
    assert.equal(logLines.join("\n").includes(CANARY), false, "record contents never logged");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("pipeline: a sink whose files were altered starts down (the platform starts; closed blocks its scope); a disabled sink writes nothing and keeps its files readable", async () => {
  const dir = mkdtempSync(join(tmpdir(), "ph-pipe-"));
  try {
    const t = setup(dir);
    const file = sink({ kind: "file", failMode: "closed", settings: { ...DEFAULT_STREAM_SETTINGS, checkpointEvery: 100_000, checkpointSeconds: 3600 } });
    await t.pipeline.start([file]);
    t.pipeline.publish(t.store.commit(20));
    await t.pipeline.stop();
    const seg = readdirSync(join(dir, file.id)).find((f) => f.endsWith(".seg"))!;
    const bytes = readFileSync(join(dir, file.id, seg));
    bytes[bytes.length - 20] = bytes[bytes.length - 20]! ^ 0xff; // one bit of the last frame's ciphertext
    writeFileSync(join(dir, file.id, seg), bytes);

    const t2 = setup(dir, { store: t.store });
    await t2.pipeline.start([file]); // does not throw
    const st = t2.pipeline.status(file.id)!;
    assert.equal(st.state, "down");
    assert.match(st.lastError ?? "", /authentication/);
    assert.equal(t2.pipeline.isBlocked(ORG_A, null), true, "a closed sink that cannot record blocks its scope");
    t2.pipeline.publish(t.store.commit(5));
    assert.equal(t2.pipeline.status(file.id)!.dropped, 5);
    await t2.pipeline.stop();

    const other = sink({ kind: "file" });
    const t3 = setup(dir, { store: t.store });
    await t3.pipeline.start([other]);
    t3.pipeline.publish(t.store.commit(10));
    await t3.pipeline.flushed();
    const head = t3.pipeline.status(other.id)!.streamHead.seq;
    assert.equal(head, 10);
    await t3.pipeline.add({ ...other, enabled: false }); // the running sink stops with a last checkpoint
    const paused = t3.pipeline.status(other.id)!.streamHead.seq;
    assert.equal(paused, 11);
    t3.pipeline.publish(t.store.commit(10));
    assert.equal(t3.pipeline.publishDirect({ type: "DatabaseStatement", source: "Gateway", result: "SUCCESS", orgId: ORG_A, actor: { type: "databaseUser" }, reason: "x" }), false, "no enabled file sink: statements go to the store");
    await t3.pipeline.flushed();
    assert.equal(t3.pipeline.status(other.id)!.state, "disabled");
    assert.equal(t3.pipeline.status(other.id)!.streamHead.seq, paused, "nothing written while disabled");
    assert.equal([...t3.pipeline.lines(other.id)!].length, paused, "its files stay readable");
    await t3.pipeline.stop();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("pipeline: listing a file sink's stream-only records passes over frames that hold only store records, also after a restart", async () => {
  const dir = mkdtempSync(join(tmpdir(), "ph-pipe-"));
  const statement = (i: number): AuditEvent => ({ type: "DatabaseStatement", source: "Gateway", result: "SUCCESS", orgId: ORG_A, actor: { type: "databaseUser" }, reason: `statement only in the stream ${i}` });
  try {
    const t = setup(dir);
    const file = sink({ kind: "file", settings: { ...DEFAULT_STREAM_SETTINGS, checkpointEvery: 100_000, checkpointSeconds: 3600 } });
    await t.pipeline.start([file]);
    for (let i = 0; i < 30; i++) {
      t.pipeline.publish(t.store.commit(10)); // a frame of store records each
      await t.pipeline.flushed();
    }
    assert.equal(t.pipeline.publishDirect(statement(1)), true);
    await t.pipeline.flushed();
    for (let i = 0; i < 5; i++) {
      t.pipeline.publish(t.store.commit(10));
      await t.pipeline.flushed();
    }
    assert.equal(t.pipeline.status(file.id)!.streamHead.seq, 351);

    const walk = (p: AuditPipeline) => [...p.recordsNewestFirst(file.id)].map((x) => x.record);
    const seen = walk(t.pipeline);
    assert.deepEqual(seen.filter((r) => r.seq === null).map((r) => r.reason), ["statement only in the stream 1"]);
    assert.ok(seen.length <= 10, `only the direct record's frame is read, not the 350 store records: ${seen.length} records read`);
    await t.pipeline.stop();

    // After a restart nothing is known of the frames: the first walk reads them all and notes which hold none.
    const t2 = setup(dir, { store: t.store });
    await t2.pipeline.start([file]);
    const first = walk(t2.pipeline);
    assert.deepEqual(first.filter((r) => r.seq === null).map((r) => r.reason), ["statement only in the stream 1"]);
    assert.ok(first.length >= 350, "the first walk after a restart reads every frame");
    const second = walk(t2.pipeline);
    assert.deepEqual(second.filter((r) => r.seq === null).map((r) => r.reason), ["statement only in the stream 1"]);
    assert.ok(second.length <= 10, `the second walk passes over the frames seen to hold only store records: ${second.length}`);
    await t2.pipeline.stop();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
