import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { connect as tlsConnect } from "node:tls";
import { connect as netConnect } from "node:net";
import { startTestPlatform, type TestPlatform } from "../support/platform.js";
import { createCA } from "../../src/tls/index.js";

let tp: TestPlatform;
let port = 0;
before(async () => {
  tp = await startTestPlatform();
  port = Number(new URL(tp.apiUrl).port);
});
after(async () => {
  await tp?.stop();
});

function handshake(opts: { minVersion?: "TLSv1" | "TLSv1.1" | "TLSv1.2"; maxVersion?: "TLSv1" | "TLSv1.1" | "TLSv1.2" | "TLSv1.3"; ca?: string }): Promise<string> {
  return new Promise((resolve) => {
    const s = tlsConnect({ host: "127.0.0.1", port, servername: "localhost", ca: opts.ca ?? tp.caPem, ...opts }, () => {
      const v = s.getProtocol() ?? "?";
      s.end();
      resolve(v);
    });
    s.on("error", (e: NodeJS.ErrnoException) => resolve(`error:${e.code ?? e.message}`));
  });
}

test("the API speaks TLS 1.2 and 1.3 only", async () => {
  assert.equal(await handshake({}), "TLSv1.3");
  assert.equal(await handshake({ maxVersion: "TLSv1.2" }), "TLSv1.2");
  const old = await handshake({ minVersion: "TLSv1", maxVersion: "TLSv1.1" });
  assert.match(old, /^error:/);
});

test("a client that does not trust parhelion's CA cannot connect", async () => {
  const other = await createCA({ commonName: "some other CA", validDays: 1 });
  const r = await handshake({ ca: other.certPem });
  assert.match(r, /^error:(UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)$/);
});

test("plaintext HTTP to the API port gets no HTTP answer, and the server keeps serving", async () => {
  const answer = await new Promise<string>((resolve) => {
    let data = "";
    const s = netConnect({ host: "127.0.0.1", port }, () => s.write("GET /v1/organizations/current HTTP/1.1\r\nhost: x\r\n\r\n"));
    s.on("data", (d) => (data += d.toString("latin1")));
    s.on("close", () => resolve(data));
    s.on("error", () => resolve(data));
    setTimeout(() => s.destroy(), 3000);
  });
  assert.ok(!answer.includes("HTTP/1.1 200"), "no plaintext answer");
  assert.ok(!answer.includes("orgID"));
  const r = await tp.call("GET", "/v1/organizations/current");
  assert.equal(r.status, 200);
});
