import { test } from "node:test";
import assert from "node:assert/strict";
import https from "node:https";
import { X509Certificate } from "node:crypto";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, readFileSync, writeFileSync, statSync, readdirSync, mkdirSync, chmodSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { createCA, issueServerCert, ensureTlsMaterial, fingerprint, type CertAndKey } from "../../src/tls/index.js";
import { ParhelionError } from "../../src/lib/errors.js";

const DAY = 86_400_000;

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "parhelion-pki-test-"));
}

/** A real HTTPS server on 127.0.0.1, port 0, serving the given certificate. */
async function withServer<T>(pair: CertAndKey, fn: (port: number) => Promise<T>): Promise<T> {
  const server = https.createServer({ cert: pair.certPem, key: pair.keyPem, minVersion: "TLSv1.2" }, (_req, res) => res.end("ok"));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  try {
    return await fn((server.address() as AddressInfo).port);
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
}

/** GET / over TLS to 127.0.0.1, verifying the server against `ca` and the name `servername` (or the IP). */
function get(port: number, ca: string, servername?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: "127.0.0.1", port, path: "/", ca, agent: false, ...(servername ? { servername } : {}) }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve(body));
    });
    req.on("error", reject);
    req.end();
  });
}

function mode(path: string): number {
  return statSync(path).mode & 0o777;
}

async function assertConfigError(fn: () => Promise<unknown>, message: RegExp): Promise<void> {
  await assert.rejects(fn, (err: unknown) => {
    assert.ok(err instanceof ParhelionError, `expected ParhelionError, got ${String(err)}`);
    assert.equal(err.code, "ERR_CONFIG");
    assert.match(err.message, message);
    return true;
  });
}

test("a client trusting only ca.crt connects with hostname verification for localhost and 127.0.0.1", async () => {
  const dir = tempDir();
  try {
    const m = await ensureTlsMaterial({ dir, hosts: [] });
    assert.ok(m.caFile && m.caPem);
    const ca = readFileSync(m.caFile, "utf8");
    await withServer(m, async (port) => {
      assert.equal(await get(port, ca, "localhost"), "ok");
      assert.equal(await get(port, ca), "ok", "verified against the IP SAN 127.0.0.1");
      // Control: verification really checks the name.
      await assert.rejects(get(port, ca, "db.example.com"), { code: "ERR_TLS_CERT_ALTNAME_INVALID" });
    });
    assert.ok(new X509Certificate(m.certPem).checkIP("::1"), "::1 is always in the SANs");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a client trusting a different CA refuses the server", async () => {
  const dir = tempDir();
  try {
    const m = await ensureTlsMaterial({ dir, hosts: [] });
    const other = await createCA({ commonName: "someone else's CA", validDays: 30 });
    await withServer(m, async (port) => {
      await assert.rejects(get(port, other.certPem, "localhost"), { code: "UNABLE_TO_VERIFY_LEAF_SIGNATURE" });
      await assert.rejects(get(port, m.certPem, "localhost"), "the leaf alone is not a trust anchor");
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("certificates carry the required extensions and OpenSSL accepts the chain for TLS server use", async () => {
  const ca = await createCA({ commonName: "Test CA", validDays: 30 });
  const leaf = await issueServerCert(ca, { commonName: "db.example", dnsNames: ["db.example", "localhost"], ipAddresses: ["127.0.0.1", "::1", "10.0.0.7"], validDays: 10 });
  const caCert = new X509Certificate(ca.certPem);
  const leafCert = new X509Certificate(leaf.certPem);
  assert.equal(caCert.ca, true);
  assert.equal(leafCert.ca, false);
  assert.ok(leafCert.checkIssued(caCert) && leafCert.verify(caCert.publicKey));
  assert.equal(caCert.publicKey.asymmetricKeyDetails?.namedCurve, "prime256v1");
  assert.equal(leafCert.publicKey.asymmetricKeyDetails?.namedCurve, "prime256v1");
  assert.deepEqual(leafCert.keyUsage, ["1.3.6.1.5.5.7.3.1"], "serverAuth EKU");
  assert.equal(leafCert.serialNumber.length, 32, "16-byte serial");
  const again = await issueServerCert(ca, { commonName: "db.example", dnsNames: ["db.example"], ipAddresses: [], validDays: 10 });
  assert.notEqual(new X509Certificate(again.certPem).serialNumber, leafCert.serialNumber, "serials are random");
  for (const ip of ["127.0.0.1", "::1", "10.0.0.7"]) assert.equal(leafCert.checkIP(ip), ip);
  assert.equal(leafCert.checkHost("db.example"), "db.example");
  assert.equal(leafCert.checkHost("other.example"), undefined);

  let text: string;
  try {
    text = execFileSync("openssl", ["x509", "-noout", "-text"], { input: ca.certPem + "", encoding: "utf8" });
  } catch {
    return; // no openssl binary: the node:crypto checks above stand alone
  }
  assert.match(text, /Basic Constraints: critical\s+CA:TRUE/);
  assert.match(text, /Key Usage: critical\s+Certificate Sign, CRL Sign/);
  const ski = /Subject Key Identifier:\s*\n\s*([0-9A-F:]+)/.exec(text)?.[1];
  assert.ok(ski);
  const leafText = execFileSync("openssl", ["x509", "-noout", "-text"], { input: leaf.certPem, encoding: "utf8" });
  assert.match(leafText, /Subject Alternative Name:\s*\n\s*DNS:db.example, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, IP Address:10.0.0.7/);
  assert.match(leafText, new RegExp(`Authority Key Identifier:\\s*\\n\\s*(keyid:)?${ski}`));
  const dir = tempDir();
  try {
    writeFileSync(join(dir, "ca.pem"), ca.certPem);
    writeFileSync(join(dir, "leaf.pem"), leaf.certPem);
    const out = execFileSync("openssl", ["verify", "-CAfile", join(dir, "ca.pem"), "-purpose", "sslserver", "-verify_hostname", "db.example", join(dir, "leaf.pem")], { encoding: "utf8" });
    assert.match(out, /leaf\.pem: OK/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a second call reuses the CA and server certificate; files are 0600 keys in a 0711 directory (traversable, not listable: ca.crt is for clients)", async () => {
  const root = tempDir();
  const dir = join(root, "tls");
  try {
    mkdirSync(dir, { mode: 0o755 });
    chmodSync(dir, 0o755); // a loose pre-existing directory is tightened
    const first = await ensureTlsMaterial({ dir, hosts: ["db.internal"] });
    const second = await ensureTlsMaterial({ dir, hosts: ["db.internal"] });
    assert.equal(fingerprint(second.certPem), fingerprint(first.certPem));
    assert.equal(second.keyPem, first.keyPem);
    assert.equal(fingerprint(second.caPem!), fingerprint(first.caPem!));
    assert.equal(readFileSync(join(dir, "server.crt"), "utf8"), first.certPem);
    assert.equal(second.caFile, join(dir, "ca.crt"));

    assert.equal(mode(dir), 0o711);
    assert.equal(mode(join(dir, "ca.key")), 0o600);
    assert.equal(mode(join(dir, "server.key")), 0o600);
    assert.equal(mode(join(dir, "ca.crt")) & 0o022, 0, "no group/other write on ca.crt");
    assert.deepEqual(readdirSync(dir).sort(), ["ca.crt", "ca.key", "server.crt", "server.key"], "no temporary files left");
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("changed hosts get a new server certificate from the same CA; covered hosts keep the old one", async () => {
  const dir = tempDir();
  try {
    const first = await ensureTlsMaterial({ dir, hosts: [] });
    const second = await ensureTlsMaterial({ dir, hosts: ["db.internal", "10.1.2.3", "fd00::5"] });
    assert.notEqual(fingerprint(second.certPem), fingerprint(first.certPem));
    assert.equal(fingerprint(second.caPem!), fingerprint(first.caPem!), "same CA");
    const cert = new X509Certificate(second.certPem);
    assert.ok(cert.checkIssued(new X509Certificate(second.caPem!)));
    assert.equal(cert.checkHost("db.internal"), "db.internal");
    assert.equal(cert.checkIP("10.1.2.3"), "10.1.2.3");
    assert.ok(cert.checkIP("fd00::5"));
    assert.equal(cert.checkHost("localhost"), "localhost");
    // A subset of what the certificate already covers needs no new one.
    const third = await ensureTlsMaterial({ dir, hosts: ["DB.internal"] });
    assert.equal(fingerprint(third.certPem), fingerprint(second.certPem));
    await assertConfigError(() => ensureTlsMaterial({ dir, hosts: ["not a host name"] }), /not a host name/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a server certificate expiring within 30 days is issued again, by the same CA", async () => {
  const dir = tempDir();
  try {
    const first = await ensureTlsMaterial({ dir, hosts: [] });
    const validTo = new X509Certificate(first.certPem).validToDate.getTime();
    const at31 = await ensureTlsMaterial({ dir, hosts: [], now: () => new Date(validTo - 31 * DAY) });
    assert.equal(fingerprint(at31.certPem), fingerprint(first.certPem), "31 days left: kept");
    const at29 = await ensureTlsMaterial({ dir, hosts: [], now: () => new Date(validTo - 29 * DAY) });
    assert.notEqual(fingerprint(at29.certPem), fingerprint(first.certPem), "29 days left: renewed");
    assert.equal(fingerprint(at29.caPem!), fingerprint(first.caPem!));
    assert.ok(new X509Certificate(at29.certPem).validToDate.getTime() > validTo);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("operator certificate files: used as given when valid, ERR_CONFIG when mismatched, expired, unreadable or half given", async () => {
  const dir = tempDir();
  try {
    const ca = await createCA({ commonName: "operator CA", validDays: 30 });
    const good = await issueServerCert(ca, { commonName: "api.example", dnsNames: ["api.example"], ipAddresses: [], validDays: 30 });
    const other = await issueServerCert(ca, { commonName: "api.example", dnsNames: ["api.example"], ipAddresses: [], validDays: 30 });
    const expired = await issueServerCert(ca, { commonName: "api.example", dnsNames: ["api.example"], ipAddresses: [], validDays: 1 }, new Date(Date.now() - 3 * DAY));
    const f = (name: string, content: string): string => {
      writeFileSync(join(dir, name), content, { mode: 0o600 });
      return join(dir, name);
    };
    const cert = f("good.crt", good.certPem);
    const key = f("good.key", good.keyPem);
    const m = await ensureTlsMaterial({ dir: join(dir, "managed"), hosts: [], certFile: cert, keyFile: key });
    assert.equal(m.certPem, good.certPem);
    assert.equal(m.caPem, null);
    assert.equal(m.caFile, null);
    assert.equal(existsSync(join(dir, "managed")), false, "no CA is made when the operator brings a certificate");

    await assertConfigError(() => ensureTlsMaterial({ dir, hosts: [], certFile: cert, keyFile: f("other.key", other.keyPem) }), /does not match the certificate/);
    await assertConfigError(() => ensureTlsMaterial({ dir, hosts: [], certFile: f("old.crt", expired.certPem), keyFile: f("old.key", expired.keyPem) }), /expired/);
    await assertConfigError(() => ensureTlsMaterial({ dir, hosts: [], certFile: join(dir, "absent.crt"), keyFile: key }), /cannot read .*absent\.crt.*ENOENT/);
    await assertConfigError(() => ensureTlsMaterial({ dir, hosts: [], certFile: f("junk.crt", "not a certificate"), keyFile: key }), /does not hold a PEM certificate/);
    await assertConfigError(() => ensureTlsMaterial({ dir, hosts: [], certFile: cert }), /given together/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a managed CA whose key no longer matches is an ERR_CONFIG, never silently replaced", async () => {
  const dir = tempDir();
  try {
    const first = await ensureTlsMaterial({ dir, hosts: [] });
    writeFileSync(join(dir, "ca.key"), (await createCA({ commonName: "x", validDays: 1 })).keyPem);
    await assertConfigError(() => ensureTlsMaterial({ dir, hosts: [] }), /do not match/);
    assert.equal(readFileSync(join(dir, "ca.crt"), "utf8"), first.caPem, "ca.crt untouched");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("misuse of createCA and issueServerCert is a TypeError", async () => {
  await assert.rejects(() => createCA({ commonName: "", validDays: 1 }), TypeError);
  await assert.rejects(() => createCA({ commonName: "ok", validDays: 0 }), TypeError);
  const ca = await createCA({ commonName: "ok", validDays: 1 });
  const leaf = await issueServerCert(ca, { commonName: "x", dnsNames: ["x"], ipAddresses: [], validDays: 1 });
  await assert.rejects(() => issueServerCert(leaf, { commonName: "y", dnsNames: ["y"], ipAddresses: [], validDays: 1 }), TypeError, "a leaf cannot issue");
  await assert.rejects(() => issueServerCert(ca, { commonName: "y", dnsNames: [], ipAddresses: [], validDays: 1 }), TypeError);
});
