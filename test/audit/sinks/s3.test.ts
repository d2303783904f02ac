import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";
import { createTransport, S3Transport, s3ObjectKey } from "../../../src/audit/sinks/index.js";
import { s3Failure } from "../../../src/audit/sinks/s3.js";
import { rejectsDelivery } from "./helpers.js";
import { DeliveryError, type SinkTransport, type StreamBatch } from "../../../src/audit/stream/transport.js";
import { ParhelionError } from "../../../src/lib/errors.js";
import { startTestS3, type TestS3 } from "../../support/s3-server.js";
import { startBlackhole } from "../../support/syslog-server.js";

let s3: TestS3;
const transports: SinkTransport[] = [];

before(async () => {
  s3 = await startTestS3();
});
after(async () => {
  for (const t of transports) await t.close();
  await s3?.close();
});

function transport(config: Record<string, unknown> = {}, secretAccessKey = s3.secretAccessKey): S3Transport {
  const t = new S3Transport({ endpoint: s3.endpoint, region: s3.region, bucket: s3.bucket, forcePathStyle: true, accessKeyId: s3.accessKeyId, caPem: s3.caPem, ...config }, { secretAccessKey });
  transports.push(t);
  return t;
}

function batch(streamId: string, firstSeq: number, lines: string[], firstAt: number): StreamBatch {
  return { streamId, firstSeq, lastSeq: firstSeq + lines.length - 1, lines, firstAt, lastAt: firstAt + 5 };
}

async function read(key: string): Promise<{ body: string; contentType: string | undefined; metadata: Record<string, string> | undefined }> {
  const o = await s3.client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: key }));
  return { body: (await o.Body?.transformToString("utf8")) ?? "", contentType: o.ContentType, metadata: o.Metadata };
}

async function keys(prefix: string): Promise<string[]> {
  const out = await s3.client.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: prefix }));
  return (out.Contents ?? []).map((o) => o.Key ?? "").sort();
}

const line = (seq: number, reason: string): string => JSON.stringify({ seq: String(seq), createdAt: "2025-02-28T23:59:59.999Z", result: "SUCCESS", reason });

test("writes one NDJSON object per batch under <prefix><stream>/<YYYY>/<MM>/<DD>/<firstSeq>-<lastSeq>.jsonl", async () => {
  const t = transport({ prefix: "audit/eu-1/" });
  const stream = randomUUID();
  const b1 = batch(stream, 1, [line(1, "naïve 日本語 😀"), line(2, 'quote " bracket ] backslash \\ newline\n')], Date.UTC(2025, 1, 28, 23, 59, 59, 999));
  const b2 = batch(stream, 3, [line(3, "next day")], Date.UTC(2025, 2, 1, 0, 0, 0, 1));
  await t.deliver(b1, AbortSignal.timeout(10_000));
  await t.deliver(b2, AbortSignal.timeout(10_000));
  const k1 = `audit/eu-1/${stream}/2025/02/28/00000000000000000001-00000000000000000002.jsonl`;
  const k2 = `audit/eu-1/${stream}/2025/03/01/00000000000000000003-00000000000000000003.jsonl`;
  assert.deepEqual(await keys(`audit/eu-1/${stream}/`), [k1, k2]);
  const o1 = await read(k1);
  assert.equal(o1.body, `${b1.lines.join("\n")}\n`);
  assert.deepEqual(o1.body.split("\n").slice(0, -1).map((l) => JSON.parse(l) as unknown), b1.lines.map((l) => JSON.parse(l) as unknown));
  assert.equal(o1.contentType, "application/x-ndjson");
  assert.deepEqual(o1.metadata, { "parhelion-stream": stream, "parhelion-seq": "1-2" });
  assert.equal((await read(k2)).body, `${line(3, "next day")}\n`);
  const head = await s3.client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: k1 }));
  assert.equal(head.ContentLength, Buffer.byteLength(o1.body), "the object is exactly the body sent");
});

test("delivering a batch again overwrites the same key", async () => {
  const t = transport();
  const stream = randomUUID();
  const at = Date.UTC(2025, 6, 4, 12);
  const b = batch(stream, 41, [line(41, "a"), line(42, "b")], at);
  await t.deliver(b, AbortSignal.timeout(10_000));
  await t.deliver(b, AbortSignal.timeout(10_000));
  const key = `${stream}/2025/07/04/00000000000000000041-00000000000000000042.jsonl`;
  assert.deepEqual(await keys(`${stream}/`), [key]);
  assert.equal((await read(key)).body, `${b.lines.join("\n")}\n`);
  // The same seqs with other bytes (never sent in practice) land on the same key and replace it.
  await t.deliver({ ...b, lines: [line(41, "A"), line(42, "B")] }, AbortSignal.timeout(10_000));
  assert.deepEqual(await keys(`${stream}/`), [key]);
  assert.equal((await read(key)).body, `${line(41, "A")}\n${line(42, "B")}\n`);
});

test("s3ObjectKey takes the UTC date of firstAt and pads seqs to 20 digits", () => {
  const at = Date.parse("2025-12-31T21:30:00-05:00");
  assert.equal(s3ObjectKey("p/", { streamId: "s", firstSeq: 9_007_199_254_740_990, lastSeq: 9_007_199_254_740_991, firstAt: at }), "p/s/2026/01/01/00009007199254740990-00009007199254740991.jsonl");
  assert.equal(s3ObjectKey("", { streamId: "s", firstSeq: 0, lastSeq: 0, firstAt: Date.UTC(2025, 0, 9) }), "s/2025/01/09/00000000000000000000-00000000000000000000.jsonl");
});

test("a missing bucket is not retryable", async () => {
  const t = transport({ bucket: "no-such-bucket-here" });
  await rejectsDelivery(t.deliver(batch(randomUUID(), 1, ["{}"], Date.now()), AbortSignal.timeout(10_000)), false, /NoSuchBucket/);
});

test("an unknown access key is not retryable", async () => {
  const t = transport({ accessKeyId: "AKIAUNKNOWNKEY000000" });
  await rejectsDelivery(t.deliver(batch(randomUUID(), 1, ["{}"], Date.now()), AbortSignal.timeout(10_000)), false, /InvalidAccessKeyId/);
});

test("AccessDenied, NoSuchBucket, InvalidAccessKeyId and SignatureDoesNotMatch are not retryable; other S3 errors are", () => {
  const signal = new AbortController().signal;
  const sdkError = (name: string, status: number): Error => Object.assign(new Error(`${name} happened`), { name, $metadata: { httpStatusCode: status } });
  for (const name of ["AccessDenied", "NoSuchBucket", "InvalidAccessKeyId", "SignatureDoesNotMatch"]) {
    const e = s3Failure("s3://b/k", sdkError(name, 403), signal);
    assert.equal(e.retryable, false, name);
    assert.match(e.message, new RegExp(`^s3://b/k: ${name}: ${name} happened \\(HTTP 403\\)$`));
  }
  for (const [name, status] of [["SlowDown", 503], ["InternalError", 500], ["RequestTimeout", 400], ["TimeoutError", 0]] as const) {
    assert.equal(s3Failure("s3://b/k", sdkError(name, status), signal).retryable, true, name);
  }
  assert.equal(s3Failure("s3://b/k", Object.assign(new Error("x"), { code: "ECONNRESET" }), signal).retryable, true);
  assert.equal(s3Failure("s3://b/k", Object.assign(new Error("x"), { code: "CERT_HAS_EXPIRED" }), signal).retryable, false);
});

test("refuses an endpoint whose certificate no trusted CA signed (not retryable)", async () => {
  const t = new S3Transport({ endpoint: s3.endpoint, region: s3.region, bucket: s3.bucket, forcePathStyle: true, accessKeyId: s3.accessKeyId }, { secretAccessKey: s3.secretAccessKey });
  transports.push(t);
  await rejectsDelivery(t.deliver(batch(randomUUID(), 1, ["{}"], Date.now()), AbortSignal.timeout(10_000)), false, /not trusted \((UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)\)/);
  // The certificate names localhost, not 127.0.0.1.
  const byIp = transport({ endpoint: s3.endpoint.replace("localhost", "127.0.0.1") });
  await rejectsDelivery(byIp.deliver(batch(randomUUID(), 1, ["{}"], Date.now()), AbortSignal.timeout(10_000)), false, /not trusted \(ERR_TLS_CERT_ALTNAME_INVALID\)/);
});

test("gives up when the signal aborts on an endpoint that never answers; a refused connection is retryable", async () => {
  const hole = await startBlackhole();
  try {
    const t = transport({ endpoint: `https://localhost:${hole.port}` });
    const started = Date.now();
    await rejectsDelivery(t.deliver(batch(randomUUID(), 1, ["{}"], Date.now()), AbortSignal.timeout(300)), true, /timed out/);
    assert.ok(Date.now() - started < 2000);
  } finally {
    await hole.close();
  }
  const t = transport({ endpoint: `https://localhost:${hole.port}` });
  await rejectsDelivery(t.deliver(batch(randomUUID(), 1, ["{}"], Date.now()), AbortSignal.timeout(5000)), true, /ECONNREFUSED/);
});

test("validates the config, naming the field and never echoing the secret access key", () => {
  const secretAccessKey = randomBytes(30).toString("base64");
  const ok = { region: "eu-west-1", bucket: "audit-archive", accessKeyId: "AKIAEXAMPLE" };
  const bad = (config: unknown, secrets: Record<string, string>, re: RegExp): void => {
    assert.throws(
      () => createTransport("s3", config, secrets),
      (err: unknown) => {
        assert.ok(err instanceof ParhelionError && err.code === "ERR_VALIDATION", String(err));
        assert.match(err.message, re);
        assert.ok(!err.message.includes(secretAccessKey) && !JSON.stringify(err.details ?? {}).includes(secretAccessKey));
        return true;
      },
    );
  };
  bad({ ...ok, prefix: "/audit/" }, { secretAccessKey }, /prefix: must not start with "\/"/);
  bad({ ...ok, prefix: "audit/../x/" }, { secretAccessKey }, /prefix: must not contain "\.\."/);
  bad({ ...ok, prefix: "audit" }, { secretAccessKey }, /prefix: must be empty or end with "\/"/);
  bad({ ...ok, prefix: "a//b/" }, { secretAccessKey }, /prefix: must not contain "\/\/"/);
  bad({ ...ok, endpoint: "http://minio.internal:9000" }, { secretAccessKey }, /endpoint: must be an https:\/\/ URL, not http:\/\//);
  bad({ ...ok, bucket: "Audit_Bucket" }, { secretAccessKey }, /bucket: must be an S3 bucket name/);
  bad({ ...ok, region: "EU West" }, { secretAccessKey }, /region/);
  bad({ ...ok, secretAccessKey }, { secretAccessKey }, /secretAccessKey: unknown field/);
  bad({ ...ok, sslEnabled: false }, { secretAccessKey }, /sslEnabled: unknown field/);
  bad(ok, {}, /secretAccessKey/);
  bad(ok, { secretAccessKey: "has a space" }, /secretAccessKey: must be 1 to 256 printable ASCII/);
  const t = createTransport("s3", { ...ok, prefix: "audit/" }, { secretAccessKey });
  assert.equal(t.describe(), "s3://audit-archive/audit/");
  const t2 = createTransport("s3", { ...ok, endpoint: "https://minio.internal:9000", forcePathStyle: true }, { secretAccessKey });
  assert.equal(t2.describe(), "s3://audit-archive/ at https://minio.internal:9000");
  for (const x of [t, t2]) assert.ok(!x.describe().includes(secretAccessKey) && !x.describe().includes("AKIAEXAMPLE"));
  transports.push(t, t2);
});
