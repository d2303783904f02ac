/** Runs the system programs volumes need (mkfs, losetup, mount, the fscrypt helper): async, argv arrays, checked. */
import { spawn } from "node:child_process";
import { ParhelionError } from "../lib/errors.js";

export interface CommandResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The environment of every command: nothing inherited from parhelion (no secrets can leak through it). */
const ENV = { PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C", LC_ALL: "C" };

/**
 * Runs cmd with args (never through a shell). `stdin` is written to the child's standard input and the
 * pipe closed: the only way a key reaches a child. Resolves whatever the exit status; rejects with
 * ERR_VOLUME only when the program cannot be started or outlives timeoutMs (then it is killed).
 */
export function run(cmd: string, args: readonly string[], opts: { stdin?: Uint8Array; timeoutMs?: number } = {}): Promise<CommandResult> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"], env: ENV });
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString("utf8")));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString("utf8")));
    // A child that exits before reading its input makes the write fail with EPIPE: its exit status says why.
    child.stdin.on("error", () => undefined);
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(new ParhelionError("ERR_VOLUME", `cannot run ${cmd}: ${err.message}`, { cause: err }));
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      if (timedOut) reject(new ParhelionError("ERR_VOLUME", `${cmd} ${args[0] ?? ""} did not finish within ${timeoutMs} ms`));
      else resolve({ code, signal, stdout, stderr });
    });
    if (opts.stdin) child.stdin.end(opts.stdin);
    else child.stdin.end();
  });
}

/** Runs cmd and throws ERR_VOLUME (with its stderr) unless it exits 0. */
export async function runChecked(cmd: string, args: readonly string[], what: string, opts: { stdin?: Uint8Array; timeoutMs?: number } = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new ParhelionError("ERR_VOLUME", `${what} failed (${cmd} exit ${r.code ?? r.signal}): ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}
