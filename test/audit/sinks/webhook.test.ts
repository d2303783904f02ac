import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac, randomBytes, randomUUID } from "node:crypto";
import { createTransport, verifyWebhookSignature, WebhookTransport } from "../../../src/audit/sinks/index.js";
import { rejectsDelivery } from "./helpers.js";
import { DeliveryError, type SinkTransport, type StreamBatch } from "../../../src/audit/stream/transport.js";
import { ParhelionError } from "../../../src/lib/errors.js";
import { startBlackhole } from "../../support/syslog-server.js";
import { startWebhookServer, type TestWebhookServer } from "../../support/webhook-server.js";

const secret = randomBytes(32).toString("base64url");
const bearer = `Bearer ${randomBytes(24).toString("hex")}`;
let server: TestWebhookServer;
const transports: SinkTransport[] = [];

before(async () => {
  server = await startWebhookServer(secret);
});
after(async () => {
  for (const t of transports) await t.close();
  await server?.close();
});

function transport(config: Record<string, unknown> = {}, secrets: { secret: string; headers?: Record<string, string> } = { secret }, opts: { now?: () => number } = {}): WebhookTransport {
  const t = new WebhookTransport({ url: server.url, caPem: server.caPem, ...config }, secrets, opts);
  transports.push(t);
  return t;
}

function batch(firstSeq: number, lines: string[], streamId = randomUUID()): StreamBatch {
  return { streamId, firstSeq, lastSeq: firstSeq + lines.length - 1, lines, firstAt: Date.UTC(2025, 5, 1), lastAt: Date.UTC(2025, 5, 1, 0, 0, 1) };
}

const lines = [
  JSON.stringify({ seq: "5", createdAt: "2025-06-01T00:00:00.000Z", result: "SUCCESS", reason: "naïve 日本語 😀" }),
  JSON.stringify({ seq: "6", createdAt: "2025-06-01T00:00:00.500Z", result: "DENIED", reason: 'quote " bracket ] backslash \\ newline\n' }),
  JSON.stringify({ seq: "7", kind: "checkpoint" }),
];

test("POSTs the batch as NDJSON with stream, seq and an HMAC signature a receiver can verify", async () => {
  server.mode = "ok";
  const now = Date.UTC(2030, 0, 1, 12, 0, 0);
  const t = transport({ headers: { "X-Tenant": "eu-1" } }, { secret, headers: { Authorization: bearer } });
  const b = batch(5, lines);
  const from = server.accepted.length;
  await t.deliver(b, AbortSignal.timeout(5000));
  const got = server.accepted[from];
  assert.ok(got, "the receiver accepted the batch (its signature verified)");
  assert.equal(got.body.toString("utf8"), `${lines.join("\n")}\n`);
  assert.deepEqual(got.body.toString("utf8").split("\n").slice(0, -1).map((l) => JSON.parse(l) as unknown), lines.map((l) => JSON.parse(l) as unknown));
  assert.equal(got.headers["content-type"], "application/x-ndjson");
  assert.equal(got.headers["content-length"], String(got.body.length));
  assert.equal(got.headers["x-parhelion-stream"], b.streamId);
  assert.equal(got.headers["x-parhelion-seq"], "5-7");
  assert.equal(got.headers["x-tenant"], "eu-1");
  assert.equal(got.headers["authorization"], bearer);
  const sig = got.headers["x-parhelion-signature"] as string;
  const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(sig);
  assert.ok(m, sig);
  // Independently of verifyWebhookSignature: HMAC-SHA256(secret, "<t>.<body>").
  assert.equal(m[2], createHmac("sha256", secret).update(`${m[1]}.`).update(got.body).digest("hex"));
  assert.ok(Math.abs(Number(m[1]) - Date.now() / 1000) < 60);
  assert.equal(verifyWebhookSignature(secret, sig, got.body, 300), true);
  assert.equal(verifyWebhookSignature(secret, sig, got.body.toString("utf8"), 300), true, "a string body verifies too");

  // The injectable clock sets t.
  const t2 = transport({}, { secret }, { now: () => now });
  server.mode = 200;
  await t2.deliver(batch(1, ["{}"]), AbortSignal.timeout(5000));
  const last = server.requests.at(-1)!;
  assert.match(last.headers["x-parhelion-signature"] as string, new RegExp(`^t=${now / 1000},v1=`));
  assert.equal(last.signatureValid, false, "t is far outside the receiver's 300 s tolerance");
  assert.equal(verifyWebhookSignature(secret, last.headers["x-parhelion-signature"] as string, last.body, 300, now / 1000), true);
});

test("verifyWebhookSignature refuses a tampered body, another secret, a stale or future t and malformed headers", () => {
  const body = Buffer.from(`${lines.join("\n")}\n`);
  const now = 1_750_000_000;
  const v1 = createHmac("sha256", secret).update(`${now}.`).update(body).digest("hex");
  const header = `t=${now},v1=${v1}`;
  assert.equal(verifyWebhookSignature(secret, header, body, 300, now), true);
  const tampered = Buffer.from(body);
  tampered[10] = tampered[10]! ^ 1;
  assert.equal(verifyWebhookSignature(secret, header, tampered, 300, now), false, "tampered body");
  assert.equal(verifyWebhookSignature(secret, header, Buffer.concat([body, Buffer.from("{}\n")]), 300, now), false, "appended line");
  assert.equal(verifyWebhookSignature(randomBytes(32).toString("hex"), header, body, 300, now), false, "another secret");
  assert.equal(verifyWebhookSignature(secret, header, body, 300, now + 301), false, "stale");
  assert.equal(verifyWebhookSignature(secret, header, body, 300, now - 301), false, "from the future");
  assert.equal(verifyWebhookSignature(secret, header, body, 300, now + 300), true, "at the edge of the tolerance");
  assert.equal(verifyWebhookSignature(secret, `t=${now + 1},v1=${v1}`, body, 300, now), false, "t is signed");
  // Several v1 values (a receiver rotating secrets): one match is enough.
  assert.equal(verifyWebhookSignature(secret, `t=${now},v1=${"0".repeat(64)},v1=${v1}`, body, 300, now), true);
  for (const bad of [undefined, null, "", `v1=${v1}`, `t=${now}`, `t=${now},v1=${v1.slice(2)}`, `t=${now},t=${now},v1=${v1}`, `t=abc,v1=${v1}`, `t=${now};v1=${v1}`, `t=${now},v1=${v1}z`]) {
    assert.equal(verifyWebhookSignature(secret, bad, body, 300, now), false, String(bad));
  }
  assert.throws(() => verifyWebhookSignature(secret, header, body, -1, now), TypeError);
});

test("2xx is success; 408, 429 and 5xx are retryable; other 4xx are not", async () => {
  const t = transport();
  for (const status of [200, 201, 202, 204]) {
    server.mode = status;
    await t.deliver(batch(1, ["{}"]), AbortSignal.timeout(5000));
  }
  for (const status of [408, 429, 500, 502, 503, 504]) {
    server.mode = status;
    await rejectsDelivery(t.deliver(batch(1, ["{}"]), AbortSignal.timeout(5000)), true, new RegExp(`HTTP ${status}`));
  }
  for (const status of [400, 401, 403, 404, 413, 422]) {
    server.mode = status;
    await rejectsDelivery(t.deliver(batch(1, ["{}"]), AbortSignal.timeout(5000)), false, new RegExp(`HTTP ${status}; the receiver refused`));
  }
});

test("a receiver that cannot verify the signature refuses the batch, which is not retryable", async () => {
  server.mode = "ok";
  const from = server.accepted.length;
  const t = transport({}, { secret: randomBytes(32).toString("hex") });
  await rejectsDelivery(t.deliver(batch(1, ["{}"]), AbortSignal.timeout(5000)), false, /HTTP 401/);
  assert.equal(server.accepted.length, from);
});

test("a redirect is a failure and is not followed", async () => {
  server.mode = "redirect";
  const t = transport();
  const from = server.requests.length;
  await rejectsDelivery(t.deliver(batch(1, ["{}"]), AbortSignal.timeout(5000)), false, /HTTP 307, a redirect/);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(server.requests.length, from + 1, "only the original request reached the receiver");
});

test("gives up when the signal aborts on a receiver that never answers", async () => {
  server.mode = "hang";
  const t = transport();
  const started = Date.now();
  await rejectsDelivery(t.deliver(batch(1, ["{}"]), AbortSignal.timeout(300)), true, /timed out/);
  assert.ok(Date.now() - started < 2000);
});

test("a receiver answering bytes that are not HTTP is a retryable failure, at once", async () => {
  server.mode = "garbage";
  const t = transport();
  const started = Date.now();
  await rejectsDelivery(t.deliver(batch(1, ["{}"]), AbortSignal.timeout(10_000)), true, /^webhook https:\/\/localhost:\d+\/hooks\/audit: /);
  assert.ok(Date.now() - started < 2000);
});

test("an endless or dripping response body neither hangs nor bloats the delivery", async () => {
  const t = transport();
  const heap = process.memoryUsage().heapUsed;
  server.mode = "huge";
  let started = Date.now();
  await t.deliver(batch(1, ["{}"]), AbortSignal.timeout(10_000));
  assert.ok(Date.now() - started < 2000, "2xx with an endless body: success once the status is in, the body capped");
  server.mode = "huge-500";
  started = Date.now();
  await rejectsDelivery(t.deliver(batch(1, ["{}"]), AbortSignal.timeout(10_000)), true, /HTTP 500/);
  assert.ok(Date.now() - started < 2000);
  server.mode = "drip";
  started = Date.now();
  await t.deliver(batch(1, ["{}"]), AbortSignal.timeout(10_000));
  assert.ok(Date.now() - started < 3000, "a body dripping forever is dropped after the drain deadline");
  assert.ok(process.memoryUsage().heapUsed - heap < 64 * 1024 * 1024, "the endless body was not buffered");
  // The transport still works afterwards.
  server.mode = "ok";
  await t.deliver(batch(1, ["{}"]), AbortSignal.timeout(5000));
});

test("refuses a receiver whose certificate no trusted CA signed (not retryable), sending nothing", async () => {
  server.mode = "ok";
  const from = server.requests.length;
  const t = new WebhookTransport({ url: server.url }, { secret });
  transports.push(t);
  await rejectsDelivery(t.deliver(batch(1, ["{}"]), AbortSignal.timeout(5000)), false, /not trusted \((UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)\)/);
  const wrongName = new WebhookTransport({ url: server.url.replace("localhost", "127.0.0.1"), caPem: server.caPem }, { secret });
  transports.push(wrongName);
  await rejectsDelivery(wrongName.deliver(batch(1, ["{}"]), AbortSignal.timeout(5000)), false, /not trusted \(ERR_TLS_CERT_ALTNAME_INVALID\)/);
  assert.equal(server.requests.length, from);
});

test("a refused connection is retryable", async () => {
  const hole = await startBlackhole();
  const port = hole.port;
  await hole.close();
  const t = transport({ url: `https://localhost:${port}/x` });
  await rejectsDelivery(t.deliver(batch(1, ["{}"]), AbortSignal.timeout(5000)), true, /ECONNREFUSED/);
});

test("refuses http: URLs and other bad config at construction, naming the field and never echoing a secret", () => {
  const bad = (config: unknown, secrets: Record<string, string>, re: RegExp): void => {
    assert.throws(
      () => createTransport("webhook", config, secrets),
      (err: unknown) => {
        assert.ok(err instanceof ParhelionError && err.code === "ERR_VALIDATION", String(err));
        assert.match(err.message, re);
        assert.ok(!err.message.includes(secret) && !JSON.stringify(err.details ?? {}).includes(secret), "the secret is not in the error");
        return true;
      },
    );
  };
  bad({ url: "http://receiver.example/hook" }, { secret }, /url: must be an https:\/\/ URL, not http:\/\/ \(audit records are never sent in plaintext\)/);
  bad({ url: "ftp://receiver.example/hook" }, { secret }, /url: must be an https:\/\/ URL/);
  bad({ url: "receiver.example/hook" }, { secret }, /url: must be an absolute https:\/\/ URL/);
  bad({ url: "https://user:pw@receiver.example/hook" }, { secret }, /url: must not carry credentials/);
  bad({ url: "https://receiver.example/hook", insecure: true }, { secret }, /insecure: unknown field/);
  bad({ url: "https://receiver.example/hook" }, { secret: secret.slice(0, 20) }, /secret: must be at least 32 bytes/);
  bad({ url: "https://receiver.example/hook" }, {}, /secret/);
  bad({ url: "https://receiver.example/hook" }, { secret, token: "x" }, /token: unknown field/);
  for (const h of ["X-Parhelion-Seq", "x-parhelion-signature", "Content-Type", "content-length", "Host", "Transfer-Encoding"]) {
    bad({ url: "https://receiver.example/hook", headers: { [h]: "1" } }, { secret }, new RegExp(`headers\\.${h}: ${h}: set by parhelion`));
  }
  bad({ url: "https://receiver.example/hook", headers: { Authorization: "Bearer abc" } }, { secret }, /headers\.Authorization: .*carries a credential; pass it as a secret header \(header:Authorization\)/);
  bad({ url: "https://receiver.example/hook", headers: { "X-A": "line\r\nInjected: 1" } }, { secret }, /headers\.X-A: must be at most 1024 visible ASCII/);
  bad({ url: "https://receiver.example/hook", headers: { "Bad Name": "1" } }, { secret }, /not a valid header name/);
  bad({ url: "https://receiver.example/hook", headers: { "X-A": "1" } }, { secret, "header:x-a": "2" }, /headers\.x-a: also set in the config headers/);
  bad({ url: "https://receiver.example/hook" }, { secret, "header:X-Parhelion-Stream": "2" }, /set by parhelion/);
});

test("describe() is the URL without query string or credentials, and never holds a secret", () => {
  const t = createTransport("webhook", { url: "https://siem.example.com:8443/in/audit?token=abc", headers: { "X-Env": "prod" } }, { secret, "header:Authorization": bearer });
  assert.equal(t.describe(), "https://siem.example.com:8443/in/audit");
  assert.ok(!t.describe().includes(secret) && !t.describe().includes(bearer) && !t.describe().includes("token"));
  assert.equal(createTransport("webhook", { url: "https://siem.example.com/" }, { secret }).describe(), "https://siem.example.com/");
  // Nothing enumerable on the transport holds a secret in the clear either (what a logger serializing it would see).
  assert.ok(!JSON.stringify(Object.keys(t)).includes(secret));
});
