import { test, describe, before } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, createHmac, pbkdf2Sync, randomBytes, X509Certificate } from "node:crypto";
import { createRequire } from "node:module";
import {
  SCRAM_SHA_256,
  SCRAM_SHA_256_PLUS,
  ScramClient,
  ScramServer,
  deriveScramKeys,
  makeScramVerifier,
  parseScramVerifier,
  tlsServerEndPoint,
  type ScramVerifier,
} from "../../../src/gateway/protocol/scram.js";
import { createCA } from "../../../src/tls/pki.js";
import { throwsWith } from "./helpers.js";
import { hmacSha256 } from "../../../src/lib/hmac.js";

/** The pg client's own SCRAM implementation (untyped CommonJS). */
interface PgSession {
  mechanism: string;
  response: string;
}
interface PgSasl {
  startSession(mechanisms: string[], stream?: unknown): PgSession;
  continueSession(session: PgSession, password: string, serverData: string, stream?: unknown): Promise<void>;
  finalizeSession(session: PgSession, serverData: string): void;
}
const require = createRequire(import.meta.url);
const pgSasl = require("pg/lib/crypto/sasl.js") as PgSasl;
const pgCert = require("pg/lib/crypto/cert-signatures.js") as { signatureAlgorithmHashFromCertificate(der: Buffer): string };

const FAILED = 'password authentication failed for user "alice"';
const b = (s: string): Buffer => Buffer.from(s, "latin1");

// RFC 7677 §3.
const RFC = {
  password: "pencil",
  salt: Buffer.from("W22ZaJ0SNY7soEsUEjb6gQ==", "base64"),
  clientFirst: "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
  serverFirst: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
  clientFinal: "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
  serverFinal: "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
};

const PASSWORD = "correct horse battery staple";
const verifier = parseScramVerifier(makeScramVerifier(PASSWORD, { iterations: 4096 }))!;
const keys = deriveScramKeys(PASSWORD, verifier.salt, verifier.iterations);

/** A DER certificate from the project's own PKI (ECDSA P-256, SHA-256). */
let certDer: Buffer;
let otherCertDer: Buffer;
let cbind: Buffer;

function server(over: Partial<ConstructorParameters<typeof ScramServer>[0]> = {}): ScramServer {
  return new ScramServer({ user: "alice", verifier, channelBinding: null, ...over });
}

/** A valid client-final-message for the server-first-message, computed by ScramClient (or by hand for cbind variants). */
function clientRun(srv: ScramServer, opts: ConstructorParameters<typeof ScramClient>[1] = {}, creds: ConstructorParameters<typeof ScramClient>[0] = { password: PASSWORD }): { client: ScramClient; final: Buffer } {
  const client = new ScramClient(creds, opts);
  const sf = srv.clientFirst(client.mechanism, client.clientFirst());
  return { client, final: client.serverFirst(sf) };
}

before(async () => {
  certDer = new X509Certificate((await createCA({ commonName: "gw-test", validDays: 1 })).certPem).raw;
  otherCertDer = new X509Certificate((await createCA({ commonName: "mitm", validDays: 1 })).certPem).raw;
  cbind = tlsServerEndPoint(certDer)!;
});

describe("SCRAM-SHA-256 test vector (RFC 7677 §3)", () => {
  const rfcVerifier = (): ScramVerifier => ({ iterations: 4096, salt: RFC.salt, ...deriveScramKeys(RFC.password, RFC.salt, 4096) });

  test("ScramServer answers the vector's server messages", () => {
    const srv = new ScramServer({ user: "user", verifier: rfcVerifier(), channelBinding: null, nonce: () => "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0" });
    assert.equal(srv.clientFirst(SCRAM_SHA_256, b(RFC.clientFirst)).toString("latin1"), RFC.serverFirst);
    const { serverFinal, clientKey } = srv.clientFinal(b(RFC.clientFinal));
    assert.equal(serverFinal.toString("latin1"), RFC.serverFinal);
    assert.deepEqual(clientKey, deriveScramKeys(RFC.password, RFC.salt, 4096).clientKey);
  });

  test("ScramClient sends the vector's client messages and accepts its server signature", () => {
    const c = new ScramClient({ password: RFC.password }, { username: "user", nonce: () => "rOprNGfwEbeRWgbNEkqO" });
    assert.equal(c.clientFirst().toString("latin1"), RFC.clientFirst);
    assert.equal(c.serverFirst(b(RFC.serverFirst)).toString("latin1"), RFC.clientFinal);
    c.serverFinal(b(RFC.serverFinal));
  });
});

describe("ScramServer ⇄ ScramClient", () => {
  test("password login without channel binding recovers the ClientKey", () => {
    const srv = server();
    assert.deepEqual(srv.mechanisms(), [SCRAM_SHA_256]);
    const { client, final } = clientRun(srv);
    const { serverFinal, clientKey } = srv.clientFinal(final);
    assert.deepEqual(clientKey, keys.clientKey);
    client.serverFinal(serverFinal);
  });

  test("login with a recovered ClientKey (PgBouncer's trick), checking the server with the verifier's ServerKey", () => {
    const srv = server();
    const { client, final } = clientRun(srv, {}, { clientKey: keys.clientKey, serverKey: verifier.serverKey });
    const { serverFinal, clientKey } = srv.clientFinal(final);
    assert.deepEqual(clientKey, keys.clientKey);
    client.serverFinal(serverFinal);
  });

  test("login with a ClientKey alone skips the server check", () => {
    const srv = server();
    const { client, final } = clientRun(srv, {}, { clientKey: keys.clientKey });
    client.serverFinal(srv.clientFinal(final).serverFinal);
  });

  test("SCRAM-SHA-256-PLUS with tls-server-end-point binding", () => {
    const srv = server({ channelBinding: cbind });
    assert.deepEqual(srv.mechanisms(), [SCRAM_SHA_256_PLUS, SCRAM_SHA_256]);
    const { client, final } = clientRun(srv, { channelBinding: cbind });
    assert.equal(client.mechanism, SCRAM_SHA_256_PLUS);
    const { serverFinal, clientKey } = srv.clientFinal(final);
    assert.deepEqual(clientKey, keys.clientKey);
    client.serverFinal(serverFinal);
  });

  test("a client without binding support may use SCRAM-SHA-256 (n,,) when PLUS is offered", () => {
    const srv = server({ channelBinding: cbind });
    const { client, final } = clientRun(srv);
    client.serverFinal(srv.clientFinal(final).serverFinal);
  });

  test("the nonce is the client's followed by 18 random bytes in base64", () => {
    const sf = server().clientFirst(SCRAM_SHA_256, b("n,,n=,r=abc")).toString();
    assert.match(sf, /^r=abc[A-Za-z0-9+/]{24},s=[A-Za-z0-9+/=]+,i=4096$/);
  });
});

describe("interop with the pg client's SCRAM implementation", () => {
  test("SCRAM-SHA-256 without a TLS stream (n,,)", async () => {
    const srv = server();
    const s = pgSasl.startSession(srv.mechanisms());
    assert.equal(s.mechanism, SCRAM_SHA_256);
    const sf = srv.clientFirst(s.mechanism, b(s.response));
    await pgSasl.continueSession(s, PASSWORD, sf.toString("latin1"));
    const { serverFinal, clientKey } = srv.clientFinal(b(s.response));
    assert.deepEqual(clientKey, keys.clientKey);
    pgSasl.finalizeSession(s, serverFinal.toString("latin1"));
  });

  test("SCRAM-SHA-256-PLUS: pg binds to the certificate it received", async () => {
    const stream = { getPeerCertificate: () => ({ raw: certDer }) };
    const srv = server({ channelBinding: cbind });
    const s = pgSasl.startSession(srv.mechanisms(), stream);
    assert.equal(s.mechanism, SCRAM_SHA_256_PLUS);
    const sf = srv.clientFirst(s.mechanism, b(s.response));
    await pgSasl.continueSession(s, PASSWORD, sf.toString("latin1"), stream);
    pgSasl.finalizeSession(s, srv.clientFinal(b(s.response)).serverFinal.toString("latin1"));
  });

  test("a TLS client told no PLUS is on offer says y,, and is accepted when that is true", async () => {
    const stream = { getPeerCertificate: () => ({ raw: certDer }) };
    const srv = server({ channelBinding: null });
    const s = pgSasl.startSession(srv.mechanisms(), stream);
    assert.match(s.response, /^y,,/);
    const sf = srv.clientFirst(s.mechanism, b(s.response));
    await pgSasl.continueSession(s, PASSWORD, sf.toString("latin1"), stream);
    pgSasl.finalizeSession(s, srv.clientFinal(b(s.response)).serverFinal.toString("latin1"));
  });

  test("wrong password through pg fails with the generic message", async () => {
    const srv = server();
    const s = pgSasl.startSession(srv.mechanisms());
    await pgSasl.continueSession(s, "wrong", srv.clientFirst(s.mechanism, b(s.response)).toString("latin1"));
    throwsWith(() => srv.clientFinal(b(s.response)), "ERR_GW_AUTH_FAILED", FAILED);
  });
});

describe("ScramServer rejection rules", () => {
  test("rejects a wrong password with the generic message", () => {
    const srv = server();
    const { final } = clientRun(srv, {}, { password: "wrong" });
    throwsWith(() => srv.clientFinal(final), "ERR_GW_AUTH_FAILED", FAILED);
  });

  test("rejects an unknown user with the same message, only at clientFinal", () => {
    const srv = server({ verifier: null });
    const { final } = clientRun(srv, {}, { password: PASSWORD });
    throwsWith(() => srv.clientFinal(final), "ERR_GW_AUTH_FAILED", FAILED);
  });

  test("a mock exchange is indistinguishable up to clientFinal: stable per-user salt, real iteration count", () => {
    const first = (user: string): string => new ScramServer({ user, verifier: null, channelBinding: null, nonce: () => "N" }).clientFirst(SCRAM_SHA_256, b("n,,n=,r=c")).toString();
    assert.equal(first("ghost"), first("ghost"));
    assert.notEqual(first("ghost"), first("phantom"));
    assert.match(first("ghost"), /^r=cN,s=[A-Za-z0-9+/]{22}==,i=4096$/);
  });

  test("rejects a user whose verifier is unusable like an unknown user", () => {
    const srv = server({ verifier: { ...verifier, storedKey: Buffer.alloc(16) } });
    const { final } = clientRun(srv);
    throwsWith(() => srv.clientFinal(final), "ERR_GW_AUTH_FAILED", FAILED);
  });

  test("rejects a tampered proof", () => {
    const srv = server();
    const { final } = clientRun(srv);
    const text = final.toString("latin1");
    const proof = Buffer.from(text.slice(text.indexOf(",p=") + 3), "base64");
    proof[0] = proof[0]! ^ 1;
    throwsWith(() => srv.clientFinal(b(`${text.slice(0, text.indexOf(",p=") + 3)}${proof.toString("base64")}`)), "ERR_GW_AUTH_FAILED", FAILED);
  });

  test("rejects y,, when the server offered PLUS (downgrade, RFC 5802 §6)", () => {
    throwsWith(() => server({ channelBinding: cbind }).clientFirst(SCRAM_SHA_256, b("y,,n=,r=abc")), "ERR_GW_AUTH_FAILED", /SCRAM channel binding negotiation error/);
  });

  test("rejects p= with the SCRAM-SHA-256 mechanism", () => {
    throwsWith(() => server({ channelBinding: cbind }).clientFirst(SCRAM_SHA_256, b("p=tls-server-end-point,,n=,r=abc")), "ERR_GW_PROTOCOL", /selected SCRAM-SHA-256 without channel binding but sent channel binding/);
  });

  test("rejects n,, or y,, with the SCRAM-SHA-256-PLUS mechanism", () => {
    throwsWith(() => server({ channelBinding: cbind }).clientFirst(SCRAM_SHA_256_PLUS, b("n,,n=,r=abc")), "ERR_GW_PROTOCOL", /selected SCRAM-SHA-256-PLUS but sent no channel binding/);
    throwsWith(() => server({ channelBinding: cbind }).clientFirst(SCRAM_SHA_256_PLUS, b("y,,n=,r=abc")), "ERR_GW_PROTOCOL", /sent no channel binding/);
  });

  test("rejects a channel-binding type other than tls-server-end-point", () => {
    throwsWith(() => server({ channelBinding: cbind }).clientFirst(SCRAM_SHA_256_PLUS, b("p=tls-unique,,n=,r=abc")), "ERR_GW_PROTOCOL", 'unsupported SCRAM channel-binding type "tls-unique"');
  });

  test("rejects SCRAM-SHA-256-PLUS when it was not offered, and unknown mechanisms", () => {
    throwsWith(() => server().clientFirst(SCRAM_SHA_256_PLUS, b("p=tls-server-end-point,,n=,r=abc")), "ERR_GW_PROTOCOL", 'client selected an invalid SASL authentication mechanism "SCRAM-SHA-256-PLUS"');
    throwsWith(() => server().clientFirst("SCRAM-SHA-1", b("n,,n=,r=abc")), "ERR_GW_PROTOCOL", /invalid SASL authentication mechanism/);
  });

  test("rejects channel-binding data for another certificate (a TLS-terminating man in the middle)", () => {
    const srv = server({ channelBinding: cbind });
    const { final } = clientRun(srv, { channelBinding: tlsServerEndPoint(otherCertDer)! });
    throwsWith(() => srv.clientFinal(final), "ERR_GW_AUTH_FAILED", "SCRAM channel binding check failed");
  });

  test("rejects a c= that does not repeat the gs2 header", () => {
    const srv = server();
    const sf = srv.clientFirst(SCRAM_SHA_256, b("y,,n=,r=abc")).toString();
    const nonce = sf.slice(2, sf.indexOf(","));
    throwsWith(() => srv.clientFinal(b(`c=biws,r=${nonce},p=${Buffer.alloc(32).toString("base64")}`)), "ERR_GW_PROTOCOL", "unexpected SCRAM channel-binding attribute in client-final-message");
  });

  test("rejects a tampered nonce", () => {
    const srv = server();
    const { final } = clientRun(srv);
    const tampered = final.toString("latin1").replace(/,r=([^,]*)/, (_m, n: string) => `,r=${n.slice(0, -1)}${n.endsWith("A") ? "B" : "A"}`);
    throwsWith(() => srv.clientFinal(b(tampered)), "ERR_GW_PROTOCOL", "invalid SCRAM response: the nonce does not match");
  });

  test("rejects an authorization identity (a=)", () => {
    throwsWith(() => server().clientFirst(SCRAM_SHA_256, b("n,a=bob,n=,r=abc")), "ERR_GW_PROTOCOL", "client uses authorization identity (a=), but it is not supported");
  });

  test("rejects a mandatory extension (m=)", () => {
    throwsWith(() => server().clientFirst(SCRAM_SHA_256, b("n,,m=ext,n=,r=abc")), "ERR_GW_PROTOCOL", "client requires an unsupported SCRAM extension");
  });

  test("ignores the SCRAM username and optional extensions", () => {
    const srv = server();
    const c = new ScramClient({ password: PASSWORD }, { username: "mallory,=x" });
    const sf = srv.clientFirst(SCRAM_SHA_256, c.clientFirst());
    c.serverFinal(srv.clientFinal(c.serverFirst(sf)).serverFinal);
    assert.match(server().clientFirst(SCRAM_SHA_256, b("n,,n=x,r=abc,x=ext")).toString(), /^r=abc/);
  });

  test("rejects garbage client-first-messages as malformed", () => {
    for (const g of ["", "x", "n", "n,", "n,,", "n,,r=abc", "n,,n=,r=", "n,,n=,r=a\tb", "n,,n=,r=abc,1=x", "p", "p=tls-server-end-point", "n,,n=,r=abc\0"]) {
      throwsWith(() => server().clientFirst(SCRAM_SHA_256, b(g)), "ERR_GW_PROTOCOL");
    }
    throwsWith(() => server().clientFirst(SCRAM_SHA_256, Buffer.alloc(70_000, 0x41)), "ERR_GW_PROTOCOL", /too long/);
  });

  test("rejects garbage client-final-messages as malformed", () => {
    const proof = Buffer.alloc(32).toString("base64");
    for (const tail of ["", ",p=", `,p=${proof.slice(4)}`, ",p=****", `,p=${proof},x=1`, `,p=${proof},`, ",x=1"]) {
      const srv = server();
      const sf = srv.clientFirst(SCRAM_SHA_256, b("n,,n=,r=abc")).toString();
      const nonce = sf.slice(2, sf.indexOf(","));
      throwsWith(() => srv.clientFinal(b(`c=biws,r=${nonce}${tail}`)), "ERR_GW_PROTOCOL", /malformed SCRAM message/);
    }
  });

  test("rejects messages out of order, and any message after a failure", () => {
    throwsWith(() => server().clientFinal(b("c=biws,r=x,p=y")), "ERR_GW_PROTOCOL", "unexpected SCRAM message at this point of the exchange");
    const srv = server();
    throwsWith(() => srv.clientFirst(SCRAM_SHA_256, b("garbage")), "ERR_GW_PROTOCOL");
    throwsWith(() => srv.clientFirst(SCRAM_SHA_256, b("n,,n=,r=abc")), "ERR_GW_PROTOCOL", "the SCRAM exchange already failed");
  });
});

describe("ScramClient rejection rules", () => {
  const started = (creds: ConstructorParameters<typeof ScramClient>[0] = { password: PASSWORD }, opts: ConstructorParameters<typeof ScramClient>[1] = {}): ScramClient => {
    const c = new ScramClient(creds, { nonce: () => "cnonce", ...opts });
    c.clientFirst();
    return c;
  };
  const SF = `r=cnonceSERVER,s=${verifier.salt.toString("base64")},i=4096`;

  test("the server's e= fails authentication", () => {
    const c = started();
    c.serverFirst(b(SF));
    throwsWith(() => c.serverFinal(b("e=invalid-proof")), "ERR_GW_AUTH_FAILED", "the upstream server rejected SCRAM authentication: invalid-proof");
  });

  test("a wrong server signature fails authentication (the server does not know the password)", () => {
    const c = started();
    c.serverFirst(b(SF));
    throwsWith(() => c.serverFinal(b(`v=${Buffer.alloc(32).toString("base64")}`)), "ERR_GW_AUTH_FAILED", /SCRAM signature is wrong/);
  });

  test("a nonce that does not extend the client's, a bad salt or iteration count is malformed", () => {
    for (const sf of ["r=other,s=c2FsdA==,i=4096", "r=cnonce,s=c2FsdA==,i=4096", "r=cnonceX,s=c2Fsd,i=4096", "r=cnonceX,s=c2FsdA==,i=0", "r=cnonceX,s=c2FsdA==,i=-1", "r=cnonceX,s=,i=1", "m=x,r=cnonceX,s=c2FsdA==,i=1", "r=cnonceX,i=1"]) {
      throwsWith(() => started().serverFirst(b(sf)), "ERR_GW_PROTOCOL");
    }
  });

  test("refuses an iteration count beyond maxIterations before running PBKDF2", () => {
    throwsWith(() => started({ password: "x" }, { maxIterations: 10_000 }).serverFirst(b("r=cnonceX,s=c2FsdA==,i=10000000")), "ERR_GW_PROTOCOL", "the server asks for 10000000 SCRAM iterations, more than the gateway's limit of 10000");
  });

  test("a malformed server-final-message and calls out of order are protocol errors", () => {
    const c = started();
    c.serverFirst(b(SF));
    throwsWith(() => c.serverFinal(b("v=***")), "ERR_GW_PROTOCOL", /not base64/);
    throwsWith(() => new ScramClient({ password: "x" }).serverFirst(b(SF)), "ERR_GW_PROTOCOL", "unexpected SCRAM message at this point of the exchange");
    assert.throws(() => new ScramClient({ clientKey: Buffer.alloc(5) }), TypeError);
  });
});

describe("SASLprep of passwords", () => {
  test("matches the pg client's SASLprep for spaces, soft hyphens and compatibility forms", async () => {
    for (const pw of ["p\u00A0ss\u00ADword", "ｆｕｌｌ", "Å", "ascii only", "\u2168"]) {
      const srv = server({ verifier: parseScramVerifier(makeScramVerifier(pw, { iterations: 16 }))! });
      const s = pgSasl.startSession(srv.mechanisms());
      await pgSasl.continueSession(s, pw, srv.clientFirst(s.mechanism, b(s.response)).toString("latin1"));
      srv.clientFinal(b(s.response));
    }
  });

  test("falls back to the raw password when SASLprep would leave a prohibited character, like PostgreSQL", () => {
    // NFKC would turn the fullwidth "ｆ" into "f", but U+0080 is prohibited (RFC 3454 C.2.2): the raw bytes are hashed.
    const raw = "\uff46\u0080";
    const clientKeyOf = (pw: string): Buffer => createHmac("sha256", pbkdf2Sync(pw, "s", 1, 32, "sha256")).update("Client Key").digest();
    assert.deepEqual(deriveScramKeys(raw, Buffer.from("s"), 1).clientKey, clientKeyOf(raw));
    assert.notDeepEqual(clientKeyOf(raw), clientKeyOf("f\u0080"));
    assert.deepEqual(deriveScramKeys("\uff46", Buffer.from("s"), 1).clientKey, clientKeyOf("f"));
  });
});

describe("tlsServerEndPoint (RFC 5929 §4.1)", () => {
  /** A self-signed DER certificate made by the openssl CLI. */
  const opensslCert = (keyArgs: string[], digest: string | null): Buffer =>
    execFileSync("openssl", ["req", "-x509", ...keyArgs, "-nodes", "-keyout", "/dev/null", "-subj", "/CN=cb", "-days", "1", "-outform", "DER", ...(digest ? [`-${digest}`] : [])], { stdio: ["ignore", "pipe", "ignore"] });
  const rsa = ["-newkey", "rsa:1024"];
  const ec = (curve: string): string[] => ["-newkey", "ec", "-pkeyopt", `ec_paramgen_curve:${curve}`];

  /** The hash pg's own parser picks, with RFC 5929's MD5/SHA-1 → SHA-256 rule. */
  const pgExpected = (der: Buffer): Buffer => {
    const name = pgCert.signatureAlgorithmHashFromCertificate(der);
    const hash = name === "MD5" || name === "SHA-1" ? "sha256" : name.toLowerCase().replace("-", "");
    return createHash(hash).update(der).digest();
  };

  const cases: [string, string[], string, string][] = [
    ["md5WithRSAEncryption", rsa, "md5", "sha256"],
    ["sha1WithRSAEncryption", rsa, "sha1", "sha256"],
    ["sha224WithRSAEncryption", rsa, "sha224", "sha224"],
    ["sha256WithRSAEncryption", rsa, "sha256", "sha256"],
    ["sha384WithRSAEncryption", rsa, "sha384", "sha384"],
    ["sha512WithRSAEncryption", rsa, "sha512", "sha512"],
    ["ecdsa-with-SHA1", ec("P-256"), "sha1", "sha256"],
    ["ecdsa-with-SHA256", ec("P-256"), "sha256", "sha256"],
    ["ecdsa-with-SHA384", ec("P-384"), "sha384", "sha384"],
    ["ecdsa-with-SHA512", ec("P-521"), "sha512", "sha512"],
  ];
  for (const [name, keyArgs, digest, hash] of cases) {
    test(`${name} → ${hash}, as the pg client computes it`, () => {
      const der = opensslCert(keyArgs, digest);
      const got = tlsServerEndPoint(der);
      assert.deepEqual(got, createHash(hash).update(der).digest());
      assert.deepEqual(got, pgExpected(der));
    });
  }

  test("the project's own PKI certificate (ECDSA P-256) binds with SHA-256", () => {
    assert.deepEqual(cbind, createHash("sha256").update(certDer).digest());
  });

  test("Ed25519 and RSASSA-PSS answer null: no PLUS is offered", () => {
    assert.equal(tlsServerEndPoint(opensslCert(["-newkey", "ed25519"], null)), null);
    assert.equal(tlsServerEndPoint(opensslCert(["-newkey", "rsa-pss", "-pkeyopt", "rsa_keygen_bits:1024"], "sha256")), null);
  });

  test("malformed DER answers null", () => {
    for (const der of [Buffer.alloc(0), Buffer.from([0x30]), Buffer.from([0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), certDer.subarray(0, certDer.length - 10), Buffer.from("not a certificate")]) {
      assert.equal(tlsServerEndPoint(der), null);
    }
  });
});

test("hmacSha256 is HMAC-SHA-256: the same bytes as createHmac for keys shorter than, equal to and longer than a block, and RFC 4231's vectors", () => {
  for (const keyLen of [0, 1, 32, 63, 64, 65, 200]) {
    for (const dataLen of [0, 1, 55, 56, 64, 1000]) {
      const key = randomBytes(keyLen);
      const data = randomBytes(dataLen);
      assert.deepEqual(hmacSha256(key, data), createHmac("sha256", key).update(data).digest(), `key ${keyLen}, data ${dataLen}`);
    }
  }
  // RFC 4231 test cases 1 and 2.
  assert.equal(hmacSha256(Buffer.alloc(20, 0x0b), "Hi There").toString("hex"), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  assert.equal(hmacSha256(Buffer.from("Jefe"), "what do ya want for nothing?").toString("hex"), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
});
