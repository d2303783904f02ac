/**
 * Server → client side of the PostgreSQL wire protocol 3.0 (PostgreSQL docs §53.7 Message Formats, §53.8
 * Error and Notice Message Fields): encoders of what the gateway says to its clients, the allocation-free
 * scanner of the upstream → client stream, and the client-side codec the gateway uses to log in to the
 * upstream PostgreSQL. Pure: no sockets, no I/O. Bad input ends in ERR_GW_PROTOCOL.
 */
import { CANCEL_REQUEST_CODE, DEFAULT_MAX_RELAY_MESSAGE_BYTES, MAX_STARTUP_PACKET_LENGTH, PROTOCOL_3_0 } from "./frontend.js";
import { HeaderScanner, MessageBuilder, TypedMessageReader, protocolError, readCString, typeTable, uint32 } from "./wire.js";
import type { MessageReaderOptions } from "./wire.js";

/** Backend message type bytes. */
export const BackendType = {
  Authentication: 0x52, // R
  BackendKeyData: 0x4b, // K
  BindComplete: 0x32, // 2
  CloseComplete: 0x33, // 3
  CommandComplete: 0x43, // C
  CopyBothResponse: 0x57, // W
  CopyData: 0x64, // d
  CopyDone: 0x63, // c
  CopyInResponse: 0x47, // G
  CopyOutResponse: 0x48, // H
  DataRow: 0x44, // D
  EmptyQueryResponse: 0x49, // I
  ErrorResponse: 0x45, // E
  FunctionCallResponse: 0x56, // V
  NoData: 0x6e, // n
  NoticeResponse: 0x4e, // N
  NotificationResponse: 0x41, // A
  ParameterDescription: 0x74, // t
  ParameterStatus: 0x53, // S
  ParseComplete: 0x31, // 1
  PortalSuspended: 0x73, // s
  ReadyForQuery: 0x5a, // Z
  RowDescription: 0x54, // T
  NegotiateProtocolVersion: 0x76, // v
} as const;

/** Authentication request codes (the int32 after 'R'). */
export const AuthCode = { Ok: 0, CleartextPassword: 3, MD5Password: 5, SASL: 10, SASLContinue: 11, SASLFinal: 12 } as const;

/** Transaction status of ReadyForQuery: idle, in a transaction block, in a failed transaction block. */
export type TransactionStatus = "I" | "T" | "E";

/** The gateway's one-byte answer accepting an SSLRequest. */
export const SSL_YES: Buffer = Buffer.from("S");
/** The one-byte answer refusing an SSLRequest or a GSSENCRequest. */
export const SSL_NO: Buffer = Buffer.from("N");

/** Fields of an ErrorResponse or NoticeResponse the gateway writes. */
export interface ErrorFields {
  sqlstate: string;
  message: string;
  detail?: string | undefined;
  hint?: string | undefined;
}

function fieldsMessage(type: "E" | "N", severity: string, f: ErrorFields): Buffer {
  if (!/^[0-9A-Z]{5}$/.test(f.sqlstate)) throw protocolError(`invalid SQLSTATE "${f.sqlstate}"`);
  // §53.8: S (localized severity), V (severity, never localized), C, M, D, H; a zero byte ends the list.
  const b = new MessageBuilder().bytes(Buffer.from("S")).cstr(severity, "severity").bytes(Buffer.from("V")).cstr(severity, "severity");
  b.bytes(Buffer.from("C")).cstr(f.sqlstate, "SQLSTATE").bytes(Buffer.from("M")).cstr(f.message, "error message");
  if (f.detail !== undefined) b.bytes(Buffer.from("D")).cstr(f.detail, "error detail");
  if (f.hint !== undefined) b.bytes(Buffer.from("H")).cstr(f.hint, "error hint");
  return b.bytes(Buffer.from([0])).finish(type);
}

/** ErrorResponse ('E'); severity defaults to FATAL, which ends the session. */
export function errorResponse(f: ErrorFields & { severity?: "FATAL" | "ERROR" }): Buffer {
  return fieldsMessage("E", f.severity ?? "FATAL", f);
}

/** NoticeResponse ('N'); severity defaults to NOTICE and the SQLSTATE to 00000. */
export function noticeResponse(f: Omit<ErrorFields, "sqlstate"> & { sqlstate?: string; severity?: "WARNING" | "NOTICE" | "INFO" | "LOG" | "DEBUG" }): Buffer {
  return fieldsMessage("N", f.severity ?? "NOTICE", { ...f, sqlstate: f.sqlstate ?? "00000" });
}

const auth = (code: number, data?: Buffer): Buffer => {
  const b = new MessageBuilder().int32(code);
  if (data) b.bytes(data);
  return b.finish("R");
};

/** AuthenticationOk. */
export function authenticationOk(): Buffer {
  return auth(AuthCode.Ok);
}

/** AuthenticationCleartextPassword. */
export function authenticationCleartextPassword(): Buffer {
  return auth(AuthCode.CleartextPassword);
}

/** AuthenticationSASL with the mechanisms the server offers, most preferred first. */
export function authenticationSASL(mechanisms: string[]): Buffer {
  const b = new MessageBuilder().int32(AuthCode.SASL);
  for (const m of mechanisms) {
    if (m === "") throw protocolError("empty SASL mechanism name");
    b.cstr(m, "SASL mechanism name");
  }
  return b.bytes(Buffer.from([0])).finish("R");
}

/** AuthenticationSASLContinue carrying a server challenge (SCRAM server-first-message). */
export function authenticationSASLContinue(data: Buffer): Buffer {
  return auth(AuthCode.SASLContinue, data);
}

/** AuthenticationSASLFinal carrying the outcome data (SCRAM server-final-message). */
export function authenticationSASLFinal(data: Buffer): Buffer {
  return auth(AuthCode.SASLFinal, data);
}

/** ParameterStatus ('S'). */
export function parameterStatus(name: string, value: string): Buffer {
  return new MessageBuilder().cstr(name, "parameter name").cstr(value, "parameter value").finish("S");
}

/** BackendKeyData ('K') for protocol 3.0: the process id and secret a CancelRequest must quote (as unsigned 32-bit). */
export function backendKeyData(pid: number, secret: number): Buffer {
  return new MessageBuilder().int32(pid, "pid").int32(secret, "secret").finish("K");
}

/** ReadyForQuery ('Z') with the transaction status. */
export function readyForQuery(status: TransactionStatus): Buffer {
  if (status !== "I" && status !== "T" && status !== "E") throw protocolError(`invalid transaction status "${String(status)}"`);
  return Buffer.from([0x5a, 0, 0, 0, 5, status.charCodeAt(0)]);
}

/** NegotiateProtocolVersion ('v'): the newest minor version the gateway speaks and the `_pq_.` options it does not know. */
export function negotiateProtocolVersion(newestMinor: number, unrecognizedOptions: string[]): Buffer {
  const b = new MessageBuilder().int32(PROTOCOL_3_0 | (newestMinor & 0xffff)).int32(unrecognizedOptions.length);
  for (const o of unrecognizedOptions) b.cstr(o, "protocol option name");
  return b.finish("v");
}

const BACKEND_TYPES = typeTable("123ACcdDEGHIKnNRsStTvVWZ");

/**
 * Follows the server's answers for statement audit (src/gateway/statements.ts). Both methods run inside the
 * relay's scan and must not throw.
 */
export interface BackendObserver {
  /** Every message header, in stream order; answers true to be handed the whole body through `body`. */
  header(type: number): boolean;
  /** The whole body of a message whose header asked for it (it may share memory with the scanned chunks: copy what you keep). */
  body(type: number, body: Buffer): void;
}

/**
 * Header-only scanner of the server → client byte stream (the relay hot path): validates every backend
 * message type and length across chunk boundaries without copying or allocating, and remembers the
 * transaction status of the latest ReadyForQuery. With an `observer` (sessions whose audit level records
 * statements) it also reports every header and hands over the bodies the observer asks for — nothing else
 * is copied, and a session without an observer pays one comparison per message.
 */
export class BackendScanner extends HeaderScanner {
  /** Status byte of the latest ReadyForQuery scanned, null before the first. */
  lastReadyStatus: TransactionStatus | null = null;
  /** ReadyForQuery messages scanned. */
  readyForQuery = 0;
  private readonly observer: BackendObserver | undefined;
  private wantBody = false;

  constructor(opts: { maxMessageBytes?: number; observer?: BackendObserver } = {}) {
    super(opts.maxMessageBytes ?? DEFAULT_MAX_RELAY_MESSAGE_BYTES, BACKEND_TYPES, "the server");
    this.observer = opts.observer;
  }

  protected onHeader(type: number, len: number): boolean {
    if (this.observer !== undefined) this.wantBody = this.observer.header(type);
    if (type !== BackendType.ReadyForQuery) return false;
    if (len !== 5) this.fail(`the server sent a ReadyForQuery of invalid length ${len}`);
    return true;
  }

  protected override captures(_type: number): boolean {
    return this.wantBody;
  }

  protected override onMessage(type: number, body: Buffer): void {
    this.wantBody = false;
    this.observer!.body(type, body);
  }

  protected override firstBodyByte(_type: number, b: number): void {
    if (b === 0x49) this.lastReadyStatus = "I";
    else if (b === 0x54) this.lastReadyStatus = "T";
    else if (b === 0x45) this.lastReadyStatus = "E";
    else this.fail(`the server sent a ReadyForQuery with invalid status 0x${b.toString(16).padStart(2, "0")}`);
    this.readyForQuery++;
  }
}

// ---- The gateway as a client of the upstream PostgreSQL ----

/** StartupMessage for protocol 3.0 with the given parameters (user is required by the server). */
export function encodeStartup(params: Record<string, string>): Buffer {
  const b = new MessageBuilder().int32(PROTOCOL_3_0);
  for (const [k, v] of Object.entries(params)) {
    if (k === "") throw protocolError("empty startup parameter name");
    b.cstr(k, "startup parameter name").cstr(v, `startup parameter "${k}"`);
  }
  const out = b.bytes(Buffer.from([0])).finish(null);
  if (out.length > MAX_STARTUP_PACKET_LENGTH + 4) throw protocolError(`startup packet of ${out.length} bytes exceeds PostgreSQL's limit of ${MAX_STARTUP_PACKET_LENGTH + 4}`);
  return out;
}

/** SASLInitialResponse ('p'): the chosen mechanism and the initial response (SCRAM client-first-message). */
export function encodeSASLInitialResponse(mechanism: string, data: Buffer): Buffer {
  return new MessageBuilder().cstr(mechanism, "SASL mechanism name").int32(data.length).bytes(data).finish("p");
}

/** SASLResponse ('p'): SCRAM client-final-message. */
export function encodeSASLResponse(data: Buffer): Buffer {
  return new MessageBuilder().bytes(data).finish("p");
}

/** PasswordMessage ('p') with a cleartext password. */
export function encodePasswordMessage(password: string): Buffer {
  return new MessageBuilder().cstr(password, "password").finish("p");
}

/** Query ('Q'), simple query protocol. */
export function encodeQuery(sql: string): Buffer {
  return new MessageBuilder().cstr(sql, "query").finish("Q");
}

/** Terminate ('X'). */
export function encodeTerminate(): Buffer {
  return Buffer.from([0x58, 0, 0, 0, 4]);
}

/** CancelRequest (protocol 3.0, 16 bytes) quoting an upstream BackendKeyData. */
export function encodeCancelRequest(pid: number, secret: number): Buffer {
  const b = Buffer.allocUnsafe(16);
  b.writeUInt32BE(16, 0);
  b.writeUInt32BE(CANCEL_REQUEST_CODE, 4);
  b.writeUInt32BE(uint32(pid, "pid"), 8);
  b.writeUInt32BE(uint32(secret, "secret"), 12);
  return b;
}

/** Default limit of BackendMessageReader: upstream handshake messages (errors, parameters) are small. */
export const DEFAULT_MAX_SERVER_MESSAGE_BYTES = 1 << 20;

/** Reads typed server messages from chunks, for the gateway's own upstream handshake. */
export class BackendMessageReader extends TypedMessageReader {
  constructor(opts: MessageReaderOptions = {}) {
    super(opts, DEFAULT_MAX_SERVER_MESSAGE_BYTES, "the server");
  }
}

/** Authentication ('R'): the request code and the data after it. */
export function parseAuthentication(body: Buffer): { code: number; data: Buffer } {
  if (body.length < 4) throw protocolError("the server sent an Authentication message without a code");
  return { code: body.readInt32BE(0), data: body.subarray(4) };
}

/** The mechanism list of an AuthenticationSASL's data. */
export function parseSASLMechanisms(data: Buffer): string[] {
  const out: string[] = [];
  let off = 0;
  while (off < data.length && data[off] !== 0) {
    const [m, next] = readCString(data, off, "SASL mechanism name");
    out.push(m);
    off = next;
  }
  if (off !== data.length - 1) throw protocolError("malformed AuthenticationSASL mechanism list");
  return out;
}

/** ErrorResponse or NoticeResponse body → fields keyed by their letter (§53.8); text decoded leniently. */
export function parseErrorFields(body: Buffer): Record<string, string> {
  const fields: Record<string, string> = {};
  let off = 0;
  while (off < body.length && body[off] !== 0) {
    const key = String.fromCharCode(body[off]!);
    const [value, next] = readCString(body, off + 1, "error field", true);
    fields[key] = value;
    off = next;
  }
  if (off !== body.length - 1) throw protocolError("malformed error or notice message from the server");
  return fields;
}

/** The severity (non-localized when sent), SQLSTATE and message of parsed error fields, which §53.8 says are always present. */
export function summarizeError(fields: Record<string, string>): { severity: string; sqlstate: string; message: string } {
  const severity = fields["V"] ?? fields["S"];
  const sqlstate = fields["C"];
  const message = fields["M"];
  if (severity === undefined || sqlstate === undefined || message === undefined) throw protocolError("the server sent an error without severity, SQLSTATE or message");
  return { severity, sqlstate, message };
}

/** ParameterStatus ('S') → name and value. */
export function parseParameterStatus(body: Buffer): { name: string; value: string } {
  const [name, off] = readCString(body, 0, "parameter name");
  const [value, end] = readCString(body, off, `parameter "${name}"`);
  if (end !== body.length) throw protocolError("malformed ParameterStatus from the server");
  return { name, value };
}

/** BackendKeyData ('K', protocol 3.0) → pid and secret as unsigned 32-bit. */
export function parseBackendKeyData(body: Buffer): { pid: number; secret: number } {
  if (body.length !== 8) throw protocolError(`malformed BackendKeyData from the server: ${body.length} bytes instead of 8`);
  return { pid: body.readUInt32BE(0), secret: body.readUInt32BE(4) };
}

/** The commands whose CommandComplete tag ends in a row count (§53.7 CommandComplete). */
const COUNTED = new Set(["INSERT", "DELETE", "UPDATE", "MERGE", "SELECT", "MOVE", "FETCH", "COPY"]);

/**
 * CommandComplete ('C') → the command (the tag without its counts: `INSERT`, `CREATE TABLE`) and the rows
 * it reports (`INSERT 0 5` → 5), null for commands without a count. Lenient: never throws.
 */
export function parseCommandComplete(body: Buffer): { command: string; rows: number | null } {
  const counted = countedTag(body);
  if (counted !== null) return counted;
  const end = body.indexOf(0);
  const tag = body.toString("utf8", 0, end < 0 ? body.length : end);
  const sp = tag.indexOf(" ");
  const first = sp < 0 ? tag : tag.slice(0, sp);
  if (!COUNTED.has(first)) return { command: tag, rows: null };
  const last = tag.slice(tag.lastIndexOf(" ") + 1);
  const rows = sp >= 0 && /^[0-9]{1,20}$/.test(last) ? Number(last) : null;
  return { command: first, rows };
}

/** The counted commands followed by a space, as bytes: the tags a statement audit sees on nearly every statement. */
const COUNTED_PREFIXES = [...COUNTED].map((c) => ({ command: c, bytes: Buffer.from(`${c} `, "latin1") }));

/**
 * `parseCommandComplete` of the common tag `<counted command> ... <rows>` read from its bytes, without decoding
 * it (this runs once per statement the gateway tracks); null for any other tag (the general path reads those).
 */
function countedTag(body: Buffer): { command: string; rows: number } | null {
  let end = 0;
  while (end < body.length && body[end] !== 0) end++;
  // The row count: 1 to 15 digits after the last space (a longer one goes the general way, as Number() reads it).
  let d = end;
  while (d > 0 && body[d - 1]! >= 48 && body[d - 1]! <= 57) d--;
  if (d === end || end - d > 15 || d === 0 || body[d - 1] !== 32) return null;
  for (const p of COUNTED_PREFIXES) {
    const b = p.bytes;
    if (d < b.length) continue;
    let i = 0;
    while (i < b.length && body[i] === b[i]) i++;
    if (i < b.length) continue;
    let rows = 0;
    for (let j = d; j < end; j++) rows = rows * 10 + (body[j]! - 48);
    return { command: p.command, rows };
  }
  return null;
}

/** A result column as RowDescription describes it: its name and its type's OID (never a value). */
export interface ResultColumn {
  name: string;
  typeOid: number;
}

/**
 * RowDescription ('T') → the columns' names and type OIDs (§53.7: int16 count, then per field a name,
 * table OID, column number, type OID, type size, type modifier and format code), at most `max` of them.
 * ERR_GW_PROTOCOL on a malformed body.
 */
export function parseRowDescription(body: Buffer, max = 1664): ResultColumn[] {
  if (body.length < 2) throw protocolError("malformed RowDescription from the server");
  const n = body.readUInt16BE(0);
  const out: ResultColumn[] = [];
  let off = 2;
  for (let i = 0; i < n && out.length < max; i++) {
    const [name, next] = readCString(body, off, "column name", true);
    if (next + 18 > body.length) throw protocolError("malformed RowDescription from the server");
    out.push({ name, typeOid: body.readUInt32BE(next + 6) });
    off = next + 18;
  }
  return out;
}

/** ReadyForQuery ('Z') → transaction status. */
export function parseReadyForQuery(body: Buffer): TransactionStatus {
  const s = body.length === 1 ? String.fromCharCode(body[0]!) : "";
  if (s !== "I" && s !== "T" && s !== "E") throw protocolError("malformed ReadyForQuery from the server");
  return s;
}
