/**
 * SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 5802, RFC 7677, channel binding tls-server-end-point of
 * RFC 5929) as PostgreSQL speaks them (PostgreSQL docs §53.3.1 "SCRAM-SHA-256 Authentication",
 * src/backend/libpq/auth-scram.c): verifiers, the server side the gateway runs toward its clients, and the
 * client side it runs toward the upstream PostgreSQL, which can log in with a recovered ClientKey instead
 * of the password (PgBouncer's trick). Failures are ERR_GW_AUTH_FAILED, malformed messages ERR_GW_PROTOCOL.
 */
import { hash, pbkdf2Sync, pbkdf2, randomBytes, timingSafeEqual } from "node:crypto";
import { hmacSha256 } from "../../lib/hmac.js";
import { ParhelionError } from "../../lib/errors.js";
import { protocolError } from "./wire.js";

/**
 * SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL stores it:
 * `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 parts).
 */
export interface ScramVerifier {
  iterations: number;
  salt: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
}

const hmac = hmacSha256;
const sha256 = (data: Buffer): Buffer => hash("sha256", data, "buffer");

// RFC 3454 tables used by SASLprep (RFC 4013).
const NON_ASCII_SPACE = /[\u00A0\u1680\u2000-\u200B\u202F\u205F\u3000]/g; // C.1.2, mapped to SPACE
const MAPPED_TO_NOTHING = /[\u00AD\u034F\u1806\u180B-\u180D\u200B-\u200D\u2060\uFE00-\uFE0F\uFEFF]/g; // B.1
// Prohibited output: C.1.2, C.2.1, C.2.2, C.3, C.4, C.5 (lone surrogates), C.6, C.7, C.8, C.9.
const PROHIBITED =
  /[\u00A0\u1680\u2000-\u200B\u202F\u205F\u3000\u0000-\u001F\u007F-\u009F\u06DD\u070F\u180E\u200C-\u200F\u2028-\u202E\u2060-\u2063\u206A-\u206F\u0340\u0341\u2FF0-\u2FFB\uE000-\uF8FF\uFDD0-\uFDEF\uFEFF\uFFF9-\uFFFF\u{1D173}-\u{1D17A}\u{E0001}\u{E0020}-\u{E007F}\u{F0000}-\u{10FFFF}\u{1FFFE}\u{1FFFF}\u{2FFFE}\u{2FFFF}\u{3FFFE}\u{3FFFF}\u{4FFFE}\u{4FFFF}\u{5FFFE}\u{5FFFF}\u{6FFFE}\u{6FFFF}\u{7FFFE}\u{7FFFF}\u{8FFFE}\u{8FFFF}\u{9FFFE}\u{9FFFF}\u{AFFFE}\u{AFFFF}\u{BFFFE}\u{BFFFF}\u{CFFFE}\u{CFFFF}\u{DFFFE}\u{DFFFF}\u{EFFFE}\u{EFFFF}]|\p{Surrogate}/u;

/**
 * The password as PostgreSQL's pg_saslprep prepares it: ASCII passes unchanged; otherwise non-ASCII spaces
 * become SPACE, RFC 3454 B.1 characters are removed and the result is NFKC-normalised, and when that
 * contains a prohibited character the raw password is used instead. (Not checked: Unicode 3.2 unassigned
 * code points and the bidi rule, both of which also fall back to the raw password in PostgreSQL.)
 */
function preparePassword(password: string): string {
  // eslint-disable-next-line no-control-regex
  if (/^[\x00-\x7f]*$/.test(password)) return password;
  const prepared = password.replace(NON_ASCII_SPACE, " ").replace(MAPPED_TO_NOTHING, "").normalize("NFKC");
  return prepared === "" || PROHIBITED.test(prepared) ? password : prepared;
}

/** Derives the keys of a verifier from a password (what `password_encryption = scram-sha-256` stores). */
export function deriveScramKeys(password: string, salt: Buffer, iterations: number): { clientKey: Buffer; storedKey: Buffer; serverKey: Buffer } {
  const salted = pbkdf2Sync(preparePassword(password), salt, iterations, 32, "sha256");
  const clientKey = hmac(salted, "Client Key");
  return { clientKey, storedKey: sha256(clientKey), serverKey: hmac(salted, "Server Key") };
}

/** deriveScramKeys on the thread pool: PBKDF2 at 4096 iterations would hold the event loop for milliseconds. */
export async function deriveScramKeysAsync(password: string, salt: Buffer, iterations: number): Promise<{ clientKey: Buffer; storedKey: Buffer; serverKey: Buffer }> {
  const salted = await new Promise<Buffer>((resolve, reject) => pbkdf2(preparePassword(password), salt, iterations, 32, "sha256", (err, key) => (err ? reject(err) : resolve(key))));
  const clientKey = hmac(salted, "Client Key");
  return { clientKey, storedKey: sha256(clientKey), serverKey: hmac(salted, "Server Key") };
}

/** A PostgreSQL SCRAM-SHA-256 verifier string for a password; it can be given to CREATE/ALTER ROLE ... PASSWORD. */
export function makeScramVerifier(password: string, opts: { iterations?: number; salt?: Buffer } = {}): string {
  const iterations = opts.iterations ?? 4096;
  const salt = opts.salt ?? randomBytes(16);
  const { storedKey, serverKey } = deriveScramKeys(password, salt, iterations);
  return `SCRAM-SHA-256$${iterations}:${salt.toString("base64")}$${storedKey.toString("base64")}:${serverKey.toString("base64")}`;
}

/** Parses a stored verifier; null for anything else (md5 hashes, plaintext, garbage). */
export function parseScramVerifier(s: string | null | undefined): ScramVerifier | null {
  if (!s) return null;
  const m = /^SCRAM-SHA-256\$(\d{1,9}):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$/.exec(s);
  if (!m) return null;
  const iterations = Number(m[1]);
  const salt = Buffer.from(m[2]!, "base64");
  const storedKey = Buffer.from(m[3]!, "base64");
  const serverKey = Buffer.from(m[4]!, "base64");
  if (iterations < 1 || salt.length === 0 || storedKey.length !== 32 || serverKey.length !== 32) return null;
  return { iterations, salt, storedKey, serverKey };
}

// ---- Message syntax (RFC 5802 §7) ----

/** SASL mechanism name of SCRAM-SHA-256 without channel binding. */
export const SCRAM_SHA_256 = "SCRAM-SHA-256";
/** SASL mechanism name of SCRAM-SHA-256 with channel binding. */
export const SCRAM_SHA_256_PLUS = "SCRAM-SHA-256-PLUS";
/** The only channel-binding type PostgreSQL supports. */
const CBIND_TYPE = "tls-server-end-point";
/** PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH. */
const MAX_SCRAM_MESSAGE = 65535;
/** PostgreSQL's scram_sha_256_iterations default, used by the mock exchange. */
const DEFAULT_ITERATIONS = 4096;

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
/** RFC 5802 `printable`: %x21-2B / %x2D-7E, i.e. visible ASCII but ",". */
const PRINTABLE = /^[\x21-\x2b\x2d-\x7e]+$/;

/** A SCRAM message as a byte-preserving (latin1) string; ERR_GW_PROTOCOL when empty, oversized or holding NUL. */
function scramText(data: Buffer, what: string): string {
  if (data.length === 0) throw protocolError(`malformed SCRAM message: the ${what} is empty`);
  if (data.length > MAX_SCRAM_MESSAGE) throw protocolError(`malformed SCRAM message: the ${what} is too long`);
  if (data.includes(0)) throw protocolError(`malformed SCRAM message: the ${what} contains a NUL byte`);
  return data.toString("latin1");
}

/** Reads `attr=value` attributes separated by commas, as auth-scram.c's read_attr_value/read_any_attr do. */
class AttrReader {
  pos = 0;
  constructor(
    readonly s: string,
    private readonly what: string,
  ) {}

  get done(): boolean {
    return this.pos >= this.s.length;
  }

  peek(): string | undefined {
    return this.s[this.pos];
  }

  malformed(detail: string): ParhelionError {
    return protocolError(`malformed SCRAM message: ${detail} in the ${this.what}`);
  }

  /** Expects one character. */
  expect(c: string): void {
    if (this.s[this.pos] !== c) throw this.malformed(`expected "${c}" at offset ${this.pos}`);
    this.pos++;
  }

  /** Reads `name=value` and the comma after it, if any. */
  attr(name: string): string {
    if (this.s[this.pos] !== name || this.s[this.pos + 1] !== "=") throw this.malformed(`expected attribute "${name}"`);
    return this.value(this.pos + 2);
  }

  /** Reads any `x=value` with x a letter; answers [x, value]. */
  any(): [string, string] {
    const name = this.s[this.pos] ?? "";
    if (!/^[A-Za-z]$/.test(name) || this.s[this.pos + 1] !== "=") throw this.malformed("expected an attribute");
    return [name, this.value(this.pos + 2)];
  }

  private value(start: number): string {
    const comma = this.s.indexOf(",", start);
    const end = comma < 0 ? this.s.length : comma;
    this.pos = comma < 0 ? end : end + 1;
    return this.s.slice(start, end);
  }
}

function b64(s: string, what: string, r: AttrReader): Buffer {
  if (!BASE64.test(s)) throw r.malformed(`${what} is not base64`);
  return Buffer.from(s, "base64");
}

function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.allocUnsafe(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ b[i]!;
  return out;
}

// ---- Server side ----

/** A per-process secret for mock salts, like PostgreSQL's mock_auth_nonce. */
const MOCK_SECRET = randomBytes(32);

/** The verifier PostgreSQL's scram_mock_salt would invent for a user without one: stable per user and process, matching nothing. */
function mockVerifier(user: string, iterations: number): ScramVerifier {
  const key = hmac(MOCK_SECRET, `mock:${user}`);
  return { iterations, salt: hmac(key, "salt").subarray(0, 16), storedKey: hmac(key, "stored"), serverKey: hmac(key, "server") };
}

/** Options of one server-side SCRAM exchange. */
export interface ScramServerOptions {
  /** The user of the startup packet: PostgreSQL ignores the SCRAM username. Names the failure and seeds the mock salt. */
  user: string;
  /** The user's verifier; null for an unknown user or one without a SCRAM password (a mock exchange then fails at clientFinal). */
  verifier: ScramVerifier | null;
  /** tls-server-end-point data of the connection (tlsServerEndPoint of the gateway's certificate); null offers no PLUS. */
  channelBinding: Buffer | null;
  /** The server's nonce part (printable ASCII but ","); 18 random bytes in base64 by default, like PostgreSQL. */
  nonce?: () => string;
  /** Iterations the mock exchange advertises; match the real verifiers' count (PostgreSQL's default 4096). */
  mockIterations?: number;
}

/**
 * The server side of one SCRAM-SHA-256(-PLUS) exchange, following auth-scram.c: offer `mechanisms()`,
 * answer the client-first-message with `clientFirst`, then check the client-final-message with
 * `clientFinal`, which answers the server-final-message and the client's recovered ClientKey.
 */
export class ScramServer {
  private readonly opts: ScramServerOptions;
  private readonly verifier: ScramVerifier;
  private readonly doomed: boolean;
  private state: "start" | "first" | "done" | "failed" = "start";
  private plus = false;
  private cbindFlag = "";
  private clientFirstBare = "";
  private serverFirst = "";
  private nonce = "";

  constructor(opts: ScramServerOptions) {
    this.opts = opts;
    const v = opts.verifier;
    this.doomed = v === null || v.storedKey.length !== 32 || v.serverKey.length !== 32 || v.iterations < 1;
    this.verifier = this.doomed || v === null ? mockVerifier(opts.user, opts.mockIterations ?? DEFAULT_ITERATIONS) : v;
  }

  /** The mechanisms to offer in AuthenticationSASL, most preferred first. */
  mechanisms(): string[] {
    return this.opts.channelBinding ? [SCRAM_SHA_256_PLUS, SCRAM_SHA_256] : [SCRAM_SHA_256];
  }

  /** Takes the client's mechanism and client-first-message; answers the server-first-message. */
  clientFirst(mechanism: string, data: Buffer): Buffer {
    return this.step("start", () => {
      if (!this.mechanisms().includes(mechanism)) throw protocolError(`client selected an invalid SASL authentication mechanism "${mechanism.slice(0, 64)}"`);
      this.plus = mechanism === SCRAM_SHA_256_PLUS;
      const r = new AttrReader(scramText(data, "client-first-message"), "client-first-message");
      // gs2-header (RFC 5802 §7): gs2-cbind-flag "," [authzid] ","
      const flag = r.peek();
      if (flag === "n" || flag === "y") {
        if (this.plus) throw r.malformed("the client selected SCRAM-SHA-256-PLUS but sent no channel binding");
        // RFC 5802 §6: "y" means the client could bind but thinks the server cannot; when the server did
        // offer PLUS someone stripped it from the list (a downgrade), so the exchange must fail.
        if (flag === "y" && this.opts.channelBinding) {
          throw new ParhelionError("ERR_GW_AUTH_FAILED", "SCRAM channel binding negotiation error: the client supports channel binding but thinks the server does not, though this server offered it");
        }
        r.pos++;
        r.expect(",");
      } else if (flag === "p") {
        if (!this.plus) throw r.malformed("the client selected SCRAM-SHA-256 without channel binding but sent channel binding");
        const type = r.attr("p");
        if (r.s[r.pos - 1] !== ",") throw r.malformed("expected \",\" after the channel-binding flag");
        if (type !== CBIND_TYPE) throw protocolError(`unsupported SCRAM channel-binding type "${type.slice(0, 64)}"`);
      } else {
        throw r.malformed("unexpected channel-binding flag");
      }
      this.cbindFlag = flag;
      if (r.peek() === "a") throw protocolError("client uses authorization identity (a=), but it is not supported");
      r.expect(",");
      this.clientFirstBare = r.s.slice(r.pos);
      if (r.peek() === "m") throw protocolError("client requires an unsupported SCRAM extension");
      r.attr("n"); // ignored: PostgreSQL authenticates the user of the startup packet
      const clientNonce = r.attr("r");
      if (!PRINTABLE.test(clientNonce)) throw r.malformed("non-printable characters in the nonce");
      while (!r.done) r.any(); // optional extensions, ignored
      const serverNonce = this.opts.nonce ? this.opts.nonce() : randomBytes(18).toString("base64");
      if (!PRINTABLE.test(serverNonce)) throw new TypeError("ScramServer: nonce() must answer printable ASCII without commas");
      this.nonce = clientNonce + serverNonce;
      const v = this.verifier;
      this.serverFirst = `r=${this.nonce},s=${v.salt.toString("base64")},i=${v.iterations}`;
      return Buffer.from(this.serverFirst, "latin1");
    });
  }

  /** Takes the client-final-message; answers the server-final-message and the ClientKey the proof revealed. */
  clientFinal(data: Buffer): { serverFinal: Buffer; clientKey: Buffer } {
    return this.step("first", () => {
      const r = new AttrReader(scramText(data, "client-final-message"), "client-final-message");
      const cbind = r.attr("c");
      if (this.plus) {
        const expected = Buffer.concat([Buffer.from(`p=${CBIND_TYPE},,`), this.opts.channelBinding!]).toString("base64");
        if (cbind !== expected) throw new ParhelionError("ERR_GW_AUTH_FAILED", "SCRAM channel binding check failed");
      } else if (!((cbind === "biws" && this.cbindFlag === "n") || (cbind === "eSws" && this.cbindFlag === "y"))) {
        // base64 of "n,," and "y,,": the gs2 header the client sent first
        throw protocolError("unexpected SCRAM channel-binding attribute in client-final-message");
      }
      const finalNonce = r.attr("r");
      let proofAt: number;
      let proofText: string;
      for (;;) {
        // optional extensions until the proof
        if (r.done) throw r.malformed("missing the proof");
        proofAt = r.pos - 1;
        const [name, value] = r.any();
        if (name === "p") {
          proofText = value;
          break;
        }
      }
      if (!r.done || r.s.endsWith(",")) throw r.malformed("garbage after the proof");
      const proof = b64(proofText, "the proof", r);
      if (proof.length !== 32) throw r.malformed("the proof has the wrong length");
      if (finalNonce !== this.nonce) throw protocolError("invalid SCRAM response: the nonce does not match");
      const authMessage = `${this.clientFirstBare},${this.serverFirst},${r.s.slice(0, proofAt)}`;
      const v = this.verifier;
      // RFC 5802 §3: ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); the proof holds when H(ClientKey) = StoredKey.
      const clientKey = xor(proof, hmac(v.storedKey, Buffer.from(authMessage, "latin1")));
      const ok = timingSafeEqual(sha256(clientKey), v.storedKey);
      if (!ok || this.doomed) throw this.failed();
      const serverSignature = hmac(v.serverKey, Buffer.from(authMessage, "latin1"));
      return { serverFinal: Buffer.from(`v=${serverSignature.toString("base64")}`, "latin1"), clientKey };
    });
  }

  private failed(): ParhelionError {
    return new ParhelionError("ERR_GW_AUTH_FAILED", `password authentication failed for user "${this.opts.user}"`);
  }

  /** Runs one step of the exchange in order; any error ends the exchange. */
  private step<T>(expected: "start" | "first", fn: () => T): T {
    if (this.state !== expected) throw protocolError(this.state === "failed" ? "the SCRAM exchange already failed" : "unexpected SCRAM message at this point of the exchange");
    this.state = "failed";
    const out = fn();
    this.state = expected === "start" ? "first" : "done";
    return out;
  }
}

// ---- Channel binding: tls-server-end-point (RFC 5929 §4.1) ----

/** A DER TLV header at `pos`: tag and content bounds, or null when malformed or out of bounds. */
function der(b: Buffer, pos: number): { tag: number; start: number; end: number } | null {
  if (pos + 2 > b.length) return null;
  const tag = b[pos]!;
  let len = b[pos + 1]!;
  let p = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || p + n > b.length) return null;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + b[p++]!;
  }
  return p + len > b.length ? null : { tag, start: p, end: p + len };
}

/** Dotted form of a DER OBJECT IDENTIFIER's content. */
function oidString(b: Buffer): string {
  const first = b[0] ?? 0;
  const parts = [Math.min(2, Math.floor(first / 40)), first - 40 * Math.min(2, Math.floor(first / 40))];
  let v = 0;
  for (let i = 1; i < b.length; i++) {
    v = v * 128 + (b[i]! & 0x7f);
    if ((b[i]! & 0x80) === 0) {
      parts.push(v);
      v = 0;
    }
  }
  return parts.join(".");
}

/** Signature algorithm OID → the hash RFC 5929 §4.1 prescribes (MD5 and SHA-1 become SHA-256). */
const END_POINT_HASH: Record<string, string> = {
  "1.2.840.113549.1.1.4": "sha256", // md5WithRSAEncryption
  "1.2.840.113549.1.1.5": "sha256", // sha1WithRSAEncryption
  "1.2.840.113549.1.1.14": "sha224",
  "1.2.840.113549.1.1.11": "sha256",
  "1.2.840.113549.1.1.12": "sha384",
  "1.2.840.113549.1.1.13": "sha512",
  "1.2.840.10045.4.1": "sha256", // ecdsa-with-SHA1
  "1.2.840.10045.4.3.1": "sha224",
  "1.2.840.10045.4.3.2": "sha256",
  "1.2.840.10045.4.3.3": "sha384",
  "1.2.840.10045.4.3.4": "sha512",
  "1.2.840.10040.4.3": "sha256", // dsa-with-sha1
  "2.16.840.1.101.3.4.3.2": "sha256", // dsa-with-sha256
};

/**
 * The tls-server-end-point channel-binding data of a DER certificate (RFC 5929 §4.1): its hash under the
 * certificate's signature hash, SHA-256 for MD5 and SHA-1. Null when the hash is undefined or unknown
 * (Ed25519, Ed448, RSASSA-PSS, which libpq's OpenSSL lookup also refuses) or the DER is malformed; the
 * caller then offers no SCRAM-SHA-256-PLUS.
 */
export function tlsServerEndPoint(certDer: Buffer): Buffer | null {
  // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm AlgorithmIdentifier, signatureValue BIT STRING }
  const cert = der(certDer, 0);
  if (!cert || cert.tag !== 0x30) return null;
  const tbs = der(certDer, cert.start);
  if (!tbs || tbs.tag !== 0x30) return null;
  const alg = der(certDer, tbs.end);
  if (!alg || alg.tag !== 0x30 || alg.end > cert.end) return null;
  const oid = der(certDer, alg.start);
  if (!oid || oid.tag !== 0x06 || oid.end > alg.end || oid.end === oid.start) return null;
  const algorithm = END_POINT_HASH[oidString(certDer.subarray(oid.start, oid.end))];
  return algorithm === undefined ? null : hash(algorithm, certDer, "buffer");
}

// ---- Client side (toward the upstream PostgreSQL) ----

/** How ScramClient proves itself: the password, or a ClientKey recovered by ScramServer (and the ServerKey from the verifier, to check the server). */
export type ScramClientCredentials = { password: string } | { clientKey: Buffer; serverKey?: Buffer };

/** Options of ScramClient beyond the credentials. */
export interface ScramClientOptions {
  /** The client nonce (printable ASCII but ","); 18 random bytes in base64 by default. */
  nonce?: () => string;
  /** The most PBKDF2 iterations accepted from the server with a password (default 100000). */
  maxIterations?: number;
  /** The SCRAM username; "" by default, as libpq sends it (PostgreSQL uses the startup user). */
  username?: string;
  /** tls-server-end-point data to bind to (SCRAM-SHA-256-PLUS); none by default, the upstream being a unix socket. */
  channelBinding?: Buffer;
}

/**
 * The client side of SCRAM-SHA-256 (or -PLUS with `channelBinding`), for the gateway's own logins upstream:
 * `mechanism`, `clientFirst()`, `serverFirst(data)` → client-final-message, `serverFinal(data)`.
 */
export class ScramClient {
  private readonly creds: ScramClientCredentials;
  private readonly opts: ScramClientOptions;
  private state: "start" | "first" | "final" | "done" | "failed" = "start";
  private clientNonce = "";
  private serverKey: Buffer | undefined;
  private authMessage = "";
  private readonly gs2: string;
  private readonly bare: string;

  constructor(creds: ScramClientCredentials, opts: ScramClientOptions = {}) {
    if ("clientKey" in creds && creds.clientKey.length !== 32) throw new TypeError("ScramClient: clientKey must be 32 bytes");
    this.creds = creds;
    this.opts = opts;
    this.gs2 = opts.channelBinding ? `p=${CBIND_TYPE},,` : "n,,";
    // RFC 5802 §7 saslname: "=" and "," are escaped as =3D and =2C.
    this.bare = `n=${Buffer.from(opts.username ?? "", "utf8").toString("latin1").replace(/=/g, "=3D").replace(/,/g, "=2C")},r=`;
  }

  /** The SASL mechanism to name in SASLInitialResponse. */
  get mechanism(): string {
    return this.opts.channelBinding ? SCRAM_SHA_256_PLUS : SCRAM_SHA_256;
  }

  /** The client-first-message, `n,,n=,r=<nonce>` by default (PostgreSQL ignores the SCRAM username). */
  clientFirst(): Buffer {
    return this.step("start", "first", () => {
      this.clientNonce = this.opts.nonce ? this.opts.nonce() : randomBytes(18).toString("base64");
      if (!PRINTABLE.test(this.clientNonce)) throw new TypeError("ScramClient: nonce() must answer printable ASCII without commas");
      return Buffer.from(`${this.gs2}${this.bare}${this.clientNonce}`, "latin1");
    });
  }

  /** Takes the server-first-message; answers the client-final-message with the proof. */
  serverFirst(data: Buffer): Buffer {
    return this.step("first", "final", () => {
      const text = scramText(data, "server-first-message");
      const r = new AttrReader(text, "server-first-message");
      if (r.peek() === "m") throw protocolError("the server requires an unsupported SCRAM extension");
      const nonce = r.attr("r");
      const salt = b64(r.attr("s"), "the salt", r);
      const iterText = r.attr("i");
      while (!r.done) r.any();
      if (!PRINTABLE.test(nonce) || !nonce.startsWith(this.clientNonce) || nonce.length === this.clientNonce.length) throw r.malformed("the nonce does not extend the client nonce");
      if (!/^[1-9][0-9]{0,9}$/.test(iterText) || salt.length === 0) throw r.malformed("invalid salt or iteration count");
      const iterations = Number(iterText);
      let clientKey: Buffer;
      if ("password" in this.creds) {
        const max = this.opts.maxIterations ?? 100_000;
        if (iterations > max) throw protocolError(`the server asks for ${iterations} SCRAM iterations, more than the gateway's limit of ${max}`);
        const keys = deriveScramKeys(this.creds.password, salt, iterations);
        clientKey = keys.clientKey;
        this.serverKey = keys.serverKey;
      } else {
        clientKey = this.creds.clientKey;
        this.serverKey = this.creds.serverKey;
      }
      const cbind = Buffer.concat([Buffer.from(this.gs2), this.opts.channelBinding ?? Buffer.alloc(0)]).toString("base64");
      const withoutProof = `c=${cbind},r=${nonce}`;
      this.authMessage = `${this.bare}${this.clientNonce},${text},${withoutProof}`;
      const proof = xor(clientKey, hmac(sha256(clientKey), Buffer.from(this.authMessage, "latin1")));
      return Buffer.from(`${withoutProof},p=${proof.toString("base64")}`, "latin1");
    });
  }

  /** Takes the server-final-message; checks the server signature when the ServerKey is known. ERR_GW_AUTH_FAILED on e= or a wrong signature. */
  serverFinal(data: Buffer): void {
    this.step("final", "done", () => {
      const r = new AttrReader(scramText(data, "server-final-message"), "server-final-message");
      const [name, value] = r.any();
      if (name === "e") throw new ParhelionError("ERR_GW_AUTH_FAILED", `the upstream server rejected SCRAM authentication: ${value.slice(0, 100)}`);
      if (name !== "v") throw r.malformed("expected attribute \"v\"");
      while (!r.done) r.any();
      const signature = b64(value, "the server signature", r);
      if (this.serverKey === undefined) return;
      const expected = hmac(this.serverKey, Buffer.from(this.authMessage, "latin1"));
      if (signature.length !== expected.length || !timingSafeEqual(signature, expected)) {
        throw new ParhelionError("ERR_GW_AUTH_FAILED", "the upstream server's SCRAM signature is wrong: it does not know the password");
      }
    });
  }

  private step<T>(from: ScramClient["state"], to: ScramClient["state"], fn: () => T): T {
    if (this.state !== from) throw protocolError(this.state === "failed" ? "the SCRAM exchange already failed" : "unexpected SCRAM message at this point of the exchange");
    this.state = "failed";
    const out = fn();
    this.state = to;
    return out;
  }
}
