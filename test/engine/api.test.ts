import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { WorkspaceEngine } from "../../src/engine/index.js";
import { makeScramVerifier } from "../../src/gateway/protocol/scram.js";
import { ParhelionError } from "../../src/lib/errors.js";
import { ADMIN_VERIFIER, asAdmin, cleanup, connectAs, newEngine, sqlstate, tempRoot } from "./helpers.js";

const isCode = (code: string) => (err: unknown) => {
  assert.ok(err instanceof ParhelionError, `expected a ParhelionError, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  return true;
};

const BAD_NAMES = ["", "1abc", "a-b", "x;DROP DATABASE postgres", 'a"b', "a b", "ünïcode", "a".repeat(64), "tab\tname"];
const RESERVED = ["postgres", "template0", "template1", "parhelion_system", "admin", "pg_anything", "PG_upper", "Postgres"];

describe("workspace database and user API", () => {
  let root = "";
  let engine: WorkspaceEngine;
  const id = randomUUID();

  before(async () => {
    root = tempRoot();
    engine = newEngine(root, { spare: false });
    await engine.ensureRunning({ id, size: "S-00", adminVerifier: ADMIN_VERIFIER });
  });
  after(async () => {
    await cleanup(root, engine);
  });

  test("creates, lists and drops databases; owner defaults to admin", async () => {
    await engine.createDatabase(id, "app_db");
    await engine.createDatabase(id, "reports");
    const dbs = await engine.listDatabases(id);
    assert.deepEqual(dbs.map((d) => [d.name, d.owner, d.system]), [
      ["app_db", "admin", false],
      ["postgres", "parhelion_system", true],
      ["reports", "admin", false],
      ["template0", "parhelion_system", true],
      ["template1", "parhelion_system", true],
    ]);
    await assert.rejects(engine.createDatabase(id, "app_db"), isCode("ERR_CONFLICT"));
    await engine.dropDatabase(id, "reports");
    await assert.rejects(engine.dropDatabase(id, "reports"), isCode("ERR_NOT_FOUND"));
    assert.deepEqual((await engine.listDatabases(id)).map((d) => d.name), ["app_db", "postgres", "template0", "template1"]);
  });

  test("refuses bad and reserved database names, system databases and superuser owners", async () => {
    for (const name of [...BAD_NAMES, ...RESERVED]) {
      await assert.rejects(engine.createDatabase(id, name), isCode("ERR_VALIDATION"), `create ${JSON.stringify(name)}`);
      await assert.rejects(engine.dropDatabase(id, name), isCode("ERR_VALIDATION"), `drop ${JSON.stringify(name)}`);
    }
    await assert.rejects(engine.createDatabase(id, "owned", "parhelion_system"), isCode("ERR_VALIDATION"));
    await assert.rejects(engine.createDatabase(id, "owned", "x;y"), isCode("ERR_VALIDATION"));
    await assert.rejects(engine.createDatabase(id, "owned", "nobody_here"), isCode("ERR_NOT_FOUND"));
    assert.ok((await engine.listDatabases(id)).every((d) => d.name !== "owned"));
  });

  test("a database in use is not dropped", async () => {
    await engine.createDatabase(id, "busy");
    const c = await connectAs(engine, id, "admin", "correct horse battery staple", "busy");
    try {
      await assert.rejects(engine.dropDatabase(id, "busy"), isCode("ERR_CONFLICT"));
    } finally {
      await c.end();
    }
    await engine.dropDatabase(id, "busy");
  });

  test("creates a user from a SCRAM verifier; it logs in with the password, owns its database and is listed with its attributes", async () => {
    const password = "app-user-plaintext-4f1c";
    const verifier = makeScramVerifier(password);
    await engine.createUser(id, "app_user", verifier, { createdb: true, memberOf: ["pg_monitor"] });
    const readerVerifier = makeScramVerifier("x");
    await engine.createUser(id, "report_reader", readerVerifier, { canLogin: false });
    await engine.createDatabase(id, "app_user_db", "app_user");
    const c = await connectAs(engine, id, "app_user", password, "app_user_db");
    try {
      await c.query("CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
      assert.deepEqual((await c.query("SELECT current_user AS u, x FROM t")).rows, [{ u: "app_user", x: 1 }]);
    } finally {
      await c.end();
    }
    const users = await engine.listUsers(id);
    assert.deepEqual(users.find((u) => u.name === "app_user"), { name: "app_user", canLogin: true, createdb: true, createrole: false, memberOf: ["pg_monitor"] });
    assert.deepEqual(users.find((u) => u.name === "report_reader"), { name: "report_reader", canLogin: false, createdb: false, createrole: false, memberOf: [] });
    assert.ok(users.some((u) => u.name === "admin"));
    assert.ok(users.every((u) => u.name !== "parhelion_system" && !u.name.startsWith("pg_")));

    assert.deepEqual(await engine.getLoginInfo(id, "app_user"), { verifier, canLogin: true, validUntil: null, tokenLogin: false });
    assert.deepEqual(await engine.getLoginInfo(id, "report_reader"), { verifier: readerVerifier, canLogin: false, validUntil: null, tokenLogin: false });
    await assert.rejects(engine.createUser(id, "app_user", verifier), isCode("ERR_CONFLICT"));
  });

  test("a password expiry is stored and reported", async () => {
    const until = new Date("2031-05-06T07:08:09.000Z");
    await engine.createUser(id, "temp_user", makeScramVerifier("t"), { validUntil: until });
    const info = await engine.getLoginInfo(id, "temp_user");
    assert.equal(info?.validUntil?.toISOString(), until.toISOString());
  });

  test("changes a password from a verifier: the old password stops working", async () => {
    await engine.createUser(id, "rotating", makeScramVerifier("old password"));
    await (await connectAs(engine, id, "rotating", "old password")).end();
    const next = makeScramVerifier("new password");
    await engine.setUserPassword(id, "rotating", next);
    assert.equal(await sqlstate(connectAs(engine, id, "rotating", "old password")), "28P01");
    await (await connectAs(engine, id, "rotating", "new password")).end();
    assert.equal((await engine.getLoginInfo(id, "rotating"))?.verifier, next);
    await assert.rejects(engine.setUserPassword(id, "nobody_here", next), isCode("ERR_NOT_FOUND"));
  });

  test("drops a user; one that owns objects is a conflict", async () => {
    await engine.createUser(id, "short_lived", makeScramVerifier("s"));
    await engine.dropUser(id, "short_lived");
    assert.equal(await engine.getLoginInfo(id, "short_lived"), null);
    await assert.rejects(engine.dropUser(id, "short_lived"), isCode("ERR_NOT_FOUND"));
    await engine.createUser(id, "owner_user", makeScramVerifier("o"));
    await engine.createDatabase(id, "owned_db", "owner_user");
    await assert.rejects(engine.dropUser(id, "owner_user"), isCode("ERR_CONFLICT"));
  });

  test("refuses bad and reserved user names, plaintext passwords and the platform's role", async () => {
    const v = makeScramVerifier("v");
    for (const name of [...BAD_NAMES, ...RESERVED]) {
      await assert.rejects(engine.createUser(id, name, v), isCode("ERR_VALIDATION"), `create ${JSON.stringify(name)}`);
      await assert.rejects(engine.setUserPassword(id, name, v), isCode("ERR_VALIDATION"), `password ${JSON.stringify(name)}`);
      await assert.rejects(engine.dropUser(id, name), isCode("ERR_VALIDATION"), `drop ${JSON.stringify(name)}`);
    }
    for (const notVerifier of ["plain password", "md5" + "0".repeat(32), "SCRAM-SHA-256$4096:c2FsdA==$short:short", ""]) {
      await assert.rejects(engine.createUser(id, "valid_name", notVerifier), isCode("ERR_VALIDATION"));
      await assert.rejects(engine.setUserPassword(id, "app_user", notVerifier), isCode("ERR_VALIDATION"));
    }
    await assert.rejects(engine.createUser(id, "valid_name", v, { memberOf: ["parhelion_system"] }), isCode("ERR_VALIDATION"));
    await assert.rejects(engine.createUser(id, "valid_name", v, { memberOf: ["x;y"] }), isCode("ERR_VALIDATION"));
    await assert.rejects(engine.createUser(id, "valid_name", v, { connectionLimit: 1.5 }), isCode("ERR_VALIDATION"));
    assert.equal(await engine.getLoginInfo(id, "valid_name"), null, "nothing was created");
  });

  test("the API has the admin's privileges, never more: server-access roles cannot be granted through it", async () => {
    for (const role of ["pg_execute_server_program", "pg_read_server_files", "pg_write_server_files"]) {
      await assert.rejects(engine.createUser(id, "escalator", makeScramVerifier("e"), { memberOf: [role] }), isCode("ERR_FORBIDDEN"), role);
    }
    assert.equal(await engine.getLoginInfo(id, "escalator"), null, "the failed create left no role behind");
  });

  test("no password and no verifier reaches the server log", async () => {
    const password = "never-in-any-log-9d2e";
    const verifier = makeScramVerifier(password);
    await engine.createUser(id, "logged_user", verifier);
    await assert.rejects(engine.createUser(id, "logged_user", verifier), isCode("ERR_CONFLICT")); // a failing statement
    await asAdmin(engine, id, (c) => c.query("SELECT 1"));
    const log = readFileSync(join(root, "ws", id, "postgres.log"), "utf8");
    assert.ok(log.includes("already exists"), "the failure was logged (control)");
    assert.ok(!log.includes(password), "the password is not in the log");
    assert.ok(!log.includes(verifier.split("$")[2] ?? verifier), "the verifier is not in the log");
  });

  test("the API needs a running workspace", async () => {
    const other = randomUUID();
    await assert.rejects(engine.listDatabases(other), isCode("ERR_WORKSPACE_UNAVAILABLE"));
    await assert.rejects(engine.withSystem(other, "postgres", async () => 1), isCode("ERR_WORKSPACE_UNAVAILABLE"));
    await assert.rejects(engine.getLoginInfo("not-a-uuid", "admin"), isCode("ERR_VALIDATION"));
  });
});
