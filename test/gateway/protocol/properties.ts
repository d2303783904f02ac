/**
 * fast-check properties of the gateway protocol codec, shared by fuzz.test.ts (the suite) and fuzz-long.ts
 * (the same properties with 20 times the runs). Each property throws on a counterexample.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { ParhelionError, type ErrorCode } from "../../../src/lib/errors.js";
import { DEFAULT_MAX_RELAY_MESSAGE_BYTES, FrontendScanner, MessageReader, StartupReader, parseStartupPacket, type StartupPacket } from "../../../src/gateway/protocol/frontend.js";
import { BackendScanner, encodeCancelRequest, encodeStartup } from "../../../src/gateway/protocol/backend.js";
import { ScramClient, ScramServer, deriveScramKeys } from "../../../src/gateway/protocol/scram.js";
import { MAX_CLIENT_HELLO_BYTES, peekClientHello } from "../../../src/gateway/protocol/clienthello.js";
import { bytes, int32 } from "./helpers.js";

/** One property: its name, its default number of runs, and a runner. */
export interface FuzzProperty {
  name: string;
  numRuns: number;
  check(numRuns: number): void;
}

const EMPTY = Buffer.alloc(0);

/** Runs fn; answers null, or the ParhelionError it threw when its code is allowed; anything else fails. */
function only(codes: ErrorCode[], fn: () => void): ParhelionError | null {
  try {
    fn();
    return null;
  } catch (err) {
    if (!(err instanceof ParhelionError)) throw new Error(`untyped error: ${String(err)}`, { cause: err });
    if (!codes.includes(err.code)) throw new Error(`unexpected code ${err.code}: ${err.message}`, { cause: err });
    return err;
  }
}
const PROTOCOL: ErrorCode[] = ["ERR_GW_PROTOCOL"];
const AUTH: ErrorCode[] = ["ERR_GW_AUTH_FAILED", "ERR_GW_PROTOCOL"];

// ---- Chunkings and mutations ----

/** Cut points (any naturals; reduced modulo the stream length + 1 when applied), or every byte. */
const cutsArb: fc.Arbitrary<number[] | "bytes"> = fc.oneof({ weight: 9, arbitrary: fc.array(fc.nat(), { maxLength: 16 }) }, { weight: 1, arbitrary: fc.constant("bytes" as const) });

/** Splits buf at the cut points, keeping empty chunks (which must be harmless). */
export function split(buf: Buffer, cuts: number[] | "bytes"): Buffer[] {
  if (cuts === "bytes") return Array.from({ length: buf.length }, (_, i) => buf.subarray(i, i + 1));
  const at = cuts.map((c) => c % (buf.length + 1)).sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of at) {
    out.push(buf.subarray(prev, c));
    prev = c;
  }
  out.push(buf.subarray(prev));
  return out;
}

type Mutation =
  | { k: "flip"; at: number; bit: number }
  | { k: "trunc"; at: number }
  | { k: "insert"; at: number; data: Uint8Array }
  | { k: "delete"; at: number; n: number }
  | { k: "lie"; at: number; value: number };

const LIES = [0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 10004, 10005, 65539, 65540, 1 << 20, 0x3fffffff, 0x40000002, 0x40000003, 0x7fffffff, 0x80000000, 0xffffffff];
const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ k: fc.constant("flip" as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ k: fc.constant("trunc" as const), at: fc.nat() }),
  fc.record({ k: fc.constant("insert" as const), at: fc.nat(), data: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
  fc.record({ k: fc.constant("delete" as const), at: fc.nat(), n: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ k: fc.constant("lie" as const), at: fc.nat(), value: fc.oneof(fc.constantFrom(...LIES), fc.nat({ max: 0xffffffff })) }),
);
const mutationsArb = fc.array(mutationArb, { minLength: 1, maxLength: 4 });

/** Applies mutations; a "lie" overwrites one of the length words (`lengthAt`) with a chosen value. */
export function mutate(buf: Buffer, muts: Mutation[], lengthAt: number[]): Buffer {
  let b = Buffer.from(buf);
  for (const m of muts) {
    const at = m.at % (b.length + 1);
    switch (m.k) {
      case "flip":
        if (at < b.length) b[at] = b[at]! ^ (1 << m.bit);
        break;
      case "trunc":
        b = b.subarray(0, at);
        break;
      case "insert":
        b = Buffer.concat([b.subarray(0, at), m.data, b.subarray(at)]);
        break;
      case "delete":
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + m.n)]);
        break;
      case "lie": {
        const pos = lengthAt.length > 0 ? lengthAt[m.at % lengthAt.length]! : at;
        if (pos + 4 <= b.length) b.writeUInt32BE(m.value >>> 0, pos);
        break;
      }
    }
  }
  return b;
}

// ---- Startup packets ----

const text = fc.string({ unit: "grapheme", maxLength: 12 }).filter((s) => !s.includes("\0"));
const paramsArb = fc
  .tuple(text.filter((s) => s !== ""), fc.uniqueArray(fc.tuple(text.filter((s) => s !== "" && s !== "user"), text), { selector: ([k]) => k, maxLength: 5 }))
  .map(([user, rest]) => ({ user, ...Object.fromEntries(rest) }) as Record<string, string>);
const startupArb: fc.Arbitrary<StartupPacket> = fc.oneof(
  fc.constant({ kind: "ssl" } as const),
  fc.constant({ kind: "gssenc" } as const),
  fc.record({ kind: fc.constant("cancel" as const), pid: fc.nat({ max: 0xffffffff }), secret: fc.nat({ max: 0xffffffff }) }),
  paramsArb.map((p) => ({ kind: "startup" as const, major: 3 as const, minor: 0, params: new Map(Object.entries(p)) })),
);

function encodeStartupPacket(p: StartupPacket): Buffer {
  switch (p.kind) {
    case "ssl":
      return bytes(int32(8), int32(80877103));
    case "gssenc":
      return bytes(int32(8), int32(80877104));
    case "cancel":
      return encodeCancelRequest(p.pid, p.secret);
    case "startup":
      return encodeStartup(Object.fromEntries(p.params));
  }
}

/** Feeds chunks to a StartupReader and parses every packet; answers them, or stops at the first (allowed) error. */
function readStartup(chunks: Buffer[]): { packets: StartupPacket[]; error: ParhelionError | null } {
  const packets: StartupPacket[] = [];
  const r = new StartupReader();
  const error = only(PROTOCOL, () => {
    let guard = 0;
    for (const c of chunks) {
      for (let p = r.push(c); p; p = r.push(EMPTY)) {
        assert.ok(++guard < 10_000, "StartupReader loops");
        packets.push(parseStartupPacket(p));
      }
    }
  });
  return { packets, error };
}

const startupValid: FuzzProperty = {
  name: "StartupReader + parseStartupPacket read back valid packets under any chunking",
  numRuns: 8000,
  check(numRuns) {
    fc.assert(
      fc.property(fc.array(startupArb, { minLength: 1, maxLength: 3 }), cutsArb, (pkts, cuts) => {
        const { packets, error } = readStartup(split(Buffer.concat(pkts.map(encodeStartupPacket)), cuts));
        assert.equal(error, null);
        assert.deepEqual(packets, pkts.map((p) => ({ ...p })));
      }),
      { numRuns },
    );
  },
};

const startupMutated: FuzzProperty = {
  name: "StartupReader + parseStartupPacket on mutated packets: a result or ERR_GW_PROTOCOL, the same under any chunking",
  numRuns: 20000,
  check(numRuns) {
    fc.assert(
      fc.property(fc.array(startupArb, { minLength: 1, maxLength: 3 }), mutationsArb, cutsArb, (pkts, muts, cuts) => {
        const encoded = pkts.map(encodeStartupPacket);
        const lengthAt: number[] = [];
        let off = 0;
        for (const e of encoded) {
          lengthAt.push(off, off + 4); // the length word and the request code
          off += e.length;
        }
        const stream = mutate(Buffer.concat(encoded), muts, lengthAt);
        const whole = readStartup([stream]);
        const chunked = readStartup(split(stream, cuts));
        assert.deepEqual(chunked.packets, whole.packets);
        assert.equal(chunked.error?.message, whole.error?.message);
      }),
      { numRuns },
    );
  },
};

// ---- Typed message streams ----

interface Msg {
  type: number;
  body: Buffer;
}
const bodyArb = fc.oneof({ weight: 9, arbitrary: fc.uint8Array({ maxLength: 40 }) }, { weight: 1, arbitrary: fc.uint8Array({ minLength: 100, maxLength: 600 }) }).map((u) => Buffer.from(u));
const msgArb = (types: string): fc.Arbitrary<Msg> => fc.record({ type: fc.constantFrom(...types).map((t) => t.charCodeAt(0)), body: bodyArb });
const frontendArb = fc.array(msgArb("BCdcfDEHFPpQSX"), { maxLength: 12 });
const backendArb = fc.array(
  fc.oneof(
    { weight: 3, arbitrary: msgArb("123ACcdDEGHIKnNRsStTvVW") },
    { weight: 1, arbitrary: fc.constantFrom("I", "T", "E").map((s) => ({ type: 0x5a, body: Buffer.from(s) })) },
  ),
  { maxLength: 12 },
);

function encodeMessages(msgs: Msg[]): { stream: Buffer; starts: number[]; ends: number[] } {
  const parts: Buffer[] = [];
  const starts: number[] = [];
  const ends: number[] = [];
  let off = 0;
  for (const m of msgs) {
    parts.push(Buffer.from([m.type]), int32(m.body.length + 4), m.body);
    starts.push(off);
    off += 5 + m.body.length;
    ends.push(off);
  }
  return { stream: Buffer.concat(parts), starts, ends };
}

function readAll(chunks: Buffer[], maxMessageBytes?: number): { msgs: Msg[]; error: ParhelionError | null } {
  const r = new MessageReader(maxMessageBytes === undefined ? {} : { maxMessageBytes });
  const msgs: Msg[] = [];
  const error = only(PROTOCOL, () => {
    for (const c of chunks) {
      r.push(c);
      for (let m = r.next(); m; m = r.next()) msgs.push({ type: m.type, body: Buffer.from(m.body) });
    }
  });
  return { msgs, error };
}

const messageReaderValid: FuzzProperty = {
  name: "MessageReader gives the unchunked stream's messages under any chunking",
  numRuns: 8000,
  check(numRuns) {
    fc.assert(
      fc.property(frontendArb, cutsArb, (msgs, cuts) => {
        const { stream } = encodeMessages(msgs);
        const got = readAll(split(stream, cuts));
        assert.equal(got.error, null);
        assert.deepEqual(got.msgs, msgs.map((m) => ({ ...m })));
      }),
      { numRuns },
    );
  },
};

/** Checks a scanner's counters after every chunk against the boundaries of the unchunked stream. */
function scanChecked<S extends FrontendScanner | BackendScanner>(scanner: S, chunks: Buffer[], ends: number[], extra: (s: S, pos: number) => void): void {
  let pos = 0;
  for (const c of chunks) {
    scanner.scan(c);
    pos += c.length;
    assert.equal(scanner.messages, ends.filter((e) => e <= pos).length);
    assert.equal(scanner.atBoundary, pos === 0 || ends.includes(pos));
    extra(scanner, pos);
  }
}

const frontendScannerValid: FuzzProperty = {
  name: "FrontendScanner finds the unchunked stream's boundaries under any chunking",
  numRuns: 8000,
  check(numRuns) {
    fc.assert(
      fc.property(frontendArb, cutsArb, (msgs, cuts) => {
        const { stream, starts, ends } = encodeMessages(msgs);
        const terminateAt = msgs.map((m, i) => (m.type === 0x58 ? starts[i]! + 5 : Infinity));
        scanChecked(new FrontendScanner(), split(stream, cuts), ends, (s, pos) => assert.equal(s.sawTerminate, terminateAt.some((t) => t <= pos)));
      }),
      { numRuns },
    );
  },
};

const backendScannerValid: FuzzProperty = {
  name: "BackendScanner finds the boundaries and the latest ReadyForQuery status under any chunking",
  numRuns: 8000,
  check(numRuns) {
    fc.assert(
      fc.property(backendArb, cutsArb, (msgs, cuts) => {
        const { stream, starts, ends } = encodeMessages(msgs);
        const statusAt = msgs.flatMap((m, i) => (m.type === 0x5a ? [{ at: starts[i]! + 5, status: String.fromCharCode(m.body[0]!) }] : []));
        scanChecked(new BackendScanner(), split(stream, cuts), ends, (s, pos) => {
          const seen = statusAt.filter((z) => z.at < pos);
          assert.equal(s.lastReadyStatus, seen.at(-1)?.status ?? null);
          assert.equal(s.readyForQuery, seen.length);
        });
      }),
      { numRuns },
    );
  },
};

/** Scans chunks; answers the error message (or null) and the counters, which must not depend on the chunking. */
function scanOutcome(make: () => FrontendScanner | BackendScanner, chunks: Buffer[]): string {
  const s = make();
  const error = only(PROTOCOL, () => {
    for (const c of chunks) s.scan(c);
  });
  if (error) return `error: ${error.message}`;
  const extra = s instanceof BackendScanner ? `${s.lastReadyStatus}/${s.readyForQuery}` : String(s.sawTerminate);
  return `${s.messages}/${s.atBoundary}/${extra}`;
}

const scannersMutated: FuzzProperty = {
  name: "MessageReader, FrontendScanner and BackendScanner on mutated streams: only ERR_GW_PROTOCOL, independent of chunking",
  numRuns: 30000,
  check(numRuns) {
    fc.assert(
      fc.property(fc.oneof(frontendArb, backendArb), mutationsArb, cutsArb, fc.constantFrom(undefined, 64, 300), (msgs, muts, cuts, max) => {
        const { stream: clean, starts } = encodeMessages(msgs);
        const stream = mutate(
          clean,
          muts,
          starts.map((s) => s + 1),
        );
        const chunks = split(stream, cuts);
        const opts = max === undefined ? {} : { maxMessageBytes: max };
        for (const make of [() => new FrontendScanner(opts), () => new BackendScanner(opts)]) {
          const whole = scanOutcome(make, [stream]);
          assert.equal(scanOutcome(make, chunks), whole);
          if (!whole.startsWith("error")) {
            // a stream the scanner accepts splits into the same number of messages for the reader
            const read = readAll([stream], max ?? DEFAULT_MAX_RELAY_MESSAGE_BYTES);
            assert.equal(read.error, null);
            assert.equal(read.msgs.length, Number(whole.split("/")[0]));
          }
        }
        const whole = readAll([stream], max);
        const chunked = readAll(chunks, max);
        assert.deepEqual(chunked.msgs, whole.msgs);
        assert.equal(chunked.error?.message, whole.error?.message);
      }),
      { numRuns },
    );
  },
};

// ---- SCRAM ----

const SALT = Buffer.from("fuzz-salt-16byte");
const PW = "fuzz password";
const KEYS = deriveScramKeys(PW, SALT, 4096);
const VERIFIER = { iterations: 4096, salt: SALT, storedKey: KEYS.storedKey, serverKey: KEYS.serverKey };
const CBIND = Buffer.alloc(32, 7);

const scramAlphabet = fc.string({ unit: fc.constantFrom(..."npyacmrsiv=,_-+/tls-server-end-point0123456789ABCabc\0\u00ff"), maxLength: 60 }).map((s) => Buffer.from(s, "latin1"));
const scramBytes = fc.oneof(scramAlphabet, fc.uint8Array({ maxLength: 80 }).map((u) => Buffer.from(u)));

const scramGarbage: FuzzProperty = {
  name: "ScramServer and ScramClient fed random messages only return or throw ERR_GW_AUTH_FAILED / ERR_GW_PROTOCOL",
  numRuns: 10000,
  check(numRuns) {
    fc.assert(
      fc.property(fc.boolean(), fc.constantFrom("SCRAM-SHA-256", "SCRAM-SHA-256-PLUS", "x"), fc.boolean(), scramBytes, scramBytes, (plus, mechanism, known, first, final) => {
        const srv = new ScramServer({ user: "u", verifier: known ? VERIFIER : null, channelBinding: plus ? CBIND : null });
        if (only(AUTH, () => void srv.clientFirst(mechanism, first)) === null) only(AUTH, () => void srv.clientFinal(final));
        const client = new ScramClient({ clientKey: KEYS.clientKey, serverKey: KEYS.serverKey }, { nonce: () => "n" });
        client.clientFirst();
        const withNonce = Buffer.concat([Buffer.from("r=n"), first]);
        if (only(AUTH, () => void client.serverFirst(withNonce)) === null) only(AUTH, () => client.serverFinal(final));
      }),
      { numRuns },
    );
  },
};

const scramMutated: FuzzProperty = {
  name: "ScramServer fed mutated client messages only throws ERR_GW_AUTH_FAILED / ERR_GW_PROTOCOL, and accepts the unmutated exchange",
  numRuns: 10000,
  check(numRuns) {
    fc.assert(
      fc.property(fc.boolean(), fc.boolean(), fc.array(mutationArb, { maxLength: 3 }), fc.array(mutationArb, { maxLength: 3 }), (plus, known, mFirst, mFinal) => {
        const srv = new ScramServer({ user: "u", verifier: known ? VERIFIER : null, channelBinding: plus ? CBIND : null });
        const client = new ScramClient({ clientKey: KEYS.clientKey, serverKey: KEYS.serverKey }, plus ? { channelBinding: CBIND } : {});
        const first = mutate(client.clientFirst(), mFirst, []);
        let serverFinal: Buffer | null = null;
        const err = only(AUTH, () => {
          const sf = srv.clientFirst(client.mechanism, first);
          const final = mutate(client.serverFirst(sf), mFinal, []);
          serverFinal = srv.clientFinal(final).serverFinal;
        });
        if (mFirst.length === 0 && mFinal.length === 0) {
          assert.equal(err === null, known);
          if (known) client.serverFinal(serverFinal!);
        }
      }),
      { numRuns },
    );
  },
};

// ---- TLS ClientHello ----

/** A ClientHello in TLS records: the given SNI, ALPN and extra extensions, split into records of the given sizes. */
export function buildClientHello(o: { serverName?: string | null; alpn?: string[]; extra?: { type: number; data: Buffer }[]; sessionId?: Buffer; records?: number[] }): Buffer {
  const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff]);
  const vec16 = (b: Buffer): Buffer => Buffer.concat([u16(b.length), b]);
  const exts: Buffer[] = [];
  if (o.serverName != null) {
    const name = Buffer.from(o.serverName, "latin1");
    exts.push(u16(0), vec16(vec16(Buffer.concat([Buffer.from([0]), vec16(name)]))));
  }
  if (o.alpn && o.alpn.length > 0) {
    const list = Buffer.concat(o.alpn.map((p) => Buffer.concat([Buffer.from([Buffer.byteLength(p, "latin1")]), Buffer.from(p, "latin1")])));
    exts.push(u16(16), vec16(vec16(list)));
  }
  for (const e of o.extra ?? []) exts.push(u16(e.type), vec16(e.data));
  const sid = o.sessionId ?? Buffer.alloc(32, 1);
  const body = Buffer.concat([Buffer.from([3, 3]), Buffer.alloc(32, 9), Buffer.from([sid.length]), sid, vec16(Buffer.from([0x13, 0x01, 0x13, 0x02])), Buffer.from([1, 0]), vec16(Buffer.concat(exts))]);
  const hs = Buffer.concat([Buffer.from([1, body.length >> 16, (body.length >> 8) & 0xff, body.length & 0xff]), body]);
  const sizes = o.records && o.records.length > 0 ? o.records : [16384];
  const out: Buffer[] = [];
  for (let off = 0, i = 0; off < hs.length; i++) {
    const n = Math.min(Math.max(1, sizes[i % sizes.length]!), 16384, hs.length - off);
    out.push(Buffer.from([22, 3, 1]), u16(n), hs.subarray(off, off + n));
    off += n;
  }
  return Buffer.concat(out);
}

const hostArb = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,20}\.){0,3}[a-z]{2,6}$/);
const alpnArb = fc.array(fc.string({ unit: fc.constantFrom(..."abcdefghijklmnopqrstuvwxyz0123456789/.-"), minLength: 1, maxLength: 12 }), { maxLength: 4 });
const extraArb = fc.uniqueArray(fc.record({ type: fc.integer({ min: 17, max: 0xffff }), data: fc.uint8Array({ maxLength: 40 }).map((u) => Buffer.from(u)) }), { selector: (e) => e.type, maxLength: 4 });
const helloArb = fc.record({
  serverName: fc.option(hostArb, { nil: null }),
  alpn: alpnArb,
  extra: extraArb,
  sessionId: fc.uint8Array({ maxLength: 32 }).map((u) => Buffer.from(u)),
  records: fc.array(fc.integer({ min: 1, max: 400 }), { maxLength: 4 }),
});

const helloValid: FuzzProperty = {
  name: "peekClientHello finds SNI and ALPN in any valid, fragmented ClientHello, and wants more for every prefix",
  numRuns: 5000,
  check(numRuns) {
    fc.assert(
      fc.property(helloArb, fc.array(fc.nat(), { maxLength: 8 }), (h, prefixes) => {
        const buf = buildClientHello(h);
        assert.deepEqual(peekClientHello(buf), { status: "ok", serverName: h.serverName, alpn: h.alpn, length: buf.length });
        assert.deepEqual(peekClientHello(Buffer.concat([buf, Buffer.from([23, 3, 3, 0, 1, 0])])), { status: "ok", serverName: h.serverName, alpn: h.alpn, length: buf.length });
        for (const p of prefixes) assert.equal(peekClientHello(buf.subarray(0, p % buf.length)).status, "need-more");
      }),
      { numRuns },
    );
  },
};

const helloGarbage: FuzzProperty = {
  name: "peekClientHello never throws on garbage or mutated ClientHellos",
  numRuns: 12000,
  check(numRuns) {
    const garbage = fc.oneof(
      fc.uint8Array({ maxLength: 300 }).map((u) => Buffer.from(u)),
      fc.uint8Array({ maxLength: 300 }).map((u) => Buffer.concat([Buffer.from([22, 3, 1]), Buffer.from(u)])),
      fc.tuple(helloArb, mutationsArb).map(([h, m]) => mutate(buildClientHello(h), m, [3, 6])),
    );
    fc.assert(
      fc.property(garbage, (buf) => {
        const p = peekClientHello(buf);
        assert.ok(p.status === "ok" || p.status === "not-tls" || p.status === "need-more");
        if (p.status === "ok") assert.ok(p.length <= buf.length && p.length <= MAX_CLIENT_HELLO_BYTES);
      }),
      { numRuns },
    );
  },
};

/** Every property, in the order the suite runs them. */
export const PROPERTIES: FuzzProperty[] = [startupValid, startupMutated, messageReaderValid, frontendScannerValid, backendScannerValid, scannersMutated, scramGarbage, scramMutated, helloValid, helloGarbage];
