/**
 * Issue 2: the two commands work "as root, and as a user with sudo". A user who is not root runs
 * `./bin/parhelion up`: bin/parhelion takes `up` through sudo (its encrypted volumes need root), PostgreSQL
 * still runs as the unprivileged 'parhelion' user, and the owner API key and the CA certificate are readable by
 * the user who ran it, whose CLI then works without root.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { alive, postmasterPid, waitHealthy } from "../support/up.js";

const ROOT = process.cwd();

function uidOf(pid: number): number {
  const m = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(m![1]);
}

test("a user with sudo runs ./bin/parhelion up: it runs as root through sudo, PostgreSQL as 'parhelion', and the user's CLI reads the owner key", { timeout: 180_000 }, async () => {
  assert.equal(process.getuid?.(), 0, "the suite runs as root (bin/test takes it through sudo)");
  const name = `phsudo${randomBytes(3).toString("hex")}`;
  const base = mkdtempSync(join(tmpdir(), "ph-sudo-"));
  chmodSync(base, 0o711);
  const home = join(base, "home");
  const dataDir = join(home, ".parhelion"); // the default ./.parhelion, run from the user's home
  const sudoers = `/etc/sudoers.d/parhelion-test-${name}`;
  execFileSync("useradd", ["--create-home", "--home-dir", home, "--shell", "/bin/bash", name]);
  chmodSync(home, 0o700); // as adduser makes them on Debian 12: the service user must be let through
  let child: ReturnType<typeof spawn> | undefined;
  const granted: string[] = [];
  let out = "";
  try {
    writeFileSync(sudoers, `${name} ALL=(ALL:ALL) NOPASSWD: ALL\n`, { mode: 0o440 });
    // The user must reach this checkout (CI may keep it below a 0700 directory): passage, removed at the end.
    for (let d = ROOT, prev = ""; d !== prev; prev = d, d = dirname(d)) {
      if (spawnSync("runuser", ["-u", name, "--", "test", "-x", d]).status !== 0) {
        execFileSync("setfacl", ["-m", `u:${name}:x`, d]);
        granted.push(d);
      }
    }
    // The suite runs from this build: bin/parhelion's bootstrap must not try to rebuild it as the user.
    const stamp = join(ROOT, "dist", ".build-stamp");
    if (existsSync(stamp)) utimesSync(stamp, new Date(), new Date());
    else writeFileSync(stamp, "");

    const as = (args: string[]) => spawnSync("runuser", ["-u", name, "--", "env", `HOME=${home}`, "PATH=/usr/local/bin:/usr/bin:/bin", ...args], { cwd: home, encoding: "utf8", timeout: 60_000 });
    const since = Date.now();
    child = spawn("runuser", ["-u", name, "--", "env", `HOME=${home}`, "PATH=/usr/local/bin:/usr/bin:/bin", join(ROOT, "bin", "parhelion"), "up", "--api-port", "0", "--gateway-port", "0", "--log-format", "json"], { cwd: home, stdio: ["ignore", "pipe", "pipe"] });
    child.stdout!.on("data", (c: Buffer) => (out += c.toString()));
    child.stderr!.on("data", (c: Buffer) => (out += c.toString()));
    const { agent } = await waitHealthy(dataDir, since, () => out, 120_000);
    await agent.close();
    assert.match(out, /running as root through sudo/);
    assert.match(out, /letting the system user 'parhelion' pass through/);
    assert.match(execFileSync("getfacl", ["-p", home], { encoding: "utf8" }), /user:parhelion:--x/, "passage only, for the service user only");

    const rt = JSON.parse(readFileSync(join(dataDir, "runtime.json"), "utf8")) as { pid: number };
    assert.equal(uidOf(rt.pid), 0, "parhelion itself runs as root");
    const pm = postmasterPid(dataDir);
    assert.ok(pm !== null && alive(pm));
    assert.equal(uidOf(pm), Number(execFileSync("id", ["-u", "parhelion"], { encoding: "utf8" }).trim()), "the metadata store runs as 'parhelion'");

    // The user's files: the owner key (still 0600, now theirs) and the CA certificate.
    const keyFile = join(dataDir, "bootstrap", "owner-api-key");
    const uid = Number(execFileSync("id", ["-u", name], { encoding: "utf8" }).trim());
    assert.equal(statSync(keyFile).uid, uid);
    assert.equal(statSync(keyFile).mode & 0o777, 0o600);
    assert.equal(statSync(join(dataDir, "keys")).mode & 0o077, 0, "the root key's directory stays root's alone");
    const ca = as(["cat", join(dataDir, "tls", "ca.crt")]);
    assert.equal(ca.status, 0, ca.stderr);
    assert.match(ca.stdout, /BEGIN CERTIFICATE/);
    const rootKey = as(["ls", join(dataDir, "keys")]);
    assert.notEqual(rootKey.status, 0, "the user cannot list the key directory");

    const login = as([join(ROOT, "bin", "parhelion"), "login", "--data-dir", dataDir, "--api-key-file", keyFile]);
    assert.equal(login.status, 0, `${login.stdout}\n${login.stderr}`);
    const org = as([join(ROOT, "bin", "parhelion"), "org", "show", "--output", "json"]);
    assert.equal(org.status, 0, `${org.stdout}\n${org.stderr}`);
    assert.ok(typeof (JSON.parse(org.stdout) as { orgID?: string }).orgID === "string", org.stdout);

    process.kill(rt.pid, "SIGTERM");
    const code = await new Promise<number | null>((resolve) => child!.once("exit", (c) => resolve(c)));
    assert.equal(code, 0, out.slice(-3000));
    assert.ok(!alive(pm), "the store stopped with it");
    child = undefined;
  } finally {
    if (child && child.exitCode === null) {
      try {
        const rt = JSON.parse(readFileSync(join(dataDir, "runtime.json"), "utf8")) as { pid: number };
        process.kill(rt.pid, "SIGTERM");
      } catch {
        child.kill("SIGTERM");
      }
      await new Promise((r) => setTimeout(r, 5000));
    }
    for (const d of granted) spawnSync("setfacl", ["-x", `u:${name}`, d]);
    rmSync(sudoers, { force: true });
    spawnSync("userdel", ["--remove", name]);
    rmSync(base, { recursive: true, force: true });
  }
});
