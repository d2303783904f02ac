import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { generateKeyPairSync, randomUUID } from "node:crypto";
import { hostname } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { createTransport, escapeSdParam, SyslogTransport } from "../../../src/audit/sinks/index.js";
import { syslogMessage } from "../../../src/audit/sinks/syslog.js";
import { rejectsDelivery } from "./helpers.js";
import { DeliveryError, type SinkTransport, type StreamBatch } from "../../../src/audit/stream/transport.js";
import { checkpointLine, GENESIS, recordLine } from "../../../src/audit/stream/format.js";
import type { AuditLogView } from "../../../src/audit/types.js";
import { ParhelionError } from "../../../src/lib/errors.js";
import { parseSyslogMessage, startBlackhole, startSyslogServer, type TestSyslogServer } from "../../support/syslog-server.js";

let server: TestSyslogServer;
const transports: SinkTransport[] = [];

before(async () => {
  server = await startSyslogServer();
});
after(async () => {
  for (const t of transports) await t.close();
  await server?.close();
});

function transport(extra: Record<string, unknown> = {}): SyslogTransport {
  const t = new SyslogTransport({ host: server.host, port: server.port, serverName: "localhost", caPem: server.caPem, ...extra });
  transports.push(t);
  return t;
}

function batch(streamId: string, firstSeq: number, lines: string[], firstAt = Date.UTC(2025, 0, 2, 3, 4, 5, 678), lastAt = firstAt): StreamBatch {
  return { streamId, firstSeq, lastSeq: firstSeq + lines.length - 1, lines, firstAt, lastAt };
}

function record(seq: number, result: string, reason: string, createdAt = `2025-01-02T03:04:05.${String(seq).padStart(3, "0")}Z`): string {
  return JSON.stringify({ seq: String(seq), id: randomUUID(), createdAt, type: "Login", source: "API", result, reason, actor: { type: "user", email: "zoë@example.com" }, attributes: { note: "a ] b \\ c \"d\"" } });
}

/** A record as the stream carries it (the GET /v1/auditLogs shape). */
function view(seq: number, result: "SUCCESS" | "DENIED" | "FAILURE", reason: string): AuditLogView {
  return {
    auditID: randomUUID(), orgID: randomUUID(), createdAt: `2025-01-02T03:04:05.${String(seq).padStart(3, "0")}Z`, type: "Login", source: "API", result, reason,
    userID: null, userEmail: "zoë@example.com", userType: "Customer", resourceType: null, resourceID: null, sourceIP: "192.0.2.1", requestID: null,
    attributes: { note: 'a ] b \\ c "d"', createdAt: "1999-01-01T00:00:00.000Z" }, seq: String(seq),
  };
}

test("delivers each line as one RFC 5424 message, in order, in octet-counted frames that parse back exactly", async () => {
  server.mode = "ok";
  const t = transport();
  const stream = randomUUID();
  // Lines exactly as the pipeline writes them (src/audit/stream/format.ts): three records and a signed checkpoint.
  const key = generateKeyPairSync("ed25519").privateKey;
  let head = { seq: 0, hash: GENESIS };
  const lines: string[] = [];
  const written = new Date(Date.UTC(2025, 0, 2, 3, 4, 9, 999));
  for (const [result, reason] of [["SUCCESS", "naïve ünïcødé — 日本語 😀"], ["DENIED", 'quotes " and ] and \\ and a line\nbreak and a tab\t'], ["FAILURE", "plain"]] as const) {
    const l = recordLine(stream, head, written, view(head.seq + 1, result, reason));
    lines.push(l.line);
    head = l.head;
  }
  lines.push(checkpointLine(stream, head, new Date(Date.UTC(2025, 0, 2, 3, 4, 10, 500)), { keyId: "k1", privateKey: key }, "3").line);
  const from = server.messages.length;
  await t.deliver(batch(stream, 1, lines, written.getTime(), written.getTime() + 501), AbortSignal.timeout(5000));
  await server.waitFor(from + 4);
  const got = server.messages.slice(from);
  assert.deepEqual(server.errors, []);
  assert.deepEqual(got.map((m) => m.msg), lines, "MSG is the stream line byte for byte");
  assert.ok(got.every((m) => m.bom), "MSG starts with the UTF-8 BOM by default");
  assert.deepEqual(got.map((m) => m.sd), [1, 2, 3, 4].map((seq) => [{ id: "parhelion@32473", params: [["stream", stream], ["seq", String(seq)]] }]));
  // facility 13 (log audit); severity 6 (info), 4 (warning) for DENIED and FAILURE.
  assert.deepEqual(got.map((m) => m.pri), [13 * 8 + 6, 13 * 8 + 4, 13 * 8 + 4, 13 * 8 + 6]);
  assert.deepEqual(got.map((m) => m.msgId), ["record", "record", "record", "checkpoint"]);
  // A record's createdAt (its event time); a checkpoint's own "at".
  assert.deepEqual(got.map((m) => m.timestamp), ["2025-01-02T03:04:05.001Z", "2025-01-02T03:04:05.002Z", "2025-01-02T03:04:05.003Z", "2025-01-02T03:04:10.500Z"]);
  for (const m of got) {
    assert.equal(m.version, 1);
    assert.equal(m.hostname, hostname());
    assert.equal(m.appName, "parhelion");
    assert.equal(m.procId, String(process.pid));
  }
  assert.equal(new Set(got.map((m) => m.connection)).size, 1);
});

test("a createdAt with an offset becomes UTC with milliseconds; a line with no time gets firstAt, or lastAt when it is the last", async () => {
  server.mode = "ok";
  const t = transport();
  const lines = [record(10, "SUCCESS", "a", "2025-03-04T05:06:07.5+02:00"), JSON.stringify({ kind: "checkpoint" }), record(12, "SUCCESS", "c", "not a time")];
  const from = server.messages.length;
  const firstAt = Date.UTC(2024, 11, 31, 23, 59, 59, 250);
  await t.deliver(batch(randomUUID(), 10, lines, firstAt, firstAt + 10), AbortSignal.timeout(5000));
  await server.waitFor(from + 3);
  assert.deepEqual(server.messages.slice(from).map((m) => m.timestamp), ["2025-03-04T03:06:07.500Z", "2024-12-31T23:59:59.250Z", "2024-12-31T23:59:59.260Z"]);
  assert.deepEqual(server.messages.slice(from).map((m) => m.msgId), ["audit", "checkpoint", "audit"], "MSGID is the line's kind, when it has one");
});

test("escapes '\"', '\\' and ']' in SD-PARAM values (RFC 5424 §6.3.3), and the receiver reads back the original", () => {
  assert.equal(escapeSdParam('a"b\\c]d[e'), 'a\\"b\\\\c\\]d[e');
  const header = { facility: 13, hostname: "h", appName: "parhelion", procId: "1", utf8Bom: false };
  const tricky = 'x"y\\z]w';
  const raw = syslogMessage(header, tricky, 7, '{"a":"]"}', Date.UTC(2025, 0, 1));
  assert.ok(raw.toString("utf8").includes('stream="x\\"y\\\\z\\]w"'));
  const m = parseSyslogMessage(raw, 1);
  assert.deepEqual(m.sd, [{ id: "parhelion@32473", params: [["stream", tricky], ["seq", "7"]] }]);
  assert.equal(m.msg, '{"a":"]"}');
  assert.equal(m.bom, false);
});

test("facility, appName, hostname and utf8Bom are honoured", async () => {
  server.mode = "ok";
  const t = transport({ facility: 10, appName: "pgaudit-eu", hostname: "cp-1.example", utf8Bom: false });
  const from = server.messages.length;
  const lines = [record(1, "DENIED", "x"), record(2, "SUCCESS", "y")];
  await t.deliver(batch(randomUUID(), 1, lines), AbortSignal.timeout(5000));
  await server.waitFor(from + 2);
  const got = server.messages.slice(from);
  assert.deepEqual(got.map((m) => [m.pri, m.appName, m.hostname, m.bom, m.msg]), [
    [10 * 8 + 4, "pgaudit-eu", "cp-1.example", false, lines[0]],
    [10 * 8 + 6, "pgaudit-eu", "cp-1.example", false, lines[1]],
  ]);
});

test("consecutive and concurrent batches share one connection and arrive in call order", async () => {
  server.mode = "ok";
  const t = transport();
  const stream = randomUUID();
  const from = server.messages.length;
  const conns = server.connections;
  await Promise.all([1, 3, 5, 7].map((seq) => t.deliver(batch(stream, seq, [record(seq, "SUCCESS", "a"), record(seq + 1, "SUCCESS", "b")]), AbortSignal.timeout(5000))));
  await t.deliver(batch(stream, 9, [record(9, "SUCCESS", "c")]), AbortSignal.timeout(5000));
  await server.waitFor(from + 9);
  const got = server.messages.slice(from);
  assert.deepEqual(got.map((m) => m.sd[0]?.params[1]?.[1]), ["1", "2", "3", "4", "5", "6", "7", "8", "9"]);
  assert.equal(server.connections, conns + 1);
});

test("reconnects after the receiver drops the connection", async () => {
  server.mode = "ok";
  const t = transport();
  const stream = randomUUID();
  const from = server.messages.length;
  await t.deliver(batch(stream, 1, [record(1, "SUCCESS", "before")]), AbortSignal.timeout(5000));
  await server.waitFor(from + 1);
  const first = server.messages[from]!.connection;
  await server.dropAll();
  await sleep(50);
  const line = record(2, "SUCCESS", "after");
  await t.deliver(batch(stream, 2, [line]), AbortSignal.timeout(5000));
  await server.waitFor(from + 2);
  const second = server.messages[from + 1]!;
  assert.equal(second.msg, line);
  assert.notEqual(second.connection, first, "the second batch went over a new connection");
});

test("a connection dropped mid-batch rejects with a retryable error; the next delivery reconnects", async () => {
  server.mode = "stall";
  const t = transport();
  const stream = randomUUID();
  const conns = server.connections;
  const big = Array.from({ length: 16 }, (_, i) => record(i + 1, "SUCCESS", "x".repeat(1024 * 1024)));
  const p = t.deliver(batch(stream, 1, big), AbortSignal.timeout(15_000));
  p.catch(() => undefined);
  for (let i = 0; i < 100 && server.connections === conns; i++) await sleep(20);
  await sleep(300);
  const started = Date.now();
  await server.dropAll();
  await rejectsDelivery(p, true, /syslog\+tls:\/\/127\.0\.0\.1:\d+: .*(closed|ECONNRESET|EPIPE)/);
  assert.ok(Date.now() - started < 5000, "the failure is noticed at once, not at the timeout");
  server.mode = "ok";
  const from = server.messages.length;
  await t.deliver(batch(stream, 1, [record(1, "SUCCESS", "small")]), AbortSignal.timeout(5000));
  await server.waitFor(from + 1);
  assert.equal(server.messages[from]!.connection, server.connections);
});

test("gives up when the signal aborts while the receiver does not read, and does not reuse the half-written connection", async () => {
  server.mode = "stall";
  const t = transport();
  const stream = randomUUID();
  const big = Array.from({ length: 16 }, (_, i) => record(i + 1, "SUCCESS", "y".repeat(1024 * 1024)));
  const started = Date.now();
  await rejectsDelivery(t.deliver(batch(stream, 1, big), AbortSignal.timeout(500)), true, /timed out while writing/);
  assert.ok(Date.now() - started < 3000);
  server.mode = "ok";
  const conns = server.connections;
  const from = server.messages.length;
  await t.deliver(batch(stream, 1, [record(1, "SUCCESS", "again")]), AbortSignal.timeout(5000));
  await server.waitFor(from + 1);
  assert.equal(server.connections, conns + 1, "a new connection");
  assert.deepEqual(server.errors, [], "no partial frame reached the receiver's parser");
});

test("gives up when the signal aborts during a TLS handshake the receiver never answers", async () => {
  const hole = await startBlackhole();
  try {
    const t = new SyslogTransport({ host: "127.0.0.1", port: hole.port, serverName: "localhost", caPem: server.caPem });
    transports.push(t);
    const started = Date.now();
    await rejectsDelivery(t.deliver(batch(randomUUID(), 1, [record(1, "SUCCESS", "x")]), AbortSignal.timeout(300)), true, /timed out while connecting/);
    assert.ok(Date.now() - started < 2000);
    const ac = new AbortController();
    ac.abort();
    await rejectsDelivery(t.deliver(batch(randomUUID(), 1, [record(1, "SUCCESS", "x")]), ac.signal), true, /aborted/);
  } finally {
    await hole.close();
  }
});

test("a refused connection is retryable", async () => {
  const hole = await startBlackhole();
  const port = hole.port;
  await hole.close();
  const t = new SyslogTransport({ host: "127.0.0.1", port, caPem: server.caPem });
  transports.push(t);
  await rejectsDelivery(t.deliver(batch(randomUUID(), 1, [record(1, "SUCCESS", "x")]), AbortSignal.timeout(3000)), true, /ECONNREFUSED/);
});

test("refuses a receiver whose certificate no trusted CA signed (not retryable)", async () => {
  server.mode = "ok";
  const from = server.messages.length;
  const t = new SyslogTransport({ host: server.host, port: server.port, serverName: "localhost" });
  transports.push(t);
  await rejectsDelivery(t.deliver(batch(randomUUID(), 1, [record(1, "SUCCESS", "secret-ish")]), AbortSignal.timeout(5000)), false, /not trusted \((UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)\)/);
  await sleep(50);
  assert.equal(server.messages.length, from, "nothing was sent");
});

test("refuses a receiver whose certificate does not name serverName (not retryable)", async () => {
  const t = transport({ serverName: "syslog.example.org" });
  await rejectsDelivery(t.deliver(batch(randomUUID(), 1, [record(1, "SUCCESS", "x")]), AbortSignal.timeout(5000)), false, /ERR_TLS_CERT_ALTNAME_INVALID/);
});

test("certificate verification cannot be turned off: rejectUnauthorized and other unknown fields are refused", () => {
  assert.throws(
    () => createTransport("syslog", { host: "127.0.0.1", rejectUnauthorized: false }, {}),
    (err: unknown) => err instanceof ParhelionError && err.code === "ERR_VALIDATION" && /rejectUnauthorized: unknown field/.test(err.message),
  );
  assert.throws(() => createTransport("syslog", { host: "127.0.0.1", minVersion: "TLSv1.1" }, {}), (err: unknown) => err instanceof ParhelionError && /minVersion/.test(err.message));
});

test("createTransport validates the config and names the bad field", () => {
  const cases: Array<[unknown, RegExp]> = [
    [{ host: "127.0.0.1", port: 70000 }, /port/],
    [{ host: "bad host" }, /host: must be a DNS name or an IP address/],
    [{ host: "h", appName: "has space" }, /appName/],
    [{ host: "h", facility: 24 }, /facility/],
    [{ host: "h", caPem: "not a certificate" }, /caPem: must be one or more PEM certificates/],
    [{}, /host/],
    ["syslog://h", /syslog sink config/],
  ];
  for (const [config, re] of cases) {
    assert.throws(() => createTransport("syslog", config, {}), (err: unknown) => err instanceof ParhelionError && err.code === "ERR_VALIDATION" && re.test(err.message), JSON.stringify(config));
  }
  assert.throws(() => createTransport("syslog", { host: "h" }, { password: "x" }), (err: unknown) => err instanceof ParhelionError && /password: unknown field/.test(err.message));
  assert.throws(() => createTransport("carrier-pigeon" as never, {}, {}), (err: unknown) => err instanceof ParhelionError && err.code === "ERR_VALIDATION" && /unknown sink kind/.test(err.message));
  const t = createTransport("syslog", { host: "logs.example.org" }, {});
  assert.equal(t.describe(), "syslog+tls://logs.example.org:6514");
  assert.equal(createTransport("syslog", { host: "::1", port: 1514 }, {}).describe(), "syslog+tls://[::1]:1514");
});

test("an invalid batch is refused without connecting (not retryable)", async () => {
  const t = transport();
  const conns = server.connections;
  await rejectsDelivery(t.deliver({ streamId: randomUUID(), firstSeq: 1, lastSeq: 3, lines: ["{}"], firstAt: 0, lastAt: 0 }, AbortSignal.timeout(1000)), false, /invalid batch: lines/);
  await rejectsDelivery(t.deliver({ streamId: "../x", firstSeq: 1, lastSeq: 1, lines: ["{}"], firstAt: 0, lastAt: 0 }, AbortSignal.timeout(1000)), false, /invalid batch: streamId/);
  await rejectsDelivery(t.deliver({ streamId: "s", firstSeq: 1, lastSeq: 1, lines: ["{\n}"], firstAt: 0, lastAt: 0 }, AbortSignal.timeout(1000)), false, /line break/);
  assert.equal(server.connections, conns);
});

test("close is idempotent and a delivery after close rejects", async () => {
  server.mode = "ok";
  const t = transport();
  await t.deliver(batch(randomUUID(), 1, [record(1, "SUCCESS", "x")]), AbortSignal.timeout(5000));
  await t.close();
  await t.close();
  await rejectsDelivery(t.deliver(batch(randomUUID(), 2, [record(2, "SUCCESS", "x")]), AbortSignal.timeout(1000)), true, /closed/);
});
