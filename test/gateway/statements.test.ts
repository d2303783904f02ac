import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestPlatform, type TestPlatform } from "../support/platform.js";
import { createTestWorkspace, gatewayClient, type TestWorkspace } from "../support/workspaces.js";

let tp: TestPlatform;
let ws: TestWorkspace;

before(async () => {
  tp = await startTestPlatform({ env: { PARHELION_WORKSPACE_FSYNC: "false" } });
  ws = await createTestWorkspace(tp);
});

after(async () => {
  await tp?.stop();
});

/** The DatabaseStatement records so far (audit records are written asynchronously: waits for `count`). */
async function statements(count: number): Promise<any[]> {
  let got: any[] = [];
  for (const deadline = Date.now() + 15_000; Date.now() < deadline; ) {
    const r = await tp.call("GET", "/v1/auditLogs?type=DatabaseStatement&limit=200");
    assert.equal(r.status, 200, r.text);
    got = (r.body.auditLogs as any[]).reverse();
    if (got.length >= count) return got;
    await new Promise((res) => setTimeout(res, 50));
  }
  return got;
}

async function run(sqls: Array<string | { text: string; values: unknown[] }>): Promise<void> {
  const c = gatewayClient(tp, ws);
  await c.connect();
  for (const q of sqls) await c.query(q as never);
  await c.end();
}

async function setLevel(level: string): Promise<void> {
  const r = await tp.call("PATCH", `/v1/workspaceGroups/${ws.groupId}`, { body: { auditLevel: level } });
  assert.equal(r.status, 200, r.text);
  await new Promise((res) => setTimeout(res, 2100)); // the gateway's route cache
}

test("ADMIN-ONLY by default: DDL and role changes are recorded with their constants replaced; reads and writes are not", async () => {
  assert.equal((await tp.call("GET", `/v1/workspaceGroups/${ws.groupId}`)).body.auditLevel, "ADMIN-ONLY");
  // Long, distinctive constants: a short one (777) turns up by chance in the records' UUIDs and durations.
  await run(["create table aud_t (a int default 42424242)", "select 31337313 as n from aud_t", "insert into aud_t values (77707770)", "grant select on aud_t to pg_monitor"]);
  const recs = await statements(2);
  assert.deepEqual(recs.map((r) => r.attributes.commands), [["CreateStmt"], ["GrantStmt"]]);
  assert.equal(recs[0].attributes.statement, "create table aud_t (a int default $1)");
  assert.deepEqual(recs[0].attributes.statementClasses, ["DDL"]);
  assert.equal(recs[0].attributes.protocol, "simple");
  assert.equal(recs[0].attributes.plaintext, false);
  assert.equal(recs[0].attributes.databaseUser, "admin");
  assert.ok(recs[0].attributes.sessionID);
  const all = JSON.stringify(recs);
  for (const v of ["42424242", "31337313", "77707770"]) assert.ok(!all.includes(v), `${v} never reaches the log`);
});

test("levels are validated and changing one needs no restart: ALL-QUERIES records reads and the extended protocol's statements, never bound values", async () => {
  const bad = await tp.call("PATCH", `/v1/workspaceGroups/${ws.groupId}`, { body: { auditLevel: "EVERYTHING" } });
  assert.equal(bad.status, 400);
  const before = (await statements(0)).length;
  await setLevel("ALL-QUERIES");
  await run(["select 'hidden-literal' as s", { text: "insert into aud_t values ($1)", values: [90210] }, { text: "select a from aud_t where a = $1", values: [90210] }]);
  const recs = (await statements(before + 3)).slice(before);
  assert.deepEqual(recs.map((r) => [r.attributes.protocol, r.attributes.statement]), [
    ["simple", "select $1 as s"],
    ["extended", "insert into aud_t values ($1)"],
    ["extended", "select a from aud_t where a = $1"],
  ]);
  const all = JSON.stringify(recs);
  assert.ok(!all.includes("hidden-literal") && !all.includes("90210"));
});

test("ALL-QUERIES-PLAINTEXT records texts as sent, except passwords; OFF records nothing", async () => {
  let before = (await statements(0)).length;
  await setLevel("ALL-QUERIES-PLAINTEXT");
  await run(["select 'visible-literal' as s", "create role aud_role login password 'never-logged-pw'", "drop role aud_role"]);
  const recs = (await statements(before + 3)).slice(before);
  assert.equal(recs[0].attributes.statement, "select 'visible-literal' as s");
  assert.equal(recs[0].attributes.plaintext, true);
  assert.equal(recs[1].attributes.statement, "create role aud_role login password $1");
  assert.equal(recs[1].attributes.plaintext, false);
  assert.ok(!JSON.stringify(recs).includes("never-logged-pw"));

  before = (await statements(0)).length;
  await setLevel("OFF");
  await run(["create table aud_off (a int)", "drop table aud_off"]);
  await new Promise((res) => setTimeout(res, 500));
  assert.equal((await statements(0)).length, before, "nothing recorded at OFF");
  await setLevel("ADMIN-ONLY");
});

test("a database user's own level overrides the group's; null goes back to the group's", async () => {
  const admin = gatewayClient(tp, ws);
  await admin.connect();
  await admin.query("create role aud_app login password 'App-password-123'");
  await admin.end();
  const patch = (body: unknown) => tp.call("PATCH", `/v1/workspaces/${ws.workspaceId}/users/aud_app`, { body });
  assert.equal((await patch({})).status, 400, "password or auditLevel");
  assert.equal((await patch({ auditLevel: "LOUD" })).status, 400);
  assert.equal((await patch({ auditLevel: "ALL-QUERIES" })).status, 200);
  const users = await tp.call("GET", `/v1/workspaces/${ws.workspaceId}/users`);
  assert.equal(users.body.find((u: any) => u.userName === "aud_app").auditLevel, "ALL-QUERIES");
  assert.equal(users.body.find((u: any) => u.userName === "admin").auditLevel, null);
  await new Promise((res) => setTimeout(res, 2100)); // the gateway's cache
  const runAs = async (sql: string) => {
    const c = gatewayClient(tp, ws, { user: "aud_app", password: "App-password-123" });
    await c.connect();
    await c.query(sql);
    await c.end();
  };
  let before = (await statements(0)).length;
  await runAs("select 'app-read' as a");
  await run(["select 'admin-read' as b"]); // admin stays at the group's ADMIN-ONLY
  const recs = (await statements(before + 1)).slice(before);
  await new Promise((res) => setTimeout(res, 300));
  const after = (await statements(0)).slice(before);
  assert.deepEqual(after.map((r) => [r.attributes.databaseUser, r.attributes.statement]), [["aud_app", "select $1 as a"]]);
  assert.equal(recs.length, 1);
  assert.equal((await patch({ auditLevel: null })).status, 200);
  await new Promise((res) => setTimeout(res, 2100));
  before = (await statements(0)).length;
  await runAs("select 'app-read-again' as a");
  await new Promise((res) => setTimeout(res, 500));
  assert.equal((await statements(0)).length, before, "back to the group's ADMIN-ONLY");
});
