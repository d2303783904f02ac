import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { CLI, cliEnv, runCli, startSignedInPlatform, type SignedInPlatform } from "./helpers.js";
import { startTestIdp, TestBrowser, type TestAccount, type TestIdp } from "../support/idp.js";

let sp: SignedInPlatform;
let idp: TestIdp;
let callbackUrl = "";
let teamId = "";
const browsers: TestBrowser[] = [];

before(async () => {
  sp = await startSignedInPlatform("parhelion-cli-sso-");
  callbackUrl = `${sp.tp.apiUrl}/v1/auth/sso/callback`;
  idp = await startTestIdp({ redirectUris: [callbackUrl] });
  teamId = (await sp.tp.call("POST", "/v1/teams", { body: { name: "cli-eng" } })).body.teamID;
});

after(async () => {
  for (const b of browsers) await b.close();
  await idp?.close();
  await sp?.stop();
});

const owner = () => ({ PARHELION_HOME: sp.home });

test("sso set configures the provider without the secret on argv; show never prints it; bad input is a typed error", async () => {
  const secretFile = join(sp.dir.path, "client-secret");
  writeFileSync(secretFile, idp.clientSecret + "\n", { mode: 0o600 });
  const caFile = join(sp.dir.path, "idp-ca.pem");
  writeFileSync(caFile, idp.caPem);
  const set = await runCli(["-o", "json", "sso", "set", "--issuer", idp.issuer, "--client-id", idp.clientId, "--client-secret-file", secretFile,
    "--idp-ca-file", caFile, "--scopes", "openid,email,profile,groups", "--team-map", `eng=${teamId}`, "--role-map", "ops=Operator"], { env: owner() });
  assert.equal(set.code, 0, set.stderr);
  const c = JSON.parse(set.stdout);
  assert.equal(c.redirectURI, callbackUrl, "the redirect URI defaults to the API's callback");
  assert.equal(c.clientSecretSet, true);
  assert.deepEqual(c.roleMappings, [{ group: "ops", role: "Operator" }]);
  assert.ok(!set.stdout.includes(idp.clientSecret) && !set.stderr.includes(idp.clientSecret));
  const show = await runCli(["-o", "table", "sso", "show"], { env: owner() });
  assert.equal(show.code, 0, show.stderr);
  assert.match(show.stdout, /clientSecretSet\s+true/);
  assert.match(show.stdout, /ops=Operator/);
  assert.ok(!show.stdout.includes(idp.clientSecret));
  const bad = await runCli(["sso", "set", "--role-map", "root=Owner"], { env: owner() });
  assert.equal(bad.code, 6, bad.stderr);
  assert.match(bad.stderr, /ERR_VALIDATION/);
  const unchanged = JSON.parse((await runCli(["-o", "json", "sso", "show"], { env: owner() })).stdout);
  assert.deepEqual(unchanged.roleMappings, [{ group: "ops", role: "Operator" }]);
});

/** Runs `parhelion login --sso`, plays the browser when it prints the URL, and answers the CLI's result. */
async function loginSso(home: string, account: TestAccount, browserStep?: (loopback: string, b: TestBrowser) => Promise<void>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, "-o", "json", "login", "--sso", "--data-dir", sp.tp.dataDir, "--sso-timeout", "20"], { env: cliEnv({ PARHELION_HOME: home }), stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  const done = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  const killer = setTimeout(() => child.kill("SIGKILL"), 60_000);
  try {
    const url = await new Promise<string>((resolve, reject) => {
      child.stderr.setEncoding("utf8").on("data", (d: string) => {
        stderr += d;
        const m = /^(https:\/\/\S+)$/m.exec(stderr);
        if (m) resolve(m[1]!);
      });
      child.on("close", () => reject(new Error(`the CLI ended before printing a URL: ${stderr}`)));
    });
    const b = new TestBrowser([sp.tp.caPem, idp.caPem]);
    browsers.push(b);
    const start = await b.send("POST", `${sp.tp.apiUrl}/v1/auth/sso/start`, { body: {} }); // a bystander sign-in must not interfere
    assert.equal(start.status, 200);
    idp.account = account;
    const callback = await b.authorize(url, callbackUrl);
    const r = await b.send("GET", callback.href);
    assert.equal(r.status, 303, r.text);
    assert.ok(r.location?.startsWith("http://127.0.0.1:"), r.location ?? "");
    if (browserStep) await browserStep(r.location!, b);
    else {
      const landing = await b.send("GET", r.location!);
      assert.equal(landing.status, 200);
      assert.match(landing.text, /Signed in to parhelion/);
    }
    const code = await done;
    return { code, stdout, stderr };
  } finally {
    clearTimeout(killer);
    child.kill("SIGKILL");
  }
}

test("login --sso opens a session through the browser and a loopback listener; later commands use it", async () => {
  const home = join(sp.dir.path, "sso-home");
  const r = await loginSso(home, { sub: "cli-user-1", email: "cli.user@corp.example", email_verified: true, groups: ["eng", "ops"] });
  assert.equal(r.code, 0, r.stderr);
  const who = JSON.parse(r.stdout);
  assert.equal(who.email, "cli.user@corp.example");
  assert.deepEqual(who.roles, ["Operator"]);
  assert.ok(!r.stdout.includes("parhelion_session") && !r.stderr.includes("code="), "neither the cookie nor the one-time code is printed");
  const w = await runCli(["-o", "json", "whoami"], { env: { PARHELION_HOME: home } });
  assert.equal(w.code, 0, w.stderr);
  assert.equal(JSON.parse(w.stdout).email, "cli.user@corp.example");
  const team = await sp.tp.call("GET", `/v1/teams/${teamId}`);
  assert.deepEqual(team.body.memberUsers.map((u: { email: string }) => u.email), ["cli.user@corp.example"]);
});

test("a one-time code stolen on its way to the CLI is useless without the CLI's verifier, and the CLI then fails cleanly", async () => {
  const home = join(sp.dir.path, "sso-home-2");
  const r = await loginSso(home, { sub: "cli-user-1", email: "cli.user@corp.example", email_verified: true, groups: ["eng"] }, async (loopback) => {
    const code = new URL(loopback).searchParams.get("code")!;
    // Another local process intercepts the redirect and tries the code with its own verifier: the code burns.
    const stolen = await sp.tp.call("POST", "/v1/auth/sso/token", { key: null, body: { code, codeVerifier: "x".repeat(43) } });
    assert.equal(stolen.status, 401);
    assert.equal(stolen.body.code, "ERR_SSO_FAILED");
    const b2 = new TestBrowser([sp.tp.caPem]);
    browsers.push(b2);
    const landing = await b2.send("GET", loopback);
    assert.equal(landing.status, 200);
  });
  assert.equal(r.code, 3, r.stderr);
  assert.match(r.stderr, /ERR_SSO_FAILED/);
  const w = await runCli(["whoami"], { env: { PARHELION_HOME: home } });
  assert.notEqual(w.code, 0, "nothing was saved");
});

test("login --sso flags are checked before anything is sent", async () => {
  const r = await runCli(["login", "--sso", "--email", "a@b.example", "--data-dir", sp.tp.dataDir], { env: { PARHELION_HOME: join(sp.dir.path, "x") } });
  assert.equal(r.code, 2, r.stderr);
  const t = await runCli(["login", "--org", "not-an-id", "--sso", "--data-dir", sp.tp.dataDir], { env: { PARHELION_HOME: join(sp.dir.path, "x") } });
  assert.equal(t.code, 2, t.stderr);
  const o = await runCli(["login", "--org", "00000000-0000-4000-8000-000000000000", "--data-dir", sp.tp.dataDir], { env: { PARHELION_HOME: join(sp.dir.path, "x") } });
  assert.equal(o.code, 2, o.stderr);
});

test("sso delete removes the provider; login --sso then says it is not configured", async () => {
  const d = await runCli(["sso", "delete"], { env: owner() });
  assert.equal(d.code, 0, d.stderr);
  const s = await runCli(["sso", "show"], { env: owner() });
  assert.equal(s.code, 5, s.stderr);
  assert.match(s.stderr, /ERR_SSO_NOT_CONFIGURED/);
  const l = await runCli(["login", "--sso", "--data-dir", sp.tp.dataDir, "--sso-timeout", "10"], { env: { PARHELION_HOME: join(sp.dir.path, "y") } });
  assert.equal(l.code, 5, l.stderr);
  assert.match(l.stderr, /ERR_SSO_NOT_CONFIGURED/);
});
