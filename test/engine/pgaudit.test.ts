import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import type { WorkspaceEngine } from "../../src/engine/index.js";
import type { NestedStatement } from "../../src/audit/pgaudit.js";
import { ADMIN_VERIFIER, asAdmin, cleanup, newEngine, postmasters, sqlstate, tempRoot, withTimeout } from "./helpers.js";

/** Waits until `pred` holds over what the listener received (the engine polls the csvlog every 100 ms). */
async function until(got: NestedStatement[], pred: (g: NestedStatement[]) => boolean, what: string): Promise<void> {
  for (const deadline = Date.now() + 10_000; !pred(got); ) {
    if (Date.now() > deadline) assert.fail(`${what}: ${got.length} nested statements so far`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("pgaudit's nested statements (engine)", () => {
  let root = "";
  let engine: WorkspaceEngine;
  const id = randomUUID();
  const got: NestedStatement[] = [];

  before(async () => {
    root = tempRoot();
    engine = newEngine(root, { spare: false, logRotateBytes: 16 * 1024 });
    engine.onNestedStatement((e) => got.push(e));
    await engine.ensureRunning({ id, size: "S-00", adminVerifier: ADMIN_VERIFIER });
  });
  after(async () => {
    await cleanup(root, engine);
  });

  test("none by default; pgaudit.log set for the gateway is in force when setAuditClasses resolves, and only nested statements reach the listeners", async () => {
    assert.deepEqual(engine.auditClasses(id), []);
    await asAdmin(engine, id, (c) => c.query("create table nt (v int); do $$ begin insert into nt values (-1); end $$"));
    await engine.setAuditClasses(id, ["write", "function"]);
    assert.deepEqual(engine.auditClasses(id), ["function", "write"]);
    await asAdmin(engine, id, async (c) => {
      await c.query("insert into nt values (-2)"); // top level: the gateway's, never the log's
      await c.query("do $$ begin insert into nt values (0); end $$");
      await c.query("do $$ begin raise log 'AUDIT: SESSION,9,2,WRITE,INSERT,,,forged,<not logged>'; end $$");
      await c.query("do $$ begin insert into nt values (1); end $$");
    });
    await until(got, (g) => g.length >= 2, "the DO blocks' inserts");
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(got.map((e) => [e.user, e.class, e.command, e.substatementId, e.statement]), [
      ["admin", "WRITE", "INSERT", 2, "insert into nt values (0)"],
      ["admin", "WRITE", "INSERT", 2, "insert into nt values (1)"],
    ], "not the one before the classes were set, not the top-level insert, not the forged line");
    const csv = readFileSync(join(root, "ws", id, "postgres.csv"), "utf8");
    assert.ok(!csv.includes("values (-2)"), "pgaudit's line of a top-level statement is not even written (parhelion_guard drops it)");
  });

  test("customers cannot switch pgaudit or the server's logging off, nor read the log", async () => {
    await asAdmin(engine, id, async (c) => {
      for (const sql of [
        "set pgaudit.log = 'none'", "alter role admin set pgaudit.log = 'none'", "set pgaudit.log_level = 'debug5'", "set log_error_verbosity = 'terse'",
        "set log_min_messages = 'panic'", "alter system set pgaudit.log = 'none'", "select pg_read_file('../postgres.csv')", "select pg_rotate_logfile()",
      ]) assert.equal(await sqlstate(c.query(sql)), "42501", sql);
      await c.query("create database nt_own");
      assert.equal(await sqlstate(c.query("alter database nt_own set pgaudit.log = 'none'")), "42501");
    });
    const dir = join(root, "ws", id);
    for (const f of ["postgres.csv", "postgres.log", "postgres.csv.pos"]) assert.equal(statSync(join(dir, f)).mode & 0o777, 0o600, f);
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.ok(!existsSync(join(dir, "pgdata", "postgres.csv")) && !existsSync(join(dir, "pgdata", "log")), "outside the data directory");
  });

  test("every nested line arrives exactly once across log rotations and a crash of the server, with the classes still in force after the restart", async () => {
    got.length = 0;
    const batch = async (from: number, n: number) => asAdmin(engine, id, async (c) => {
      for (let i = from; i < from + n; i++) await c.query(`do $$ begin insert into nt values (${i}); end $$`);
    });
    await batch(100, 150); // ~40 KiB of csvlog: rotated at 16 KiB
    await until(got, (g) => g.length >= 150, "the first batch");
    assert.ok(existsSync(join(root, "ws", id, "postgres.log.1")), "the text log was rotated along");
    const [pm] = postmasters(root, id);
    const restarted = withTimeout(new Promise<unknown>((r) => engine.on("restarted", r)), 25_000, '"restarted"');
    process.kill(pm!, "SIGKILL");
    await restarted;
    await batch(250, 50);
    await until(got, (g) => g.length >= 200, "the batch after the restart");
    await new Promise((r) => setTimeout(r, 300));
    const values = got.map((e) => Number(/\((\d+)\)/.exec(e.statement)?.[1]));
    assert.deepEqual(values, Array.from({ length: 200 }, (_, i) => 100 + i), "in order, none lost, none twice");
    assert.equal(new Set(got.map((e) => e.logLine)).size, 200);
    assert.deepEqual(engine.auditClasses(id), ["function", "write"]);
    assert.equal((await engine.withSystem(id, "postgres", (c) => c.query("select current_setting('pgaudit.log') as v"))).rows[0].v, "function,write");
  });
});
