/**
 * The audit pipeline: every record the store commits (src/audit/writer.ts `onCommitted`) goes, in order, to
 * each enabled sink whose scope holds it, as a line of that sink's own hash-chained stream (format.ts), with a
 * signed checkpoint every `checkpointEvery` lines or `checkpointSeconds`. Each sink writes its stream to an
 * encrypted segment log on local disk first (segments.ts): for a file sink that log *is* the destination
 * (rotated, retained); for a remote sink (syslog, webhook, S3) it is the spool a delivery loop drains in order,
 * with a per-attempt timeout and exponential backoff, advancing an acknowledged cursor — at-least-once, and
 * receivers dedupe on (stream, seq). After a restart a sink catches up from the store from the last store seq
 * its stream holds, so a crash between the store's commit and the spool's append loses nothing.
 * Design and guarantees: src/audit/DESIGN.md ("Streams and sinks").
 */
import { randomUUID } from "node:crypto";
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "../../log/logger.js";
import type { Db } from "../../store/db.js";
import type { ChainFields } from "../chain.js";
import { ACTOR_TYPES, AUDIT_RESULTS, AUDIT_SOURCES, HELIOS_USER_TYPES, type ActorType, type AuditEvent, type AuditResult } from "../types.js";
import { cleanText } from "../event.js";
import { isUuid } from "../../lib/ids.js";
import { checkpointLine, GENESIS, LineBuffer, type StreamHead, type StreamRecord } from "./format.js";
import { SegmentLog, type ReadBatch } from "./segments.js";
import { DeliveryError, type SinkTransport, type StreamBatch } from "./transport.js";

export const SINK_KINDS = ["file", "syslog", "webhook", "s3"] as const;

/**
 * The data plane's high-volume record types: when the organization has an enabled organization-wide file sink
 * (`streamsStatements`) they go to its streams only (`publishDirect`), not to the store. A store row each would
 * cost more than the statement or the session it records (on this 2-core host, the store's insert of a
 * session's three records cost about as much CPU as the gateway's whole TLS handshake). Refusals and failures
 * (DatabaseLoginFailure, firewall and TLS denials) stay store rows like the control plane's.
 */
export const STREAM_ONLY_TYPES: ReadonlySet<string> = new Set(["DatabaseStatement", "DatabaseConnect", "DatabaseLoginSuccess", "DatabaseDisconnect"]);
export type SinkKind = (typeof SINK_KINDS)[number];
export type FailMode = "open" | "closed";

/** Settings every sink has (in its `config`, beside the kind's own). */
export interface StreamSettings {
  /** Lines between signed checkpoints (default 1000). */
  checkpointEvery: number;
  /** Longest time an appended line waits for its checkpoint, in seconds (default 10). */
  checkpointSeconds: number;
  /** Remote sinks: bound of the on-disk spool (default 256 MiB); an alert at 80 %. File sinks: total size kept (default 16 GiB; the oldest files go first, audited). */
  maxBytes: number;
  /** File sinks: a new file beyond this size (default 64 MiB) or age (default 1 day), files older than retentionDays removed (default 365). */
  rotateBytes: number;
  rotateSeconds: number;
  retentionDays: number;
}

/**
 * How long a statement record waits for its batch by default (ms). Each batch costs a sink a frame (a cipher, a
 * write) and the gateway a burst of cold code: at 5,000 statements/s, 100 ms batches cost ~5 µs of CPU less per
 * statement than 20 ms batches (bench/statement-cpu.ts), and a crash of parhelion can lose at most this much.
 */
export const DIRECT_LINGER_MS = 100;

export const DEFAULT_STREAM_SETTINGS: StreamSettings = {
  checkpointEvery: 1000, checkpointSeconds: 10, maxBytes: 256 * 1024 * 1024, rotateBytes: 64 * 1024 * 1024, rotateSeconds: 86_400, retentionDays: 365,
};

/** A file sink keeps more by default: its files are the record, not a buffer. */
export const DEFAULT_FILE_MAX_BYTES = 16 * 1024 * 1024 * 1024;

/** The defaults of a sink kind. */
export function defaultSettings(kind: SinkKind): StreamSettings {
  return kind === "file" ? { ...DEFAULT_STREAM_SETTINGS, maxBytes: DEFAULT_FILE_MAX_BYTES } : { ...DEFAULT_STREAM_SETTINGS };
}

/** A sink as the pipeline runs it: secrets and the file key already opened. */
export interface SinkDefinition {
  id: string;
  orgId: string;
  groupId: string | null;
  name: string;
  kind: SinkKind;
  failMode: FailMode;
  enabled: boolean;
  settings: StreamSettings;
  /** The kind's own config (no secrets), and its secrets in clear. */
  config: Record<string, unknown>;
  secrets: Record<string, string>;
  /** 32 bytes: encrypts the sink's segments. */
  fileKey: Buffer;
}

export type SinkState = "starting" | "up" | "down" | "disabled";

export interface SinkStatus {
  state: SinkState;
  /** The stream's head: seq and hash of its last line. */
  streamHead: StreamHead;
  /** Last seq the destination acknowledged (file sinks: the head). */
  deliveredSeq: number;
  /** Lines waiting for delivery. */
  pending: number;
  /** Bytes on local disk (spool or files) and their bound. */
  diskBytes: number;
  maxBytes: number;
  /** Last seq sealed by a signed checkpoint. */
  sealedSeq: number;
  lastDeliveryAt: string | null;
  downSince: string | null;
  lastError: string | null;
  /** Records not written to this stream because its spool was full, since the sink started. */
  dropped: number;
  /** Open alerts: "spool-high-water", "spool-full", "down", "signing-key-unavailable". */
  alerts: string[];
}

/** The store's records the pipeline reads when a sink catches up. */
export interface StoreReader {
  /** Records with seq > `after` visible to the sink's scope, seq ascending, at most `limit`. */
  after(orgId: string, after: bigint, limit: number): Promise<ChainFields[]>;
  /** The store's head seq (0 when empty). */
  head(): Promise<bigint>;
}

export interface SigningKeySource {
  privateKey(orgId: string): Promise<{ kid: string; key: import("node:crypto").KeyObject }>;
  cachedPrivateKey(orgId: string): { kid: string; key: import("node:crypto").KeyObject } | null;
}

export interface PipelineOptions {
  /** Where sinks keep their segments: <dir>/<sinkId>/. */
  dir: string;
  store: StoreReader;
  signing: SigningKeySource;
  logger: Logger;
  /** Builds a remote sink's transport (src/audit/sinks). */
  transport: (kind: Exclude<SinkKind, "file">, config: Record<string, unknown>, secrets: Record<string, string>) => SinkTransport;
  /** The pipeline's own events (sink down, recovered, spool high water, records dropped) go back into the audit log. */
  record: (e: AuditEvent) => void;
  now?: () => number;
  /** Per delivery attempt (default 10 s). */
  attemptTimeoutMs?: number;
  /** Backoff between failed attempts: from min doubling to max (defaults 250 ms, 30 s), with jitter. */
  retryMinMs?: number;
  retryMaxMs?: number;
  /** Lines per delivery (default 500). */
  batchLines?: number;
  /** Checkpoint timer tick (default 1000 ms). */
  tickMs?: number;
  /** Longest wait of a direct (statement) record before its batch is written (default `DIRECT_LINGER_MS`): a frame per sink per interval. */
  directLingerMs?: number;
}

/** A record as its stream carries it: the Helios view of the store row (`seq` is the store's; null when only in streams). */
export function streamRecord(f: ChainFields): StreamRecord {
  return {
    auditID: f.id, orgID: f.orgId, createdAt: f.createdAt, type: f.type, source: f.source, result: f.result as AuditResult, reason: f.reason,
    userID: f.actorId, userEmail: f.actorEmail, userType: HELIOS_USER_TYPES[f.actorType as ActorType] ?? "Unspecified",
    resourceType: f.resourceType, resourceID: f.resourceId, sourceIP: f.sourceIp, requestID: f.requestId, attributes: f.attributes, seq: f.seq === "" ? null : f.seq,
  };
}

let lastIso = { ms: NaN, iso: "" };
/** toISOString, once per millisecond (statements arrive thousands a second). */
export function isoAt(ms: number): string {
  if (lastIso.ms !== ms) lastIso = { ms, iso: new Date(ms).toISOString() };
  return lastIso.iso;
}

/**
 * The fields of a record built by parhelion's own data plane (the gateway's statement records), without the
 * store writer's defensive normalization (a JSON round trip of the attributes: most of the per-statement cost):
 * its texts come from the wire as UTF-8 (no NUL, no lone surrogate) and are already cut by the classifier, and
 * its attributes are plain data serialized once, at the next flush. Anything else answers null.
 */
export function directFields(e: AuditEvent, now: number): ChainFields | null {
  if (typeof e.orgId !== "string" || !isUuid(e.orgId) || !(AUDIT_SOURCES as readonly string[]).includes(e.source) || !(AUDIT_RESULTS as readonly string[]).includes(e.result)) return null;
  if (typeof e.type !== "string" || e.type === "" || typeof e.reason !== "string" || !(ACTOR_TYPES as readonly string[]).includes(e.actor?.type)) return null;
  const attributes = e.attributes ?? {};
  if (attributes === null || typeof attributes !== "object" || Array.isArray(attributes)) return null;
  return {
    seq: "", id: randomUUID(), orgId: e.orgId.toLowerCase(), createdAt: isoAt(now), type: e.type, source: e.source, result: e.result,
    actorType: e.actor.type, actorId: e.actor.id ?? null, actorEmail: e.actor.email ?? null, resourceType: e.resource?.type ?? null, resourceId: e.resource?.id ?? null,
    sourceIp: e.sourceIp ?? null, requestId: e.requestId ?? null, reason: cleanText(e.reason), attributes,
  };
}

/** A record serialized by its producer: `json` is what `streamRecordJson` makes of it; `scope` carries at least the fields `inScope` reads. */
export interface EncodedRecord {
  scope: ChainFields;
  json: string;
}

/**
 * A record its producer serializes only when a sink first writes it (`json()`, called once, in the batch of the
 * next flush): the gateway's statement records, whose serialization would otherwise sit between the server's
 * answer and its forwarding to the client. `json()` answers what `streamRecordJson` makes of the record.
 */
export interface DeferredRecord {
  readonly scope: ChainFields;
  json(): string;
}

/** A record on its way to the streams: serialized once, whatever the number of sinks. `direct`: not in the store. */
interface Prepared {
  f: ChainFields;
  json: string | null;
  direct: boolean;
  deferred?: DeferredRecord;
}

/** JSON.stringify(streamRecord(f)), written out: the same text without building the view object per record. */
export function streamRecordJson(f: ChainFields): string {
  const q = JSON.stringify;
  const userType = HELIOS_USER_TYPES[f.actorType as ActorType] ?? "Unspecified";
  return `{"auditID":${q(f.id)},"orgID":${q(f.orgId)},"createdAt":${q(f.createdAt)},"type":${q(f.type)},"source":${q(f.source)},"result":${q(f.result)},"reason":${q(f.reason)},` +
    `"userID":${q(f.actorId)},"userEmail":${q(f.actorEmail)},"userType":"${userType}","resourceType":${q(f.resourceType)},"resourceID":${q(f.resourceId)},` +
    `"sourceIP":${q(f.sourceIp)},"requestID":${q(f.requestId)},"attributes":${q(f.attributes)},"seq":${f.seq === "" ? "null" : q(f.seq)}}`;
}

function jsonOf(p: Prepared): string {
  return (p.json ??= p.deferred !== undefined ? p.deferred.json() : streamRecordJson(p.f));
}

/** Whether a record belongs to a sink's scope: its organization's (and the install's, org-less, records); a group sink only its group's. */
export function inScope(def: { orgId: string; groupId: string | null }, f: ChainFields): boolean {
  if (f.orgId !== null && f.orgId !== def.orgId) return false;
  if (def.groupId === null) return true;
  if (f.resourceType === "WorkspaceGroup" && f.resourceId?.toLowerCase() === def.groupId) return true;
  return (f.attributes as { workspaceGroupID?: unknown }).workspaceGroupID === def.groupId;
}

const sleep = (ms: number, signal?: AbortSignal) => new Promise<void>((resolve) => {
  const t = setTimeout(resolve, ms);
  signal?.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
});

/** Only the message, cut, without anything that could be a URL's credentials. */
function safeError(err: unknown): string {
  const m = err instanceof Error ? err.message : String(err);
  return m.replace(/\/\/[^/@\s]*@/g, "//***@").slice(0, 300);
}

/** One sink: its stream, its segment log and (remote) its delivery loop. */
class SinkRunner {
  readonly log: SegmentLog;
  head: StreamHead = { seq: 0, hash: GENESIS };
  /** Store seq of the last record in the stream. */
  storeSeq = 0n;
  acked = 0;
  sealed = 0;
  private unsealedSince: number | null = null;
  private linesSinceCheckpoint = 0;
  state: SinkState = "starting";
  lastDeliveryAt: number | null = null;
  downSince: number | null = null;
  lastError: string | null = null;
  dropped = 0;
  private dropStart: string | null = null;
  private highWater = false;
  private signingUnavailable = false;
  /** While catching up from the store, live records wait here. */
  private backlog: Prepared[] | null = [];
  private wake: (() => void) | null = null;
  private readonly stop = new AbortController();
  private loop: Promise<void> | null = null;
  /** The lines appended since the delivery loop last read: spares it a decryption when it keeps up. */
  private tail: { firstSeq: number; lines: string[]; firstAt: number; lastAt: number } | null = null;
  private transport: SinkTransport | null = null;
  /** The frame being built (reused: its bytes are encrypted, and for a remote sink decoded, before the next write). */
  private readonly lineBuffer = new LineBuffer();

  constructor(readonly def: SinkDefinition, private readonly p: AuditPipeline, private readonly o: PipelineOptions) {
    const s = def.settings;
    this.log = new SegmentLog({
      dir: join(o.dir, def.id), streamId: def.id, key: def.fileKey,
      // A spool's segments are an eighth of its bound, so delivered ones free space in steps.
      ...(def.kind === "file" ? { maxSegmentBytes: s.rotateBytes, maxSegmentAgeMs: s.rotateSeconds * 1000 } : { maxSegmentBytes: Math.max(4096, Math.min(8 * 1024 * 1024, Math.floor(s.maxBytes / 8))) }),
      ...(o.now ? { now: o.now } : {}),
      onError: (err) => this.fail(err),
    });
  }

  private now(): number {
    return (this.o.now ?? Date.now)();
  }

  get remote(): boolean {
    return this.def.kind !== "file";
  }

  /**
   * Opens the stream and catches up. A sink that cannot start (its files unreadable or altered, the store
   * unreachable) does not stop the platform: it is down, with the error, drops what it is given (counted), and
   * a failMode closed sink blocks its scope as any sink that cannot record does.
   */
  async start(): Promise<void> {
    try {
      await this.open();
    } catch (err) {
      this.backlog = null;
      this.broken = true;
      this.fail(err);
    }
  }

  /** Set when start() failed: nothing is written to this stream until the sink is started again. */
  private broken = false;

  private async open(): Promise<void> {
    const last = this.log.open();
    if (last !== null) {
      const parsed = JSON.parse(last) as { seq: number; hash: string; kind: string; record?: { seq: string }; checkpoint?: { storeSeq?: string } };
      this.head = { seq: parsed.seq, hash: parsed.hash };
      this.storeSeq = BigInt(parsed.kind === "record" ? parsed.record!.seq : (parsed.checkpoint?.storeSeq ?? "0"));
      if (parsed.kind === "checkpoint") this.sealed = parsed.seq;
    }
    if (!this.def.enabled) {
      // Paused: its files stay readable (export), nothing is written; enabled again, it resumes from the store where it stopped.
      this.backlog = null;
      this.acked = this.head.seq;
      this.state = "disabled";
      this.p.stateChanged();
      return;
    }
    this.acked = this.remote ? Math.max(this.readCursor(), (this.log.firstSeq ?? this.head.seq + 1) - 1) : this.head.seq;
    if (last === null) this.storeSeq = await this.o.store.head(); // a new stream starts at the store's head
    else await this.catchUp();
    // Records that arrived during the catch-up, without those it already read.
    const waiting = this.backlog ?? [];
    this.backlog = null;
    this.append(waiting);
    if (this.remote) {
      this.transport = this.o.transport(this.def.kind as Exclude<SinkKind, "file">, this.def.config, this.def.secrets);
      this.state = this.acked >= this.head.seq ? "up" : "starting";
      this.loop = this.deliverLoop();
    } else this.state = "up";
    this.p.stateChanged();
  }

  private async catchUp(): Promise<void> {
    for (;;) {
      const rows = await this.o.store.after(this.def.orgId, this.storeSeq, 1000);
      const mine = rows.filter((r) => inScope(this.def, r));
      if (mine.length > 0) this.write(mine.map((f) => ({ f, json: null, direct: false })));
      const last = rows[rows.length - 1];
      if (last) this.storeSeq = BigInt(last.seq);
      if (rows.length < 1000) return;
    }
  }

  private cursorPath(): string {
    return join(this.o.dir, this.def.id, "cursor");
  }

  private readCursor(): number {
    try {
      const v = JSON.parse(readFileSync(this.cursorPath(), "utf8")) as { acked?: unknown };
      return typeof v.acked === "number" && Number.isSafeInteger(v.acked) && v.acked >= 0 ? Math.min(v.acked, this.head.seq) : 0;
    } catch {
      return 0;
    }
  }

  private writeCursor(): void {
    const tmp = `${this.cursorPath()}.tmp`;
    writeFileSync(tmp, JSON.stringify({ acked: this.acked }), { mode: 0o600 });
    renameSync(tmp, this.cursorPath()); // not fsynced: a cursor that lags only re-delivers (at-least-once)
  }

  /** Live records (from the store's writer, or direct), in order. */
  append(records: Prepared[]): void {
    if (!this.def.enabled) return;
    if (this.broken) {
      this.dropped += records.filter((r) => inScope(this.def, r.f)).length;
      return;
    }
    if (this.backlog !== null) {
      for (const r of records) if (inScope(this.def, r.f)) this.backlog.push(r);
      return;
    }
    const mine = records.filter((r) => (r.direct || BigInt(r.f.seq) > this.storeSeq) && inScope(this.def, r.f));
    if (mine.length > 0) this.write(mine);
  }

  /** The store seq of the last store record among these, if any. */
  private static lastStoreSeq(records: Prepared[]): bigint | null {
    for (let i = records.length - 1; i >= 0; i--) if (!records[i]!.direct) return BigInt(records[i]!.f.seq);
    return null;
  }

  /** Appends record lines (and a checkpoint when due) as one frame; drops them when the disk bound is reached. */
  private write(records: Prepared[]): void {
    const storeSeq = SinkRunner.lastStoreSeq(records);
    if (this.remote && this.log.bytes >= this.def.settings.maxBytes) {
      this.drop(records, storeSeq);
      return;
    }
    if (this.dropStart !== null) this.endDrop();
    const lines = this.lineBuffer.reset();
    let head = this.head;
    const firstSeq = head.seq + 1;
    const now = this.now();
    const at = new Date(now).toISOString();
    for (const r of records) head = lines.record(this.def.id, head, at, jsonOf(r));
    this.linesSinceCheckpoint += records.length;
    this.unsealedSince ??= now;
    let sealedNow = false;
    if (this.linesSinceCheckpoint >= this.def.settings.checkpointEvery) {
      const cp = this.checkpoint(head, now, (storeSeq ?? this.storeSeq).toString());
      if (cp) {
        lines.line(cp.line);
        head = cp.head;
        sealedNow = true;
      }
    }
    try {
      this.log.appendPlain(lines.bytes(), lines.count, firstSeq, now, now, records.some((r) => r.direct));
    } catch (err) {
      this.fail(err);
      this.drop(records, storeSeq);
      return;
    }
    this.head = head;
    if (storeSeq !== null) this.storeSeq = storeSeq;
    if (sealedNow) this.sealedAt(head.seq);
    this.afterAppend(lines, firstSeq, now);
  }

  /** `lines`: what was appended (strings are made from it for a remote sink's delivery only). */
  private afterAppend(appended: LineBuffer | string[], firstSeq: number, now: number): void {
    if (!this.remote) {
      this.acked = this.head.seq;
      this.lastDeliveryAt = now;
      if (this.state === "down") this.recovered();
      this.retain();
      return;
    }
    const lines = Array.isArray(appended) ? appended : appended.lines();
    if (this.tail && this.tail.firstSeq + this.tail.lines.length === firstSeq && this.tail.lines.length < 20_000) {
      for (const l of lines) this.tail.lines.push(l);
      this.tail.lastAt = now;
    } else if (!this.tail) this.tail = { firstSeq, lines: [...lines], firstAt: now, lastAt: now };
    else this.tail = null; // the loop is far behind: it reads from disk
    const ratio = this.log.bytes / this.def.settings.maxBytes;
    if (ratio >= 0.8 && !this.highWater) {
      this.highWater = true;
      this.o.logger.warn({ sinkId: this.def.id, spoolBytes: this.log.bytes, maxBytes: this.def.settings.maxBytes }, "audit sink spool above 80% of its bound");
      this.event("AuditSinkSpoolHighWater", "FAILURE", `the spool of audit sink ${this.def.name} is above 80% of its bound`, { spoolBytes: this.log.bytes, maxBytes: this.def.settings.maxBytes });
    } else if (ratio < 0.5 && this.highWater) this.highWater = false;
    this.wake?.();
  }

  private checkpoint(head: StreamHead, now: number, storeSeq: string): { line: string; head: StreamHead } | null {
    const key = this.o.signing.cachedPrivateKey(this.def.orgId);
    if (!key) {
      // Opening the key is asynchronous: ask for it now; this checkpoint waits for the next tick.
      void this.o.signing.privateKey(this.def.orgId).then(() => {
        if (this.signingUnavailable) {
          this.signingUnavailable = false;
          this.p.stateChanged();
        }
      }, (err: unknown) => {
        if (!this.signingUnavailable && !this.stop.signal.aborted) {
          this.signingUnavailable = true;
          this.o.logger.error({ sinkId: this.def.id, err: { message: safeError(err) } }, "audit checkpoints cannot be signed: the signing key is unavailable");
          this.p.stateChanged();
        }
      });
      return null;
    }
    const cp = checkpointLine(this.def.id, head, new Date(now), { keyId: key.kid, privateKey: key.key }, storeSeq);
    return cp;
  }

  private sealedAt(seq: number): void {
    this.sealed = seq;
    this.linesSinceCheckpoint = 0;
    this.unsealedSince = null;
  }

  /** A timed checkpoint when lines have waited `checkpointSeconds`; also at stop. */
  tick(force = false): void {
    if (this.backlog !== null || this.unsealedSince === null) return;
    const now = this.now();
    if (!force && now - this.unsealedSince < this.def.settings.checkpointSeconds * 1000) {
      if (this.def.kind === "file") this.retain();
      return;
    }
    const cp = this.checkpoint(this.head, now, this.storeSeq.toString());
    if (!cp) return;
    const firstSeq = this.head.seq + 1;
    try {
      this.log.appendPlain(Buffer.from(cp.line, "utf8"), 1, firstSeq, now, now, false);
    } catch (err) {
      this.fail(err);
      return;
    }
    this.head = cp.head;
    this.sealedAt(cp.head.seq);
    this.afterAppend([cp.line], firstSeq, now);
  }

  /** File sinks: drop files past retention or beyond the size bound (oldest first, never the newest). */
  private retain(): void {
    const cutoff = this.now() - this.def.settings.retentionDays * 86_400_000;
    const before = this.log.firstSeq;
    let why = "";
    const removed = this.log.prune((_seq, lastAt) => {
      if (lastAt < cutoff) why = `older than ${this.def.settings.retentionDays} days`;
      else if (this.log.bytes > this.def.settings.maxBytes) why = `beyond maxBytes ${this.def.settings.maxBytes}`;
      else return false;
      return true;
    });
    if (removed > 0) {
      const through = (this.log.firstSeq ?? this.head.seq + 1) - 1;
      this.o.logger.info({ sinkId: this.def.id, files: removed, fromSeq: before, throughSeq: through }, "audit sink files removed by retention");
      this.event("AuditSinkFilesPruned", "SUCCESS", `audit sink ${this.def.name} removed ${removed} file(s) ${why}`, { files: removed, fromSeq: before, throughSeq: through, why });
    }
  }

  private drop(records: Prepared[], storeSeq: bigint | null): void {
    this.dropped += records.length;
    if (this.dropStart === null) {
      this.dropStart = records.find((r) => !r.direct)?.f.seq ?? "";
      this.o.logger.error({ sinkId: this.def.id, maxBytes: this.def.settings.maxBytes }, "audit sink spool full: records are not written to this sink until it drains");
      this.p.stateChanged();
    }
    if (storeSeq !== null) this.storeSeq = storeSeq;
  }

  private endDrop(): void {
    const from = this.dropStart;
    this.dropStart = null;
    this.p.stateChanged();
    this.event("AuditSinkRecordsDropped", "FAILURE", `audit sink ${this.def.name} could not take records while its spool was full`, { fromStoreSeq: from || null, throughStoreSeq: this.storeSeq.toString(), droppedTotal: this.dropped });
  }

  private event(type: string, result: AuditResult, reason: string, attributes: Record<string, unknown>): void {
    this.o.record({ type, source: "System", result, orgId: this.def.orgId, actor: { type: "system" }, resource: { type: "AuditSink", id: this.def.id }, reason, attributes: { sinkName: this.def.name, sinkType: this.def.kind, ...attributes } });
  }

  private fail(err: unknown): void {
    this.lastError = safeError(err);
    if (this.state !== "down") {
      this.state = "down";
      this.downSince = this.now();
      this.o.logger.warn({ sinkId: this.def.id, err: { message: this.lastError } }, "audit sink is down");
      this.event("AuditSinkDown", "FAILURE", `audit sink ${this.def.name} cannot deliver: ${this.lastError}`, { error: this.lastError });
      this.p.stateChanged();
    }
  }

  private recovered(): void {
    const since = this.downSince;
    this.state = "up";
    this.downSince = null;
    this.lastError = null;
    this.o.logger.info({ sinkId: this.def.id }, "audit sink recovered");
    this.event("AuditSinkRecovered", "SUCCESS", `audit sink ${this.def.name} delivers again`, { downSince: since === null ? null : new Date(since).toISOString() });
    this.p.stateChanged();
  }

  private nextBatch(): StreamBatch | null {
    const from = this.acked + 1;
    const max = this.o.batchLines ?? 500;
    let b: ReadBatch | null = null;
    const t = this.tail;
    // Only durable lines leave: a line delivered and then lost in a crash would come back as another line with its seq.
    const durable = this.log.durableSeq;
    if (t && from >= t.firstSeq && from < t.firstSeq + t.lines.length) {
      const lines = t.lines.slice(from - t.firstSeq, Math.min(from - t.firstSeq + max, durable - t.firstSeq + 1));
      b = lines.length === 0 ? null : { lines, firstSeq: from, lastSeq: from + lines.length - 1, firstAt: t.firstAt, lastAt: t.lastAt };
    } else b = this.log.read(from, max);
    return b && { streamId: this.def.id, ...b };
  }

  private async deliverLoop(): Promise<void> {
    const min = this.o.retryMinMs ?? 250;
    const max = this.o.retryMaxMs ?? 30_000;
    let failures = 0;
    while (!this.stop.signal.aborted) {
      if (this.acked >= this.head.seq) {
        this.tail = null;
        await new Promise<void>((r) => {
          this.wake = r;
          this.stop.signal.addEventListener("abort", () => r(), { once: true });
        });
        this.wake = null;
        continue;
      }
      let batch: StreamBatch | null;
      try {
        batch = this.nextBatch();
      } catch (err) {
        this.fail(err);
        await sleep(max, this.stop.signal);
        continue;
      }
      if (!batch && this.log.pendingWrites > 0) {
        await this.log.whenDurable(this.acked + 1); // the lines are on their way to disk
        continue;
      }
      if (!batch) {
        // Nothing readable from `acked + 1`: only acknowledged segments are ever pruned, so the spool lost files.
        this.o.logger.error({ sinkId: this.def.id, from: this.acked + 1, head: this.head.seq }, "audit spool has no lines where delivery resumes: skipping to the head");
        this.acked = this.head.seq;
        continue;
      }
      const attempt = AbortSignal.any([this.stop.signal, AbortSignal.timeout(this.o.attemptTimeoutMs ?? 10_000)]);
      try {
        await this.transport!.deliver(batch, attempt);
        if (attempt.aborted) throw new DeliveryError(this.stop.signal.aborted ? "stopping" : "delivery timed out");
        this.acked = batch.lastSeq;
        this.lastDeliveryAt = this.now();
        failures = 0;
        this.writeCursor();
        this.log.prune((lastSeq) => lastSeq <= this.acked);
        if (this.tail && this.acked >= this.tail.firstSeq + this.tail.lines.length - 1) this.tail = null;
        if (this.state !== "up") {
          if (this.state === "down") this.recovered();
          else {
            this.state = "up";
            this.p.stateChanged();
          }
        }
      } catch (err) {
        if (this.stop.signal.aborted) break;
        failures++;
        this.fail(err);
        const retryable = !(err instanceof DeliveryError) || err.retryable;
        const wait = retryable ? Math.min(max, min * 2 ** Math.min(failures - 1, 20)) : max;
        await sleep(wait * (0.75 + Math.random() * 0.5), this.stop.signal);
      }
    }
  }

  /** Whether this sink can record now (failMode): up, and not dropping. */
  get healthy(): boolean {
    return this.def.enabled && this.state !== "down" && this.dropStart === null;
  }

  status(): SinkStatus {
    const alerts: string[] = [];
    if (this.highWater) alerts.push("spool-high-water");
    if (this.dropStart !== null) alerts.push("spool-full");
    if (this.state === "down") alerts.push("down");
    if (this.signingUnavailable) alerts.push("signing-key-unavailable");
    return {
      state: this.state, streamHead: { ...this.head }, deliveredSeq: this.acked, pending: Math.max(0, this.head.seq - this.acked),
      diskBytes: this.log.bytes, maxBytes: this.def.settings.maxBytes, sealedSeq: this.sealed,
      lastDeliveryAt: this.lastDeliveryAt === null ? null : new Date(this.lastDeliveryAt).toISOString(),
      downSince: this.downSince === null ? null : new Date(this.downSince).toISOString(), lastError: this.lastError, dropped: this.dropped, alerts,
    };
  }

  /** Stops the loop (a last checkpoint first); waits for an attempt in flight. */
  async close(): Promise<void> {
    // The last checkpoint needs the signing key: open it now if it is not in memory (no error if it cannot be).
    if (this.unsealedSince !== null && !this.o.signing.cachedPrivateKey(this.def.orgId)) await this.o.signing.privateKey(this.def.orgId).catch(() => null);
    this.tick(true);
    this.stop.abort();
    this.wake?.();
    await this.loop;
    await this.transport?.close().catch(() => undefined);
    await this.log.close();
  }
}

/** All sinks of the install. */
export class AuditPipeline {
  private readonly runners = new Map<string, SinkRunner>();
  private blocked = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private starting = new Map<string, Promise<void>>();

  constructor(private readonly o: PipelineOptions) {}

  /** Starts the sinks (each catches up from the store) and the checkpoint timer. */
  async start(defs: SinkDefinition[]): Promise<void> {
    for (const d of defs) await this.add(d);
    this.timer = setInterval(() => {
      for (const r of this.runners.values()) {
        try {
          r.tick();
        } catch (err) {
          this.o.logger.error({ sinkId: r.def.id, err: { message: safeError(err) } }, "audit checkpoint failed");
        }
      }
    }, this.o.tickMs ?? 1000);
    this.timer.unref();
  }

  /** The writer's hook: a committed batch, in chain order. */
  readonly publish = (records: ChainFields[]): void => {
    this.flushDirect(); // statements queued before this batch go first
    this.deliver(records.map((f) => ({ f, json: null, direct: false })));
  };

  private deliver(prepared: Prepared[]): void {
    for (const r of this.runners.values()) {
      try {
        r.append(prepared);
      } catch (err) {
        this.o.logger.error({ sinkId: r.def.id, err: { message: safeError(err) } }, "audit sink could not take records");
      }
    }
  }

  /**
   * Whether an organization's statement records go to its streams only: true when it has an enabled
   * organization-wide file sink — the local, encrypted, queryable record (`lines()`, `GET /v1/auditLogs`) — so
   * the metadata store does not take a row per statement. Otherwise they go through the store like every record.
   */
  streamsStatements(orgId: string): boolean {
    return this.statementOrgs.has(orgId);
  }

  /** Organizations with an enabled organization-wide file sink (`streamsStatements`), kept as sinks come and go. */
  private statementOrgs = new Set<string>();

  private sinksChanged(): void {
    const orgs = new Set<string>();
    for (const r of this.runners.values()) if (r.def.groupId === null && r.def.kind === "file" && r.def.enabled) orgs.add(r.def.orgId);
    this.statementOrgs = orgs;
  }

  /** The organization-wide file sink that holds its statement records (the oldest enabled one), if any. */
  statementSink(orgId: string): string | null {
    for (const r of this.runners.values()) if (r.def.orgId === orgId && r.def.groupId === null && r.def.kind === "file" && r.def.enabled) return r.def.id;
    return null;
  }

  private direct: Prepared[] = [];
  private directTimer: NodeJS.Timeout | null = null;

  /**
   * A record that goes to the streams without the store (statement records, when `streamsStatements`). Queued for
   * up to `directLingerMs` (`DIRECT_LINGER_MS`) so a burst is one frame per sink; false when it is not taken (record it in the store).
   */
  publishDirect(e: AuditEvent): boolean {
    if (!e.orgId || !this.streamsStatements(e.orgId)) return false;
    const fields = directFields(e, (this.o.now ?? Date.now)());
    if (fields === null) return false; // not the shape the gateway builds: the store's writer normalizes (or refuses) it
    this.queueDirect({ f: fields, json: null, direct: true });
    return true;
  }

  /**
   * A statement record its producer serializes itself (src/gateway/statementRecord.ts: the gateway's hot path) when
   * the batch is written, up to `directLingerMs` later, with the fields that place it in sinks' scopes. The caller
   * has checked `streamsStatements` for its organization.
   */
  publishDeferred(r: DeferredRecord): void {
    this.queueDirect({ f: r.scope, json: null, direct: true, deferred: r });
  }

  private queueDirect(p: Prepared): void {
    this.direct.push(p);
    if (this.direct.length >= 1000) this.flushDirect();
    else this.directTimer ??= setTimeout(() => this.flushDirect(), this.o.directLingerMs ?? DIRECT_LINGER_MS);
  }

  private flushDirect(): void {
    if (this.directTimer) clearTimeout(this.directTimer);
    this.directTimer = null;
    if (this.direct.length === 0) return;
    const batch = this.direct;
    this.direct = [];
    this.deliver(batch);
  }

  /** Starts (or restarts with new settings) one sink. */
  async add(def: SinkDefinition): Promise<void> {
    await this.remove(def.id, false);
    const r = new SinkRunner(def, this, this.o);
    this.runners.set(def.id, r);
    this.sinksChanged();
    const p = r.start().finally(() => this.starting.delete(def.id));
    this.starting.set(def.id, p);
    await p;
  }

  /** Stops one sink; with `destroy`, deletes its local segments too. */
  async remove(id: string, destroy: boolean): Promise<void> {
    await this.starting.get(id)?.catch(() => undefined);
    const r = this.runners.get(id);
    if (!r) {
      if (destroy && existsSync(join(this.o.dir, id))) await new SegmentLog({ dir: join(this.o.dir, id), streamId: id, key: Buffer.alloc(32) }).destroy();
      return;
    }
    this.runners.delete(id);
    this.sinksChanged();
    await r.close();
    if (destroy) await r.log.destroy();
    this.stateChanged();
  }

  status(id: string): SinkStatus | null {
    return this.runners.get(id)?.status() ?? null;
  }

  /** Resolves when a sink's appended lines are durable (all sinks' without an id). */
  async flushed(id?: string): Promise<void> {
    this.flushDirect();
    for (const r of this.runners.values()) if (id === undefined || r.def.id === id) await r.log.flushed();
  }

  /** The sink's local lines (file sinks: everything retained; remote sinks: the spool), in order: those durable now. */
  lines(id: string): Generator<string> | null {
    return this.runners.get(id)?.log.lines() ?? null;
  }

  /**
   * The records of a sink's local stream, newest first, with their stream seq: those whose stream seq is below
   * `beforeSeq`, written at or after `notBefore` (ms), in frames that may hold records the store lacks (`seq`
   * null; a frame seen to hold none is not read again). For `GET /v1/auditLogs` over statements.
   */
  *recordsNewestFirst(id: string, beforeSeq = Infinity, notBefore = -Infinity): Generator<{ streamSeq: number; record: StreamRecord }> {
    const r = this.runners.get(id);
    if (!r) return;
    // Frames known to hold no stream-only record (every record also in the store) are passed over unread:
    // without this every page of GET /v1/auditLogs decrypted and parsed the whole file sink.
    for (const frame of r.log.framesNewestFirst(beforeSeq, notBefore, true)) {
      let streamOnly = false;
      for (let i = frame.lines.length - 1; i >= 0; i--) {
        const seq = frame.firstSeq + i;
        const line = frame.lines[i]!;
        if (!line.includes(`"kind":"record"`)) continue;
        const parsed = JSON.parse(line) as { record: StreamRecord };
        if (parsed.record.seq === null) streamOnly = true;
        if (seq >= beforeSeq) continue;
        yield { streamSeq: seq, record: parsed.record };
      }
      frame.setHint(streamOnly);
    }
  }

  /** failMode closed: whether new sessions and statements of this scope must be refused. */
  isBlocked(orgId: string, groupId: string | null): boolean {
    if (this.blocked.size === 0) return false;
    return this.blocked.has(orgId) || (groupId !== null && this.blocked.has(`${orgId}/${groupId}`));
  }

  /**
   * Recomputes the fail-closed scopes. A sink with failMode closed is *required*: while it cannot record (its
   * destination down, or its spool full and dropping), its scope — the organization, or its group — is blocked.
   * (Not Vault's "any device recording" rule: every organization has a local file sink that practically always
   * records, so that rule would never close anything; a security team marks the sink it must not lose.)
   */
  stateChanged(): void {
    const next = new Set<string>();
    for (const r of this.runners.values()) {
      if (!r.def.enabled || r.def.failMode !== "closed" || r.healthy) continue;
      next.add(r.def.groupId === null ? r.def.orgId : `${r.def.orgId}/${r.def.groupId}`);
    }
    const changed = next.size !== this.blocked.size || [...next].some((s) => !this.blocked.has(s));
    this.blocked = next;
    if (changed) this.o.logger.warn({ blockedScopes: [...next] }, next.size > 0 ? "audit failMode closed: refusing new sessions and statements" : "audit sinks recording again");
  }

  async stop(): Promise<void> {
    this.flushDirect();
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const id of [...this.runners.keys()]) await this.remove(id, false);
  }
}
