import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import type { TestPlatform } from "../support/platform.js";
import { runCli, startSignedInPlatform, type SignedInPlatform, type CliResult } from "./helpers.js";

let tp: TestPlatform;
let dir: { path: string; remove: () => void };
let keyFile: string;
/** PARHELION_HOME signed in with the owner's API key. */
let ownerHome: string;
let env: SignedInPlatform;

before(async () => {
  env = await startSignedInPlatform("parhelion-cli-session-");
  ({ tp, dir, keyFile, home: ownerHome } = env);
});

after(async () => {
  await env?.stop();
});

const run = (home: string, args: string[], input?: string, extra: Record<string, string> = {}) =>
  runCli(args, { env: { PARHELION_HOME: home, ...extra }, ...(input === undefined ? {} : { input }) });

/** Fails when any secret shows up in the output of any run. */
function assertNoSecrets(runs: CliResult[], secrets: string[]): void {
  for (const r of runs) {
    for (const s of secrets) {
      assert.ok(s.length >= 8, "a secret to look for is too short to mean anything");
      assert.ok(!r.stdout.includes(s), "a secret was printed on stdout");
      assert.ok(!r.stderr.includes(s), "a secret was printed on stderr");
    }
  }
}

/** An invitation made with the owner's key through the CLI; answers its email and single-use token. */
async function invite(role: string): Promise<{ email: string; token: string }> {
  const email = `person-${randomUUID().slice(0, 8)}@example.com`;
  const r = await run(ownerHome, ["user", "invite", email, "--role", role, "--output", "json"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /parhelion invitation accept/, "the invite hint does not name `invitation accept`");
  const token = JSON.parse(r.stdout).token as string;
  assert.equal(typeof token, "string");
  return { email, token };
}

const strongPassword = () => `pw-${randomUUID()}`;
const accept = (token: string, password: string, extra: string[] = []) =>
  run(join(dir.path, "nobody"), ["invitation", "accept", "--data-dir", tp.dataDir, "--token-stdin", "--password-stdin", "--output", "json", ...extra], `${token}\n${password}\n`);
const loginAs = (home: string, email: string, password: string) => run(home, ["login", "--data-dir", tp.dataDir, "--email", email, "--password-stdin", "--output", "json"], password + "\n");

function savedSession(home: string): { url: string; caFile: string | null; apiKey?: string; session?: { cookie: string; csrfToken: string; expiresAt: string; email: string } } {
  return JSON.parse(readFileSync(join(home, "credentials.json"), "utf8"));
}

async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** The Admin invitee the later tests sign in as. */
let admin: { email: string; password: string; userID: string };

test("invitation accept creates the user from stdin secrets; the same token a second time exits 6", async () => {
  const { email, token } = await invite("Admin");
  const password = strongPassword();
  const ok = await accept(token, password, ["--first-name", "Ada", "--last-name", "Lovelace"]);
  assert.equal(ok.code, 0, ok.stderr);
  const body = JSON.parse(ok.stdout);
  assert.equal(body.email, email);
  assert.match(body.userID, /^[0-9a-f-]{36}$/);
  assert.ok(ok.stderr.includes(`parhelion login --data-dir ${tp.dataDir} --email ${email}`), `no next step in: ${ok.stderr}`);
  const users = await tp.call("GET", `/v1/users?email=${encodeURIComponent(email)}`);
  assert.equal(users.status, 200, users.text);
  assert.deepEqual(users.body.map((u: { userID: string; firstName: string; lastName: string }) => [u.userID, u.firstName, u.lastName]), [[body.userID, "Ada", "Lovelace"]]);

  const table = await run(join(dir.path, "nobody"), ["invitation", "accept", "--data-dir", tp.dataDir, "--token-stdin", "--password-stdin", "--output", "table"], `${token}\n${password}\n`);
  assert.equal(table.code, 6, table.stderr);
  assert.match(table.stderr, /ERR_INVITATION_INVALID/);
  assert.match(table.stderr, /hint: .*new invitation/);
  assert.equal(table.stdout, "");
  assertNoSecrets([ok, table], [token, password]);
  admin = { email, password, userID: body.userID };
});

test("invitation accept with a weak password exits 6 naming the policy; the invitation stays usable", async () => {
  const { email, token } = await invite("Member");
  const weak = await accept(token, "short1");
  assert.equal(weak.code, 6, weak.stderr);
  assert.match(weak.stderr, /ERR_PASSWORD_POLICY/);
  assert.match(weak.stderr, /at least \d+ characters/);
  assert.ok(!weak.stderr.includes("short1"), "the rejected password was echoed");
  const good = strongPassword();
  const ok = await accept(token, good);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(JSON.parse(ok.stdout).email, email);
  assertNoSecrets([weak, ok], [token, good]);
});

test("invitation accept never reads the token from argv, and without a terminal needs --token-stdin (exit 2)", async () => {
  const noStdin = await run(join(dir.path, "nobody"), ["invitation", "accept", "--data-dir", tp.dataDir, "--password-stdin"], "x\n");
  assert.equal(noStdin.code, 2, noStdin.stderr);
  assert.match(noStdin.stderr, /--token-stdin/);
  const argv = await run(join(dir.path, "nobody"), ["invitation", "accept", "--data-dir", tp.dataDir, "--token", "abc"]);
  assert.equal(argv.code, 2);
  assert.match(argv.stderr, /unknown option/);
  const noPassword = await run(join(dir.path, "nobody"), ["invitation", "accept", "--data-dir", tp.dataDir, "--token-stdin"], "sometoken\n");
  assert.equal(noPassword.code, 2, noPassword.stderr);
  assert.match(noPassword.stderr, /--password-stdin/);
});

test("login --email saves a session (0600, no key); whoami is the user with the invited role; a mutation carries the CSRF token", async () => {
  const home = join(dir.path, "admin-home");
  const login = await loginAs(home, admin.email, admin.password);
  assert.equal(login.code, 0, login.stderr);
  assert.equal(JSON.parse(login.stdout).kind, "user");
  const file = join(home, "credentials.json");
  assert.equal(statSync(file).mode & 0o777, 0o600);
  const saved = savedSession(home);
  assert.equal(saved.apiKey, undefined, "a session login saved an API key");
  assert.equal(saved.url, tp.apiUrl);
  assert.equal(saved.caFile, join(tp.dataDir, "tls", "ca.crt"));
  assert.ok(saved.session, "no session saved");
  assert.equal(saved.session.email, admin.email);
  assert.ok(Date.parse(saved.session.expiresAt) > Date.now(), "the saved session is already expired");
  assert.ok(saved.session.cookie.length >= 16 && saved.session.csrfToken.length >= 16);

  const who = await run(home, ["whoami", "--output", "json"]);
  assert.equal(who.code, 0, who.stderr);
  const w = JSON.parse(who.stdout);
  assert.equal(w.kind, "user");
  assert.equal(w.email, admin.email);
  assert.equal(w.userID, admin.userID);
  assert.deepEqual(w.roles, ["Admin"]);
  assert.equal(typeof w.sessionID, "string", "whoami did not go through the session");

  const team = await run(home, ["team", "create", `x-${randomUUID().slice(0, 8)}`, "--output", "json"]);
  assert.equal(team.code, 0, team.stderr);
  const { teamID } = JSON.parse(team.stdout);
  // The same call without the CSRF token is refused: the CLI's success above means it sent it.
  const noCsrf = await tp.call("POST", "/v1/teams", { key: null, headers: { cookie: `parhelion_session=${saved.session.cookie}` }, body: { name: `y-${randomUUID().slice(0, 8)}` } });
  assert.equal(noCsrf.status, 403, noCsrf.text);
  assert.equal(noCsrf.body.code, "ERR_CSRF");
  const del = await run(home, ["team", "delete", teamID]);
  assert.equal(del.code, 0, del.stderr);

  assertNoSecrets([login, who, team, del], [admin.password, saved.session.cookie, saved.session.csrfToken]);
});

test("an API-key login replaces a session login and vice versa", async () => {
  const home = join(dir.path, "switch-home");
  assert.equal((await loginAs(home, admin.email, admin.password)).code, 0);
  const first = savedSession(home).session!;
  const key = await run(home, ["login", "--data-dir", tp.dataDir, "--api-key-file", keyFile]);
  assert.equal(key.code, 0, key.stderr);
  const asKey = savedSession(home);
  assert.equal(asKey.session, undefined);
  assert.equal(asKey.apiKey, tp.ownerKey);
  const who = await run(home, ["whoami", "--output", "json"]);
  assert.equal(JSON.parse(who.stdout).kind, "apiKey");
  const back = await loginAs(home, admin.email, admin.password);
  assert.equal(back.code, 0, back.stderr);
  const asSession = savedSession(home);
  assert.equal(asSession.apiKey, undefined);
  assert.notEqual(asSession.session?.cookie, first.cookie, "a new login must open a new session");
  assertNoSecrets([key, who, back], [tp.ownerKey, admin.password, first.cookie]);
  assert.equal((await run(home, ["logout"])).code, 0);
});

test("user set-password with a session requires the current password", async () => {
  const home = join(dir.path, "pw-home");
  assert.equal((await loginAs(home, admin.email, admin.password)).code, 0);
  const next = strongPassword();
  const noCurrent = await run(home, ["user", "set-password", "--password-stdin"], next + "\n");
  assert.equal(noCurrent.code, 2, noCurrent.stderr);
  assert.match(noCurrent.stderr, /--current/);

  const wrong = await run(home, ["user", "set-password", "--current", "--password-stdin"], `not-the-password-${randomUUID()}\n${next}\n`);
  assert.equal(wrong.code, 3, wrong.stderr);
  assert.match(wrong.stderr, /ERR_INVALID_CREDENTIALS/);

  const ok = await run(home, ["user", "set-password", "--current", "--password-stdin", "--output", "json"], `${admin.password}\n${next}\n`);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(JSON.parse(ok.stdout).userID, admin.userID);
  const viaApi = await tp.call("POST", "/v1/auth/login", { key: null, body: { email: admin.email, password: next } });
  assert.equal(viaApi.status, 200, viaApi.text);
  // The session that changed the password lives on.
  const who = await run(home, ["whoami", "--output", "json"]);
  assert.equal(who.code, 0, who.stderr);
  assertNoSecrets([noCurrent, wrong, ok, who], [admin.password, next]);
  admin.password = next;
  assert.equal((await run(home, ["logout"])).code, 0);
});

test("logout ends the session on the server and deletes the file", async () => {
  const home = join(dir.path, "logout-home");
  assert.equal((await loginAs(home, admin.email, admin.password)).code, 0);
  const { cookie, csrfToken } = savedSession(home).session!;
  const before = await tp.call("GET", "/v1/auth/whoami", { key: null, headers: { cookie: `parhelion_session=${cookie}` } });
  assert.equal(before.status, 200, before.text);

  const out = await run(home, ["logout"]);
  assert.equal(out.code, 0, out.stderr);
  assert.match(out.stderr, /signed out/);
  assert.doesNotMatch(out.stderr, /warning/);
  assert.equal(existsSync(join(home, "credentials.json")), false);
  const afterLogout = await tp.call("GET", "/v1/auth/whoami", { key: null, headers: { cookie: `parhelion_session=${cookie}` } });
  assert.equal(afterLogout.status, 401, afterLogout.text);
  assertNoSecrets([out], [cookie, csrfToken]);

  const again = await run(home, ["whoami"]);
  assert.equal(again.code, 3);
});

test("logout still deletes a saved session when the server cannot be reached", async () => {
  const home = join(dir.path, "unreachable-home");
  mkdirSync(home, { recursive: true, mode: 0o700 });
  const file = join(home, "credentials.json");
  const session = { cookie: "c".repeat(43), csrfToken: "t".repeat(43), expiresAt: new Date(Date.now() + 3600_000).toISOString(), email: admin.email };
  writeFileSync(file, JSON.stringify({ url: `https://127.0.0.1:${await closedPort()}`, caFile: null, session }), { mode: 0o600 });
  const out = await run(home, ["logout"]);
  assert.equal(out.code, 0, out.stderr);
  assert.match(out.stderr, /warning: the server did not confirm/);
  assert.equal(existsSync(file), false);
  assertNoSecrets([out], [session.cookie, session.csrfToken]);
});

test("login with a wrong password exits 3 and saves nothing", async () => {
  const home = join(dir.path, "wrong-home");
  const bad = `wrong-${randomUUID()}`;
  const r = await loginAs(home, admin.email, bad);
  assert.equal(r.code, 3, r.stderr);
  assert.match(r.stderr, /ERR_INVALID_CREDENTIALS/);
  assert.match(r.stderr, /check the email and password/);
  assert.equal(existsSync(join(home, "credentials.json")), false);
  assertNoSecrets([r], [bad]);
});

test("a locked-out account exits 6 with the wait in the message", async () => {
  const email = `locked-${randomUUID().slice(0, 8)}@example.com`;
  let status = 0;
  for (let i = 0; i < 10 && status !== 429; i++) {
    status = (await tp.call("POST", "/v1/auth/login", { key: null, body: { email, password: "wrong-password-x" } })).status;
  }
  assert.equal(status, 429, "the account never locked");
  const r = await loginAs(join(dir.path, "locked-home"), email, "wrong-password-y");
  assert.equal(r.code, 6, r.stderr);
  assert.match(r.stderr, /ERR_RATE_LIMITED/);
  assert.match(r.stderr, /try again in \d+ s|retry after \d+ s/);
});

test("an expired saved session exits 3 without calling the server", async () => {
  const home = join(dir.path, "expired-home");
  mkdirSync(home, { recursive: true, mode: 0o700 });
  // A closed port: had the CLI called the server, it would exit 7.
  const session = { cookie: "c".repeat(43), csrfToken: "t".repeat(43), expiresAt: new Date(Date.now() - 60_000).toISOString(), email: admin.email };
  writeFileSync(join(home, "credentials.json"), JSON.stringify({ url: `https://127.0.0.1:${await closedPort()}`, caFile: null, session }), { mode: 0o600 });
  const r = await run(home, ["whoami"]);
  assert.equal(r.code, 3, r.stderr);
  assert.ok(r.stderr.includes(`session expired: run \`parhelion login --email ${admin.email}\` again`), r.stderr);
  assertNoSecrets([r], [session.cookie, session.csrfToken]);
});

test("a saved session is never sent to another PARHELION_API_URL (exit 2)", async () => {
  const home = join(dir.path, "origin-home");
  assert.equal((await loginAs(home, admin.email, admin.password)).code, 0);
  const r = await run(home, ["whoami"], undefined, { PARHELION_API_URL: `https://127.0.0.1:${await closedPort()}` });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /not the server of the saved session/);
  assert.equal((await run(home, ["logout"])).code, 0);
});
