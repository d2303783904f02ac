// The codec against real clients and a real server: the pg client and psql (libpq) log in through a
// minimal TLS gateway built from the codec (SCRAM-SHA-256-PLUS bound to the real certificate), and
// ScramClient logs in to a real PostgreSQL with a password or with a ClientKey recovered by ScramServer.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, connect as netConnect, type AddressInfo, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TLSSocket } from "node:tls";
import { X509Certificate } from "node:crypto";
import { promisify } from "node:util";
import type { Duplex } from "node:stream";
import pg from "pg";
import { ERROR_CATALOG, ParhelionError } from "../../../src/lib/errors.js";
import { createCA, issueServerCert } from "../../../src/tls/pki.js";
import { FrontendScanner, MessageReader, StartupReader, parseOptionsEndpoint, parseSASLInitialResponse, parseSASLResponse, parseStartupPacket, type StartupPacket } from "../../../src/gateway/protocol/frontend.js";
import {
  BackendMessageReader,
  SSL_NO,
  SSL_YES,
  authenticationOk,
  authenticationSASL,
  authenticationSASLContinue,
  authenticationSASLFinal,
  backendKeyData,
  encodeCancelRequest,
  encodeQuery,
  encodeSASLInitialResponse,
  encodeSASLResponse,
  encodeStartup,
  encodeTerminate,
  errorResponse,
  parameterStatus,
  parseAuthentication,
  parseBackendKeyData,
  parseErrorFields,
  parseParameterStatus,
  parseReadyForQuery,
  parseSASLMechanisms,
  readyForQuery,
  summarizeError,
} from "../../../src/gateway/protocol/backend.js";
import { ScramClient, ScramServer, makeScramVerifier, parseScramVerifier, tlsServerEndPoint, type ScramClientCredentials, type ScramVerifier } from "../../../src/gateway/protocol/scram.js";
import { startTestPostgres, type TestPostgres } from "../../support/pg.js";
import { bytes, int32, msg } from "./helpers.js";

const EMPTY = Buffer.alloc(0);
const PASSWORD = "Tr0ub4dor&3";
const VERIFIER_TEXT = makeScramVerifier(PASSWORD);
const VERIFIER = parseScramVerifier(VERIFIER_TEXT)!;

/** Answers a function yielding the stream's chunks in order; it rejects once the stream has closed. */
function chunks(s: Duplex): () => Promise<Buffer> {
  const queue: Buffer[] = [];
  let closed = false;
  let wake: (() => void) | null = null;
  s.on("data", (d: Buffer) => {
    queue.push(d);
    wake?.();
  });
  s.on("close", () => {
    closed = true;
    wake?.();
  });
  s.on("error", () => undefined);
  return async () => {
    while (queue.length === 0) {
      if (closed) throw new Error("connection closed");
      await new Promise<void>((resolve) => (wake = resolve));
      wake = null;
    }
    return queue.shift()!;
  };
}

/** What the test gateway saw of one connection. */
interface Seen {
  mechanism?: string;
  endpoint?: string | undefined;
  rest?: string;
  error?: string;
  sawTerminate?: boolean;
}

/** A minimal TLS gateway made of the codec: SSLRequest, TLS, StartupMessage, SCRAM, then answers `select 1`. */
function gateway(tls: { key: string; cert: string }, users: Map<string, ScramVerifier>, seen: Seen[]): Server {
  const channelBinding = tlsServerEndPoint(new X509Certificate(tls.cert).raw);
  return createServer((raw: Socket) => {
    const s: Seen = {};
    seen.push(s);
    void (async () => {
      const sr = new StartupReader();
      let pull = chunks(raw);
      const nextPacket = async (): Promise<StartupPacket> => {
        for (let p = sr.push(EMPTY); ; p = sr.push(await pull())) if (p) return parseStartupPacket(p);
      };
      let out: Duplex = raw;
      try {
        let p = await nextPacket();
        if (p.kind === "gssenc") {
          raw.write(SSL_NO);
          p = await nextPacket();
        }
        if (p.kind !== "ssl" || sr.takeRest().length > 0) throw new ParhelionError("ERR_GW_SSL_REQUIRED");
        raw.removeAllListeners("data");
        raw.write(SSL_YES);
        const secure = new TLSSocket(raw, { isServer: true, key: tls.key, cert: tls.cert });
        out = secure;
        pull = chunks(secure);
        const startup = await nextPacket();
        if (startup.kind !== "startup") throw new ParhelionError("ERR_GW_PROTOCOL", "expected a StartupMessage");
        const user = startup.params.get("user")!;
        Object.assign(s, parseOptionsEndpoint(startup.params.get("options") ?? ""));
        const scram = new ScramServer({ user, verifier: users.get(user) ?? null, channelBinding });
        secure.write(authenticationSASL(scram.mechanisms()));
        const mr = new MessageReader();
        mr.push(sr.takeRest());
        const nextMessage = async (): Promise<{ type: number; body: Buffer }> => {
          for (;;) {
            const m = mr.next();
            if (m) return m;
            mr.push(await pull());
          }
        };
        const initial = parseSASLInitialResponse((await nextMessage()).body);
        s.mechanism = initial.mechanism;
        secure.write(authenticationSASLContinue(scram.clientFirst(initial.mechanism, initial.data)));
        const { serverFinal } = scram.clientFinal(parseSASLResponse((await nextMessage()).body));
        secure.write(Buffer.concat([authenticationSASLFinal(serverFinal), authenticationOk(), parameterStatus("server_version", "15.0"), parameterStatus("client_encoding", "UTF8"), backendKeyData(7, 8), readyForQuery("I")]));
        // After authentication: the relay's scanner watches every chunk; the test answers each Query with one row "1".
        const scanner = new FrontendScanner();
        const rest = mr.takeRest();
        for (let chunk = rest; ; chunk = await pull()) {
          scanner.scan(chunk);
          mr.push(chunk);
          for (let m = mr.next(); m; m = mr.next()) {
            if (m.type !== 0x51) continue;
            const row = bytes(int32(0), [0, 0], int32(23), [0, 4], int32(-1), [0, 0]);
            secure.write(Buffer.concat([msg("T", bytes([0, 1], "?column?\0", row)), msg("D", bytes([0, 1], int32(1), "1")), msg("C", "SELECT 1\0"), readyForQuery("I")]));
          }
          if (scanner.sawTerminate) break;
        }
        s.sawTerminate = true;
        secure.end();
      } catch (err) {
        if (!(err instanceof ParhelionError)) {
          s.error = String(err);
          out.destroy();
          return;
        }
        s.error = `${err.code}: ${err.message}`;
        out.end(errorResponse({ sqlstate: ERROR_CATALOG[err.code].sqlstate, message: err.message }));
      }
    })();
  });
}

describe("real clients through a gateway made of the codec", () => {
  let server: Server;
  let port: number;
  let ca: string;
  let dir: string;
  const seen: Seen[] = [];

  before(async () => {
    const caPair = await createCA({ commonName: "interop CA", validDays: 1 });
    const leaf = await issueServerCert(caPair, { commonName: "localhost", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"], validDays: 1 });
    ca = caPair.certPem;
    dir = mkdtempSync(join(tmpdir(), "parhelion-gw-"));
    writeFileSync(join(dir, "ca.pem"), ca);
    server = gateway({ key: leaf.keyPem, cert: leaf.certPem }, new Map([["alice", VERIFIER]]), seen);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  });

  const pgClient = (over: pg.ClientConfig = {}): pg.Client => new pg.Client({ host: "localhost", port, user: "alice", password: PASSWORD, database: "app", ssl: { ca }, ...over });
  const last = (): Seen => seen.at(-1)!;

  test("the pg client logs in with SCRAM-SHA-256-PLUS bound to the gateway's certificate", async () => {
    const c = pgClient({ enableChannelBinding: true, options: "-c endpoint=ws-1 -c search_path=app" });
    await c.connect();
    assert.equal((await c.query<{ "?column?": number }>("select 1")).rows[0]?.["?column?"], 1);
    await c.end();
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(last(), { mechanism: "SCRAM-SHA-256-PLUS", endpoint: "ws-1", rest: "-c search_path=app", sawTerminate: true });
  });

  test("the pg client without channel binding logs in with SCRAM-SHA-256", async () => {
    const c = pgClient();
    await c.connect();
    await c.end();
    assert.equal(last().mechanism, "SCRAM-SHA-256");
  });

  test("a wrong password and an unknown user get the same 28P01 error", async () => {
    const messages: string[] = [];
    for (const over of [{ password: "wrong" }, { user: "mallory" }]) {
      const err = (await pgClient({ ...over, enableChannelBinding: true })
        .connect()
        .then(() => assert.fail("connected"))
        .catch((e: unknown) => e)) as pg.DatabaseError;
      assert.equal(err.code, "28P01");
      assert.equal(err.severity, "FATAL");
      messages.push(err.message.replace(/"(alice|mallory)"/, '"…"'));
    }
    assert.deepEqual(messages, ['password authentication failed for user "…"', 'password authentication failed for user "…"']);
  });

  test("psql (libpq) logs in with channel_binding=require and sslmode=verify-full", async () => {
    const conninfo = `host=localhost port=${port} user=alice dbname=app sslmode=verify-full sslrootcert=${join(dir, "ca.pem")} channel_binding=require gssencmode=disable options=endpoint=ws-2`;
    const { stdout } = await promisify(execFile)("psql", [conninfo, "-Atc", "select 1"], { env: { ...process.env, PGPASSWORD: PASSWORD, PGCONNECT_TIMEOUT: "5" } });
    assert.equal(stdout.trim(), "1");
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(last(), { mechanism: "SCRAM-SHA-256-PLUS", endpoint: "ws-2", rest: "", sawTerminate: true });
  });
});

// ---- The gateway as a client of a real PostgreSQL ----

interface Login {
  error?: { severity: string; sqlstate: string; message: string };
  currentUser?: string;
  key?: { pid: number; secret: number };
}

/** Logs in over the unix socket with ScramClient and runs `sql`, answering its first column, or the server's error. */
async function upstreamLogin(socketPath: string, user: string, creds: ScramClientCredentials, sql = "select current_user", onKey?: (k: { pid: number; secret: number }) => void): Promise<Login> {
  const sock = netConnect(socketPath);
  const pull = chunks(sock);
  const r = new BackendMessageReader();
  const next = async (): Promise<{ type: number; body: Buffer }> => {
    for (;;) {
      const m = r.next();
      if (m) return m;
      r.push(await pull());
    }
  };
  sock.write(encodeStartup({ user, database: "postgres", client_encoding: "UTF8" }));
  let client: ScramClient | null = null;
  const out: Login = {};
  try {
    for (let ready = false; !ready; ) {
      const m = await next();
      switch (String.fromCharCode(m.type)) {
        case "R": {
          const { code, data } = parseAuthentication(m.body);
          if (code === 10) {
            assert.deepEqual(parseSASLMechanisms(data), ["SCRAM-SHA-256"]);
            client = new ScramClient(creds);
            sock.write(encodeSASLInitialResponse(client.mechanism, client.clientFirst()));
          } else if (code === 11) sock.write(encodeSASLResponse(client!.serverFirst(data)));
          else if (code === 12) client!.serverFinal(data);
          else assert.equal(code, 0);
          break;
        }
        case "S":
          parseParameterStatus(m.body);
          break;
        case "K":
          out.key = parseBackendKeyData(m.body);
          onKey?.(out.key);
          break;
        case "E":
          out.error = summarizeError(parseErrorFields(m.body));
          return out;
        case "Z":
          assert.equal(parseReadyForQuery(m.body), "I");
          ready = true;
      }
    }
    sock.write(encodeQuery(sql));
    for (;;) {
      const m = await next();
      if (m.type === 0x44) out.currentUser = m.body.subarray(6).toString();
      if (m.type === 0x45) out.error = summarizeError(parseErrorFields(m.body));
      if (m.type === 0x5a) break;
    }
    sock.write(encodeTerminate());
    return out;
  } finally {
    sock.end();
  }
}

describe("ScramClient against a real PostgreSQL", () => {
  let tp: TestPostgres;
  let socketPath: string;

  before(async () => {
    tp = await startTestPostgres();
    socketPath = join(tp.server.socketDir, ".s.PGSQL.5432");
    const admin = new pg.Client({ connectionString: tp.connectionString });
    await admin.connect();
    try {
      await admin.query(`create role alice login password '${VERIFIER_TEXT}'`);
      const hba = (await admin.query<{ hba_file: string }>("show hba_file")).rows[0]!.hba_file;
      writeFileSync(hba, `local all alice scram-sha-256\n${readFileSync(hba, "utf8")}`);
      await admin.query("select pg_reload_conf()");
    } finally {
      await admin.end();
    }
    // The postmaster reloads pg_hba.conf asynchronously: wait until alice is asked for SCRAM.
    for (let i = 0; i < 50; i++) {
      const r = await upstreamLogin(socketPath, "alice", { password: PASSWORD });
      if (!r.error) break;
      await new Promise((res) => setTimeout(res, 100));
    }
  });
  after(async () => {
    await tp?.stop();
  });

  test("logs in with the password and checks PostgreSQL's server signature", async () => {
    assert.deepEqual((await upstreamLogin(socketPath, "alice", { password: PASSWORD })).currentUser, "alice");
  });

  test("logs in with the ClientKey ScramServer recovered from a client's proof, without the password (PgBouncer's trick)", async () => {
    const front = new ScramServer({ user: "alice", verifier: VERIFIER, channelBinding: null });
    const c = new ScramClient({ password: PASSWORD });
    const { clientKey } = front.clientFinal(c.serverFirst(front.clientFirst(c.mechanism, c.clientFirst())));
    const login = await upstreamLogin(socketPath, "alice", { clientKey, serverKey: VERIFIER.serverKey });
    assert.equal(login.currentUser, "alice");
  });

  test("PostgreSQL refuses a wrong ClientKey with 28P01", async () => {
    const login = await upstreamLogin(socketPath, "alice", { clientKey: Buffer.alloc(32, 1) });
    assert.deepEqual(login.error, { severity: "FATAL", sqlstate: "28P01", message: 'password authentication failed for user "alice"' });
  });

  test("an upstream that does not hold the expected ServerKey fails ERR_GW_AUTH_FAILED", async () => {
    const other = parseScramVerifier(makeScramVerifier(PASSWORD))!;
    const front = new ScramServer({ user: "alice", verifier: VERIFIER, channelBinding: null });
    const c = new ScramClient({ password: PASSWORD });
    const { clientKey } = front.clientFinal(c.serverFirst(front.clientFirst(c.mechanism, c.clientFirst())));
    await assert.rejects(upstreamLogin(socketPath, "alice", { clientKey, serverKey: other.serverKey }), (e: unknown) => e instanceof ParhelionError && e.code === "ERR_GW_AUTH_FAILED");
  });

  test("a CancelRequest quoting BackendKeyData cancels the running query", async () => {
    const running = upstreamLogin(socketPath, "alice", { password: PASSWORD }, "select pg_sleep(30)", (key) => {
      setTimeout(() => netConnect(socketPath).end(encodeCancelRequest(key.pid, key.secret)), 200);
    });
    assert.deepEqual((await running).error, { severity: "ERROR", sqlstate: "57014", message: "canceling statement due to user request" });
  });
});
