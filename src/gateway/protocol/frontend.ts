/**
 * Client → gateway side of the PostgreSQL wire protocol 3.0 (PostgreSQL docs §53.2 Message Flow,
 * §53.7 Message Formats): the untyped startup-phase packets (StartupMessage, SSLRequest, GSSENCRequest,
 * CancelRequest), the authentication-phase messages, and the header-only scanner the relay runs on every
 * chunk after authentication. Pure: no sockets, no I/O. Every bad input ends in ERR_GW_PROTOCOL.
 */
import { ByteQueue, EMPTY, HeaderScanner, TypedMessageReader, decodeUtf8, protocolError, readCString, typeTable } from "./wire.js";
import type { MessageReaderOptions } from "./wire.js";

/** A typed message and the reader options, shared with backend.ts. */
export type { Message, MessageReaderOptions } from "./wire.js";

/** PostgreSQL's MAX_STARTUP_PACKET_LENGTH: the most bytes a startup packet may carry after its length word. */
export const MAX_STARTUP_PACKET_LENGTH = 10000;
/** SSLRequest code (1234.5679). */
export const SSL_REQUEST_CODE = 80877103;
/** GSSENCRequest code (1234.5680). */
export const GSSENC_REQUEST_CODE = 80877104;
/** CancelRequest code (1234.5678). */
export const CANCEL_REQUEST_CODE = 80877102;
/** Protocol 3.0 as sent in a StartupMessage. */
export const PROTOCOL_3_0 = 3 << 16;

/** A parsed startup-phase packet. */
export type StartupPacket =
  | { kind: "ssl" }
  | { kind: "gssenc" }
  | { kind: "cancel"; pid: number; secret: number }
  | { kind: "startup"; major: 3; minor: number; params: Map<string, string> };

/**
 * Reads one untyped startup-phase packet (int32 length counting itself, then the body) from chunks.
 * After an SSLRequest the caller must check that `takeRest()` is empty before the TLS handshake: bytes
 * sent ahead of the server's answer were not protected by TLS (CVE-2021-23214, "buffer stuffing").
 */
export class StartupReader {
  private readonly queue = new ByteQueue();

  /** Buffers a chunk (may be empty) and answers the next whole packet, length word included, or null. */
  push(chunk: Buffer): Buffer | null {
    const q = this.queue;
    q.push(chunk);
    if (q.length < 4) return null;
    // PostgreSQL's ProcessStartupPacket: the body must hold at least the protocol code and at most
    // MAX_STARTUP_PACKET_LENGTH bytes.
    const len = q.uint32At(0);
    if (len < 8 || len > MAX_STARTUP_PACKET_LENGTH + 4) {
      throw protocolError(`invalid length of startup packet: ${len} bytes (must be 8 to ${MAX_STARTUP_PACKET_LENGTH + 4})`);
    }
    return q.length < len ? null : q.take(len);
  }

  /** Bytes buffered past the last returned packet. */
  get buffered(): number {
    return this.queue.length;
  }

  /** Removes and answers the bytes buffered past the last returned packet. */
  takeRest(): Buffer {
    return this.queue.takeAll();
  }
}

/** Parses a whole startup-phase packet (as StartupReader returns it) per §53.7 StartupMessage/SSLRequest/GSSENCRequest/CancelRequest. */
export function parseStartupPacket(packet: Buffer): StartupPacket {
  if (packet.length < 8 || packet.readUInt32BE(0) !== packet.length) {
    throw protocolError(`invalid startup packet: length word ${packet.length >= 4 ? packet.readUInt32BE(0) : "missing"} but ${packet.length} bytes`);
  }
  const code = packet.readUInt32BE(4);
  switch (code) {
    case SSL_REQUEST_CODE:
    case GSSENC_REQUEST_CODE:
      if (packet.length !== 8) throw protocolError(`invalid ${code === SSL_REQUEST_CODE ? "SSLRequest" : "GSSENCRequest"}: ${packet.length} bytes instead of 8`);
      return { kind: code === SSL_REQUEST_CODE ? "ssl" : "gssenc" };
    case CANCEL_REQUEST_CODE:
      if (packet.length !== 16) throw protocolError(`invalid CancelRequest: ${packet.length} bytes instead of 16`);
      return { kind: "cancel", pid: packet.readUInt32BE(8), secret: packet.readUInt32BE(12) };
  }
  const major = code >>> 16;
  const minor = code & 0xffff;
  if (major !== 3) throw protocolError(`unsupported frontend protocol ${major}.${minor}: the gateway supports protocol 3.0`);
  return { kind: "startup", major: 3, minor, params: parseStartupParams(packet) };
}

/** name\0value\0 ... \0: PostgreSQL requires the terminator as the last byte. */
function parseStartupParams(packet: Buffer): Map<string, string> {
  const params = new Map<string, string>();
  let off = 8;
  const last = packet.length - 1;
  while (off < packet.length) {
    if (packet[off] === 0) {
      if (off !== last) throw protocolError("invalid startup packet layout: data after the terminator");
      const user = params.get("user");
      if (user === undefined || user === "") throw protocolError("no PostgreSQL user name specified in startup packet");
      return params;
    }
    const nameEnd = packet.indexOf(0, off);
    const valueEnd = nameEnd < 0 ? -1 : packet.indexOf(0, nameEnd + 1);
    if (valueEnd < 0 || valueEnd === last) throw protocolError("invalid startup packet layout: expected terminator as last byte");
    const name = decodeUtf8(packet.subarray(off, nameEnd), "startup parameter name");
    const value = decodeUtf8(packet.subarray(nameEnd + 1, valueEnd), `startup parameter "${name}"`);
    if (params.has(name)) throw protocolError(`duplicate startup parameter "${name}"`);
    params.set(name, value);
    off = valueEnd + 1;
  }
  throw protocolError("invalid startup packet layout: expected terminator as last byte");
}

/** C isspace() in the "C" locale, which PostgreSQL's pg_split_opts uses. */
const isSpace = (c: string): boolean => c === " " || c === "\t" || c === "\n" || c === "\v" || c === "\f" || c === "\r";

/**
 * Finds `endpoint=<id>` in the libpq `options` startup parameter and answers it with the options string
 * minus that item (`rest`, to forward upstream; "" when nothing is left). Words split like PostgreSQL's
 * pg_split_opts (whitespace separates, a backslash escapes the next character); the item may be written
 * `endpoint=x`, `--endpoint=x`, `-cendpoint=x` or `-c endpoint=x`, the convention Neon documents.
 * ERR_GW_PROTOCOL for an empty id or more than one endpoint item.
 */
export function parseOptionsEndpoint(options: string): { endpoint: string | undefined; rest: string } {
  const words: { raw: string; value: string }[] = [];
  let i = 0;
  while (i < options.length) {
    while (i < options.length && isSpace(options[i]!)) i++;
    if (i >= options.length) break;
    const start = i;
    let value = "";
    let escaped = false;
    for (; i < options.length; i++) {
      const c = options[i]!;
      if (!escaped && isSpace(c)) break;
      if (!escaped && c === "\\") escaped = true;
      else {
        escaped = false;
        value += c;
      }
    }
    words.push({ raw: options.slice(start, i), value });
  }
  let endpoint: string | undefined;
  const kept: string[] = [];
  for (let k = 0; k < words.length; k++) {
    const w = words[k]!.value;
    const nextWord = words[k + 1]?.value;
    let id: string | undefined;
    for (const prefix of ["endpoint=", "--endpoint=", "-cendpoint="]) if (w.startsWith(prefix)) id = w.slice(prefix.length);
    if (id === undefined && w === "-c" && nextWord?.startsWith("endpoint=")) {
      id = nextWord.slice("endpoint=".length);
      k++;
    }
    if (id === undefined) {
      kept.push(words[k]!.raw);
      continue;
    }
    if (id === "") throw protocolError("the options startup parameter has an empty endpoint=");
    if (endpoint !== undefined) throw protocolError("the options startup parameter names the endpoint more than once");
    endpoint = id;
  }
  return { endpoint, rest: kept.join(" ") };
}

/** Default limit of MessageReader: PostgreSQL reads authentication messages of at most PG_MAX_AUTH_TOKEN_LENGTH (65535) body bytes. */
export const DEFAULT_MAX_AUTH_MESSAGE_BYTES = 65535 + 4;

/** Reads typed client messages (type byte + int32 length) from chunks; zero-copy when a message lies in one chunk. */
export class MessageReader extends TypedMessageReader {
  constructor(opts: MessageReaderOptions = {}) {
    super(opts, DEFAULT_MAX_AUTH_MESSAGE_BYTES, "the client");
  }
}

/** Frontend message type bytes. */
export const FrontendType = {
  Bind: 0x42, // B
  Close: 0x43, // C
  CopyData: 0x64, // d
  CopyDone: 0x63, // c
  CopyFail: 0x66, // f
  Describe: 0x44, // D
  Execute: 0x45, // E
  Flush: 0x48, // H
  FunctionCall: 0x46, // F
  Parse: 0x50, // P
  /** PasswordMessage, SASLInitialResponse, SASLResponse, GSSResponse. */
  Password: 0x70, // p
  Query: 0x51, // Q
  Sync: 0x53, // S
  Terminate: 0x58, // X
} as const;

/** SASLInitialResponse (§53.7): mechanism name, int32 length of the initial response (-1: none), the response. An absent response answers an empty buffer. */
export function parseSASLInitialResponse(body: Buffer): { mechanism: string; data: Buffer } {
  const [mechanism, off] = readCString(body, 0, "SASL mechanism name");
  if (off + 4 > body.length) throw protocolError("malformed SASLInitialResponse: missing the response length");
  const len = body.readInt32BE(off);
  if (len === -1 && off + 4 === body.length) return { mechanism, data: EMPTY };
  if (len < 0 || off + 4 + len !== body.length) throw protocolError(`malformed SASLInitialResponse: response length ${len} but ${body.length - off - 4} bytes follow`);
  return { mechanism, data: body.subarray(off + 4) };
}

/** SASLResponse (§53.7): the body is the mechanism's data. */
export function parseSASLResponse(body: Buffer): Buffer {
  return body;
}

/** PasswordMessage (§53.7): a NUL-terminated UTF-8 password filling the body. The caller rejects an empty password. */
export function parsePasswordMessage(body: Buffer): string {
  const [password, end] = readCString(body, 0, "password packet");
  if (end !== body.length) throw protocolError("invalid password packet size");
  return password;
}

/** Default limit of the relay scanners: PostgreSQL's PQ_LARGE_MESSAGE_LIMIT (MaxAllocSize - 1) body bytes plus the length word. */
export const DEFAULT_MAX_RELAY_MESSAGE_BYTES = 0x3ffffffe + 4;

const FRONTEND_TYPES = typeTable("BCdcfDEHFPpQSX");

/**
 * Header-only scanner of the client → server byte stream after authentication (the relay hot path):
 * validates every type byte (protocol 3.0 frontend messages) and length across chunk boundaries without
 * copying or allocating, and notices Terminate.
 */
export class FrontendScanner extends HeaderScanner {
  /** True once a Terminate ('X') header was scanned. */
  sawTerminate = false;
  private readonly statements: ((type: number, body: Buffer) => void) | undefined;

  /**
   * `onStatement`, when given, receives the whole bodies of Query, Parse, Bind, Execute and Close messages
   * (for statement audit); it must not throw.
   */
  constructor(opts: { maxMessageBytes?: number; onStatement?: (type: number, body: Buffer) => void } = {}) {
    super(opts.maxMessageBytes ?? DEFAULT_MAX_RELAY_MESSAGE_BYTES, FRONTEND_TYPES, "the client");
    this.statements = opts.onStatement;
  }

  protected onHeader(type: number): boolean {
    if (type === FrontendType.Terminate) this.sawTerminate = true;
    return false;
  }

  protected override captures(type: number): boolean {
    return this.statements !== undefined && (type === FrontendType.Query || type === FrontendType.Parse || type === FrontendType.Bind || type === FrontendType.Execute || type === FrontendType.Close);
  }

  protected override onMessage(type: number, body: Buffer): void {
    this.statements!(type, body);
  }
}
