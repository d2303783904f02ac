import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startTestPlatform, type TestPlatform } from "../support/platform.js";

/** The compiled CLI entry (dist/src/cli/main.js), next to this compiled test (dist/test/cli/). */
export const CLI = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The environment of a CLI run: nothing PARHELION_* leaks in from the test runner except what is given. */
export function cliEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("PARHELION_")) env[k] = v;
  return { ...env, ...extra };
}

/**
 * Runs the CLI as a subprocess, asynchronously (the platform under test lives in this process, so a
 * blocking spawnSync would starve it). Kills it after `timeoutMs`.
 */
export function runCli(args: string[], opts: { env: Record<string, string>; input?: string; cwd?: string; timeoutMs?: number }): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: cliEnv(opts.env), cwd: opts.cwd, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 30_000);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    child.stdin.on("error", () => undefined);
    child.stdin.end(opts.input ?? "");
  });
}

/** A temporary directory and its removal. */
export function tempDir(prefix: string): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export interface SignedInPlatform {
  tp: TestPlatform;
  dir: { path: string; remove: () => void };
  /** The owner's API key in a 0600 file. */
  keyFile: string;
  /** A PARHELION_HOME signed in with that key. */
  home: string;
  stop(): Promise<void>;
}

/** A real platform plus a CLI home signed in as its owner (through `parhelion login --api-key-file`). */
export async function startSignedInPlatform(prefix: string, env: Record<string, string> = {}): Promise<SignedInPlatform> {
  const dir = tempDir(prefix);
  let tp: TestPlatform;
  try {
    tp = await startTestPlatform({ env });
  } catch (err) {
    dir.remove();
    throw err;
  }
  const keyFile = join(dir.path, "owner.key");
  writeFileSync(keyFile, tp.ownerKey + "\n", { mode: 0o600 });
  const home = join(dir.path, "home");
  const r = await runCli(["login", "--data-dir", tp.dataDir, "--api-key-file", keyFile], { env: { PARHELION_HOME: home } });
  const stop = async () => {
    dir.remove();
    await tp.stop();
  };
  if (r.code !== 0) {
    await stop();
    throw new Error(`owner login failed: ${r.stderr}`);
  }
  return { tp, dir, keyFile, home, stop };
}
