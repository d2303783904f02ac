import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { serialize } from "pg-protocol";
import {
  FrontendScanner,
  MAX_STARTUP_PACKET_LENGTH,
  MessageReader,
  StartupReader,
  parseOptionsEndpoint,
  parsePasswordMessage,
  parseSASLInitialResponse,
  parseSASLResponse,
  parseStartupPacket,
} from "../../../src/gateway/protocol/frontend.js";
import { encodeCancelRequest, encodeSASLInitialResponse, encodeStartup } from "../../../src/gateway/protocol/backend.js";
import { bytes, int32, msg, packet, throwsWith } from "./helpers.js";

const SSL_REQUEST = bytes(int32(8), int32(80877103));
const GSSENC_REQUEST = bytes(int32(8), int32(80877104));

/** Pushes bytes one at a time, answering the packets StartupReader returned. */
function dribble(reader: StartupReader, buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length; i++) {
    const p = reader.push(buf.subarray(i, i + 1));
    if (p) out.push(p);
  }
  return out;
}

describe("StartupReader", () => {
  test("answers a packet only once it is complete, byte by byte", () => {
    const startup = encodeStartup({ user: "alice", database: "db" });
    const r = new StartupReader();
    const got = dribble(r, startup);
    assert.equal(got.length, 1);
    assert.deepEqual(got[0], startup);
    assert.equal(r.buffered, 0);
  });

  test("keeps the bytes after a packet; push(empty) yields the next one", () => {
    const startup = encodeStartup({ user: "alice" });
    const r = new StartupReader();
    assert.deepEqual(r.push(Buffer.concat([SSL_REQUEST, startup])), SSL_REQUEST);
    assert.equal(r.buffered, startup.length);
    assert.deepEqual(r.push(Buffer.alloc(0)), startup);
    assert.equal(r.push(Buffer.alloc(0)), null);
  });

  test("takeRest exposes bytes stuffed after an SSLRequest (CVE-2021-23214)", () => {
    const r = new StartupReader();
    assert.deepEqual(r.push(Buffer.concat([SSL_REQUEST, Buffer.from("stuffed")])), SSL_REQUEST);
    assert.equal(r.takeRest().toString(), "stuffed");
    assert.equal(r.buffered, 0);
  });

  test("rejects a length below 8", () => {
    throwsWith(() => new StartupReader().push(bytes(int32(7), int32(0))), "ERR_GW_PROTOCOL", "invalid length of startup packet: 7 bytes (must be 8 to 10004)");
  });

  test("rejects a length above MAX_STARTUP_PACKET_LENGTH as soon as the length word arrives", () => {
    throwsWith(() => new StartupReader().push(int32(MAX_STARTUP_PACKET_LENGTH + 5)), "ERR_GW_PROTOCOL", /invalid length of startup packet: 10005 bytes/);
    throwsWith(() => new StartupReader().push(Buffer.from([0xff, 0xff, 0xff, 0xff])), "ERR_GW_PROTOCOL", /4294967295 bytes/);
  });

  test("accepts a packet of exactly the limit", () => {
    const body = Buffer.alloc(MAX_STARTUP_PACKET_LENGTH);
    assert.equal(new StartupReader().push(packet(body))?.length, MAX_STARTUP_PACKET_LENGTH + 4);
  });
});

describe("parseStartupPacket", () => {
  test("SSLRequest, GSSENCRequest and CancelRequest", () => {
    assert.deepEqual(parseStartupPacket(SSL_REQUEST), { kind: "ssl" });
    assert.deepEqual(parseStartupPacket(GSSENC_REQUEST), { kind: "gssenc" });
    assert.deepEqual(parseStartupPacket(encodeCancelRequest(4242, 0xdeadbeef)), { kind: "cancel", pid: 4242, secret: 0xdeadbeef });
    assert.deepEqual(parseStartupPacket(encodeCancelRequest(1, -1)), { kind: "cancel", pid: 1, secret: 0xffffffff });
  });

  test("a StartupMessage of protocol 3.0 with its parameters in order", () => {
    const p = parseStartupPacket(encodeStartup({ user: "alice", database: "prod", options: "-c endpoint=ws1", application_name: "" }));
    assert.equal(p.kind, "startup");
    if (p.kind !== "startup") return;
    assert.equal(p.major, 3);
    assert.equal(p.minor, 0);
    assert.deepEqual([...p.params], [["user", "alice"], ["database", "prod"], ["options", "-c endpoint=ws1"], ["application_name", ""]]);
  });

  test("reads the startup message the pg client writes, UTF-8 included", () => {
    const p = parseStartupPacket(serialize.startup({ user: "zoë", database: "bücher" }));
    assert.ok(p.kind === "startup");
    assert.equal(p.params.get("user"), "zoë");
    assert.equal(p.params.get("database"), "bücher");
  });

  test("answers the minor version of protocol 3.x so the caller can negotiate", () => {
    const p = parseStartupPacket(packet(bytes(int32((3 << 16) | 2), "user\0u\0\0")));
    assert.ok(p.kind === "startup" && p.minor === 2);
  });

  test("rejects protocol 2 as unsupported", () => {
    throwsWith(() => parseStartupPacket(packet(bytes(int32(2 << 16), "user\0u\0\0"))), "ERR_GW_PROTOCOL", "unsupported frontend protocol 2.0: the gateway supports protocol 3.0");
  });

  test("rejects an unknown 1234.x request code as unsupported", () => {
    throwsWith(() => parseStartupPacket(packet(int32((1234 << 16) | 5681))), "ERR_GW_PROTOCOL", /^unsupported frontend protocol 1234\.5681/);
  });

  test("rejects duplicate parameters", () => {
    throwsWith(() => parseStartupPacket(packet(bytes(int32(3 << 16), "user\0a\0user\0b\0\0"))), "ERR_GW_PROTOCOL", 'duplicate startup parameter "user"');
  });

  test("rejects a missing terminator", () => {
    throwsWith(() => parseStartupPacket(packet(bytes(int32(3 << 16), "user\0a\0"))), "ERR_GW_PROTOCOL", "invalid startup packet layout: expected terminator as last byte");
    throwsWith(() => parseStartupPacket(packet(bytes(int32(3 << 16), "user\0a"))), "ERR_GW_PROTOCOL", /expected terminator/);
    throwsWith(() => parseStartupPacket(packet(int32(3 << 16))), "ERR_GW_PROTOCOL", /expected terminator/);
  });

  test("rejects data after the terminator", () => {
    throwsWith(() => parseStartupPacket(packet(bytes(int32(3 << 16), "user\0a\0\0x"))), "ERR_GW_PROTOCOL", /data after the terminator/);
  });

  test("rejects non-UTF-8 names and values", () => {
    throwsWith(() => parseStartupPacket(packet(bytes(int32(3 << 16), "user\0", [0xc3, 0x28], "\0\0"))), "ERR_GW_PROTOCOL", 'startup parameter "user" is not valid UTF-8');
    throwsWith(() => parseStartupPacket(packet(bytes(int32(3 << 16), [0xff], "\0a\0user\0u\0\0"))), "ERR_GW_PROTOCOL", /name is not valid UTF-8/);
  });

  test("rejects a missing or empty user", () => {
    throwsWith(() => parseStartupPacket(packet(bytes(int32(3 << 16), "database\0d\0\0"))), "ERR_GW_PROTOCOL", "no PostgreSQL user name specified in startup packet");
    throwsWith(() => parseStartupPacket(packet(bytes(int32(3 << 16), "user\0\0\0"))), "ERR_GW_PROTOCOL", /no PostgreSQL user name/);
  });

  test("rejects SSLRequest and CancelRequest of the wrong size, and a length word that lies", () => {
    throwsWith(() => parseStartupPacket(packet(bytes(int32(80877103), int32(0)))), "ERR_GW_PROTOCOL", "invalid SSLRequest: 12 bytes instead of 8");
    throwsWith(() => parseStartupPacket(packet(bytes(int32(80877102), int32(1)))), "ERR_GW_PROTOCOL", "invalid CancelRequest: 12 bytes instead of 16");
    throwsWith(() => parseStartupPacket(bytes(int32(9), int32(80877103))), "ERR_GW_PROTOCOL", /length word 9 but 8 bytes/);
    throwsWith(() => parseStartupPacket(Buffer.alloc(3)), "ERR_GW_PROTOCOL", /length word missing/);
  });
});

describe("parseOptionsEndpoint", () => {
  test("finds every documented form and removes only that item", () => {
    assert.deepEqual(parseOptionsEndpoint("endpoint=ws-1"), { endpoint: "ws-1", rest: "" });
    assert.deepEqual(parseOptionsEndpoint("--endpoint=ws-1 -c search_path=app"), { endpoint: "ws-1", rest: "-c search_path=app" });
    assert.deepEqual(parseOptionsEndpoint("-c statement_timeout=5s -c endpoint=ws-1"), { endpoint: "ws-1", rest: "-c statement_timeout=5s" });
    assert.deepEqual(parseOptionsEndpoint("-cendpoint=ws-1 --work_mem=64MB"), { endpoint: "ws-1", rest: "--work_mem=64MB" });
  });

  test("splits words like pg_split_opts: any whitespace, backslash escapes", () => {
    assert.deepEqual(parseOptionsEndpoint("  -c\tapplication_name=my\\ app\n endpoint=ws\\-2  "), { endpoint: "ws-2", rest: "-c application_name=my\\ app" });
    assert.deepEqual(parseOptionsEndpoint("-c application_name=a\\ endpoint=x"), { endpoint: undefined, rest: "-c application_name=a\\ endpoint=x" });
  });

  test("answers no endpoint and the options unchanged in meaning when absent", () => {
    assert.deepEqual(parseOptionsEndpoint(""), { endpoint: undefined, rest: "" });
    assert.deepEqual(parseOptionsEndpoint("-c geqo=off"), { endpoint: undefined, rest: "-c geqo=off" });
    assert.deepEqual(parseOptionsEndpoint("-c"), { endpoint: undefined, rest: "-c" });
    assert.deepEqual(parseOptionsEndpoint("xendpoint=a trailing\\"), { endpoint: undefined, rest: "xendpoint=a trailing\\" });
  });

  test("rejects an empty endpoint and a repeated one", () => {
    throwsWith(() => parseOptionsEndpoint("endpoint="), "ERR_GW_PROTOCOL", "the options startup parameter has an empty endpoint=");
    throwsWith(() => parseOptionsEndpoint("endpoint=a -c endpoint=a"), "ERR_GW_PROTOCOL", /more than once/);
  });
});

describe("MessageReader", () => {
  test("answers bodies as subarrays of the chunk (zero-copy) when whole", () => {
    const chunk = Buffer.concat([msg("Q", "select 1\0"), msg("S"), msg("X")]);
    const r = new MessageReader();
    r.push(chunk);
    const a = r.next();
    assert.equal(a?.type, 0x51);
    assert.equal(a?.body.toString(), "select 1\0");
    assert.equal(a?.body.buffer, chunk.buffer);
    assert.deepEqual([r.next()?.type, r.next()?.type, r.next()], [0x53, 0x58, null]);
  });

  test("reassembles a message split byte by byte", () => {
    const stream = Buffer.concat([msg("p", "secret\0"), msg("Q", "x\0")]);
    const r = new MessageReader();
    const got: string[] = [];
    for (const b of stream) {
      r.push(Buffer.from([b]));
      for (let m = r.next(); m; m = r.next()) got.push(`${String.fromCharCode(m.type)}:${m.body.toString()}`);
    }
    assert.deepEqual(got, ["p:secret\0", "Q:x\0"]);
  });

  test("rejects a length below 4", () => {
    const r = new MessageReader();
    r.push(bytes("Q", int32(3)));
    throwsWith(() => r.next(), "ERR_GW_PROTOCOL", "the client sent a message of type 'Q' with invalid length 3");
  });

  test("rejects an oversized message from its header, before buffering the body, and stays failed", () => {
    const r = new MessageReader({ maxMessageBytes: 1048576 });
    r.push(bytes("Q", int32(2000000)));
    throwsWith(() => r.next(), "ERR_GW_PROTOCOL", "the client sent a message of 2000000 bytes, which exceeds the gateway's limit of 1048576");
    r.push(msg("S"));
    throwsWith(() => r.next(), "ERR_GW_PROTOCOL", /exceeds/);
  });

  test("takeRest hands over the bytes after the last message", () => {
    const r = new MessageReader();
    r.push(Buffer.concat([msg("p", "pw\0"), Buffer.from("Q\0\0")]));
    assert.equal(r.next()?.type, 0x70);
    assert.equal(r.next(), null);
    assert.deepEqual(r.takeRest(), Buffer.from("Q\0\0"));
  });

  test("rejects a nonsensical limit as a programming error", () => {
    assert.throws(() => new MessageReader({ maxMessageBytes: 2 }), TypeError);
  });
});

describe("authentication-phase parsers", () => {
  test("SASLInitialResponse with data, with -1 (none), and as pg writes it", () => {
    const body = (m: Buffer) => m.subarray(5);
    assert.deepEqual(parseSASLInitialResponse(body(encodeSASLInitialResponse("SCRAM-SHA-256", Buffer.from("n,,n=,r=abc")))), { mechanism: "SCRAM-SHA-256", data: Buffer.from("n,,n=,r=abc") });
    assert.deepEqual(parseSASLInitialResponse(bytes("SCRAM-SHA-256\0", int32(-1))), { mechanism: "SCRAM-SHA-256", data: Buffer.alloc(0) });
    const fromPg = parseSASLInitialResponse(body(serialize.sendSASLInitialResponseMessage("SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,n=*,r=x")));
    assert.equal(fromPg.mechanism, "SCRAM-SHA-256-PLUS");
    assert.equal(fromPg.data.toString(), "p=tls-server-end-point,,n=*,r=x");
  });

  test("rejects a SASLInitialResponse whose length disagrees or whose mechanism is unterminated", () => {
    throwsWith(() => parseSASLInitialResponse(bytes("SCRAM-SHA-256\0", int32(5), "abc")), "ERR_GW_PROTOCOL", "malformed SASLInitialResponse: response length 5 but 3 bytes follow");
    throwsWith(() => parseSASLInitialResponse(bytes("SCRAM-SHA-256\0", int32(-2))), "ERR_GW_PROTOCOL", /response length -2/);
    throwsWith(() => parseSASLInitialResponse(bytes("SCRAM-SHA-256\0", [0, 0])), "ERR_GW_PROTOCOL", /missing the response length/);
    throwsWith(() => parseSASLInitialResponse(bytes("SCRAM-SHA-256")), "ERR_GW_PROTOCOL", "SASL mechanism name is not NUL-terminated");
  });

  test("SASLResponse is the body; PasswordMessage is one NUL-terminated UTF-8 string", () => {
    const b = Buffer.from("c=biws,r=x,p=y");
    assert.equal(parseSASLResponse(b), b);
    assert.equal(parsePasswordMessage(serialize.password("pässword").subarray(5)), "pässword");
    throwsWith(() => parsePasswordMessage(Buffer.from("pw")), "ERR_GW_PROTOCOL", "password packet is not NUL-terminated");
    throwsWith(() => parsePasswordMessage(Buffer.from("pw\0x")), "ERR_GW_PROTOCOL", "invalid password packet size");
    throwsWith(() => parsePasswordMessage(bytes([0xfe], "\0")), "ERR_GW_PROTOCOL", "password packet is not valid UTF-8");
  });
});

describe("FrontendScanner", () => {
  const stream = Buffer.concat([
    serialize.parse({ text: "select $1::int", name: "s1" }),
    serialize.bind({ statement: "s1", values: ["42"] }),
    serialize.describe({ type: "P" }),
    serialize.execute({}),
    serialize.sync(),
    serialize.query("select 1"),
    serialize.copyData(Buffer.from("1\t2\n")),
    serialize.copyDone(),
    serialize.copyFail("no"),
    serialize.flush(),
    serialize.close({ type: "S", name: "s1" }),
    serialize.end(),
  ]);

  test("counts the messages pg writes, whatever the split point", () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      const s = new FrontendScanner();
      s.scan(stream.subarray(0, cut));
      s.scan(stream.subarray(cut));
      assert.equal(s.messages, 12);
      assert.equal(s.sawTerminate, true);
      assert.equal(s.atBoundary, true);
    }
  });

  test("with onStatement, hands over whole Query, Parse, Bind, Execute and Close bodies once, whatever the split points", () => {
    const expected = [
      ["P", serialize.parse({ text: "select $1::int", name: "s1" }).subarray(5)],
      ["B", serialize.bind({ statement: "s1", values: ["42"] }).subarray(5)],
      ["E", serialize.execute({}).subarray(5)],
      ["Q", serialize.query("select 1").subarray(5)],
      ["C", serialize.close({ type: "S", name: "s1" }).subarray(5)],
    ].map(([t, b]) => `${t}:${(b as Buffer).toString("hex")}`);
    for (let cut = 0; cut <= stream.length; cut++) {
      for (const cut2 of [cut, Math.min(stream.length, cut + 3), Math.min(stream.length, cut + 17)]) {
        const got: string[] = [];
        const s = new FrontendScanner({ onStatement: (type, body) => got.push(`${String.fromCharCode(type)}:${Buffer.from(body).toString("hex")}`) });
        s.scan(stream.subarray(0, cut));
        s.scan(stream.subarray(cut, cut2));
        s.scan(stream.subarray(cut2));
        assert.deepEqual(got, expected, `cuts at ${cut} and ${cut2}`);
        assert.equal(s.messages, 12);
      }
    }
  });

  test("tracks message boundaries byte by byte", () => {
    const s = new FrontendScanner();
    const q = serialize.query("select 1");
    for (let i = 0; i < q.length; i++) {
      assert.equal(s.atBoundary, i === 0);
      s.scan(q.subarray(i, i + 1));
    }
    assert.equal(s.messages, 1);
    assert.equal(s.atBoundary, true);
    assert.equal(s.sawTerminate, false);
  });

  test("rejects an unknown type byte at once, even before its length arrives", () => {
    const s = new FrontendScanner();
    throwsWith(() => s.scan(Buffer.from("G")), "ERR_GW_PROTOCOL", "the client sent an invalid message type 'G'");
    throwsWith(() => new FrontendScanner().scan(bytes([0], int32(4))), "ERR_GW_PROTOCOL", "the client sent an invalid message type 0x00");
    throwsWith(() => new FrontendScanner().scan(msg("Z", "I")), "ERR_GW_PROTOCOL", /invalid message type 'Z'/);
  });

  test("rejects a length below 4 or above maxMessageBytes, and stays failed", () => {
    throwsWith(() => new FrontendScanner().scan(bytes("Q", int32(3))), "ERR_GW_PROTOCOL", /invalid length 3/);
    const s = new FrontendScanner({ maxMessageBytes: 1048576 });
    s.scan(bytes("d", [0, 0x20]));
    throwsWith(() => s.scan(Buffer.from([0, 0])), "ERR_GW_PROTOCOL", "the client sent a message of 2097152 bytes, which exceeds the gateway's limit of 1048576");
    throwsWith(() => s.scan(serialize.sync()), "ERR_GW_PROTOCOL", /exceeds/);
  });

  test("passes a body larger than any chunk without looking inside it", () => {
    const s = new FrontendScanner();
    const big = serialize.copyData(Buffer.alloc(300_000, 0x47));
    for (let i = 0; i < big.length; i += 65536) s.scan(big.subarray(i, i + 65536));
    assert.equal(s.messages, 1);
    assert.equal(s.atBoundary, true);
  });
});
