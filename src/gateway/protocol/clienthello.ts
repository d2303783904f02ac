/**
 * A TLS ClientHello peeker: reads the handshake records at the start of a buffer without consuming them
 * (the caller hands the same bytes to node's TLS afterwards) and extracts the server_name (RFC 6066 §3)
 * and ALPN (RFC 7301 §3.1) extensions, e.g. to route a connection or to accept PostgreSQL 17's direct
 * TLS negotiation (`sslnegotiation=direct`, ALPN "postgresql"). Record and ClientHello layouts follow
 * RFC 8446 §5.1 and §4.1.2. Pure and total: malformed input answers `not-tls`, never throws.
 */

/** What peekClientHello found. `length`: bytes of the TLS records that carry the ClientHello. */
export type ClientHelloPeek =
  | { status: "need-more" }
  | { status: "not-tls" }
  | { status: "ok"; serverName: string | null; alpn: string[]; length: number };

/** The most bytes peekClientHello reads before giving up (`not-tls`). */
export const MAX_CLIENT_HELLO_BYTES = 32 * 1024;

const NEED_MORE: ClientHelloPeek = Object.freeze({ status: "need-more" });
const NOT_TLS: ClientHelloPeek = Object.freeze({ status: "not-tls" });

const HANDSHAKE = 22;
const CLIENT_HELLO = 1;
const EXT_SERVER_NAME = 0;
const EXT_ALPN = 16;
/** RFC 8446 §5.1: a TLSPlaintext fragment is at most 2^14 bytes. */
const MAX_FRAGMENT = 16384;

/** Thrown internally on malformed bytes; never escapes. */
class Malformed {}
const MALFORMED = new Malformed();

/** Peeks at the ClientHello at the start of `buf`, reassembling it across handshake records. */
export function peekClientHello(buf: Buffer): ClientHelloPeek {
  const fragments: Buffer[] = [];
  let have = 0; // handshake bytes gathered
  let need = -1; // handshake message length incl. its 4-byte header, once known
  let pos = 0;
  for (;;) {
    // TLSPlaintext header: ContentType(1) ProtocolVersion(2) uint16 length
    const left = buf.length - pos;
    if (left >= 1 && buf[pos] !== HANDSHAKE) return NOT_TLS;
    if (left >= 2 && buf[pos + 1] !== 3) return NOT_TLS;
    if (left >= 3 && (buf[pos + 2]! < 1 || buf[pos + 2]! > 4)) return NOT_TLS;
    if (left < 5) return NEED_MORE;
    const len = buf.readUInt16BE(pos + 3);
    if (len === 0 || len > MAX_FRAGMENT || pos + 5 + len > MAX_CLIENT_HELLO_BYTES) return NOT_TLS;
    const avail = Math.min(len, left - 5);
    fragments.push(buf.subarray(pos + 5, pos + 5 + avail));
    have += avail;
    if (need < 0 && have >= 1 && firstByte(fragments) !== CLIENT_HELLO) return NOT_TLS;
    if (need < 0 && have >= 4) {
      const head = gather(fragments, 4);
      need = 4 + ((head[1]! << 16) | (head[2]! << 8) | head[3]!);
      // Each further record costs a 5-byte header; the hello cannot fit under the cap.
      if (need > MAX_CLIENT_HELLO_BYTES - 5) return NOT_TLS;
    }
    if (avail < len) return NEED_MORE;
    pos += 5 + len;
    if (need >= 0 && have >= need) break;
  }
  try {
    return { status: "ok", ...parseClientHello(gather(fragments, need).subarray(4)), length: pos };
  } catch (err) {
    if (err === MALFORMED) return NOT_TLS;
    throw err;
  }
}

function firstByte(fragments: Buffer[]): number | undefined {
  for (const f of fragments) if (f.length > 0) return f[0];
  return undefined;
}

/** The first n bytes of the fragments (n <= their total). */
function gather(fragments: Buffer[], n: number): Buffer {
  const first = fragments[0];
  if (first !== undefined && first.length >= n) return first.subarray(0, n);
  return Buffer.concat(fragments).subarray(0, n);
}

/** A bounds-checked reader that throws MALFORMED. */
class Reader {
  constructor(
    private readonly b: Buffer,
    public pos = 0,
    private readonly end = b.length,
  ) {}

  get left(): number {
    return this.end - this.pos;
  }

  u8(): number {
    if (this.left < 1) throw MALFORMED;
    return this.b[this.pos++]!;
  }

  u16(): number {
    if (this.left < 2) throw MALFORMED;
    const v = this.b.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  /** A sub-reader over the next n bytes. */
  sub(n: number, min = 0): Reader {
    if (n < min || this.left < n) throw MALFORMED;
    const r = new Reader(this.b, this.pos, this.pos + n);
    this.pos += n;
    return r;
  }

  bytes(n: number): Buffer {
    if (this.left < n) throw MALFORMED;
    this.pos += n;
    return this.b.subarray(this.pos - n, this.pos);
  }
}

/** ClientHello body (RFC 8446 §4.1.2): version, random, session id, cipher suites, compression methods, extensions. */
function parseClientHello(body: Buffer): { serverName: string | null; alpn: string[] } {
  const r = new Reader(body);
  if (r.u8() !== 3) throw MALFORMED; // legacy_version 3.x
  r.u8();
  r.bytes(32); // random
  const sessionId = r.u8();
  if (sessionId > 32) throw MALFORMED;
  r.bytes(sessionId);
  const suites = r.u16();
  if (suites < 2 || suites % 2 !== 0) throw MALFORMED;
  r.bytes(suites);
  const compression = r.u8();
  if (compression < 1) throw MALFORMED;
  r.bytes(compression);
  let serverName: string | null = null;
  let alpn: string[] = [];
  if (r.left === 0) return { serverName, alpn }; // no extensions (pre-TLS 1.2 clients)
  const exts = r.sub(r.u16());
  if (r.left !== 0) throw MALFORMED;
  const seen = new Set<number>();
  while (exts.left > 0) {
    const type = exts.u16();
    const data = exts.sub(exts.u16());
    if (seen.has(type)) throw MALFORMED; // RFC 8446 §4.2: at most one extension of each type
    seen.add(type);
    if (type === EXT_SERVER_NAME) serverName = parseServerName(data);
    else if (type === EXT_ALPN) alpn = parseAlpn(data);
  }
  return { serverName, alpn };
}

/** server_name (RFC 6066 §3): ServerNameList<1..2^16-1> of (NameType, HostName<1..2^16-1>); one host_name at most. */
function parseServerName(data: Reader): string | null {
  const list = data.sub(data.u16(), 1);
  if (data.left !== 0) throw MALFORMED;
  let host: string | null = null;
  while (list.left > 0) {
    const nameType = list.u8();
    const n = list.u16();
    if (n < 1) throw MALFORMED;
    const name = list.bytes(n);
    if (nameType !== 0) continue;
    if (host !== null || name.length > 255) throw MALFORMED;
    for (const c of name) if (c < 0x21 || c > 0x7e) throw MALFORMED; // an ASCII DNS name
    host = name.toString("latin1");
  }
  return host;
}

/** application_layer_protocol_negotiation (RFC 7301 §3.1): ProtocolNameList<2..2^16-1> of ProtocolName<1..2^8-1>. */
function parseAlpn(data: Reader): string[] {
  const list = data.sub(data.u16(), 2);
  if (data.left !== 0) throw MALFORMED;
  const out: string[] = [];
  while (list.left > 0) {
    const n = list.u8();
    if (n === 0) throw MALFORMED;
    out.push(list.bytes(n).toString("latin1"));
  }
  return out;
}
