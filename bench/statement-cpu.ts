/**
 * CPU per audited statement on the gateway's side, without the network: pgbench's select-only messages through the
 * real statement tracker (frontend and backend scanners), the record encoder and the audit pipeline into a file
 * sink (encrypted segments, fdatasync), against the same messages through the scanners at OFF. Process CPU (every
 * thread) per statement; a machine under load inflates both figures alike.
 *
 *   node dist/bench/statement-cpu.js [N (50000)] [RATE per second (5000; 0: as fast as possible)] [all-only]
 */
import { randomBytes, randomUUID, generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serialize } from "pg-protocol";
import { StatementClassifier } from "../src/audit/sql/classify.js";
import { AuditPipeline, DEFAULT_STREAM_SETTINGS, defaultSettings } from "../src/audit/stream/pipeline.js";
import { SessionStatements, StatementFrontendScanner } from "../src/gateway/statements.js";
import { StatementRecordEncoder } from "../src/gateway/statementRecord.js";
import { BackendScanner, readyForQuery } from "../src/gateway/protocol/backend.js";
import { FrontendScanner } from "../src/gateway/protocol/frontend.js";
import { createLogger } from "../src/log/logger.js";

/** CPU ticks (1/100 s) per thread name. */
function threads(): Map<string, number> {
  const m = new Map<string, number>();
  for (const t of readdirSync("/proc/self/task")) {
    try {
      const st = readFileSync(`/proc/self/task/${t}/stat`, "utf8");
      const name = st.slice(st.indexOf("(") + 1, st.lastIndexOf(")"));
      const f = st.slice(st.lastIndexOf(")") + 2).split(" ");
      m.set(`${name}/user`, (m.get(`${name}/user`) ?? 0) + Number(f[11]));
      m.set(`${name}/sys`, (m.get(`${name}/sys`) ?? 0) + Number(f[12]));
    } catch {
      // gone
    }
  }
  return m;
}

const N = Number(process.argv[2] ?? 50_000);
/** Statements per second (0: as fast as possible); paced in steps of 1 ms, as a busy gateway sees them. */
const RATE = Number(process.argv[3] ?? 5000);
const BATCH = RATE > 0 ? Math.max(1, Math.round(RATE / 1000)) : 20;

function msg(type: string, body: Buffer): Buffer {
  const h = Buffer.alloc(5);
  h.write(type, 0, "latin1");
  h.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([h, body]);
}
const answer = Buffer.concat([
  msg("T", Buffer.concat([Buffer.from([0, 1]), Buffer.from("abalance\0"), Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 23, 0, 4, 0xff, 0xff, 0xff, 0xff, 0, 0])])),
  msg("D", Buffer.concat([Buffer.from([0, 1, 0, 0, 0, 1]), Buffer.from("0")])),
  msg("C", Buffer.from("SELECT 1\0")),
  readyForQuery("I"),
]);
const queries = Array.from({ length: 1000 }, () => serialize.query(`SELECT abalance FROM pgbench_accounts WHERE aid = ${1 + Math.floor(Math.random() * 1_000_000)};`));

async function run(name: string, audit: boolean, classifier: StatementClassifier, pipeline: AuditPipeline, orgId: string): Promise<number> {
  const encoder = new StatementRecordEncoder({ orgId, workspaceId: randomUUID(), groupId: randomUUID(), database: "postgres", user: "admin", peer: "127.0.0.1", sessionId: randomUUID() });
  const tracker = audit ? new SessionStatements({ level: "ALL-QUERIES", classifier, record: (r) => pipeline.publishDeferred(encoder.defer(r)) }) : null;
  const fe = tracker ? new StatementFrontendScanner({}, tracker) : new FrontendScanner({});
  const be = new BackendScanner(tracker ? { observer: tracker.observer } : {});
  const turn = () => new Promise<void>((r) => (RATE > 0 ? setTimeout(r, 1) : setImmediate(r)));
  for (let i = 0; i < 5000; i++) {
    fe.scan(queries[i % queries.length]!);
    be.scan(answer);
    if (i % BATCH === 0) await turn();
  }
  await pipeline.flushed();
  const before = threads();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < N; i++) {
    fe.scan(queries[i % queries.length]!);
    be.scan(answer);
    if (i % BATCH === 0) await turn();
  }
  await pipeline.flushed();
  const c = process.cpuUsage(c0);
  const after = threads();
  const parts = [...after].map(([k, v]) => [k, v - (before.get(k) ?? 0)] as const).filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1]);
  console.log("  by thread (µs/statement): " + parts.map(([k, v]) => `${k} ${((v * 10_000) / N).toFixed(1)}`).join(", "));
  const us = (c.user + c.system) / N;
  console.log(`${name.padEnd(28)} ${us.toFixed(2).padStart(7)} µs CPU/statement  (${((performance.now() - t0) / 1000).toFixed(1)} s wall)`);
  return us;
}

const dir = mkdtempSync(join(tmpdir(), "stmt-cpu-"));
try {
  const classifier = await StatementClassifier.create();
  const orgId = randomUUID();
  const { privateKey } = generateKeyPairSync("ed25519");
  const pipeline = new AuditPipeline({
    dir, logger: createLogger({ level: "error" }), record: () => undefined, transport: () => { throw new Error("no remote sinks here"); },
    store: { after: async () => [], head: async () => 0n },
    signing: { privateKey: async () => ({ kid: "k", key: privateKey }), cachedPrivateKey: () => ({ kid: "k", key: privateKey }) },
  });
  await pipeline.start([{ id: randomUUID(), orgId, groupId: null, name: "default", kind: "file", failMode: "open", enabled: true, settings: { ...DEFAULT_STREAM_SETTINGS, ...defaultSettings("file") }, config: {}, secrets: {}, fileKey: randomBytes(32) }]);
  if (process.argv[4] === "all-only") await run("ALL-QUERIES (file sink)", true, classifier, pipeline, orgId);
  else for (let round = 0; round < 2; round++) {
    const off = await run("OFF (scanners only)", false, classifier, pipeline, orgId);
    const all = await run("ALL-QUERIES (file sink)", true, classifier, pipeline, orgId);
    console.log(`ALL-QUERIES adds ${(all - off).toFixed(2)} µs of CPU per statement`);
  }
  await pipeline.stop();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
