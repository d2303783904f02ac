import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { connect, type ConnectionOptions } from "node:tls";
import fc from "fast-check";
import { MAX_CLIENT_HELLO_BYTES, peekClientHello } from "../../../src/gateway/protocol/clienthello.js";
import { buildClientHello } from "./properties.js";

let server: Server;
let port: number;
const waiting: ((s: Socket) => void)[] = [];

before(async () => {
  server = createServer((s) => waiting.shift()?.(s));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
});
after(() => new Promise<void>((resolve) => server.close(() => resolve())));

/** The bytes node's TLS client sends first to a raw TCP server, read until peekClientHello stops asking for more. */
async function capture(opts: ConnectionOptions): Promise<Buffer> {
  const accepted = new Promise<Socket>((resolve) => waiting.push(resolve));
  const client = connect({ host: "127.0.0.1", port, ...opts });
  client.on("error", () => undefined); // the raw server never answers; the client is destroyed below
  const sock = await accepted;
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      let buf = Buffer.alloc(0);
      const timer = setTimeout(() => reject(new Error(`no complete ClientHello after ${buf.length} bytes`)), 5000);
      sock.on("data", (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (peekClientHello(buf).status !== "need-more") {
          clearTimeout(timer);
          resolve(buf);
        }
      });
    });
  } finally {
    client.destroy();
    sock.destroy();
  }
}

/** Re-frames a one-record ClientHello into records of at most `size` bytes. */
function refragment(hello: Buffer, size: number): Buffer {
  const hs = hello.subarray(5, 5 + hello.readUInt16BE(3));
  const out: Buffer[] = [];
  for (let off = 0; off < hs.length; off += size) {
    const frag = hs.subarray(off, off + size);
    out.push(Buffer.from([22, 3, 1, frag.length >> 8, frag.length & 0xff]), frag);
  }
  return Buffer.concat(out);
}

describe("peekClientHello on ClientHellos captured from node's TLS client", () => {
  const cases: [string, ConnectionOptions, string | null, string[]][] = [
    ["TLS 1.3 with servername and ALPN postgresql", { servername: "ws-1.db.example.com", ALPNProtocols: ["postgresql"] }, "ws-1.db.example.com", ["postgresql"]],
    ["TLS 1.3 without servername (an IP address sends none)", {}, null, []],
    ["TLS 1.2 maximum with servername", { servername: "db.example.com", maxVersion: "TLSv1.2" }, "db.example.com", []],
    ["TLS 1.2 maximum with two ALPN protocols", { maxVersion: "TLSv1.2", ALPNProtocols: ["h2", "postgresql"] }, null, ["h2", "postgresql"]],
  ];
  for (const [name, opts, serverName, alpn] of cases) {
    test(name, async () => {
      const hello = await capture(opts);
      const expected = { status: "ok", serverName, alpn, length: hello.length };
      assert.deepEqual(peekClientHello(hello), expected);
      for (let n = 0; n < hello.length; n++) assert.deepEqual(peekClientHello(hello.subarray(0, n)), { status: "need-more" }, `prefix of ${n} bytes`);
      // The same hello split across handshake records (RFC 8446 §5.1 allows it).
      for (const size of [1, 7, 100]) {
        const split = refragment(hello, size);
        assert.deepEqual(peekClientHello(split), { ...expected, length: split.length });
        assert.deepEqual(peekClientHello(split.subarray(0, split.length - 1)), { status: "need-more" });
      }
    });
  }
});

describe("peekClientHello on what is not a ClientHello", () => {
  test("plaintext PostgreSQL and HTTP are not TLS from the first byte", () => {
    assert.deepEqual(peekClientHello(Buffer.from([0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f])), { status: "not-tls" });
    assert.deepEqual(peekClientHello(Buffer.from("GET / HTTP/1.1\r\n")), { status: "not-tls" });
    assert.deepEqual(peekClientHello(Buffer.from([0x16])), { status: "need-more" });
  });

  test("a wrong record version, an empty or oversized record, or another handshake type", () => {
    const hello = buildClientHello({ serverName: "a.example" });
    const set = (at: number, ...v: number[]): Buffer => {
      const b = Buffer.from(hello);
      v.forEach((x, i) => (b[at + i] = x));
      return b;
    };
    assert.equal(peekClientHello(set(1, 2)).status, "not-tls");
    assert.equal(peekClientHello(set(2, 5)).status, "not-tls");
    assert.equal(peekClientHello(set(2, 0)).status, "not-tls");
    assert.equal(peekClientHello(set(3, 0, 0)).status, "not-tls");
    assert.equal(peekClientHello(set(3, 0x40, 1)).status, "not-tls");
    assert.equal(peekClientHello(set(5, 2)).status, "not-tls");
  });

  test("a ClientHello larger than 32 KiB is refused from its header", () => {
    const header = Buffer.from([22, 3, 1, 0x40, 0x00, 1, 0x00, 0x80, 0x00]);
    assert.equal(peekClientHello(header).status, "not-tls");
    const hello = buildClientHello({ extra: [{ type: 99, data: Buffer.alloc(MAX_CLIENT_HELLO_BYTES) }], records: [16384] });
    assert.equal(peekClientHello(hello).status, "not-tls");
  });

  test("a handshake record interleaved with another content type", () => {
    const split = refragment(buildClientHello({ serverName: "a.example" }), 20);
    const b = Buffer.from(split);
    b[25] = 23; // the second record claims to be application data
    assert.equal(peekClientHello(b).status, "not-tls");
  });

  test("duplicate extensions, two host names, a non-ASCII host name, trailing bytes", () => {
    const sni = (name: Buffer): { type: number; data: Buffer } => {
      const entry = Buffer.concat([Buffer.from([0, name.length >> 8, name.length & 0xff]), name]);
      return { type: 0, data: Buffer.concat([Buffer.from([entry.length >> 8, entry.length & 0xff]), entry]) };
    };
    assert.equal(peekClientHello(buildClientHello({ serverName: "a.example", extra: [sni(Buffer.from("b.example"))] })).status, "not-tls");
    const two = sni(Buffer.from("a.example")).data.subarray(2);
    const list = Buffer.concat([two, two]);
    assert.equal(peekClientHello(buildClientHello({ extra: [{ type: 0, data: Buffer.concat([Buffer.from([0, list.length]), list]) }] })).status, "not-tls");
    assert.equal(peekClientHello(buildClientHello({ extra: [sni(Buffer.from("bücher.example"))] })).status, "not-tls");
    assert.equal(peekClientHello(buildClientHello({ extra: [{ type: 16, data: Buffer.from([0, 1, 0]) }] })).status, "not-tls");
    const h = buildClientHello({ serverName: "a.example" });
    const longer = Buffer.concat([h.subarray(0, 5), h.subarray(5), Buffer.from([0])]);
    longer.writeUInt16BE(h.length - 5 + 1, 3);
    longer.writeUIntBE(h.length - 9 + 1, 6, 3);
    assert.equal(peekClientHello(longer).status, "not-tls");
  });

  test("an unknown name type is skipped; a hello without extensions has no SNI or ALPN", () => {
    const other = Buffer.from([0, 6, 7, 0, 3, 0x61, 0x62, 0x63]);
    assert.deepEqual(peekClientHello(buildClientHello({ extra: [{ type: 0, data: other }] })).status, "ok");
    const bare = Buffer.concat([Buffer.from([3, 3]), Buffer.alloc(32), Buffer.from([0, 0, 2, 0x13, 0x01, 1, 0])]);
    const hs = Buffer.concat([Buffer.from([1, 0, 0, bare.length]), bare]);
    assert.deepEqual(peekClientHello(Buffer.concat([Buffer.from([22, 3, 1, 0, hs.length]), hs])), { status: "ok", serverName: null, alpn: [], length: 5 + hs.length });
  });

  test("random bytes never make it throw", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (u) => {
        const p = peekClientHello(Buffer.from(u));
        assert.ok(["ok", "not-tls", "need-more"].includes(p.status));
      }),
      { numRuns: 2000 },
    );
  });
});
