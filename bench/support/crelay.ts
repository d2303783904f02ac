/**
 * Builds and starts crelay.c, the minimal TLS-terminating relay in C (see that file): the floor of what a
 * TLS-terminating proxy costs on this machine, whatever its language. Needs a C compiler and OpenSSL's
 * headers (Debian's libssl-dev, installed with apt-get when missing, as PgBouncer is).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { childPort, onCleanup, runCommand, say, stopChild } from "./run.js";

const SOURCE = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "bench", "support", "crelay.c");

/** Compiles crelay.c into dir; answers the binary's path and the compiler's version line. */
export async function buildCRelay(dir: string): Promise<{ bin: string; compiler: string; openssl: string }> {
  if (!existsSync(SOURCE)) throw new Error(`${SOURCE} is missing`);
  if (!existsSync("/usr/include/openssl/ssl.h")) {
    say("OpenSSL headers are missing: running `apt-get install -y libssl-dev`");
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    let r = await runCommand("apt-get", ["install", "-y", "--no-install-recommends", "libssl-dev"], { env });
    if (r.code !== 0) {
      await runCommand("apt-get", ["update"], { env });
      r = await runCommand("apt-get", ["install", "-y", "--no-install-recommends", "libssl-dev"], { env });
    }
    if (r.code !== 0) throw new Error(`apt-get install -y libssl-dev failed (exit ${r.code}):\n${(r.stderr || r.stdout).slice(-2000)}`);
  }
  const bin = join(dir, "crelay");
  const cc = await runCommand("cc", ["-O2", "-Wall", "-o", bin, SOURCE, "-lssl", "-lcrypto"]);
  if (cc.code !== 0) throw new Error(`cc crelay.c failed (exit ${cc.code}):\n${cc.stderr.slice(-2000)}`);
  const v = await runCommand("cc", ["--version"]);
  const o = await runCommand("openssl", ["version"]);
  return { bin, compiler: (v.stdout.split("\n")[0] ?? "").trim(), openssl: o.stdout.trim() };
}

/** Starts the built relay; resolves with its pid and port. */
export function startCRelay(bin: string, certFile: string, keyFile: string, socketPath: string): Promise<{ child: ChildProcess; pid: number; port: number }> {
  const child = spawn(bin, [certFile, keyFile, socketPath], { stdio: ["ignore", "pipe", "inherit"] });
  onCleanup("C relay", () => stopChild(child, 3000));
  return childPort(child, "the C relay").then((port) => ({ child, pid: child.pid!, port }));
}
