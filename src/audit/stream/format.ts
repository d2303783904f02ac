/**
 * The audit stream's line format (version 1): every line a sink receives is one JSON document, either a
 * record or a signed checkpoint, chained by SHA-256 so that a reader holding only the lines (a file, a set
 * of S3 objects, a webhook receiver's log) and the organization's public key can prove nothing was inserted,
 * deleted, reordered or changed. Documented in docs/audit.md ("Streams").
 *
 *   record:      {"v":1,"stream":"<uuid>","seq":N,"kind":"record","at":"<ISO>","prev":"<hex>","record":{...},"hash":"<hex>"}
 *   checkpoint:  {"v":1,"stream":"<uuid>","seq":N,"kind":"checkpoint","at":"<ISO>","prev":"<hex>","checkpoint":{"keyID":"...","covers":N-1,"sig":"<base64url>","storeSeq":"<the store seq of the last record covered>"},"hash":"<hex>"}
 *
 * `hash` is always the last member: hash = SHA-256(UTF-8 of the line up to, not including, `,"hash":"`). Those
 * bytes include `"prev":"<hex>"`, the previous line's hash, which chains the lines. So the hash covers the exact
 * bytes written — no canonicalization to agree on — and a reader recomputes it by cutting the fixed-length tail
 * (`,"hash":"` + 64 hex + `"}`, 75 characters) and checks `prev` against the line before.
 * A checkpoint signs (Ed25519) the text `parhelion-audit-checkpoint/1\n<stream>\n<covers>\n<prev>\n<at>`:
 * the head of the chain it seals (`prev` is the hash of line `covers`).
 */
import { createPublicKey, hash, sign as edSign, verify as edVerify, type KeyObject } from "node:crypto";
import type { AuditLogView } from "../types.js";

export const STREAM_FORMAT_VERSION = 1;
export const GENESIS = "0".repeat(64);
const HASH_TAIL = 75;
const CHECKPOINT_CONTEXT = "parhelion-audit-checkpoint/1";

/**
 * What a stream record carries: the record as `GET /v1/auditLogs` shows it. Its `seq` is the store's, or null for
 * a record held only in streams (statement records when the organization has a file sink: see pipeline.ts).
 */
export type StreamRecord = Omit<AuditLogView, "seq"> & { seq: string | null };

export interface StreamHead {
  /** seq of the last line written (0 before the first). */
  seq: number;
  /** hash of the last line (GENESIS before the first). */
  hash: string;
}

/** SHA-256 of the line's bytes before `,"hash":"`. Those bytes hold `"prev":"<previous hash>"`, which chains the lines. */
function hashBody(body: string): string {
  return hash("sha256", body, "hex");
}

function seal(body: string): { line: string; hash: string } {
  const h = hashBody(body);
  return { line: `${body},"hash":"${h}"}`, hash: h };
}

/** A record line's bytes before its record: every field but `record` and `hash` (ASCII: a uuid, numbers, an ISO time, hex). */
function recordPrefix(stream: string, seq: number, at: string, prev: string): string {
  return `{"v":1,"stream":"${stream}","seq":${seq},"kind":"record","at":"${at}","prev":"${prev}","record":`;
}

/** The record line after `head`; returns the line and the new head. `record` may come serialized (one JSON for every sink). */
export function recordLine(stream: string, head: StreamHead, at: Date | string, record: StreamRecord | string): { line: string; head: StreamHead } {
  const seq = head.seq + 1;
  const body = recordPrefix(stream, seq, typeof at === "string" ? at : at.toISOString(), head.hash) + (typeof record === "string" ? record : JSON.stringify(record));
  const { line, hash: h } = seal(body);
  return { line, head: { seq, hash: h } };
}

/**
 * Lines written straight into one growing buffer, joined by "\n" (a segment frame's plaintext): each record line is
 * encoded to UTF-8 once and hashed from its bytes, where `recordLine` makes a string that is converted twice more
 * (for the hash, then for the frame). The bytes are those of the `recordLine`/`checkpointLine` strings joined.
 */
export class LineBuffer {
  private static readonly INITIAL = 64 * 1024;
  /** Beyond this, `reset` lets a buffer grown by a large batch go. */
  private static readonly KEEP = 4 * 1024 * 1024;
  private buf = Buffer.allocUnsafe(LineBuffer.INITIAL);
  private at = 0;
  /** Lines written. */
  count = 0;

  /** Empties it for the next frame, keeping its memory (a fresh buffer per frame costs page faults and GC). */
  reset(): this {
    this.at = 0;
    this.count = 0;
    if (this.buf.length > LineBuffer.KEEP) this.buf = Buffer.allocUnsafe(LineBuffer.INITIAL);
    return this;
  }

  private reserve(n: number): void {
    if (this.at + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.at + n));
    this.buf.copy(next, 0, 0, this.at);
    this.buf = next;
  }

  private separate(): void {
    if (this.count > 0) this.buf[this.at++] = 0x0a;
  }

  /** The record line after `head` (as `recordLine`, `record` already serialized); returns the new head. */
  record(stream: string, head: StreamHead, at: string, record: string): StreamHead {
    const seq = head.seq + 1;
    const prefix = recordPrefix(stream, seq, at, head.hash);
    // UTF-8 takes at most 3 bytes per UTF-16 code unit; the tail is 75 ASCII bytes.
    this.reserve(1 + prefix.length + record.length * 3 + HASH_TAIL);
    this.separate();
    const start = this.at;
    this.at += this.buf.write(prefix + record, this.at, "utf8"); // one call: each costs more than its bytes
    const h = hash("sha256", this.buf.subarray(start, this.at), "hex");
    this.at += this.buf.write(`,"hash":"${h}"}`, this.at, "latin1");
    this.count++;
    return { seq, hash: h };
  }

  /** A line made elsewhere (a checkpoint). */
  line(line: string): void {
    this.reserve(1 + line.length * 3);
    this.separate();
    this.at += this.buf.write(line, this.at, "utf8");
    this.count++;
  }

  /** The bytes written (a view: valid until the next write). */
  bytes(): Buffer {
    return this.buf.subarray(0, this.at);
  }

  /** The lines as strings. */
  lines(): string[] {
    return this.count === 0 ? [] : this.bytes().toString("utf8").split("\n");
  }
}

export function checkpointMessage(stream: string, covers: number, prev: string, at: string): Buffer {
  return Buffer.from(`${CHECKPOINT_CONTEXT}\n${stream}\n${covers}\n${prev}\n${at}`, "utf8");
}

/** A signed checkpoint sealing everything up to `head`; `storeSeq` (chained, not signed) lets a restarted sink resume from the store. */
export function checkpointLine(stream: string, head: StreamHead, at: Date, key: { keyId: string; privateKey: KeyObject }, storeSeq: string): { line: string; head: StreamHead } {
  const seq = head.seq + 1;
  const iso = at.toISOString();
  const sig = edSign(null, checkpointMessage(stream, head.seq, head.hash, iso), key.privateKey).toString("base64url");
  const body = `{"v":1,"stream":"${stream}","seq":${seq},"kind":"checkpoint","at":"${iso}","prev":"${head.hash}","checkpoint":${JSON.stringify({ keyID: key.keyId, covers: head.seq, sig, storeSeq })}`;
  const { line, hash: h } = seal(body);
  return { line, head: { seq, hash: h } };
}

/** `seq` of a line written by this module, read without parsing the JSON (the prefix has a fixed shape). */
export function lineSeq(line: string): number {
  const at = line.indexOf(`"seq":`);
  if (at < 0) return NaN;
  let end = at + 6;
  while (end < line.length && line.charCodeAt(end) >= 48 && line.charCodeAt(end) <= 57) end++;
  return Number(line.slice(at + 6, end));
}

// ---- Verification ----

export type StreamProblemKind = "malformed" | "modified" | "broken-link" | "deleted" | "inserted" | "reordered" | "bad-signature" | "unknown-key" | "truncated" | "unsealed-tail" | "mixed-streams";

export interface StreamProblem {
  /** 1-based line number in the input (0 when the problem is about the end of the input). */
  line: number;
  /** The stream seq concerned, when known. */
  seq: number | null;
  kind: StreamProblemKind;
  detail: string;
}

export interface StreamVerifyResult {
  ok: boolean;
  stream: string | null;
  lines: number;
  records: number;
  checkpoints: number;
  /** Duplicates of a line already seen (same seq and hash): at-least-once delivery, not a problem. */
  duplicates: number;
  firstSeq: number | null;
  lastSeq: number | null;
  /** The last seq sealed by a checkpoint whose signature verified. */
  sealedSeq: number | null;
  problems: StreamProblem[];
  truncated: boolean;
}

export interface VerifyOptions {
  /** Public keys by key id (PEM or KeyObject). A checkpoint by an unknown key is a problem. */
  keys: Map<string, KeyObject | string>;
  /** The stream head the platform reports: lines must reach it (tail truncation otherwise). */
  head?: { seq: number; hash: string };
  /** Lines must start at seq 1 (a whole stream); otherwise the first line read is taken as the start. */
  fromStart?: boolean;
  maxProblems?: number;
}

interface Parsed {
  v: number;
  stream: string;
  seq: number;
  kind: "record" | "checkpoint";
  at: string;
  prev: string;
  hash: string;
  checkpoint?: { keyID: string; covers: number; sig: string };
}

function parse(line: string): Parsed | string {
  let o: unknown;
  try {
    o = JSON.parse(line);
  } catch {
    return "not JSON";
  }
  const p = o as Partial<Parsed> & { record?: unknown };
  if (p === null || typeof p !== "object") return "not an object";
  if (p.v !== STREAM_FORMAT_VERSION) return `unknown format version ${String(p.v)}`;
  if (typeof p.stream !== "string" || !Number.isSafeInteger(p.seq) || (p.seq as number) < 1) return "stream or seq missing";
  if (p.kind !== "record" && p.kind !== "checkpoint") return "kind must be record or checkpoint";
  if (typeof p.prev !== "string" || !/^[0-9a-f]{64}$/.test(p.prev) || typeof p.hash !== "string" || !/^[0-9a-f]{64}$/.test(p.hash)) return "prev or hash malformed";
  if (typeof p.at !== "string" || Number.isNaN(Date.parse(p.at))) return "at malformed";
  if (!line.endsWith(`,"hash":"${p.hash}"}`)) return "hash is not the last member";
  if (p.kind === "record" && (p.record === null || typeof p.record !== "object")) return "record missing";
  if (p.kind === "checkpoint") {
    const c = p.checkpoint;
    if (!c || typeof c.keyID !== "string" || !Number.isSafeInteger(c.covers) || typeof c.sig !== "string") return "checkpoint malformed";
  }
  return p as Parsed;
}

/**
 * Verifies the lines of one stream, in the order given. Exact duplicates (a re-delivered batch) are
 * skipped and counted. Finds: changed lines (`modified`), missing ranges (`deleted`), lines that do not
 * belong (`inserted`), lines out of order (`reordered`), forged or unverifiable checkpoints, and a tail that
 * stops before the platform's head (`truncated`) or after the last checkpoint (`unsealed-tail`, reported
 * but not a failure by itself: the newest records are sealed by the next checkpoint).
 */
export function verifyStream(lines: Iterable<string>, opts: VerifyOptions): StreamVerifyResult {
  const max = opts.maxProblems ?? 100;
  const r: StreamVerifyResult = { ok: true, stream: null, lines: 0, records: 0, checkpoints: 0, duplicates: 0, firstSeq: null, lastSeq: null, sealedSeq: null, problems: [], truncated: false };
  const problem = (line: number, seq: number | null, kind: StreamProblemKind, detail: string) => {
    if (kind !== "unsealed-tail") r.ok = false;
    if (r.problems.length < max) r.problems.push({ line, seq, kind, detail });
    else r.truncated = true;
  };
  const keys = new Map<string, KeyObject>();
  for (const [id, k] of opts.keys) keys.set(id, typeof k === "string" ? createPublicKey(k) : k);
  /** Hash of each seq accepted so far (for checkpoints and duplicate detection): bounded by the stream's length. */
  const hashes = new Map<number, string>();
  let last: { seq: number; hash: string } | null = null;
  let n = 0;
  for (const raw of lines) {
    n++;
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line.length === 0) continue;
    r.lines++;
    const p = parse(line);
    if (typeof p === "string") {
      problem(n, Number.isFinite(lineSeq(line)) ? lineSeq(line) : null, "malformed", p);
      continue;
    }
    if (r.stream === null) r.stream = p.stream;
    else if (p.stream !== r.stream) {
      problem(n, p.seq, "mixed-streams", `line belongs to stream ${p.stream}, not ${r.stream}`);
      continue;
    }
    const computed = hashBody(line.slice(0, line.length - HASH_TAIL));
    if (computed !== p.hash) {
      problem(n, p.seq, "modified", "the line's content does not match its hash");
      continue;
    }
    const seen = hashes.get(p.seq);
    if (seen !== undefined) {
      if (seen === p.hash) r.duplicates++;
      else problem(n, p.seq, "inserted", `a second, different line with seq ${p.seq}`);
      continue;
    }
    if (last === null) {
      if (opts.fromStart && p.seq !== 1) problem(n, 1, "deleted", `the stream starts at seq ${p.seq}: seq 1..${p.seq - 1} missing`);
      else if (p.seq === 1 && p.prev !== GENESIS) problem(n, 1, "broken-link", "the first line does not start from the genesis hash");
      r.firstSeq = p.seq;
    } else if (p.seq < last.seq) {
      problem(n, p.seq, "reordered", `seq ${p.seq} after seq ${last.seq}`);
      continue;
    } else if (p.seq > last.seq + 1) {
      problem(n, last.seq + 1, "deleted", `seq ${last.seq + 1}..${p.seq - 1} missing`);
    } else if (p.prev !== last.hash) {
      problem(n, p.seq, "broken-link", `does not link to seq ${last.seq}`);
    }
    hashes.set(p.seq, p.hash);
    last = { seq: p.seq, hash: p.hash };
    r.lastSeq = p.seq;
    if (p.kind === "record") {
      r.records++;
      continue;
    }
    r.checkpoints++;
    const c = p.checkpoint!;
    const key = keys.get(c.keyID);
    if (!key) {
      problem(n, p.seq, "unknown-key", `checkpoint signed by unknown key ${c.keyID}`);
      continue;
    }
    let good = false;
    try {
      good = c.covers === p.seq - 1 && edVerify(null, checkpointMessage(p.stream, c.covers, p.prev, p.at), key, Buffer.from(c.sig, "base64url"));
    } catch {
      good = false;
    }
    if (!good) problem(n, p.seq, "bad-signature", `the checkpoint's signature does not verify for seq ${c.covers}`);
    else r.sealedSeq = p.seq;
  }
  if (opts.head && opts.head.seq > 0) {
    const h = opts.head;
    if (r.lastSeq === null || r.lastSeq < h.seq) problem(0, (r.lastSeq ?? 0) + 1, "truncated", `the input ends at seq ${r.lastSeq ?? 0} but the stream's head is seq ${h.seq}`);
    else if (hashes.get(h.seq) !== h.hash) problem(0, h.seq, "modified", `seq ${h.seq} does not have the head hash the platform reports`);
  }
  if (r.lastSeq !== null && (r.sealedSeq === null || r.sealedSeq < r.lastSeq)) {
    const from = (r.sealedSeq ?? (r.firstSeq ?? 1) - 1) + 1;
    problem(0, from, "unsealed-tail", `seq ${from}..${r.lastSeq} follow the last verified checkpoint: not yet sealed, or a truncation of the tail cannot be ruled out without the platform's head`);
  }
  return r;
}
