import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { Parser } from "pg-protocol/dist/parser.js";
import type { BackendMessage, DatabaseError } from "pg-protocol/dist/messages.js";
import {
  BackendMessageReader,
  BackendScanner,
  SSL_NO,
  SSL_YES,
  authenticationCleartextPassword,
  authenticationOk,
  authenticationSASL,
  authenticationSASLContinue,
  authenticationSASLFinal,
  backendKeyData,
  encodeCancelRequest,
  encodePasswordMessage,
  encodeQuery,
  encodeSASLResponse,
  encodeStartup,
  encodeTerminate,
  errorResponse,
  negotiateProtocolVersion,
  noticeResponse,
  parameterStatus,
  parseAuthentication,
  parseBackendKeyData,
  parseErrorFields,
  parseParameterStatus,
  parseCommandComplete,
  parseReadyForQuery,
  parseRowDescription,
  parseSASLMechanisms,
  readyForQuery,
  summarizeError,
} from "../../../src/gateway/protocol/backend.js";
import { MessageReader, parsePasswordMessage } from "../../../src/gateway/protocol/frontend.js";
import { bytes, int32, msg, throwsWith } from "./helpers.js";

/** What the pg client's own protocol parser makes of server bytes. */
function pgParse(buf: Buffer): BackendMessage[] {
  const out: BackendMessage[] = [];
  new Parser().parse(buf, (m) => out.push(m));
  return out;
}

/** The one message pg parses from an ErrorResponse or NoticeResponse. */
function pgNoticeOrError(buf: Buffer): Pick<DatabaseError, "name" | "severity" | "code" | "message" | "detail" | "hint"> {
  const all = pgParse(buf);
  assert.equal(all.length, 1);
  return all[0] as DatabaseError;
}

/** The body of the only message in buf, read with BackendMessageReader. */
function body(buf: Buffer): Buffer {
  const r = new BackendMessageReader();
  r.push(buf);
  const m = r.next();
  assert.ok(m);
  assert.equal(r.next(), null);
  return m.body;
}

describe("server → client encoders", () => {
  test("exact bytes of the fixed messages", () => {
    assert.deepEqual(authenticationOk(), bytes("R", int32(8), int32(0)));
    assert.deepEqual(authenticationCleartextPassword(), bytes("R", int32(8), int32(3)));
    assert.deepEqual(readyForQuery("I"), bytes("Z", int32(5), "I"));
    assert.deepEqual(backendKeyData(7, 0xfffffffe), bytes("K", int32(12), int32(7), int32(0xfffffffe)));
    assert.deepEqual(SSL_YES, Buffer.from("S"));
    assert.deepEqual(SSL_NO, Buffer.from("N"));
  });

  test("ErrorResponse as the pg client reads it: S, V, C, M, D, H", () => {
    const e = errorResponse({ sqlstate: "28P01", message: 'password authentication failed for user "zoë"', detail: "d", hint: "h" });
    const m = pgNoticeOrError(e);
    assert.equal(m.name, "error");
    assert.equal(m.severity, "FATAL");
    assert.equal(m.code, "28P01");
    assert.equal(m.message, 'password authentication failed for user "zoë"');
    assert.equal(m.detail, "d");
    assert.equal(m.hint, "h");
    assert.deepEqual(parseErrorFields(body(e)), { S: "FATAL", V: "FATAL", C: "28P01", M: 'password authentication failed for user "zoë"', D: "d", H: "h" });
    assert.deepEqual(summarizeError(parseErrorFields(body(errorResponse({ severity: "ERROR", sqlstate: "08P01", message: "m" })))), { severity: "ERROR", sqlstate: "08P01", message: "m" });
  });

  test("NoticeResponse defaults to NOTICE and SQLSTATE 00000", () => {
    const m = pgNoticeOrError(noticeResponse({ message: "gateway restarts soon" }));
    assert.equal(m.name, "notice");
    assert.equal(m.severity, "NOTICE");
    assert.equal(m.code, "00000");
  });

  test("the authentication, parameter and key messages as the pg client reads them", () => {
    const all = pgParse(
      Buffer.concat([
        authenticationSASL(["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]),
        authenticationSASLContinue(Buffer.from("r=abc,s=c2FsdA==,i=4096")),
        authenticationSASLFinal(Buffer.from("v=c2ln")),
        authenticationOk(),
        parameterStatus("server_version", "17.0 (parhelion)"),
        backendKeyData(1234, 5678),
        readyForQuery("T"),
      ]),
    );
    assert.deepEqual(
      all.map((m) => m.name),
      ["authenticationSASL", "authenticationSASLContinue", "authenticationSASLFinal", "authenticationOk", "parameterStatus", "backendKeyData", "readyForQuery"],
    );
    assert.deepEqual((all[0] as unknown as { mechanisms: string[] }).mechanisms, ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]);
    assert.equal((all[1] as unknown as { data: string }).data, "r=abc,s=c2FsdA==,i=4096");
    assert.deepEqual({ ...all[5] }, { length: 12, name: "backendKeyData", processID: 1234, secretKey: 5678 });
    assert.equal((all[6] as unknown as { status: string }).status, "T");
  });

  test("the upstream parsers read the encoders back", () => {
    const sasl = parseAuthentication(body(authenticationSASL(["SCRAM-SHA-256"])));
    assert.equal(sasl.code, 10);
    assert.deepEqual(parseSASLMechanisms(sasl.data), ["SCRAM-SHA-256"]);
    assert.deepEqual(parseAuthentication(body(authenticationSASLFinal(Buffer.from("v=x")))), { code: 12, data: Buffer.from("v=x") });
    assert.deepEqual(parseParameterStatus(body(parameterStatus("TimeZone", "UTC"))), { name: "TimeZone", value: "UTC" });
    assert.deepEqual(parseBackendKeyData(body(backendKeyData(-1, 2))), { pid: 0xffffffff, secret: 2 });
    assert.equal(parseReadyForQuery(body(readyForQuery("E"))), "E");
  });

  test("NegotiateProtocolVersion lists the newest minor and unknown options", () => {
    assert.deepEqual(negotiateProtocolVersion(0, ["_pq_.x"]), bytes("v", int32(19), int32(3 << 16), int32(1), "_pq_.x\0"));
  });

  test("refuses strings with NUL, a bad SQLSTATE, a bad status or an out-of-range key (ERR_GW_PROTOCOL)", () => {
    throwsWith(() => parameterStatus("a\0b", "c"), "ERR_GW_PROTOCOL", "parameter name contains a NUL byte");
    throwsWith(() => errorResponse({ sqlstate: "28p01", message: "m" }), "ERR_GW_PROTOCOL", 'invalid SQLSTATE "28p01"');
    throwsWith(() => readyForQuery("X" as "I"), "ERR_GW_PROTOCOL", 'invalid transaction status "X"');
    throwsWith(() => backendKeyData(2 ** 32, 0), "ERR_GW_PROTOCOL", "pid must be a 32-bit integer, got 4294967296");
    throwsWith(() => encodeQuery("select '\0'"), "ERR_GW_PROTOCOL", "query contains a NUL byte");
    throwsWith(() => authenticationSASL([""]), "ERR_GW_PROTOCOL", "empty SASL mechanism name");
  });

  test("the upstream parsers refuse malformed server messages", () => {
    throwsWith(() => parseAuthentication(Buffer.alloc(3)), "ERR_GW_PROTOCOL", /without a code/);
    throwsWith(() => parseSASLMechanisms(Buffer.from("SCRAM-SHA-256\0")), "ERR_GW_PROTOCOL", "malformed AuthenticationSASL mechanism list");
    throwsWith(() => parseErrorFields(Buffer.from("Mmsg\0")), "ERR_GW_PROTOCOL", /malformed error/);
    throwsWith(() => summarizeError({ M: "m" }), "ERR_GW_PROTOCOL", /without severity, SQLSTATE or message/);
    throwsWith(() => parseParameterStatus(Buffer.from("a\0b\0c")), "ERR_GW_PROTOCOL", /malformed ParameterStatus/);
    throwsWith(() => parseBackendKeyData(Buffer.alloc(4)), "ERR_GW_PROTOCOL", /4 bytes instead of 8/);
    throwsWith(() => parseReadyForQuery(Buffer.from("Q")), "ERR_GW_PROTOCOL", /malformed ReadyForQuery/);
  });
});

describe("client-side encoders (toward the upstream)", () => {
  test("exact bytes", () => {
    assert.deepEqual(encodeTerminate(), bytes("X", int32(4)));
    assert.deepEqual(encodeQuery("select 1"), bytes("Q", int32(13), "select 1\0"));
    assert.deepEqual(encodeSASLResponse(Buffer.from("c=biws")), bytes("p", int32(10), "c=biws"));
    assert.deepEqual(encodeCancelRequest(1, 2), bytes(int32(16), int32(80877102), int32(1), int32(2)));
    assert.deepEqual(encodeStartup({ user: "u" }), bytes(int32(16), int32(3 << 16), "user\0u\0\0"));
  });

  test("PasswordMessage reads back with the frontend parser", () => {
    const r = new MessageReader();
    r.push(encodePasswordMessage("hunter2"));
    assert.equal(parsePasswordMessage(r.next()!.body), "hunter2");
  });

  test("refuses a startup packet beyond PostgreSQL's limit", () => {
    throwsWith(() => encodeStartup({ user: "u", options: "x".repeat(10_000) }), "ERR_GW_PROTOCOL", /exceeds PostgreSQL's limit of 10004/);
  });
});

describe("BackendScanner", () => {
  const stream = Buffer.concat([
    authenticationOk(),
    parameterStatus("client_encoding", "UTF8"),
    backendKeyData(1, 2),
    readyForQuery("I"),
    msg("T", bytes([0, 0])),
    msg("D", bytes([0, 0])),
    msg("C", "SELECT 1\0"),
    readyForQuery("T"),
    errorResponse({ severity: "ERROR", sqlstate: "22012", message: "division by zero" }),
    readyForQuery("E"),
  ]);

  test("remembers the latest ReadyForQuery status whatever the split point", () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      const s = new BackendScanner();
      s.scan(stream.subarray(0, cut));
      s.scan(stream.subarray(cut));
      assert.equal(s.messages, 10);
      assert.equal(s.readyForQuery, 3);
      assert.equal(s.lastReadyStatus, "E");
      assert.equal(s.atBoundary, true);
    }
  });

  test("sees the status byte even when it arrives alone", () => {
    const s = new BackendScanner();
    const z = readyForQuery("T");
    s.scan(z.subarray(0, 5));
    assert.equal(s.lastReadyStatus, null);
    assert.equal(s.atBoundary, false);
    s.scan(z.subarray(5));
    assert.equal(s.lastReadyStatus, "T");
    assert.equal(s.messages, 1);
  });

  test("an observer sees every header in order and exactly the bodies it asks for, whole, whatever the split point", () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      const headers: string[] = [];
      const bodies: string[] = [];
      const s = new BackendScanner({
        observer: {
          header: (t) => {
            headers.push(String.fromCharCode(t));
            return t === 0x43 || t === 0x45; // CommandComplete, ErrorResponse
          },
          body: (t, b) => bodies.push(`${String.fromCharCode(t)}:${b.toString("latin1")}`),
        },
      });
      s.scan(stream.subarray(0, cut));
      s.scan(stream.subarray(cut));
      assert.equal(headers.join(""), "RSKZTDCZEZ");
      assert.deepEqual(bodies, ["C:SELECT 1\0", `E:${body(errorResponse({ severity: "ERROR", sqlstate: "22012", message: "division by zero" })).toString("latin1")}`]);
      assert.equal(s.lastReadyStatus, "E", "the ReadyForQuery bookkeeping is unchanged");
    }
  });

  test("the tag of a CommandComplete and the columns of a RowDescription", () => {
    const tag = (t: string) => parseCommandComplete(Buffer.from(`${t}\0`));
    assert.deepEqual(tag("INSERT 0 5"), { command: "INSERT", rows: 5 });
    assert.deepEqual(tag("UPDATE 12"), { command: "UPDATE", rows: 12 });
    assert.deepEqual(tag("SELECT 0"), { command: "SELECT", rows: 0 });
    assert.deepEqual(tag("COPY 3"), { command: "COPY", rows: 3 });
    assert.deepEqual(tag("CREATE TABLE"), { command: "CREATE TABLE", rows: null });
    assert.deepEqual(tag("SELECT"), { command: "SELECT", rows: null });
    assert.deepEqual(parseCommandComplete(Buffer.from("BEGIN")), { command: "BEGIN", rows: null }, "lenient without a terminator");
    // The byte-level path of the counted tags agrees with the general one, at its edges too.
    assert.deepEqual(tag("SELECT 123456789012345"), { command: "SELECT", rows: 123456789012345 });
    assert.deepEqual(tag("SELECT 1234567890123456789"), { command: "SELECT", rows: 1234567890123456789 }, "past 15 digits, as Number() reads it");
    assert.deepEqual(tag("MERGE 7"), { command: "MERGE", rows: 7 });
    assert.deepEqual(tag("INSERT 0 1x"), { command: "INSERT", rows: null });
    assert.deepEqual(tag("SELECTED 5"), { command: "SELECTED 5", rows: null });
    assert.deepEqual(tag("SELECT  5"), { command: "SELECT", rows: 5 });
    assert.deepEqual(tag("FETCH ünï 4"), { command: "FETCH", rows: 4 });
    assert.deepEqual(parseCommandComplete(Buffer.from("DELETE 9")), { command: "DELETE", rows: 9 }, "without a terminator");
    assert.deepEqual(parseCommandComplete(Buffer.from("UPDATE 3\0junk 4")), { command: "UPDATE", rows: 3 }, "up to the terminator");
    for (const t of ["", " ", "5", " 5", "SELECT ", "COPY", "MOVE 0"]) {
      const b = Buffer.from(`${t}\0`);
      const sp = t.indexOf(" ");
      const first = sp < 0 ? t : t.slice(0, sp);
      const last = t.slice(t.lastIndexOf(" ") + 1);
      const counted = ["INSERT", "DELETE", "UPDATE", "MERGE", "SELECT", "MOVE", "FETCH", "COPY"].includes(first);
      assert.deepEqual(parseCommandComplete(b), counted ? { command: first, rows: sp >= 0 && /^[0-9]{1,20}$/.test(last) ? Number(last) : null } : { command: t, rows: null }, JSON.stringify(t));
    }
    const field = (name: string, oid: number) => bytes(Buffer.from(`${name}\0`, "utf8"), int32(16384), [0, 1], int32(oid), [0, 4], int32(-1), [0, 0]);
    const rd = bytes([0, 2], field("id", 23), field("naïve", 25));
    assert.deepEqual(parseRowDescription(rd), [{ name: "id", typeOid: 23 }, { name: "na\u00efve", typeOid: 25 }]);
    assert.deepEqual(parseRowDescription(rd, 1), [{ name: "id", typeOid: 23 }]);
    throwsWith(() => parseRowDescription(bytes([0, 1], "id\0", [0, 0])), "ERR_GW_PROTOCOL", "malformed RowDescription from the server");
  });

  test("rejects an invalid status, a ReadyForQuery of the wrong length and an unknown type", () => {
    throwsWith(() => new BackendScanner().scan(msg("Z", "Q")), "ERR_GW_PROTOCOL", "the server sent a ReadyForQuery with invalid status 0x51");
    throwsWith(() => new BackendScanner().scan(msg("Z", "II")), "ERR_GW_PROTOCOL", "the server sent a ReadyForQuery of invalid length 6");
    throwsWith(() => new BackendScanner().scan(msg("Q", "x")), "ERR_GW_PROTOCOL", "the server sent an invalid message type 'Q'");
    throwsWith(() => new BackendScanner({ maxMessageBytes: 100 }).scan(bytes("D", int32(101))), "ERR_GW_PROTOCOL", /101 bytes, which exceeds the gateway's limit of 100/);
  });
});
