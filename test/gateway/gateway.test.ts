import { test, describe, before, after } from "node:test";
import { Agent, request } from "undici";
import pg from "pg";
import { MessagePump } from "../../src/gateway/pump.js";
import { ScramClient } from "../../src/gateway/protocol/scram.js";
import { BackendMessageReader, encodeCancelRequest, encodeQuery, encodeSASLInitialResponse, encodeSASLResponse, encodeStartup, parseAuthentication } from "../../src/gateway/protocol/backend.js";
import { SSL_REQUEST_CODE } from "../../src/gateway/protocol/frontend.js";
import { bytes, int32 } from "./protocol/helpers.js";
import assert from "node:assert/strict";
import { connect as tlsConnect } from "node:tls";
import { connect as netConnect } from "node:net";
import { spawn } from "node:child_process";
import { request as httpsRequest } from "node:https";
import { randomUUID } from "node:crypto";
import { startTestPlatform, type TestPlatform } from "../support/platform.js";
import { LoginInfoCache } from "../../src/engine/logincache.js";
import { createLogger } from "../../src/log/logger.js";
import { SYSTEM_ROLE, getLoginInfo } from "../../src/engine/sql.js";
import { createTestWorkspace, gatewayClient, psql, conninfo, type TestWorkspace } from "../support/workspaces.js";

const SSL_REQUEST = bytes(int32(8), int32(SSL_REQUEST_CODE));

let tp: TestPlatform;
let ws: TestWorkspace;

before(async () => {
  tp = await startTestPlatform({ env: { PARHELION_WORKSPACE_FSYNC: "false", PARHELION_GATEWAY_AUTH_TIMEOUT_SECONDS: "5", PARHELION_GATEWAY_IDLE_TIMEOUT_SECONDS: "8" } });
  ws = await createTestWorkspace(tp);
});

after(async () => {
  await tp?.stop();
});

test("psql connects with verify-full through SNI and runs a query as the non-superuser admin", async () => {
  const r = await psql(conninfo(ws), ["-At", "-c", "select current_user, (select rolsuper from pg_roles where rolname = current_user)"], { PGPASSWORD: ws.adminPassword });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), "admin|f");
});

test("a client without SNI picks the workspace with options=endpoint=<id>", async () => {
  const c = gatewayClient(tp, ws, { sni: false });
  await c.connect();
  const r = await c.query("select 41 + 1 as n");
  assert.equal(r.rows[0].n, 42);
  await c.end();
});

test("rejects a plaintext startup with 28000 and tells the user to set sslmode", async () => {
  const r = await psql(`host=127.0.0.1 port=${ws.port} user=admin dbname=postgres sslmode=disable options=endpoint=${ws.workspaceId}`, ["-c", "select 1"], { PGPASSWORD: ws.adminPassword });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /only TLS connections/);
  assert.match(r.stderr, /sslmode/);
});

test("rejects a wrong password and an unknown user with the same 28P01 error", async () => {
  const bad = gatewayClient(tp, ws, { password: "wrong-password-123" });
  await assert.rejects(bad.connect(), (err: any) => err.code === "28P01" && /password authentication failed for user "admin"/.test(err.message));
  const nobody = gatewayClient(tp, ws, { user: "nobody", password: "wrong-password-123" });
  await assert.rejects(nobody.connect(), (err: any) => err.code === "28P01" && /password authentication failed for user "nobody"/.test(err.message));
});

test("channel_binding=require works through the gateway (SCRAM-SHA-256-PLUS)", async () => {
  const r = await psql(conninfo(ws, "channel_binding=require"), ["-At", "-c", "select 'bound'"], { PGPASSWORD: ws.adminPassword });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), "bound");
});

test("Ctrl-C in psql cancels a pg_sleep through the gateway within a second", async () => {
  let pid = 0;
  const started = Date.now();
  const run = psql(conninfo(ws), ["-c", "select pg_sleep(30)"], { PGPASSWORD: ws.adminPassword }, { onSpawn: (p) => (pid = p) });
  // Wait until the statement is running on the server (psql exits on SIGINT before that).
  const watcher = gatewayClient(tp, ws);
  await watcher.connect();
  for (let i = 0; i < 200; i++) {
    const r = await watcher.query("select count(*)::int as n from pg_stat_activity where query = 'select pg_sleep(30)' and state = 'active'");
    if (r.rows[0].n > 0) break;
    await new Promise((res) => setTimeout(res, 50));
  }
  await watcher.end();
  const signalled = Date.now();
  process.kill(pid, "SIGINT");
  const r = await run;
  const took = Date.now() - signalled;
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /canceling statement due to user request/);
  assert.ok(took < 1000, `cancel took ${took} ms`);
  assert.ok(Date.now() - started < 10_000);
});

test("a malformed message closes that connection with 08P01 and nothing else is affected", async () => {
  const other = gatewayClient(tp, ws);
  await other.connect();
  const c = gatewayClient(tp, ws);
  await c.connect();
  const stream = (c as any).connection.stream as import("node:tls").TLSSocket;
  const got = new Promise<string>((resolve) => {
    let buf = "";
    stream.on("data", (d: Buffer) => (buf += d.toString("latin1")));
    stream.on("close", () => resolve(buf));
  });
  stream.write(Buffer.from([0x07, 0, 0, 0, 8, 1, 2, 3, 4])); // an unknown message type
  const text = await got;
  assert.match(text, /08P01/);
  const r = await other.query("select 'still here' as s");
  assert.equal(r.rows[0].s, "still here");
  await other.end();
});

test("HTTP and TLS garbage on the PostgreSQL port is closed cleanly and the gateway keeps serving", async () => {
  for (const junk of [Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Buffer.from([0x16, 3, 1, 0, 5, 1, 0, 0, 1, 0]), Buffer.alloc(64, 0xff)]) {
    await new Promise<void>((resolve) => {
      const s = netConnect({ host: "127.0.0.1", port: ws.port }, () => s.write(junk));
      s.on("error", () => undefined);
      s.on("close", () => resolve());
      s.resume();
    });
  }
  // A TLS client that rejects the certificate (unknown CA) fails its handshake; the process stays up.
  await new Promise<void>((resolve) => {
    const s = netConnect({ host: "127.0.0.1", port: ws.port }, () => {
      s.write(SSL_REQUEST);
      s.once("data", () => {
        const t = tlsConnect({ socket: s, servername: ws.endpoint, rejectUnauthorized: true });
        t.on("error", () => resolve());
        t.on("secureConnect", () => {
          t.destroy();
          resolve();
        });
      });
    });
    s.on("error", () => resolve());
  });
  const c = gatewayClient(tp, ws);
  await c.connect();
  assert.equal((await c.query("select 1 as one")).rows[0].one, 1);
  await c.end();
});

test("a client outside the firewall ranges cannot begin a TLS handshake, and the deny is audited", async () => {
  const patch = await tp.call("PATCH", `/v1/workspaceGroups/${ws.groupId}`, { body: { firewallRanges: ["127.0.0.1/32"] } });
  assert.equal(patch.status, 200, patch.text);
  await new Promise((r) => setTimeout(r, 2100)); // routing cache
  // 127.0.0.2 is loopback too, but outside 127.0.0.1/32.
  const outcome = await new Promise<string>((resolve) => {
    const s = netConnect({ host: "127.0.0.1", port: ws.port, localAddress: "127.0.0.2" }, () => {
      s.write(SSL_REQUEST); // SSLRequest
    });
    let got = Buffer.alloc(0);
    s.on("data", (d: Buffer) => (got = Buffer.concat([got, d])));
    s.on("error", () => undefined);
    s.on("close", () => resolve(got.length === 0 ? "closed-before-any-byte" : `got ${got.toString("latin1")}`));
  });
  assert.equal(outcome, "closed-before-any-byte");
  const inside = gatewayClient(tp, ws);
  await inside.connect();
  await inside.end();
  const logs = await tp.call("GET", "/v1/auditLogs?type=GatewayFirewallDeny&source=Gateway");
  assert.equal(logs.status, 200);
  // The pre-TLS deny names no organization (no group was identified yet); it is in the chain, not the org's list.
  const verify = await tp.call("GET", "/v1/auditLogs/verify");
  assert.equal(verify.body.ok, true);
  // Narrowing the ranges ends open sessions the new ranges do not admit.
  const open = gatewayClient(tp, ws);
  await open.connect();
  const ended = new Promise<any>((resolve) => open.on("error", resolve));
  assert.equal((await tp.call("PATCH", `/v1/workspaceGroups/${ws.groupId}`, { body: { firewallRanges: ["10.0.0.0/8"] } })).status, 200);
  const err = await ended;
  assert.equal(err.code, "28000");
  assert.match(err.message, /firewall/);
  await tp.call("PATCH", `/v1/workspaceGroups/${ws.groupId}`, { body: { firewallRanges: ["127.0.0.1/32", "::1/128"] } });
});

test("session events reach the audit log: connect, login success and failure, disconnect with bytes", async () => {
  const c = gatewayClient(tp, ws);
  await c.connect();
  await c.query("select repeat('x', 1000)");
  await c.end();
  // The records land a moment after the client hears: read until the disconnect (the last of them) is there.
  let logs = await tp.call("GET", "/v1/auditLogs?source=Gateway&limit=200");
  for (let i = 0; i < 100 && !logs.body.auditLogs.some((l: any) => l.type === "DatabaseDisconnect" && l.attributes.bytesOut > 1000); i++) {
    await new Promise((r) => setTimeout(r, 50));
    logs = await tp.call("GET", "/v1/auditLogs?source=Gateway&limit=200");
  }
  const types = new Set(logs.body.auditLogs.map((l: any) => l.type));
  for (const t of ["DatabaseConnect", "DatabaseLoginSuccess", "DatabaseLoginFailure", "DatabaseDisconnect"]) assert.ok(types.has(t), `missing ${t}`);
  const disc = logs.body.auditLogs.find((l: any) => l.type === "DatabaseDisconnect" && l.attributes.bytesOut > 1000);
  assert.ok(disc, "a disconnect with bytes");
  assert.equal(disc.resourceID, ws.workspaceId);
  assert.ok(disc.attributes.durationMs >= 0);
  // A successful session's records are in the organization's default file sink only (no store row: seq null);
  // refusals are store rows. Filtering by one of those types still finds them.
  for (const l of logs.body.auditLogs.filter((x: any) => ["DatabaseConnect", "DatabaseLoginSuccess", "DatabaseDisconnect"].includes(x.type))) assert.equal(l.seq, null, `${l.type} is stream-only`);
  for (const l of logs.body.auditLogs.filter((x: any) => x.type === "DatabaseLoginFailure")) assert.match(l.seq, /^\d+$/, "a login failure is a store row");
  const logins = await tp.call("GET", "/v1/auditLogs?type=DatabaseLoginSuccess&limit=5");
  assert.ok(logins.body.auditLogs.length > 0 && logins.body.auditLogs.every((l: any) => l.type === "DatabaseLoginSuccess" && l.seq === null));
});

describe("Data API (HTTPS on the gateway port, ALPN http/1.1)", () => {
  async function dataApi(path: string, o: { body?: unknown; raw?: string; auth?: string | null; sni?: boolean; method?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; body: any; text: string }> {
    const agent = new Agent({ connect: { ca: tp.caPem, ...(o.sni === false ? { rejectUnauthorized: false } : { servername: ws.endpoint }) } });
    try {
      const headers: Record<string, string> = { ...(o.headers ?? {}) };
      const auth = o.auth === undefined ? `admin:${ws.adminPassword}` : o.auth;
      if (auth !== null) headers["authorization"] = `Basic ${Buffer.from(auth).toString("base64")}`;
      const payload = o.raw ?? (o.body === undefined ? undefined : JSON.stringify(o.body));
      if (payload !== undefined) headers["content-type"] = "application/json";
      const r = await request(`https://127.0.0.1:${ws.port}${path}`, { method: (o.method ?? (payload === undefined ? "GET" : "POST")) as never, headers, body: payload, dispatcher: agent });
      const text = await r.body.text();
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        body = undefined;
      }
      return { status: r.statusCode, body, text };
    } finally {
      await agent.close();
    }
  }

  test("GET /ping answers without credentials", async () => {
    const r = await dataApi("/ping", { auth: null });
    assert.equal(r.status, 200);
    assert.equal(r.text, "pong");
  });

  test("exec, query/rows and query/tuples in Helios's shapes, with ? args bound as parameters", async () => {
    let r = await dataApi("/api/v2/exec", { body: { sql: "create table api_t(id int primary key, name text)" } });
    assert.equal(r.status, 200, r.text);
    r = await dataApi("/api/v2/exec", { body: { sql: "insert into api_t values (?, ?), (?, ?)", args: [1, "one", 2, "it's two; drop table api_t"] } });
    assert.deepEqual(r.body, { lastInsertId: 0, rowsAffected: 2 });
    r = await dataApi("/api/v2/query/rows", { body: { sql: "select id, name from api_t where id >= ? order by id", args: [1] } });
    assert.deepEqual(r.body, { results: [{ rows: [{ id: 1, name: "one" }, { id: 2, name: "it's two; drop table api_t" }] }] });
    r = await dataApi("/api/v2/query/tuples", { body: { sql: "select id, name, '?' as q from api_t order by id limit 1" } });
    assert.deepEqual(r.body, { results: [{ columns: [{ name: "id", dataType: "INT", nullable: true }, { name: "name", dataType: "TEXT", nullable: true }, { name: "q", dataType: "TEXT", nullable: true }], rows: [[1, "one", "?"]] }] });
    r = await dataApi("/api/v2/query/rows", { body: { sql: "select 1 as a; select 2 as b" } });
    assert.deepEqual(r.body, { results: [{ rows: [{ a: 1 }] }, { rows: [{ b: 2 }] }] }, "one result per statement");
  });

  test("bad credentials, bad input and SQL errors answer typed problems", async () => {
    let r = await dataApi("/api/v2/query/rows", { body: { sql: "select 1" }, auth: "admin:wrong-password-123" });
    assert.equal(r.status, 401);
    assert.equal(r.body.code, "ERR_GW_AUTH_FAILED");
    r = await dataApi("/api/v2/query/rows", { body: { sql: "select 1" }, auth: null });
    assert.equal(r.status, 401);
    r = await dataApi("/api/v2/query/rows", { body: { sql: "select ?::int", args: [] } });
    assert.equal(r.body.code, "ERR_VALIDATION");
    r = await dataApi("/api/v2/query/rows", { body: { sql: "select * from no_such_table" } });
    assert.equal(r.status, 400);
    assert.equal(r.body.code, "ERR_SQL");
    assert.equal(r.body.sqlstate, "42P01");
    r = await dataApi("/api/v2/query/rows", { body: { sql: "select 1", bogus: true } });
    assert.equal(r.body.code, "ERR_UNKNOWN_FIELD");
    r = await dataApi("/api/v2/query/rows", { raw: "{not json" });
    assert.equal(r.body.code, "ERR_VALIDATION");
    r = await dataApi("/api/v2/query/rows", { raw: JSON.stringify({ sql: `select '${"x".repeat(1024 * 1024)}'` }) });
    assert.equal(r.status, 413);
    r = await dataApi("/api/v2/nope", { body: { sql: "select 1" } });
    assert.equal(r.status, 404);
  });

  test("a client without SNI names the workspace with X-Workspace-ID", async () => {
    const r = await dataApi("/api/v2/query/rows", { body: { sql: "select current_user as u" }, sni: false, headers: { "x-workspace-id": ws.workspaceId } });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body.results[0].rows, [{ u: "admin" }]);
  });
});

describe("limits and timeouts", () => {
  test("a group with tlsMinVersion 1.3 refuses a TLS 1.2 handshake (openssl s_client) and accepts 1.3", async () => {
    const strict = await createTestWorkspace(tp, { group: { tlsMinVersion: "1.3" }, name: "strict" });
    const sclient = (flag: string) => new Promise<{ code: number | null; out: string }>((resolve) => {
      const child = spawn("openssl", ["s_client", flag, "-connect", `127.0.0.1:${strict.port}`, "-servername", strict.endpoint, "-starttls", "postgres", "-CAfile", strict.caFile, "-verify_return_error", "-brief"], { stdio: ["pipe", "pipe", "pipe"] });
      let out = "";
      child.stdout.on("data", (d: Buffer) => (out += d.toString()));
      child.stderr.on("data", (d: Buffer) => (out += d.toString()));
      child.stdin.end();
      child.on("exit", (code) => resolve({ code, out }));
    });
    const old = await sclient("-tls1_2");
    assert.notEqual(old.code, 0, old.out);
    assert.doesNotMatch(old.out, /Protocol version: TLSv1\.2/);
    const ok = await sclient("-tls1_3");
    assert.match(ok.out, /Protocol version: TLSv1\.3/, ok.out);
    // Without SNI the handshake may succeed at 1.2, and the startup is then refused for the group.
    const c = new pg.Client({ host: "127.0.0.1", port: strict.port, user: "admin", password: strict.adminPassword, database: "postgres", options: `endpoint=${strict.workspaceId}`, ssl: { ca: tp.caPem, rejectUnauthorized: false, maxVersion: "TLSv1.2" } } as pg.ClientConfig);
    c.on("error", () => undefined);
    await assert.rejects(c.connect(), (err: any) => err.code === "28000" && /TLS 1\.3/.test(err.message));
  });

  test("beyond the workspace's connection limit the gateway answers 53300", async () => {
    // All at once: the slot is taken before authentication, so concurrent handshakes cannot overshoot.
    const clients = Array.from({ length: 24 }, () => gatewayClient(tp, ws));
    const results = await Promise.allSettled(clients.map((c) => c.connect()));
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) => r.reason);
    assert.equal(results.length - refused.length, 20, "S-00 admits max_connections - 5 sessions");
    assert.ok(refused.every((e) => e.code === "53300"), JSON.stringify(refused.map((e) => e.code)));
    await Promise.all(clients.map((c, i) => (results[i]!.status === "fulfilled" ? c.end() : undefined)));
    const again = gatewayClient(tp, ws);
    await again.connect();
    await again.end();
  });

  test("a client that does not finish authentication in time is disconnected", async () => {
    const started = Date.now();
    await new Promise<void>((resolve) => {
      const s = netConnect({ host: "127.0.0.1", port: ws.port }, () => s.write(SSL_REQUEST));
      s.on("error", () => undefined);
      s.on("close", () => resolve());
      s.resume();
    });
    const took = Date.now() - started;
    assert.ok(took >= 4500 && took < 15_000, `closed after ${took} ms (auth timeout 5 s)`);
  });

  test("an idle session is closed with 57P05 after the idle timeout; a busy one is not", async () => {
    const idle = gatewayClient(tp, ws);
    await idle.connect();
    const ended = new Promise<any>((resolve) => idle.on("error", resolve));
    const busy = gatewayClient(tp, ws);
    await busy.connect();
    await busy.query("select pg_sleep(10)");
    const err = await ended;
    assert.equal(err.code, "57P05");
    assert.equal((await busy.query("select 1 as one")).rows[0].one, 1, "the busy session survived");
    await busy.end();
  });
});

describe("pooled server sessions", () => {
  test("a session left idle is reset with DISCARD ALL and reused; one left mid-transaction is not", async () => {
    // Its own startup parameters, so no other test's idle session shares the pool key.
    const a = gatewayClient(tp, ws, { applicationName: "pool-test" });
    await a.connect();
    const pidA = (await a.query("create temp table scratch(x int); set work_mem = '7MB'; select pg_backend_pid() as pid") as any)[2].rows[0].pid;
    await a.end();
    await new Promise((r) => setTimeout(r, 200)); // the reset completes
    const b = gatewayClient(tp, ws, { applicationName: "pool-test" });
    await b.connect();
    assert.equal((await b.query("select pg_backend_pid() as pid")).rows[0].pid, pidA, "the same server session");
    assert.equal((await b.query("show work_mem")).rows[0].work_mem, "2MB", "settings reset");
    assert.equal((await b.query("select count(*)::int as n from pg_class where relname = 'scratch' and relpersistence = 't'")).rows[0].n, 0, "temp objects gone");
    await b.query("begin");
    const pidB = (await b.query("select pg_backend_pid() as pid")).rows[0].pid;
    await b.end();
    await new Promise((r) => setTimeout(r, 200));
    const c = gatewayClient(tp, ws, { applicationName: "pool-test" });
    await c.connect();
    assert.notEqual((await c.query("select pg_backend_pid() as pid")).rows[0].pid, pidB, "a session left in a transaction is never handed to another client");
    await c.end();
  });

  test("bytes a client sends right after authenticating are not lost", async () => {
    const raw = await new Promise<import("node:tls").TLSSocket>((resolve) => {
      const s = netConnect({ host: "127.0.0.1", port: ws.port }, () => s.write(SSL_REQUEST));
      s.once("data", () => resolve(tlsConnect({ socket: s, servername: ws.endpoint, ca: tp.caPem })));
    });
    await new Promise((r) => raw.once("secureConnect", r));
    // The gateway's own client-side codec on the raw socket, then a Query in the same write as the last SASL message.
    const pump = new MessagePump(raw, new BackendMessageReader());
    raw.write(encodeStartup({ user: "admin", database: "postgres" }));
    await pump.next(); // AuthenticationSASL
    const scram = new ScramClient({ password: ws.adminPassword });
    raw.write(encodeSASLInitialResponse("SCRAM-SHA-256", scram.clientFirst()));
    const cont = await pump.next();
    raw.write(Buffer.concat([encodeSASLResponse(scram.serverFirst(parseAuthentication(cont.body).data)), encodeQuery("select 'pipelined' as p")]));
    const next = () => pump.next();
    let text = "";
    for (;;) {
      const m = await next();
      text += m.body.toString("latin1");
      if (m.type === 0x45) assert.fail(`error: ${m.body.toString("latin1")}`);
      if (m.type === 0x5a && text.includes("pipelined")) break;
    }
    assert.match(text, /pipelined/);
    pump.detach();
    raw.destroy();
  });
});

describe("login information cache", () => {
  /** Retries a connection until it fails (or succeeds, with `want`), for up to 3 s: notifications arrive within milliseconds. */
  async function loginOutcome(user: string, password: string, want: "ok" | "refused"): Promise<"ok" | "refused"> {
    let got: "ok" | "refused" = want === "ok" ? "refused" : "ok";
    for (const deadline = Date.now() + 3000; Date.now() < deadline; ) {
      const c = gatewayClient(tp, ws, { user, password });
      try {
        await c.connect();
        await c.end();
        got = "ok";
      } catch (err: any) {
        assert.equal(err.code, "28P01", err.message);
        got = "refused";
      }
      if (got === want) return got;
      await new Promise((r) => setTimeout(r, 50));
    }
    return got;
  }

  test("a password change, NOLOGIN, VALID UNTIL and DROP ROLE made in SQL take effect at the gateway at once; a rolled-back change does not", async () => {
    const admin = gatewayClient(tp, ws);
    await admin.connect();
    try {
      await admin.query("create role cache_user login password 'first-Password-1'");
      assert.equal(await loginOutcome("cache_user", "first-Password-1", "ok"), "ok");
      assert.equal(await loginOutcome("cache_user", "first-Password-1", "ok"), "ok", "again, from the cache");
      await admin.query("alter role cache_user password 'second-Password-2'");
      assert.equal(await loginOutcome("cache_user", "first-Password-1", "refused"), "refused", "the old password stops working");
      assert.equal(await loginOutcome("cache_user", "second-Password-2", "ok"), "ok");
      await admin.query("begin; alter role cache_user password 'third-Password-3'; rollback");
      assert.equal(await loginOutcome("cache_user", "second-Password-2", "ok"), "ok", "a rolled-back change changes nothing");
      assert.equal(await loginOutcome("cache_user", "third-Password-3", "ok"), "refused");
      await admin.query("alter role cache_user nologin");
      assert.equal(await loginOutcome("cache_user", "second-Password-2", "refused"), "refused", "NOLOGIN");
      await admin.query("alter role cache_user login valid until '2001-01-01'");
      assert.equal(await loginOutcome("cache_user", "second-Password-2", "refused"), "refused", "an expired password");
      await admin.query("alter role cache_user valid until 'infinity'");
      assert.equal(await loginOutcome("cache_user", "second-Password-2", "ok"), "ok");
      await admin.query("alter role cache_user rename to cache_user2");
      assert.equal(await loginOutcome("cache_user", "second-Password-2", "refused"), "refused", "the old name after a rename");
      await admin.query("alter role cache_user2 password 'fourth-Password-4'");
      assert.equal(await loginOutcome("cache_user2", "fourth-Password-4", "ok"), "ok");
      await admin.query("drop role cache_user2");
      assert.equal(await loginOutcome("cache_user2", "fourth-Password-4", "refused"), "refused", "a dropped role");
      await admin.query("create role cache_user2 login password 'fifth-Password-5'");
      assert.equal(await loginOutcome("cache_user2", "fifth-Password-5", "ok"), "ok", "a role created after a cached miss");
    } finally {
      await admin.query("drop role if exists cache_user; drop role if exists cache_user2").catch(() => undefined);
      await admin.end();
    }
  });

  test("answers from memory while it listens, and asks the server again after a role change", async () => {
    const host = tp.platform.engine.socketDir(ws.workspaceId);
    const logLines: string[] = [];
    const cache = new LoginInfoCache({ connect: () => new pg.Client({ host, user: SYSTEM_ROLE, database: "postgres" }), logger: createLogger({ level: "debug", destination: { write: (l: string) => (logLines.push(l), true) } as never }) });
    const sys = new pg.Client({ host, user: SYSTEM_ROLE, database: "postgres" });
    await sys.connect();
    try {
      let fetches = 0;
      const fetch = async () => {
        fetches++;
        return getLoginInfo(sys, "admin");
      };
      /** Polls `cond` every 20 ms for up to 2 s; answers its last value. */
      const until = async (cond: () => boolean | Promise<boolean>) => {
        for (let i = 0; i < 100; i++) {
          if (await cond()) return true;
          await new Promise((r) => setTimeout(r, 20));
        }
        return cond();
      };
      /** Whether a lookup now goes to the server (after `since` fetches). */
      const asksServer = (since: number) => async () => (await cache.get("admin", fetch), fetches > since);
      assert.equal((await cache.get("admin", fetch))?.canLogin, true);
      assert.equal(await until(() => cache.active), true, `the listening session is up (${logLines.join("")})`);
      await cache.get("admin", fetch); // the first answer came before it listened: not kept
      const before = fetches;
      for (let i = 0; i < 5; i++) assert.equal((await cache.get("admin", fetch))?.canLogin, true);
      assert.equal(fetches, before, "answered from memory");
      await sys.query("alter role admin connection limit -1"); // any ALTER ROLE notifies
      assert.ok(await until(asksServer(before)), "asked the server again after the notification");
      // GRANT and REVOKE notify too (membership in parhelion_token_login changes how a role logs in).
      await cache.get("admin", fetch);
      const beforeGrant = fetches;
      await cache.get("admin", fetch);
      assert.equal(fetches, beforeGrant, "from memory again");
      await sys.query("grant pg_monitor to admin");
      assert.ok(await until(asksServer(beforeGrant)), "asked the server again after a GRANT");
      // Losing the listening session stops answers from memory until it is back.
      await sys.query("select pg_terminate_backend(pid) from pg_stat_activity where application_name = '' and pid <> pg_backend_pid() and usename = $1 and query like 'LISTEN%'", [SYSTEM_ROLE]);
      assert.equal(await until(() => !cache.active), true);
      const n = fetches;
      await cache.get("admin", fetch);
      assert.equal(fetches, n + 1, "not from memory while not listening");
    } finally {
      await cache.close();
      await sys.end();
    }
  });
});

describe("routing and cancel keys", () => {
  test("an unknown endpoint, and a host name naming another group than the workspace's, are refused with 08004", async () => {
    const unknown = new pg.Client({ host: "127.0.0.1", port: ws.port, user: "admin", password: ws.adminPassword, database: "postgres", options: `endpoint=${randomUUID()}`, ssl: { ca: tp.caPem, rejectUnauthorized: false } } as pg.ClientConfig);
    unknown.on("error", () => undefined);
    await assert.rejects(unknown.connect(), (err: any) => err.code === "08004");
    const other = await createTestWorkspace(tp, { name: "elsewhere" });
    const crossed = new pg.Client({ host: "127.0.0.1", port: ws.port, user: "admin", password: ws.adminPassword, database: "postgres", options: `endpoint=${ws.workspaceId}`, ssl: { ca: tp.caPem, servername: `${other.groupId}.parhelion.localhost` } } as pg.ClientConfig);
    crossed.on("error", () => undefined);
    await assert.rejects(crossed.connect(), (err: any) => err.code === "08004" && /another workspace group/.test(err.message));
  });

  test("a CancelRequest with the wrong secret cancels nothing; with the gateway's key it cancels", async () => {
    const c = gatewayClient(tp, ws);
    await c.connect();
    const { processID, secretKey } = c as unknown as { processID: number; secretKey: number };
    const cancel = (secret: number) => new Promise<void>((resolve) => {
      const s = netConnect({ host: "127.0.0.1", port: ws.port }, () => s.end(encodeCancelRequest(processID, secret)));
      s.on("error", () => resolve());
      s.on("close", () => resolve());
    });
    const slow = c.query("select pg_sleep(1.5) as done");
    await new Promise((r) => setTimeout(r, 300));
    await cancel((secretKey + 1) | 0);
    assert.deepEqual((await slow).rows, [{ done: "" }], "the wrong secret did not cancel");
    const again = c.query("select pg_sleep(30)");
    await new Promise((r) => setTimeout(r, 300));
    await cancel(secretKey);
    await assert.rejects(again, (err: any) => err.code === "57014");
    await c.end();
  });

  test("a Data API client without SNI is held to its workspace group's firewall", async () => {
    // 127.0.0.2 passes the first check (another group admits it) but not this workspace's group.
    const regionID = (await tp.call("GET", "/v1/regions")).body[0].regionID;
    const g = await tp.call("POST", "/v1/workspaceGroups", { body: { name: "admits-127-0-0-2", regionID, firewallRanges: ["127.0.0.2/32"] } });
    assert.equal(g.status, 200, g.text);
    await new Promise((r) => setTimeout(r, 2100)); // the routing cache of all groups
    const outcome = await new Promise<string>((resolve) => {
      const body = JSON.stringify({ sql: "select 1" });
      const req = httpsRequest(<import("node:https").RequestOptions>{
        host: "127.0.0.1", port: ws.port, localAddress: "127.0.0.2", path: "/api/v2/query/rows", method: "POST", ca: tp.caPem, rejectUnauthorized: false, agent: false,
        ALPNProtocols: ["http/1.1"], // how the gateway tells HTTP from the PostgreSQL protocol
        headers: { "x-workspace-id": ws.workspaceId, "content-type": "application/json", "content-length": Buffer.byteLength(body), authorization: `Basic ${Buffer.from(`admin:${ws.adminPassword}`).toString("base64")}` },
      }, (res) => {
        let text = "";
        res.on("data", (d: Buffer) => (text += d.toString()));
        res.on("end", () => resolve(`${res.statusCode} ${text}`));
        res.on("error", (err) => resolve(`closed: ${err.message}`));
      });
      req.on("error", (err) => resolve(`closed: ${err.message}`));
      req.end(body);
    });
    assert.match(outcome, /^closed/, outcome);
    let audited = false;
    for (let i = 0; i < 40 && !audited; i++) {
      const logs = await tp.call("GET", "/v1/auditLogs?type=GatewayFirewallDeny");
      audited = logs.body.auditLogs.some((l: any) => l.resourceID === ws.workspaceId && /Data API/.test(l.reason));
      if (!audited) await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(audited, "the deny is audited");
    await tp.call("DELETE", `/v1/workspaceGroups/${g.body.workspaceGroupID}`);
  });
});
