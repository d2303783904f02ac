import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import type { TestPlatform } from "../support/platform.js";
import { makeUser, totpCode } from "../support/mfa.js";
import { runCli, startSignedInPlatform, type SignedInPlatform } from "./helpers.js";

let env: SignedInPlatform;
let tp: TestPlatform;

before(async () => {
  env = await startSignedInPlatform("parhelion-cli-mfa-");
  tp = env.tp;
});

after(async () => {
  await env?.stop();
});

const run = (home: string, args: string[], input?: string) => runCli(args, { env: { PARHELION_HOME: home }, ...(input === undefined ? {} : { input }) });
const login = (home: string, email: string, stdin: string, extra: string[] = []) =>
  run(home, ["login", "--data-dir", tp.dataDir, "--email", email, "--password-stdin", "--output", "json", ...extra], stdin);

test("enroll a TOTP authenticator, then sign in with a TOTP code or a recovery code; a wrong code signs nobody in", async () => {
  const user = await makeUser(tp);
  const home = join(env.dir.path, "mfa-user");
  assert.equal((await login(home, user.email, `${user.password}\n`)).code, 0);
  const st0 = await run(home, ["mfa", "status", "--output", "json"]);
  assert.equal(st0.code, 0, st0.stderr);
  assert.equal(JSON.parse(st0.stdout).mfaEnrolled, false);

  const begin = await run(home, ["mfa", "enroll-totp", "--name", "phone", "--output", "json"]);
  assert.equal(begin.code, 0, begin.stderr);
  const e = JSON.parse(begin.stdout) as { secret: string; otpauthURI: string; factorID: string };
  assert.match(e.otpauthURI, /^otpauth:\/\/totp\//);
  assert.match(begin.stderr, /mfa confirm-totp/);
  const confirm = await run(home, ["mfa", "confirm-totp", "--code", totpCode(e.secret, Date.now()), "--output", "table"]);
  assert.equal(confirm.code, 0, confirm.stderr);
  const codes = confirm.stdout.trim().split("\n");
  assert.equal(codes.length, 10);
  for (const c of codes) assert.match(c, /^[a-z2-7]{4}(-[a-z2-7]{4}){3}$/);
  assert.match(confirm.stderr, /will not be shown again/);

  // A wrong code: exit 3 (401), nothing saved over the working session.
  const wrong = await login(home, user.email, `${user.password}\n000000\n`, ["--totp-stdin"]);
  assert.equal(wrong.code, 3, wrong.stderr);
  assert.match(wrong.stderr, /ERR_MFA_INVALID|wrong, expired or already used/);

  // The next step's code (the current one was spent on the confirmation).
  const ok = await login(home, user.email, `${user.password}\n${totpCode(e.secret, Date.now() + 30_000)}\n`, ["--totp-stdin"]);
  assert.equal(ok.code, 0, ok.stderr);
  const st1 = JSON.parse((await run(home, ["mfa", "status", "--output", "json"])).stdout);
  assert.equal(st1.mfaVerified, true);
  assert.equal(st1.recoveryCodesRemaining, 10);

  const rec = await login(home, user.email, `${user.password}\n${codes[0]}\n`, ["--totp-stdin"]);
  assert.equal(rec.code, 0, rec.stderr);
  assert.equal(JSON.parse((await run(home, ["mfa", "status", "--output", "json"])).stdout).recoveryCodesRemaining, 9);

  // Without a code (no terminal): the session is saved but can only verify.
  const pending = await login(home, user.email, `${user.password}\n`);
  assert.equal(pending.code, 0, pending.stderr);
  assert.match(pending.stderr, /parhelion mfa verify/);
  const blocked = await run(home, ["org", "show"]);
  assert.equal(blocked.code, 3, blocked.stderr);
  assert.match(blocked.stderr, /parhelion mfa verify/);
  const reused = await run(home, ["mfa", "verify", "--code-stdin"], `${codes[0]}\n`);
  assert.equal(reused.code, 3, "a recovery code works once");
  const verify = await run(home, ["mfa", "verify", "--code-stdin", "--output", "json"], `${codes[1]}\n`);
  assert.equal(verify.code, 0, verify.stderr);
  assert.equal(JSON.parse(verify.stdout).method, "recovery");
  assert.equal((await run(home, ["org", "show"])).code, 0);

  const regen = await run(home, ["mfa", "recovery-codes", "--output", "table"]);
  assert.equal(regen.code, 0, regen.stderr);
  assert.equal(regen.stdout.trim().split("\n").length, 10);
  const removed = await run(home, ["mfa", "remove", e.factorID, "--output", "json"]);
  assert.equal(removed.code, 0, removed.stderr);
  assert.deepEqual(JSON.parse(removed.stdout), { factorID: e.factorID, type: "totp", remainingFactors: 0 });
});

test("login --totp needs --email, and an API key cannot use the MFA commands", async () => {
  const r = await run(env.home, ["login", "--data-dir", tp.dataDir, "--api-key-file", env.keyFile, "--totp", "123456"]);
  assert.equal(r.code, 2, r.stderr);
  const st = await run(env.home, ["mfa", "status"]);
  assert.equal(st.code, 4, st.stderr);
  assert.match(st.stderr, /console session/);
});

test("mfa policy shows and changes the organization's step-up window; mfa reset clears another user's factors", async () => {
  const show = await run(env.home, ["mfa", "policy", "--output", "json"]);
  assert.equal(show.code, 0, show.stderr);
  assert.equal(JSON.parse(show.stdout).mfaRequired, false);
  const set = await run(env.home, ["mfa", "policy", "--step-up-minutes", "15", "--output", "json"]);
  assert.equal(set.code, 0, set.stderr);
  assert.equal(JSON.parse(set.stdout).mfaStepUpMinutes, 15);
  assert.equal((await run(env.home, ["mfa", "policy", "--step-up-minutes", "0"])).code, 2);
  assert.equal((await run(env.home, ["mfa", "policy", "--step-up-minutes", "10"])).code, 0);
  const user = await makeUser(tp);
  const reset = await run(env.home, ["mfa", "reset", user.email, "--output", "json"]);
  assert.equal(reset.code, 0, reset.stderr);
  assert.equal(JSON.parse(reset.stdout).factorsRemoved, 0);
});
