import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { runCli, startSignedInPlatform, type SignedInPlatform } from "./helpers.js";
import { passwordFile } from "../support/workspaces.js";

let env: SignedInPlatform;
let pwFile = "";

before(async () => {
  env = await startSignedInPlatform("parhelion-cli-ws-", { PARHELION_WORKSPACE_FSYNC: "false" });
  pwFile = passwordFile(env.dir.path, "admin.pw", "cli-admin-password-1");
});

after(async () => {
  await env?.stop();
});

const cli = (args: string[], extra: Record<string, string> = {}) => runCli(args, { env: { PARHELION_HOME: env.home, ...extra }, timeoutMs: 120_000 });

test("workspace-group create, workspace create --wait, sql and connect --print, suspend and delete from the CLI", async () => {
  let r = await cli(["-o", "json", "workspace-group", "create", "cli-group", "--firewall", "127.0.0.1/32,::1", "--admin-password-file", pwFile]);
  assert.equal(r.code, 0, r.stderr);
  const groupId = JSON.parse(r.stdout).workspaceGroupID as string;
  assert.equal(JSON.parse(r.stdout).adminPassword, undefined, "a given password is not echoed");

  r = await cli(["-o", "json", "workspace", "create", "app", "--group", "cli-group", "--wait"]);
  assert.equal(r.code, 0, r.stderr);
  const ws = JSON.parse(r.stdout);
  assert.equal(ws.state, "ACTIVE");

  r = await cli(["-o", "json", "sql", "app", "select current_user as u, 6 * 7 as n", "--password-file", pwFile]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout).rows, [{ u: "admin", n: 42 }]);

  r = await cli(["sql", "app", "select nope from nowhere", "--password-file", pwFile]);
  assert.equal(r.code, 6);
  assert.match(r.stderr, /nowhere/);

  // No user and no password: a short-lived credential of the caller's own (here: the owner API key's).
  r = await cli(["-o", "json", "sql", "app", "select current_user as u, pg_has_role('admin', 'MEMBER') as full_access"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(JSON.parse(r.stdout).rows[0].u, /^apikey:[0-9a-f-]{36}$/);
  assert.equal(JSON.parse(r.stdout).rows[0].full_access, true);
  assert.match(r.stderr, /short-lived credential for database user apikey:/);
  r = await cli(["connect", "app", "--print"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /user=apikey:[0-9a-f-]{36} dbname=postgres sslmode=verify-full/);
  assert.ok(!r.stdout.includes("eyJ"), "the token is not printed");

  r = await cli(["connect", "app", "--print", "-U", "admin"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`host=${ws.endpoint} hostaddr=127\\.0\\.0\\.1 port=${ws.port} user=admin dbname=postgres sslmode=verify-full sslrootcert=${join(env.tp.dataDir, "tls", "ca.crt").replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`));

  r = await cli(["connect", "app", "-c", "select 1"]);
  assert.notEqual(r.code, 0, "connect takes no psql arguments (it runs psql interactively)");

  r = await cli(["workspace-group", "update", "cli-group", "--audit-level", "WRITES-ONLY"]);
  assert.equal(r.code, 0, r.stderr);
  r = await cli(["workspace-group", "update", "cli-group", "--audit-level", "NOT-A-LEVEL"]);
  assert.notEqual(r.code, 0, "a level that does not exist is refused");
  r = await cli(["-o", "table", "workspace-group", "list"]);
  assert.match(r.stdout, /cli-group .*WRITES-ONLY/);

  r = await cli(["-o", "table", "workspace", "list"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /app\s+ACTIVE\s+S-00/);

  r = await cli(["-o", "table", "workspace", "user", "create", "app", "reader"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /password \(shown once\): \S{20,}/);
  r = await cli(["workspace", "user", "update", "app", "reader", "--audit-level", "ALL-QUERIES"]);
  assert.equal(r.code, 0, r.stderr);
  r = await cli(["-o", "json", "workspace", "user", "list", "app"]);
  assert.equal(JSON.parse(r.stdout).find((u: any) => u.userName === "reader").auditLevel, "ALL-QUERIES");
  r = await cli(["workspace", "user", "update", "app", "reader", "--audit-level", "group"]);
  assert.equal(r.code, 0, r.stderr);
  r = await cli(["-o", "json", "workspace", "user", "list", "app"]);
  assert.equal(JSON.parse(r.stdout).find((u: any) => u.userName === "reader").auditLevel, null);
  r = await cli(["workspace", "user", "update", "app", "reader"]);
  assert.notEqual(r.code, 0, "nothing to change");

  r = await cli(["workspace", "suspend", "app", "--wait"]);
  assert.equal(r.code, 0, r.stderr);
  r = await cli(["sql", "app", "select 1", "--password-file", pwFile]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /suspended/);

  r = await cli(["workspace-group", "delete", "cli-group"]);
  assert.equal(r.code, 6, "a group with workspaces needs --force");
  r = await cli(["workspace", "delete", "app", "--wait"]);
  assert.equal(r.code, 0, r.stderr);
  r = await cli(["-o", "json", "workspace-group", "delete", groupId]);
  assert.equal(r.code, 0, r.stderr);
});

test("workspace-group create --kms-provider/--kms-key-id: a key the installation cannot use creates no group; half the flags is a usage error", async () => {
  const pin = passwordFile(env.dir.path, "hsm.pin", "1234");
  const r = await cli(["workspace-group", "create", "kms-born", "--kms-provider", "pkcs11", "--kms-key-id", "tok/label", "--kms-pin-file", pin]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /ERR_FIELD_NOT_SUPPORTED|ERR_KMS_KEY_UNUSABLE/);
  assert.ok(!r.stderr.includes("1234"), "the PIN is not echoed");
  const list = await cli(["-o", "json", "workspace-group", "list"]);
  assert.equal(list.code, 0, list.stderr);
  assert.ok(!(JSON.parse(list.stdout) as Array<{ name: string }>).some((g) => g.name === "kms-born"), "no group was left");
  const usage = await cli(["workspace-group", "create", "kms-half", "--kms-key-id", "alias/x"]);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /--kms-provider and --kms-key-id together/);
});
