import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import type { TestPlatform } from "../support/platform.js";
import { runCli, startSignedInPlatform, type SignedInPlatform } from "./helpers.js";
import { createCA } from "../../src/tls/index.js";
import { EXIT_CODES } from "../../src/cli/errors.js";
import { formatTable } from "../../src/cli/output.js";

let tp: TestPlatform;
let dir: { path: string; remove: () => void };
let keyFile: string;
/** PARHELION_HOME signed in as the owner (in before()); each test that needs a fresh home makes its own. */
let home: string;
let env: SignedInPlatform;

before(async () => {
  env = await startSignedInPlatform("parhelion-cli-");
  ({ tp, dir, keyFile, home } = env);
});

after(async () => {
  await env?.stop();
});

const cli = (args: string[], extra: Record<string, string> = {}, input?: string) => runCli(args, { env: { PARHELION_HOME: home, ...extra }, ...(input === undefined ? {} : { input }) });

async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

test("login validates the key, saves it mode 0600 in a 0700 dir, never prints it; logout deletes it", async () => {
  const h = join(dir.path, "login-home");
  const r = await runCli(["login", "--data-dir", tp.dataDir, "--api-key-file", keyFile], { env: { PARHELION_HOME: h } });
  assert.equal(r.code, 0, r.stderr);
  assert.ok(!r.stdout.includes(tp.ownerKey) && !r.stderr.includes(tp.ownerKey), "the key was printed");
  const file = join(h, "credentials.json");
  assert.equal(statSync(file).mode & 0o777, 0o600);
  assert.equal(statSync(h).mode & 0o777, 0o700);
  const saved = JSON.parse(readFileSync(file, "utf8"));
  assert.deepEqual(saved, { url: tp.apiUrl, caFile: join(tp.dataDir, "tls", "ca.crt"), apiKey: tp.ownerKey });
  assert.equal(JSON.parse(r.stdout).kind, "apiKey");

  const out = await runCli(["logout"], { env: { PARHELION_HOME: h } });
  assert.equal(out.code, 0, out.stderr);
  assert.equal(existsSync(file), false);
  const after = await runCli(["org", "show"], { env: { PARHELION_HOME: h } });
  assert.equal(after.code, 3);
  assert.match(after.stderr, /parhelion login/);
});

test("login with a rejected key exits 3 and saves nothing", async () => {
  const h = join(dir.path, "bad-home");
  const bad = join(dir.path, "bad.key");
  writeFileSync(bad, "phk_not-a-real-key-0123456789\n", { mode: 0o600 });
  const r = await runCli(["login", "--data-dir", tp.dataDir, "--api-key-file", bad], { env: { PARHELION_HOME: h } });
  assert.equal(r.code, 3, r.stderr);
  assert.match(r.stderr, /ERR_API_KEY_INVALID/);
  assert.ok(!r.stderr.includes("phk_not-a-real-key"), "the rejected key was echoed");
  assert.equal(existsSync(join(h, "credentials.json")), false);
});

test("login refuses a plain-http URL (exit 2): a key never crosses plaintext", async () => {
  const r = await runCli(["login", "--url", tp.apiUrl.replace("https:", "http:"), "--api-key-file", keyFile], { env: { PARHELION_HOME: join(dir.path, "http-home") } });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /https/);
});

test("login rejects a server whose certificate the given CA did not issue (exit 7, verification stays on)", async () => {
  const bundle = join(dir.path, "other-ca.crt");
  writeFileSync(bundle, (await createCA({ commonName: "another CA", validDays: 1 })).certPem);
  const r = await runCli(["login", "--url", tp.apiUrl, "--ca-file", bundle, "--api-key-file", keyFile], { env: { PARHELION_HOME: join(dir.path, "ca-home") } });
  assert.equal(r.code, 7, r.stderr);
  assert.match(r.stderr, /not trusted/);
  assert.equal(existsSync(join(dir.path, "ca-home", "credentials.json")), false);
});

test("org show --output json answers the API's organization", async () => {
  const r = await cli(["org", "show", "--output", "json"]);
  assert.equal(r.code, 0, r.stderr);
  const org = JSON.parse(r.stdout);
  const want = await tp.call("GET", "/v1/organizations/current");
  assert.equal(org.orgID, want.body.orgID);
  assert.deepEqual(org, want.body);
});

test("user invite: user list shows the pending invitation; the token is printed once", async () => {
  const email = `invitee-${randomUUID().slice(0, 8)}@example.com`;
  const inv = await cli(["user", "invite", email, "--role", "Auditor", "--message", "welcome", "--output", "json"]);
  assert.equal(inv.code, 0, inv.stderr);
  const created = JSON.parse(inv.stdout);
  assert.equal(created.email, email);
  assert.equal(typeof created.token, "string");
  const list = await cli(["user", "list", "--output", "json"]);
  assert.equal(list.code, 0, list.stderr);
  const { users, invitations } = JSON.parse(list.stdout);
  assert.ok(users.some((u: { email: string }) => u.email === "owner@parhelion.local"));
  const found = invitations.find((i: { email: string }) => i.email === email);
  assert.ok(found, "the invitation is not listed");
  assert.equal(found.role, "Auditor");
  assert.equal(found.token, undefined, "a list must not carry invitation tokens");
  const table = await cli(["user", "list", "--output", "table"]);
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, new RegExp(`${email.replace(/[.]/g, "\\.")}\\s+-\\s+invited \\(Auditor\\)`));
});

test("api-key create prints a working key once; list never shows it; after revoke it exits 3", async () => {
  const c = await cli(["api-key", "create", "--name", "ci", "--role", "Auditor", "--expires-in", "1d", "--output", "json"]);
  assert.equal(c.code, 0, c.stderr);
  const k = JSON.parse(c.stdout);
  assert.equal(typeof k.key, "string");
  assert.match(c.stderr, /will not be shown again/);
  assert.ok(!c.stderr.includes(k.key), "the key went to stderr");
  const expires = Date.parse(k.expiresAt) - Date.now();
  assert.ok(expires > 23 * 3600_000 && expires <= 24 * 3600_000, `expiresAt ${k.expiresAt} is not a day ahead`);

  const asKey = await cli(["whoami", "--output", "json"], { PARHELION_API_KEY: k.key });
  assert.equal(asKey.code, 0, asKey.stderr);
  assert.equal(JSON.parse(asKey.stdout).apiKeyID, k.apiKeyID, "PARHELION_API_KEY did not override the saved key");

  const table = await cli(["api-key", "create", "--name", "table", "--role", "Member", "--output", "table"]);
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, /^\S+\n$/, "table output must be the key alone on one line");

  const list = await cli(["api-key", "list", "--output", "json"]);
  assert.equal(list.code, 0, list.stderr);
  assert.ok(!list.stdout.includes(k.key) && !list.stdout.includes(table.stdout.trim()), "a key is listed");
  const keys = JSON.parse(list.stdout) as Array<{ apiKeyID: string; key?: string }>;
  assert.ok(keys.some((x) => x.apiKeyID === k.apiKeyID));
  assert.ok(keys.every((x) => x.key === undefined));

  const rev = await cli(["api-key", "revoke", k.apiKeyID]);
  assert.equal(rev.code, 0, rev.stderr);
  const revoked = await cli(["org", "show"], { PARHELION_API_KEY: k.key });
  assert.equal(revoked.code, 3);
  assert.match(revoked.stderr, /PARHELION_API_KEY/);
});

test("audit list --output json includes the ApiKeyCreate record; --all and --type filter", async () => {
  const r = await cli(["audit", "list", "--output", "json"]);
  assert.equal(r.code, 0, r.stderr);
  const page = JSON.parse(r.stdout);
  assert.ok(Array.isArray(page.auditLogs));
  assert.ok(page.auditLogs.some((a: { type: string; resourceType: string }) => a.type === "ApiKeyCreate" && a.resourceType === "ApiKey"));

  const all = await cli(["audit", "list", "--type", "ApiKeyCreate", "--limit", "1", "--all", "--since", "1h", "--output", "json"]);
  assert.equal(all.code, 0, all.stderr);
  const records = JSON.parse(all.stdout).auditLogs as Array<{ type: string; seq: string }>;
  assert.ok(records.length >= 2, "--all did not follow nextToken past a page of 1");
  assert.ok(records.every((a) => a.type === "ApiKeyCreate"));
  assert.equal(new Set(records.map((a) => a.seq)).size, records.length, "a page was fetched twice");
});

test("audit verify exits 0 on an intact chain", async () => {
  const r = await cli(["audit", "verify", "--output", "json"]);
  assert.equal(r.code, 0, r.stderr);
  const v = JSON.parse(r.stdout);
  assert.equal(v.ok, true);
  assert.ok(v.checked > 0);
  const t = await cli(["audit", "verify", "--output", "table"]);
  assert.equal(t.code, 0);
  assert.match(t.stdout, /audit chain OK/);
});

test("teams: create, add-member by email, show, access grant and show, role list, delete", async () => {
  const c = await cli(["team", "create", "dbas", "--description", "database admins", "--output", "json"]);
  assert.equal(c.code, 0, c.stderr);
  const { teamID } = JSON.parse(c.stdout);
  const add = await cli(["team", "add-member", teamID, "--user", "owner@parhelion.local"]);
  assert.equal(add.code, 0, add.stderr);
  const show = await cli(["team", "show", teamID, "--output", "json"]);
  assert.equal(show.code, 0, show.stderr);
  assert.deepEqual(JSON.parse(show.stdout).memberUsers.map((u: { email: string }) => u.email), ["owner@parhelion.local"]);

  const roles = await cli(["role", "list", "Team", "--output", "json"]);
  assert.equal(roles.code, 0, roles.stderr);
  assert.ok(JSON.parse(roles.stdout).some((r: { role: string }) => r.role === "Reader"));

  const grant = await cli(["access", "grant", "--team", teamID, "--role", "Reader", "--user", "owner@parhelion.local"]);
  assert.equal(grant.code, 0, grant.stderr);
  const acl = await cli(["access", "show", "--team", teamID, "--output", "json"]);
  assert.equal(acl.code, 0, acl.stderr);
  const reader = JSON.parse(acl.stdout).find((v: { role: string }) => v.role === "Reader");
  assert.deepEqual(reader.users.map((u: { email: string }) => u.email), ["owner@parhelion.local"]);
  const orgAcl = await cli(["access", "show", "--org", "--output", "table"]);
  assert.equal(orgAcl.code, 0, orgAcl.stderr);
  assert.match(orgAcl.stdout, /^Owner\s+owner@parhelion\.local/m);

  const both = await cli(["access", "show", "--org", "--team", teamID]);
  assert.equal(both.code, 2, "--org and --team together must be a usage error");

  const rm = await cli(["team", "remove-member", teamID, "--user", "owner@parhelion.local"]);
  assert.equal(rm.code, 0, rm.stderr);
  const del = await cli(["team", "delete", teamID]);
  assert.equal(del.code, 0, del.stderr);
  const gone = await cli(["team", "show", teamID]);
  assert.equal(gone.code, 5);
});

test("user set-password --password-stdin sets a password the login route then accepts", async () => {
  const password = `cli-test-${randomUUID()}`;
  const r = await cli(["user", "set-password", "--password-stdin"], {}, password + "\n");
  assert.equal(r.code, 0, r.stderr);
  assert.ok(!r.stdout.includes(password) && !r.stderr.includes(password));
  const login = await tp.call("POST", "/v1/auth/login", { key: null, body: { email: "owner@parhelion.local", password } });
  assert.equal(login.status, 200, login.text);
  const empty = await cli(["user", "set-password", "--password-stdin"], {}, "\n");
  assert.equal(empty.code, 2);
});

test("exit codes: 2 bad flag or format, 5 unknown id, 6 rejected value, 7 unreachable", async () => {
  const badFlag = await cli(["org", "show", "--no-such-flag"]);
  assert.equal(badFlag.code, 2);
  assert.match(badFlag.stderr, /unknown option/);
  assert.equal((await cli(["org", "show", "--output", "xml"])).code, 2);
  assert.equal((await cli(["api-key", "create", "--name", "x", "--role", "Member", "--expires-in", "soon"])).code, 2);
  assert.equal((await cli(["user"])).code, 2, "a command group without a subcommand is a usage error");

  const notFound = await cli(["team", "show", randomUUID()]);
  assert.equal(notFound.code, 5);
  assert.match(notFound.stderr, /ERR_NOT_FOUND/);
  assert.match(notFound.stderr, /request /, "the request id is reported");

  const rejected = await cli(["team", "show", "not-a-uuid"]);
  assert.equal(rejected.code, 6);
  assert.match(rejected.stderr, /ERR_VALIDATION/);

  const port = await closedPort();
  const down = await cli(["org", "show"], { PARHELION_API_URL: `https://127.0.0.1:${port}` });
  assert.equal(down.code, 7);
  assert.match(down.stderr, /parhelion up/);
});

test("--help and docs/cli.md both document every exit code", async () => {
  const r = await cli(["--help"]);
  assert.equal(r.code, 0);
  const doc = readFileSync(new URL("../../../docs/cli.md", import.meta.url), "utf8");
  for (const e of EXIT_CODES) {
    assert.ok(r.stdout.includes(`  ${e.code}  ${e.meaning}`), `--help lacks exit code ${e.code}`);
    assert.match(doc, new RegExp(`^\\| ${e.code} \\|`, "m"), `docs/cli.md lacks exit code ${e.code}`);
  }
});

test("table cells mask control characters so server text cannot drive the terminal", () => {
  const out = formatTable([{ a: "x", b: "evil\u001b[2Jname" }, { a: "longer", b: null }], [{ header: "A", get: (r) => r.a }, { header: "B", get: (r) => r.b }]);
  assert.equal(out, "A       B\nx       evil?[2Jname\nlonger  -\n");
});
