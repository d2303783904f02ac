/**
 * An append-only, encrypted log of one stream's lines on local disk: the spool in front of a remote sink,
 * and the file sink's files. A directory of segment files named by the first seq they hold
 * (`00000000000000000001.seg`), each a magic header and frames:
 *
 *   frame = u32 length of the rest | u64 firstSeq | u32 count | u64 firstAt ms | u64 lastAt ms | 12-byte nonce | AES-256-GCM ciphertext | 16-byte tag
 *
 * The plaintext is the frame's lines joined by "\n". The header (everything before the nonce) and the stream id
 * are the GCM additional data, so seq ranges can be indexed without decrypting while any change to them fails
 * authentication. A torn last frame (a crash mid-write) is cut off at open. Files are 0600 in a 0700 directory.
 */
import { createCipheriv, createDecipheriv, createSecretKey, randomBytes, type KeyObject } from "node:crypto";
import { open, type FileHandle } from "node:fs/promises";
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, ftruncateSync, writeSync, chmodSync } from "node:fs";
import { join } from "node:path";

const MAGIC = Buffer.from("PHAUDSG1", "ascii");
const HEADER = 4 + 8 + 4 + 8 + 8; // length, firstSeq, count, firstAt, lastAt
const NONCE = 12;
const TAG = 16;
const NAME_RE = /^(\d{20})\.seg$/;
/** Largest frame accepted when reading (a corrupt length must not make us allocate gigabytes). */
const MAX_FRAME = 64 * 1024 * 1024;

export class SegmentCorrupt extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SegmentCorrupt";
  }
}

interface FrameIndex {
  offset: number;
  length: number;
  firstSeq: number;
  count: number;
  firstAt: number;
  lastAt: number;
  /**
   * The writer's in-memory note on the frame (never on disk): whether it may hold lines the caller looks for
   * (pipeline.ts: records held only in the stream). Unknown (undefined) for frames read at open until a reader
   * has looked inside and said.
   */
  hint?: boolean;
}

interface Segment {
  firstSeq: number;
  path: string;
  /** Bytes durable on disk (header and written frames). */
  bytes: number;
  /** ...and with the frames still queued. */
  planned: number;
  frames: FrameIndex[];
  createdAt: number;
}

export interface SegmentLogOptions {
  dir: string;
  streamId: string;
  /** 32-byte AES-256-GCM key; the log keeps a reference, the owner zeroes it. */
  key: Buffer;
  /** A segment is closed and a new one started beyond this size (default 8 MiB). */
  maxSegmentBytes?: number;
  /** ...or when its first frame is older than this (default: never). */
  maxSegmentAgeMs?: number;
  /** fdatasync after each write (default true). */
  sync?: boolean;
  /**
   * Least time between two write rounds (default 50 ms; each round is one write and one fdatasync per segment).
   * An append after a quiet spell is written at once; under a steady stream, frames appended meanwhile wait and go
   * together: an fdatasync costs this host a few hundred µs of CPU, too much to pay hundreds of times a second.
   */
  syncIntervalMs?: number;
  now?: () => number;
  /** A write failed: the log refuses appends from now on. */
  onError?: (err: Error) => void;
}

export interface ReadBatch {
  lines: string[];
  firstSeq: number;
  lastSeq: number;
  firstAt: number;
  lastAt: number;
}

export class SegmentLog {
  private readonly o: Required<Omit<SegmentLogOptions, "maxSegmentAgeMs" | "onError">> & { maxSegmentAgeMs: number; onError?: (err: Error) => void };
  private readonly aad: Buffer;
  private readonly key: KeyObject;
  private segments: Segment[] = [];
  private handle: { seg: Segment; fh: FileHandle } | null = null;
  private queue: Array<{ seg: Segment; frame: Buffer; index: FrameIndex }> = [];
  private writing: Promise<void> | null = null;
  private failed: Error | null = null;
  private plannedLastSeq: number | null = null;
  private totalBytes = 0;

  constructor(opts: SegmentLogOptions) {
    if (opts.key.length !== 32) throw new TypeError("SegmentLog: the key must be 32 bytes");
    this.o = { maxSegmentBytes: 8 * 1024 * 1024, sync: true, syncIntervalMs: 50, now: Date.now, ...opts, maxSegmentAgeMs: opts.maxSegmentAgeMs ?? Infinity };
    this.aad = Buffer.from(`parhelion-audit-segment/1:${opts.streamId}`, "utf8");
    this.key = createSecretKey(opts.key);
  }

  /** Reads the directory's index (headers only) and cuts a torn last frame. Returns the last line, if any. */
  open(): string | null {
    mkdirSync(this.o.dir, { recursive: true, mode: 0o700 });
    chmodSync(this.o.dir, 0o700);
    const names = readdirSync(this.o.dir).filter((n) => NAME_RE.test(n)).sort();
    this.segments = [];
    this.totalBytes = 0;
    this.queue = [];
    this.failed = null;
    this.plannedLastSeq = null;
    for (const name of names) {
      const path = join(this.o.dir, name);
      const seg = this.index(path, Number(NAME_RE.exec(name)![1]));
      if (seg.frames.length === 0) {
        rmSync(path, { force: true });
        continue;
      }
      this.segments.push(seg);
      this.totalBytes += seg.bytes;
    }
    this.durable = this.lastSeq ?? 0;
    const last = this.segments[this.segments.length - 1];
    const frame = last?.frames[last.frames.length - 1];
    if (!last || !frame) return null;
    const lines = this.decrypt(readFileSync(last.path).subarray(frame.offset, frame.offset + frame.length));
    return lines[lines.length - 1] ?? null;
  }

  /** Index of one segment; truncates it after the last whole, well-formed frame. */
  private index(path: string, firstSeq: number): Segment {
    const buf = readFileSync(path);
    const frames: FrameIndex[] = [];
    let good = MAGIC.length;
    if (buf.length < MAGIC.length || !buf.subarray(0, MAGIC.length).equals(MAGIC)) good = 0;
    else {
      let at = MAGIC.length;
      while (at + HEADER <= buf.length) {
        const len = buf.readUInt32BE(at);
        if (len < HEADER - 4 + NONCE + TAG || len > MAX_FRAME || at + 4 + len > buf.length) break;
        frames.push({ offset: at, length: 4 + len, firstSeq: Number(buf.readBigUInt64BE(at + 4)), count: buf.readUInt32BE(at + 12), firstAt: Number(buf.readBigUInt64BE(at + 16)), lastAt: Number(buf.readBigUInt64BE(at + 24)) });
        at += 4 + len;
        good = at;
      }
    }
    if (good < buf.length) {
      const fd = openSync(path, "r+");
      try {
        ftruncateSync(fd, good);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    }
    return { firstSeq, path, bytes: good, planned: good, frames, createdAt: frames[0]?.firstAt ?? this.o.now() };
  }

  get bytes(): number {
    return this.totalBytes;
  }

  get firstSeq(): number | null {
    return this.segments[0]?.frames[0]?.firstSeq ?? null;
  }

  get lastSeq(): number | null {
    const s = this.segments[this.segments.length - 1];
    const f = s?.frames[s.frames.length - 1];
    return f ? f.firstSeq + f.count - 1 : null;
  }

  get segmentCount(): number {
    return this.segments.length;
  }

  /**
   * Appends consecutive lines (firstSeq..firstSeq+lines.length-1) as one frame. The frame is encrypted now; the
   * write and its fdatasync run off the event loop (libuv's pool), frames queued meanwhile written together with
   * one fdatasync (group commit), at most one round per `syncIntervalMs`. Readers see a frame once it is durable;
   * `flushed()` waits for that (and does not wait for the interval).
   * Throws once a write has failed (the log is then broken until it is opened again).
   */
  append(lines: string[], firstSeq: number, firstAt: number, lastAt: number): void {
    if (lines.length === 0) return;
    this.appendPlain(Buffer.from(lines.join("\n"), "utf8"), lines.length, firstSeq, firstAt, lastAt);
  }

  /**
   * `append` of `count` lines already joined by "\n" and encoded (format.ts LineBuffer); `plain` is not kept.
   * `hint`: the frame's in-memory note for `framesNewestFirst` (FrameIndex.hint).
   */
  appendPlain(plain: Buffer, count: number, firstSeq: number, firstAt: number, lastAt: number, hint?: boolean): void {
    if (count === 0) return;
    if (this.failed) throw this.failed;
    const last = this.plannedLastSeq ?? this.lastSeq;
    if (last !== null && firstSeq !== last + 1) throw new Error(`SegmentLog: append of seq ${firstSeq} after ${last}`);
    let seg = this.segments[this.segments.length - 1];
    const now = this.o.now();
    if (!seg || seg.planned >= this.o.maxSegmentBytes || now - seg.createdAt >= this.o.maxSegmentAgeMs) seg = this.rotate(firstSeq, now);
    const header = Buffer.alloc(HEADER);
    const nonce = randomBytes(NONCE);
    const length = HEADER - 4 + NONCE + plain.length + TAG;
    header.writeUInt32BE(length, 0);
    header.writeBigUInt64BE(BigInt(firstSeq), 4);
    header.writeUInt32BE(count, 12);
    header.writeBigUInt64BE(BigInt(Math.max(0, Math.floor(firstAt))), 16);
    header.writeBigUInt64BE(BigInt(Math.max(0, Math.floor(lastAt))), 24);
    const c = createCipheriv("aes-256-gcm", this.key, nonce);
    c.setAAD(Buffer.concat([this.aad, header]));
    const ct = c.update(plain);
    c.final(); // GCM: no bytes held back
    const frame = Buffer.concat([header, nonce, ct, c.getAuthTag()]);
    this.queue.push({ seg, frame, index: { offset: seg.planned, length: frame.length, firstSeq, count, firstAt, lastAt, ...(hint === undefined ? {} : { hint }) } });
    seg.planned += frame.length;
    this.totalBytes += frame.length;
    this.plannedLastSeq = firstSeq + count - 1;
    this.writing ??= this.drain();
  }

  /** When the last write round ended (monotonic ms). */
  private lastRound = -Infinity;
  /** Ends the wait before the next round. */
  private hurry: (() => void) | null = null;
  /** Rounds do not wait for the interval until the lines up to this seq are durable (`flushed()` asked for them). */
  private urgentUpTo = 0;
  /** The last seq durable on disk (0 when none). */
  private durable = 0;
  private waiters: Array<{ seq: number; resolve: () => void }> = [];

  /** The last seq whose frame is durable (readers see it); 0 when none. */
  get durableSeq(): number {
    return this.durable;
  }

  /**
   * Resolves once the frame holding `seq` is durable, or at once when no frame holding it is on its way (or the log
   * failed). Waits for the log's own rhythm; `flushed()` hurries it.
   */
  whenDurable(seq: number): Promise<void> {
    if (this.durable >= seq || this.failed || (this.plannedLastSeq ?? 0) < seq) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ seq, resolve }));
  }

  private settle(all: boolean): void {
    if (this.waiters.length === 0) return;
    const keep: Array<{ seq: number; resolve: () => void }> = [];
    for (const w of this.waiters) {
      if (all || w.seq <= this.durable) w.resolve();
      else keep.push(w);
    }
    this.waiters = keep;
  }

  /** Writes what is queued, segment by segment, one write and one fdatasync per segment per round, rounds at least `syncIntervalMs` apart. */
  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0 && !this.failed) {
        const wait = this.urgentUpTo > this.durable ? 0 : this.lastRound + this.o.syncIntervalMs - performance.now();
        if (wait > 0) {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(() => this.hurry?.(), wait);
            this.hurry = () => {
              clearTimeout(timer);
              this.hurry = null;
              resolve();
            };
          });
        }
        const batch = this.queue;
        this.queue = [];
        let i = 0;
        while (i < batch.length) {
          const seg = batch[i]!.seg;
          let j = i;
          while (j < batch.length && batch[j]!.seg === seg) j++;
          const part = batch.slice(i, j);
          try {
            if (this.handle?.seg !== seg) {
              await this.handle?.fh.close();
              this.handle = { seg, fh: await open(seg.path, "a", 0o600) };
            }
            // One writev of the round's frames, without copying them into one buffer (a round can hold megabytes).
            const bufs = part.map((x) => x.frame);
            while (bufs.length > 0) {
              let n = (await this.handle.fh.writev(bufs)).bytesWritten;
              while (bufs.length > 0 && n >= bufs[0]!.length) n -= bufs.shift()!.length;
              if (n > 0) bufs[0] = bufs[0]!.subarray(n);
            }
            if (this.o.sync) await this.handle.fh.datasync();
          } catch (err) {
            this.failed = new SegmentCorrupt(`an audit segment could not be written: ${(err as Error).message}`);
            this.queue = [];
            this.o.onError?.(this.failed);
            return;
          }
          for (const x of part) {
            seg.frames.push(x.index);
            seg.bytes += x.index.length;
            this.durable = x.index.firstSeq + x.index.count - 1;
          }
          i = j;
        }
        this.lastRound = performance.now();
        this.settle(false);
      }
    } finally {
      this.writing = null;
      this.settle(true);
    }
  }

  /** Resolves when every appended frame is durable (or the log failed). */
  async flushed(): Promise<void> {
    const target = this.plannedLastSeq ?? 0;
    if (this.durable >= target || this.failed) return;
    this.urgentUpTo = Math.max(this.urgentUpTo, target);
    this.hurry?.();
    await this.whenDurable(target);
  }

  /** Frames appended and not yet durable. */
  get pendingWrites(): number {
    return this.queue.length + (this.writing ? 1 : 0);
  }

  private rotate(firstSeq: number, now: number): Segment {
    const path = join(this.o.dir, `${String(firstSeq).padStart(20, "0")}.seg`);
    const fd = openSync(path, "w", 0o600);
    try {
      writeSync(fd, MAGIC);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    const seg: Segment = { firstSeq, path, bytes: MAGIC.length, planned: MAGIC.length, frames: [], createdAt: now };
    this.segments.push(seg);
    this.totalBytes += MAGIC.length;
    const dfd = openSync(this.o.dir, "r");
    try {
      fsyncSync(dfd); // the new name survives a crash
    } finally {
      closeSync(dfd);
    }
    return seg;
  }

  private decrypt(frame: Buffer): string[] {
    const header = frame.subarray(0, HEADER);
    const nonce = frame.subarray(HEADER, HEADER + NONCE);
    const tag = frame.subarray(frame.length - TAG);
    const d = createDecipheriv("aes-256-gcm", this.key, nonce);
    d.setAAD(Buffer.concat([this.aad, header]));
    d.setAuthTag(tag);
    let plain: Buffer;
    try {
      plain = Buffer.concat([d.update(frame.subarray(HEADER + NONCE, frame.length - TAG)), d.final()]);
    } catch {
      throw new SegmentCorrupt("an audit segment frame failed authentication (changed on disk, or the wrong key)");
    }
    const lines = plain.toString("utf8").split("\n");
    if (lines.length !== header.readUInt32BE(12)) throw new SegmentCorrupt("an audit segment frame holds another number of lines than its header says");
    return lines;
  }

  /** Lines from `fromSeq` on, whole frames, up to about `maxLines` (at least one frame). Null when there are none. */
  read(fromSeq: number, maxLines: number): ReadBatch | null {
    const out: string[] = [];
    let first = -1;
    let firstAt = 0;
    let lastAt = 0;
    let full = false;
    for (const seg of this.segments) {
      if (full) break;
      const segLast = seg.frames.length > 0 ? seg.frames[seg.frames.length - 1]! : null;
      if (!segLast || segLast.firstSeq + segLast.count - 1 < fromSeq) continue;
      let buf: Buffer | null = null;
      for (const f of seg.frames) {
        if (f.firstSeq + f.count - 1 < fromSeq) continue;
        if (out.length > 0 && out.length + f.count - Math.max(0, fromSeq - f.firstSeq) > maxLines) {
          full = true;
          break;
        }
        buf ??= readFileSync(seg.path);
        let lines = this.decrypt(buf.subarray(f.offset, f.offset + f.length));
        if (f.firstSeq < fromSeq) lines = lines.slice(fromSeq - f.firstSeq);
        if (first < 0) {
          first = Math.max(f.firstSeq, fromSeq);
          firstAt = f.firstAt;
        }
        lastAt = f.lastAt;
        for (const l of lines) out.push(l);
        if (out.length >= maxLines) {
          full = true;
          break;
        }
      }
    }
    return out.length === 0 ? null : { lines: out, firstSeq: first, lastSeq: first + out.length - 1, firstAt, lastAt };
  }

  /** Every line, in order, segment by segment (memory: one segment at a time). */
  *lines(): Generator<string> {
    for (const seg of this.segments) {
      if (!existsSync(seg.path)) continue;
      const buf = readFileSync(seg.path);
      for (const f of seg.frames) yield* this.decrypt(buf.subarray(f.offset, f.offset + f.length));
    }
  }

  /**
   * Frames newest first (each frame's lines in order), skipping frames that start at or after `beforeSeq`; stops
   * at the first frame that ends before `notBefore` (ms).
   * Frames whose hint is false are passed over unread; a reader that looked inside a frame of unknown hint can
   * note it with `setHint` so later walks pass it over too.
   */
  *framesNewestFirst(beforeSeq = Infinity, notBefore = -Infinity, skipHintFalse = false): Generator<{ firstSeq: number; lines: string[]; setHint: (v: boolean) => void }> {
    for (let i = this.segments.length - 1; i >= 0; i--) {
      const seg = this.segments[i]!;
      if (!existsSync(seg.path)) continue;
      let buf: Buffer | null = null;
      for (let j = seg.frames.length - 1; j >= 0; j--) {
        const f = seg.frames[j]!;
        if (f.firstSeq >= beforeSeq) continue;
        if (f.lastAt < notBefore) return; // frames are written in time order
        if (skipHintFalse && f.hint === false) continue;
        buf ??= readFileSync(seg.path);
        yield { firstSeq: f.firstSeq, lines: this.decrypt(buf.subarray(f.offset, f.offset + f.length)), setHint: (v) => { f.hint = v; } };
      }
    }
  }

  /** Removes whole segments all of whose lines satisfy `drop` (by last seq and last time); never the newest. */
  prune(drop: (lastSeq: number, lastAt: number) => boolean): number {
    let removed = 0;
    while (this.segments.length > 1) {
      const seg = this.segments[0]!;
      const f = seg.frames[seg.frames.length - 1];
      if (seg.planned !== seg.bytes || this.handle?.seg === seg) break; // writes still queued for it
      if (f && !drop(f.firstSeq + f.count - 1, f.lastAt)) break;
      rmSync(seg.path, { force: true });
      this.totalBytes -= seg.bytes;
      this.segments.shift();
      removed++;
    }
    return removed;
  }

  /** Waits for queued writes and closes the file. */
  async close(): Promise<void> {
    await this.flushed();
    const h = this.handle;
    this.handle = null;
    await h?.fh.close();
  }

  /** Deletes the whole log (the sink was deleted). */
  async destroy(): Promise<void> {
    await this.close();
    rmSync(this.o.dir, { recursive: true, force: true });
    this.segments = [];
    this.totalBytes = 0;
  }
}
