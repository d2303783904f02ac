/**
 * Framing shared by the gateway's PostgreSQL codec (protocol 3.0; PostgreSQL docs, "Frontend/Backend
 * Protocol", §53.2 Message Flow and §53.7 Message Formats): typed errors, C strings, a byte queue, a
 * message builder, the typed-message reader and the allocation-free header scanner. Internal to
 * `src/gateway/protocol`; callers use frontend.ts, backend.ts, scram.ts and clienthello.ts.
 */
import { ParhelionError } from "../../lib/errors.js";

/** An ERR_GW_PROTOCOL error (SQLSTATE 08P01). */
export function protocolError(message: string): ParhelionError {
  return new ParhelionError("ERR_GW_PROTOCOL", message);
}

/** A shared empty buffer. */
export const EMPTY = Buffer.alloc(0);

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** Decodes UTF-8, throwing ERR_GW_PROTOCOL (naming `what`) on invalid bytes. */
export function decodeUtf8(bytes: Buffer, what: string): string {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    throw protocolError(`${what} is not valid UTF-8`);
  }
}

/** Reads a NUL-terminated string at `off`; answers the string and the offset after its NUL. */
export function readCString(buf: Buffer, off: number, what: string, lenient = false): [string, number] {
  const end = buf.indexOf(0, off);
  if (end < 0) throw protocolError(`${what} is not NUL-terminated`);
  const bytes = buf.subarray(off, end);
  return [lenient ? bytes.toString("utf8") : decodeUtf8(bytes, what), end + 1];
}

/** Checks that an int is a 32-bit value (signed or unsigned) and answers it as unsigned. */
export function uint32(n: number, what: string): number {
  if (!Number.isInteger(n) || n < -0x80000000 || n > 0xffffffff) throw protocolError(`${what} must be a 32-bit integer, got ${n}`);
  return n >>> 0;
}

/** Builds one message: optional type byte, int32 length (counting itself), then the parts. */
export class MessageBuilder {
  private readonly parts: Buffer[] = [];
  private size = 0;

  int32(n: number, what = "integer"): this {
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32BE(uint32(n, what));
    return this.bytes(b);
  }

  int16(n: number): this {
    const b = Buffer.allocUnsafe(2);
    b.writeUInt16BE(n & 0xffff);
    return this.bytes(b);
  }

  /** A NUL-terminated string; a NUL inside would break the framing, so it is refused. */
  cstr(s: string, what: string): this {
    if (s.includes("\0")) throw protocolError(`${what} contains a NUL byte`);
    this.bytes(Buffer.from(s, "utf8"));
    return this.bytes(NUL);
  }

  bytes(b: Buffer): this {
    this.parts.push(b);
    this.size += b.length;
    return this;
  }

  /** The finished message; `type` null builds an untyped (startup-phase) packet. */
  finish(type: string | null): Buffer {
    const head = type === null ? 0 : 1;
    const out = Buffer.allocUnsafe(head + 4 + this.size);
    if (type !== null) out[0] = type.charCodeAt(0);
    out.writeUInt32BE(4 + this.size, head);
    let off = head + 4;
    for (const p of this.parts) off += p.copy(out, off);
    return out;
  }
}
const NUL = Buffer.from([0]);

/**
 * A FIFO of received chunks. Bytes are copied at most once: `take` answers a subarray when the bytes lie
 * in one chunk and one fresh buffer otherwise, so a message dribbled in byte by byte costs O(n), not O(n²).
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  private head = 0;
  /** Bytes buffered. */
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** The byte at `i` (< length). */
  byteAt(i: number): number {
    let pos = this.head + i;
    for (const c of this.chunks) {
      if (pos < c.length) return c[pos]!;
      pos -= c.length;
    }
    return 0;
  }

  /** The big-endian uint32 at `i` (i + 4 <= length). */
  uint32At(i: number): number {
    const first = this.chunks[0];
    if (first !== undefined && this.head + i + 4 <= first.length) return first.readUInt32BE(this.head + i);
    return ((this.byteAt(i) << 24) | (this.byteAt(i + 1) << 16) | (this.byteAt(i + 2) << 8) | this.byteAt(i + 3)) >>> 0;
  }

  /** Removes and answers the first n (<= length) bytes. */
  take(n: number): Buffer {
    if (n === 0) return EMPTY;
    const first = this.chunks[0]!;
    if (this.head + n <= first.length) {
      const out = first.subarray(this.head, this.head + n);
      this.skip(n);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    let k = 0;
    let start = this.head;
    while (filled < n) {
      const c = this.chunks[k]!;
      const m = Math.min(c.length - start, n - filled);
      c.copy(out, filled, start, start + m);
      filled += m;
      if (start + m === c.length) {
        k++;
        start = 0;
      } else start += m;
    }
    this.chunks.splice(0, k);
    this.head = start;
    this.length -= n;
    return out;
  }

  /** Drops the first n (<= length) bytes. */
  skip(n: number): void {
    this.length -= n;
    let k = 0;
    let pos = this.head + n;
    while (k < this.chunks.length && pos >= this.chunks[k]!.length) {
      pos -= this.chunks[k]!.length;
      k++;
    }
    if (k > 0) this.chunks.splice(0, k);
    this.head = this.chunks.length === 0 ? 0 : pos;
  }

  /** Removes and answers everything buffered. */
  takeAll(): Buffer {
    return this.take(this.length);
  }
}

/** One typed message: its type byte and its body (the bytes after the length word). */
export interface Message {
  type: number;
  body: Buffer;
}

/** Options of the typed-message readers. */
export interface MessageReaderOptions {
  /** Largest accepted value of the length word (which counts itself but not the type byte). */
  maxMessageBytes?: number;
}

/** Reads typed messages (type byte + int32 length counting itself + body) from chunks, zero-copy when a message lies in one chunk. */
export class TypedMessageReader {
  readonly maxMessageBytes: number;
  private readonly queue = new ByteQueue();
  private failure: ParhelionError | null = null;

  constructor(opts: MessageReaderOptions, defaultMax: number, private readonly peer: string) {
    this.maxMessageBytes = checkMax(opts.maxMessageBytes ?? defaultMax);
  }

  /** Buffers a chunk; call next() until it answers null. */
  push(chunk: Buffer): void {
    this.queue.push(chunk);
  }

  /** The next whole message, or null until more bytes arrive; ERR_GW_PROTOCOL on a bad length (sticky). */
  next(): Message | null {
    if (this.failure) throw this.failure;
    const q = this.queue;
    if (q.length < 5) return null;
    const type = q.byteAt(0);
    const len = q.uint32At(1);
    if (len < 4 || len > this.maxMessageBytes) {
      this.failure = lengthError(this.peer, type, len, this.maxMessageBytes);
      throw this.failure;
    }
    if (q.length < len + 1) return null;
    q.skip(5);
    return { type, body: q.take(len - 4) };
  }

  /** Bytes buffered but not yet returned. */
  get buffered(): number {
    return this.queue.length;
  }

  /** Removes and answers the bytes buffered past the last returned message (e.g. to hand to the relay). */
  takeRest(): Buffer {
    return this.queue.takeAll();
  }
}

function checkMax(n: number): number {
  if (!Number.isInteger(n) || n < 4 || n > 0x7fffffff) throw new TypeError(`maxMessageBytes must be an integer from 4 to 2147483647, got ${n}`);
  return n;
}

/** A printable name for a type byte in error messages: `'Q'` or `0x07`. */
export function typeName(type: number): string {
  return type >= 0x21 && type <= 0x7e ? `'${String.fromCharCode(type)}'` : `0x${type.toString(16).padStart(2, "0")}`;
}

function lengthError(peer: string, type: number, len: number, max: number): ParhelionError {
  return len < 4
    ? protocolError(`${peer} sent a message of type ${typeName(type)} with invalid length ${len}`)
    : protocolError(`${peer} sent a message of ${len} bytes, which exceeds the gateway's limit of ${max}`);
}

/** A 256-entry membership table of valid type bytes. */
export function typeTable(types: string): Uint8Array {
  const t = new Uint8Array(256);
  for (const c of types) t[c.charCodeAt(0)] = 1;
  return t;
}

/**
 * Validates message headers across chunk boundaries without copying or allocating: it only remembers
 * where the current message ends. Subclasses name the valid type bytes and may look at the first body
 * byte (ReadyForQuery's status). Errors are sticky: after one, every scan throws it again.
 */
export abstract class HeaderScanner {
  /** Whole messages scanned (header and body). */
  messages = 0;
  readonly maxMessageBytes: number;
  private hdr = 0; // header bytes seen of the current message (0: none)
  private type = 0;
  private len = 0;
  private remaining = 0; // body bytes still to pass
  private wantFirst = false;
  private failure: ParhelionError | null = null;
  /** The current message's body is wanted whole (see captures()). */
  private capturing = false;
  /** Its parts so far, when it spans chunks (a body within one chunk is handed on as a view of it, with no list). */
  private captured: Buffer[] | null = null;

  protected constructor(
    maxMessageBytes: number,
    private readonly valid: Uint8Array,
    private readonly peer: string,
  ) {
    this.maxMessageBytes = checkMax(maxMessageBytes);
  }

  /** True between messages: every scanned byte belongs to a whole message. */
  get atBoundary(): boolean {
    return this.hdr === 0 && this.remaining === 0;
  }

  /** Scans one chunk; throws ERR_GW_PROTOCOL at the first invalid header. */
  scan(chunk: Buffer): void {
    if (this.failure) throw this.failure;
    const n = chunk.length;
    let i = 0;
    while (i < n) {
      if (this.remaining > 0) {
        if (this.wantFirst) {
          this.wantFirst = false;
          this.firstBodyByte(this.type, chunk[i]!);
        }
        const avail = n - i;
        if (avail < this.remaining) {
          if (this.capturing) (this.captured ??= []).push(chunk.subarray(i));
          this.remaining -= avail;
          return;
        }
        const end = i + this.remaining;
        const last = this.capturing ? chunk.subarray(i, end) : null;
        i = end;
        this.remaining = 0;
        this.messages++;
        if (last !== null) this.deliverCaptured(last);
      } else if (this.hdr === 0 && n - i >= 5) {
        this.header(chunk[i]!, chunk.readUInt32BE(i + 1));
        i += 5;
      } else {
        const b = chunk[i++]!;
        if (this.hdr === 0) {
          if (this.valid[b] !== 1) this.header(b, 0); // fails early on a bad type byte
          this.type = b;
          this.len = 0;
          this.hdr = 1;
        } else {
          this.len = this.len * 256 + b;
          if (++this.hdr === 5) {
            this.hdr = 0;
            this.header(this.type, this.len);
          }
        }
      }
    }
  }

  private header(type: number, len: number): void {
    if (this.valid[type] !== 1) this.fail(`${this.peer} sent an invalid message type ${typeName(type)}`);
    if (len < 4 || len > this.maxMessageBytes) {
      this.failure = lengthError(this.peer, type, len, this.maxMessageBytes);
      throw this.failure;
    }
    this.type = type;
    this.remaining = len - 4;
    this.wantFirst = this.onHeader(type, len);
    this.capturing = this.captures(type);
    this.captured = null;
    if (this.remaining === 0) {
      this.messages++;
      if (this.capturing) this.deliverCaptured(EMPTY);
    }
  }

  /** The captured message is whole: `last` is its body's last part (all of it, unless it spanned chunks). */
  private deliverCaptured(last: Buffer): void {
    const parts = this.captured;
    this.capturing = false;
    this.captured = null;
    this.onMessage(this.type, parts === null ? last : Buffer.concat([...parts, last]));
  }

  /** Whether whole bodies of this message type are wanted (onMessage); none by default. */
  protected captures(_type: number): boolean {
    return false;
  }

  /** A whole captured message body (it may share memory with the scanned chunks: copy what you keep). */
  protected onMessage(_type: number, _body: Buffer): void {}

  /** Records and throws a sticky ERR_GW_PROTOCOL. */
  protected fail(message: string): never {
    this.failure = protocolError(message);
    throw this.failure;
  }

  /** Called for each valid header; answers true to be shown the first body byte. */
  protected abstract onHeader(type: number, len: number): boolean;

  /** The first body byte of a message whose onHeader answered true. */
  protected firstBodyByte(_type: number, _byte: number): void {}
}
