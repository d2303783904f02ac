import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { connect as netConnect, type Socket } from "node:net";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import fc from "fast-check";
import { startTestPlatform, type TestPlatform } from "../support/platform.js";
import { createTestWorkspace, gatewayClient, type TestWorkspace } from "../support/workspaces.js";
import { encodeStartup } from "../../src/gateway/protocol/backend.js";
import { SSL_REQUEST_CODE } from "../../src/gateway/protocol/frontend.js";
import { bytes, int32, msg } from "./protocol/helpers.js";

let tp: TestPlatform;
let ws: TestWorkspace;

before(async () => {
  tp = await startTestPlatform({ env: { PARHELION_WORKSPACE_FSYNC: "false", PARHELION_GATEWAY_AUTH_TIMEOUT_SECONDS: "3" } });
  ws = await createTestWorkspace(tp, { size: "S-1" });
});

after(async () => {
  await tp?.stop();
});

const SSL_REQUEST = bytes(int32(8), int32(SSL_REQUEST_CODE));
const message = (type: number, body: Uint8Array): Buffer => msg(String.fromCharCode(type), Buffer.from(body));

/** Sends the chunks, half-closes, and resolves with what came back once the gateway closes (or rejects on a hang). */
function exchange(sock: Socket | TLSSocket, chunks: Buffer[], timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0);
    const t = setTimeout(() => {
      sock.destroy();
      reject(new Error(`hang: no close within ${timeoutMs} ms after ${chunks.map((c) => c.toString("hex").slice(0, 40)).join(" | ")}`));
    }, timeoutMs);
    sock.on("data", (d: Buffer) => (got = Buffer.concat([got, d])));
    sock.on("error", () => undefined);
    sock.on("close", () => {
      clearTimeout(t);
      resolve(got);
    });
    for (const c of chunks) sock.write(c);
    sock.end();
  });
}

const mutate = (b: Buffer) => fc.tuple(fc.nat(Math.max(0, b.length - 1)), fc.integer({ min: 0, max: 255 }), fc.nat(b.length)).map(([i, v, cut]) => {
  const m = Buffer.from(b);
  if (m.length > 0) m[i] = v;
  return m.subarray(0, Math.max(1, cut));
});

test("pre-authentication: random and mutated bytes, plaintext and in TLS, are answered or closed, never hang or crash", async () => {
  const good = encodeStartup({ user: "admin", database: "postgres", options: `endpoint=${ws.workspaceId}` });
  const pre = fc.oneof(
    fc.uint8Array({ minLength: 1, maxLength: 300 }).map((a) => [Buffer.from(a)]),
    mutate(good).map((m) => [m]),
    mutate(SSL_REQUEST).map((m) => [m]),
    fc.uint8Array({ minLength: 1, maxLength: 200 }).map((a) => [SSL_REQUEST, Buffer.from(a)]),
  );
  await fc.assert(fc.asyncProperty(pre, async (chunks) => {
    await new Promise<void>((resolve, reject) => {
      const s = netConnect({ host: "127.0.0.1", port: ws.port }, () => exchange(s, chunks, 6000).then(() => resolve(), reject));
      s.on("error", () => undefined);
    });
  }), { numRuns: 300 });
  const inTls = fc.oneof(
    fc.uint8Array({ minLength: 1, maxLength: 300 }).map((a) => [Buffer.from(a)]),
    mutate(good).map((m) => [m]),
    fc.tuple(fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 100 })).map(([t, b]) => [good, message(t, b)]),
  );
  await fc.assert(fc.asyncProperty(inTls, async (chunks) => {
    await new Promise<void>((resolve, reject) => {
      const raw = netConnect({ host: "127.0.0.1", port: ws.port }, () => raw.write(SSL_REQUEST));
      raw.on("error", () => undefined);
      raw.once("data", () => {
        const t = tlsConnect({ socket: raw, servername: ws.endpoint, ca: tp.caPem });
        t.on("error", () => undefined);
        t.once("secureConnect", () => exchange(t, chunks, 6000).then(() => resolve(), reject));
      });
    });
  }), { numRuns: 150 });
  const c = gatewayClient(tp, ws);
  await c.connect();
  assert.equal((await c.query("select 1 as one")).rows[0].one, 1, "the gateway still serves");
  await c.end();
});

test("after authentication: random and malformed messages close that session with an error, never hang, and others continue", async () => {
  const bystander = gatewayClient(tp, ws);
  await bystander.connect();
  const types = [..."BCdcfDEHFPpQSX"].map((c) => c.charCodeAt(0));
  const msgs = fc.array(fc.oneof(
    fc.tuple(fc.constantFrom(...types), fc.uint8Array({ maxLength: 64 })).map(([t, b]) => message(t, b)),
    fc.tuple(fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 32 })).map(([t, b]) => message(t, b)),
    fc.uint8Array({ minLength: 1, maxLength: 64 }).map((a) => Buffer.from(a)),
    fc.constant(Buffer.from([0x51, 0x7f, 0xff, 0xff, 0xff])), // an absurd length
  ), { minLength: 1, maxLength: 4 });
  let closedWithError = 0;
  await fc.assert(fc.asyncProperty(msgs, async (chunks) => {
    const c = gatewayClient(tp, ws);
    await c.connect();
    const stream = (c as any).connection.stream as TLSSocket;
    stream.removeAllListeners("data");
    const got = await exchange(stream, chunks, 8000);
    if (got.includes(0x45)) closedWithError++;
  }), { numRuns: 60 });
  assert.ok(closedWithError > 0, "bad sessions were told why");
  assert.equal((await bystander.query("select 'unaffected' as s")).rows[0].s, "unaffected");
  await bystander.end();
});
