import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describeConfig } from "../../src/config/load.js";
import { SECRET_KEYS, flagName } from "../../src/config/schema.js";
import { findPgBin, postgresProcessesIn } from "../../src/store/embedded.js";
import { CLI, cliEnv, runCli, tempDir } from "./helpers.js";
import { volumeStoreDataDir } from "../../src/volumes/store.js";

test("up --help offers a flag for every configuration key, with its env var, and none for a secret", async () => {
  const r = await runCli(["up", "--help"], { env: {} });
  assert.equal(r.code, 0, r.stderr);
  for (const c of describeConfig()) {
    if (SECRET_KEYS.has(c.key)) {
      assert.ok(!new RegExp(`${flagName(c.key)} <`).test(r.stdout), `secret ${c.key} has a flag`);
      assert.ok(r.stdout.includes(c.env), `the help does not say how to pass secret ${c.key}`);
    } else {
      assert.ok(r.stdout.includes(`${flagName(c.key)} <value>`), `no flag for ${c.key}`);
      assert.ok(r.stdout.replace(/\s+/g, " ").includes(c.env), `the help of ${c.key} lacks ${c.env}`);
    }
  }
  assert.ok(r.stdout.includes("--config <file>"));
});

test("up --api-port notanumber exits 2 naming the key", async () => {
  const r = await runCli(["up", "--api-port", "notanumber"], { env: {} });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /apiPort/);
  assert.match(r.stderr, /ERR_CONFIG/);
});

test("up refuses the secret databaseUrl as a flag and a bad value from the environment (exit 2)", async () => {
  const flag = await runCli(["up", "--database-url", "postgres://u:p@h/db"], { env: {} });
  assert.equal(flag.code, 2);
  assert.ok(!flag.stderr.includes("u:p@h"), "the secret was echoed");
  const env = await runCli(["up"], { env: { PARHELION_LOG_LEVEL: "loud" } });
  assert.equal(env.code, 2);
  assert.match(env.stderr, /logLevel/);
});

test("up starts in a temp dir on port 0, writes runtime.json, accepts a login and exits 0 on SIGTERM within 10 s", async () => {
  const dir = tempDir("parhelion-up-");
  chmodSync(dir.path, 0o711); // the store's service user traverses the data dir
  const home = join(dir.path, "home");
  const child = spawn(process.execPath, [CLI, "up", "--data-dir", dir.path, "--api-port", "0", "--log-level", "warn"], {
    cwd: dir.path, env: cliEnv({ PARHELION_HOME: home }), stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.on("exit", (code, signal) => r({ code, signal })));
  const pgdata = volumeStoreDataDir(dir.path);
  try {
    const deadline = Date.now() + 90_000;
    let m: RegExpExecArray | null = null;
    while (!(m = /^parhelion is up: API (\S+)  CA file (\S+)$/m.exec(stdout))) {
      assert.equal(child.exitCode, null, `up exited early: ${stderr}`);
      assert.ok(Date.now() < deadline, `up did not start: ${stdout}\n${stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const runtime = JSON.parse(readFileSync(join(dir.path, "runtime.json"), "utf8"));
    assert.equal(runtime.apiUrl, m[1]);
    assert.equal(runtime.caFile, m[2]);
    assert.doesNotMatch(runtime.apiUrl, /:0$/);

    const login = await runCli(["login", "--data-dir", dir.path, "--api-key-file", join(dir.path, "bootstrap", "owner-api-key")], { env: { PARHELION_HOME: home } });
    assert.equal(login.code, 0, login.stderr);

    const t0 = Date.now();
    child.kill("SIGTERM");
    const end = await Promise.race([exited, new Promise<null>((r) => setTimeout(() => r(null), 10_000))]);
    assert.notEqual(end, null, "up did not exit within 10 s of SIGTERM");
    assert.deepEqual(end, { code: 0, signal: null }, stderr);
    assert.ok(Date.now() - t0 < 10_000);
    assert.deepEqual(postgresProcessesIn(pgdata, join(findPgBin(), "postgres")), [], "the store outlived up");
  } finally {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await exited;
    }
    // Whatever the child left running (it started these; we end them by pid).
    if (existsSync(pgdata)) for (const p of postgresProcessesIn(pgdata, join(findPgBin(), "postgres"))) if (!p.cmdline.startsWith("postgres:")) process.kill(p.pid, "SIGQUIT");
    dir.remove();
  }
});

test("up refuses a data directory the PostgreSQL system user cannot reach (a 0700 home), naming the directory and the fix, and starts nothing", async () => {
  const t = tempDir("ph-reach-");
  try {
    const home = join(t.path, "home");
    mkdirSync(home, { mode: 0o700 });
    chmodSync(t.path, 0o711);
    const r = await runCli(["up", "--data-dir", join(home, ".parhelion"), "--api-port", "0", "--gateway-port", "0"], { env: {} });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /ERR_CONFIG/);
    assert.ok(r.stderr.includes(`${home} does not let it pass`), r.stderr);
    assert.match(r.stderr, /setfacl -m u:parhelion:x/);
    assert.ok(!existsSync(join(home, ".parhelion", "volumes")), "nothing was started");
  } finally {
    t.remove();
  }
});
