// Audit sinks (not a test; run by hand, figures in docs/benchmarks.md):
//   node dist/bench/audit-sinks.js [--records N (300000)] [--batch N (1000)] [--rate R (2000)] [--seconds S (20)]
//
// 1. File sink stage: AuditPipeline.publish() of N records in batches of --batch (as the store's writer hands
//    them over) into a file sink — hash chain, JSON, AES-256-GCM, fdatasync per batch, signed checkpoints —
//    beside the peer: the same records as plain JSON lines appended to a plain file with fdatasync per batch.
//    Then the sink's files are read back and verified: zero loss means every record is there, in order.
// 2. End to end: record() at a steady --rate for --seconds against a real metadata store, the pipeline feeding
//    a file sink and an HTTPS webhook sink (a receiver in this process); the delay of each record from its
//    record() call to its arrival at the webhook, p50/p99/max.
import { generateKeyPairSync, randomBytes, randomUUID } from "node:crypto";
import { closeSync, fdatasyncSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AuditPipeline, defaultSettings, streamRecord, type SinkDefinition } from "../src/audit/stream/pipeline.js";
import { verifyStream } from "../src/audit/stream/format.js";
import { createTransport } from "../src/audit/sinks/index.js";
import { createAuditLog } from "../src/audit/index.js";
import type { ChainFields } from "../src/audit/chain.js";
import { silentLogger } from "../test/audit/helpers.js";
import { startTestStore } from "../test/support/pg.js";
import { startWebhookServer } from "../test/support/webhook-server.js";

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}
const N = arg("records", 300_000);
const BATCH = arg("batch", 1000);
const RATE = arg("rate", 2000);
const SECONDS = arg("seconds", 20);
const ORG = "11111111-1111-4111-8111-111111111111";
const GROUP = "33333333-3333-4333-8333-333333333333";

function statement(seq: number): ChainFields {
  return {
    seq: String(seq), id: randomUUID(), orgId: ORG, createdAt: new Date().toISOString(), type: "DatabaseStatement", source: "Gateway", result: "SUCCESS",
    actorType: "databaseUser", actorId: null, actorEmail: null, resourceType: "workspace", resourceId: "44444444-4444-4444-8444-444444444444", sourceIp: "192.0.2.10",
    requestId: null, reason: "READ Select", attributes: {
      workspaceGroupID: GROUP, database: "postgres", databaseUser: "app", sessionID: "55555555-5555-4555-8555-555555555555", protocol: "extended",
      statement: "SELECT abalance FROM pgbench_accounts WHERE aid = $1", plaintext: false, statementClasses: ["READ"], commands: ["SelectStmt"], rows: 1, durationMs: 0.08,
    },
  };
}

const key = generateKeyPairSync("ed25519");
const signing = { privateKey: async () => ({ kid: "bench", key: key.privateKey }), cachedPrivateKey: () => ({ kid: "bench", key: key.privateKey }) };
const sinkDef = (kind: SinkDefinition["kind"], config: Record<string, unknown> = {}, secrets: Record<string, string> = {}): SinkDefinition => ({
  id: randomUUID(), orgId: ORG, groupId: null, name: kind, kind, failMode: "open", enabled: true, settings: { ...defaultSettings(kind), checkpointSeconds: 1 }, config, secrets, fileKey: randomBytes(32),
});

async function fileStage(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "ph-bench-sinks-"));
  try {
    const records: ChainFields[][] = [];
    for (let i = 0; i < N; i += BATCH) records.push(Array.from({ length: Math.min(BATCH, N - i) }, (_, j) => statement(i + j + 1)));

    // Peer: plain JSON lines on plain disk, fdatasync per batch.
    const plain = join(dir, "plain.jsonl");
    const fd = openSync(plain, "a", 0o600);
    let t0 = process.hrtime.bigint();
    for (const b of records) {
      const buf = Buffer.from(b.map((r) => JSON.stringify(streamRecord(r))).join("\n") + "\n");
      writeSync(fd, buf);
      fdatasyncSync(fd);
    }
    const plainSecs = Number(process.hrtime.bigint() - t0) / 1e9;
    closeSync(fd);

    const def = sinkDef("file");
    const pipeline = new AuditPipeline({ dir: join(dir, "sinks"), store: { after: async () => [], head: async () => 0n }, signing, logger: silentLogger(), record: () => undefined, transport: () => { throw new Error("no remote sinks here"); } });
    await pipeline.start([def]);
    t0 = process.hrtime.bigint();
    // Sustained: the writer hands over a batch, then the event loop turns (as between store commits).
    for (const b of records) {
      pipeline.publish(b);
      await new Promise((r) => setImmediate(r));
    }
    const publishSecs = Number(process.hrtime.bigint() - t0) / 1e9;
    await pipeline.flushed();
    const sinkSecs = Number(process.hrtime.bigint() - t0) / 1e9;
    const head = pipeline.status(def.id)!.streamHead;
    await pipeline.stop();

    // Zero loss: read the encrypted files back and verify the chain.
    const check = new AuditPipeline({ dir: join(dir, "sinks"), store: { after: async () => [], head: async () => 0n }, signing, logger: silentLogger(), record: () => undefined, transport: () => { throw new Error("none"); } });
    await check.start([def]);
    const v = verifyStream(check.lines(def.id)!, { keys: new Map([["bench", key.publicKey]]), fromStart: true, head });
    await check.stop();
    console.log(JSON.stringify({
      stage: "file sink (publish → encrypted, chained, fsynced segments)", records: N, batch: BATCH,
      sinkPerSecond: Math.round(N / sinkSecs), publishSeconds: +publishSecs.toFixed(2), durableSeconds: +sinkSecs.toFixed(2), plainDiskPerSecond: Math.round(N / plainSecs), ratioToPlainDisk: +(plainSecs / sinkSecs).toFixed(2),
      verified: v.ok, recordsReadBack: v.records, lost: N - v.records, checkpoints: v.checkpoints,
    }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function endToEnd(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "ph-bench-sinks-"));
  const store = await startTestStore();
  const secret = randomBytes(32).toString("base64url");
  const hook = await startWebhookServer(secret);
  try {
    const arrivals: number[] = [];
    const web = sinkDef("webhook", { url: hook.url, caPem: hook.caPem }, { secret });
    const file = sinkDef("file");
    const pipeline = new AuditPipeline({
      dir, store: { after: async () => [], head: async () => 0n }, signing, logger: silentLogger(), record: () => undefined,
      transport: (kind, config, secrets) => {
        const t = createTransport(kind, config, secrets);
        return {
          describe: () => t.describe(), close: () => t.close(),
          async deliver(batch, signal) {
            await t.deliver(batch, signal);
            const now = Date.now();
            for (const l of batch.lines) {
              const m = /"createdAt":"([^"]+)"/.exec(l);
              if (m && l.includes(`"kind":"record"`)) arrivals.push(now - Date.parse(m[1]!));
            }
          },
        };
      },
    });
    await pipeline.start([web, file]);
    const audit = createAuditLog({ db: store.db, logger: silentLogger(), onCommitted: pipeline.publish });
    const total = RATE * SECONDS;
    let sent = 0;
    const t0 = Date.now();
    await new Promise<void>((resolve) => {
      const tick = setInterval(() => {
        const due = Math.min(total, Math.floor(((Date.now() - t0) / 1000) * RATE));
        for (; sent < due; sent++) void audit.record({ type: "DatabaseStatement", source: "Gateway", result: "SUCCESS", orgId: ORG, actor: { type: "databaseUser" }, reason: "READ Select", attributes: statement(sent).attributes });
        if (sent >= total) {
          clearInterval(tick);
          resolve();
        }
      }, 5);
    });
    await audit.close();
    const end = Date.now() + 30_000;
    while (arrivals.length < total && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    await pipeline.stop();
    const sorted = [...arrivals].sort((a, b) => a - b);
    const pct = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
    console.log(JSON.stringify({
      stage: "end to end (record() → store → pipeline → HTTPS webhook)", rate: RATE, seconds: SECONDS, records: total, delivered: arrivals.length,
      lost: total - new Set(arrivals.map((_, i) => i)).size, p50Ms: pct(50), p99Ms: pct(99), maxMs: sorted[sorted.length - 1], webhookBatches: hook.accepted.length,
    }));
  } finally {
    await hook.close();
    await store.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

await fileStage();
await endToEnd();
