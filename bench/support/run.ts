/**
 * Plumbing shared by the benchmarks that start processes: a cleanup registry undone in reverse order on
 * success, failure and signals; temporary directories; stopping children; free ports; running a command.
 */
import { spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Progress on stderr (stdout carries the report). */
export function say(line: string): void {
  process.stderr.write(`bench: ${line}\n`);
}

type Cleanup = { name: string; run: () => Promise<void> | void };

const cleanups: Cleanup[] = [];
let cleaning: Promise<void> | null = null;

/** Registers something to undo; returns a handle that removes it again (when it was undone by hand). */
export function onCleanup(name: string, run: () => Promise<void> | void): () => void {
  const c = { name, run };
  cleanups.push(c);
  return () => {
    const i = cleanups.indexOf(c);
    if (i >= 0) cleanups.splice(i, 1);
  };
}

/** Undoes everything registered, last first; errors are reported and do not stop the rest. Concurrent calls share one run. */
export function cleanupAll(): Promise<void> {
  cleaning ??= (async () => {
    while (cleanups.length > 0) {
      const c = cleanups.pop()!;
      try {
        await c.run();
      } catch (err) {
        process.stderr.write(`bench: cleanup ${c.name}: ${(err as Error).message}\n`);
      }
    }
    cleaning = null; // the registry can be used again (a benchmark may clean up between phases)
  })();
  return cleaning;
}

/** A temporary directory removed at cleanup. */
export function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  onCleanup(`rm ${d}`, () => rmSync(d, { recursive: true, force: true }));
  return d;
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Sends sig, then SIGKILL after graceMs; resolves when the child has exited. */
export async function stopChild(child: ChildProcess, graceMs: number, sig: NodeJS.Signals = "SIGTERM"): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill(sig);
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen({ host: "127.0.0.1", port: 0 }, () => {
      const a = s.address();
      const port = typeof a === "object" && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export interface CommandResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (killed with the run when interrupted). */
export function runCommand(cmd: string, args: string[], opts: SpawnOptions = {}): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...opts, stdio: ["ignore", "pipe", "pipe"] });
    const undo = onCleanup(`${cmd} (running)`, () => stopChild(child, 2000));
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d: Buffer) => (stdout += d.toString("utf8")));
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString("utf8")));
    child.once("error", (err) => {
      undo();
      reject(err);
    });
    child.once("close", (code, signal) => {
      undo();
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Resolves with the port a child process prints as its first stdout line (`{"port": N}`). */
export function childPort(child: ChildProcess, name: string): Promise<number> {
  return new Promise((res, rej) => {
    let buf = "";
    const onData = (d: Buffer) => {
      buf += d.toString("utf8");
      const nl = buf.indexOf("\n");
      if (nl < 0) return;
      child.stdout!.off("data", onData);
      try {
        res((JSON.parse(buf.slice(0, nl)) as { port: number }).port);
      } catch (err) {
        rej(err as Error);
      }
    };
    child.stdout!.on("data", onData);
    child.once("exit", (code) => rej(new Error(`${name} exited (${code}) before listening`)));
  });
}

/**
 * Runs a benchmark to its exit status: 0 every target met, 1 a target missed, 2 the benchmark failed, 130
 * interrupted (SIGINT/SIGTERM clean up first; a second signal exits at once). Cleanup runs in every case.
 */
export async function runBench(run: () => Promise<boolean>): Promise<never> {
  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) process.exit(130);
    interrupted = true;
    process.stderr.write(`bench: ${sig}: cleaning up\n`);
    void cleanupAll().finally(() => process.exit(130));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  let code = 2;
  try {
    code = (await run()) ? 0 : 1;
  } catch (err) {
    if (!interrupted) process.stderr.write(`bench: failed: ${(err as Error).stack ?? String(err)}\n`);
    code = interrupted ? 130 : 2;
  } finally {
    await cleanupAll();
  }
  process.exit(code);
}
