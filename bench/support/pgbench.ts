/** Runs PostgreSQL's pgbench as a child process and parses what it reports. */
import { spawn } from "node:child_process";
import { onCleanup, stopChild } from "./run.js";

export const PGBENCH = "/usr/lib/postgresql/15/bin/pgbench";

export interface PgbenchResult {
  /** Transactions per second as pgbench reports it: without the initial connection time, or with -C including reconnections. */
  tps: number;
  latencyMs: number;
  transactions: number;
  failed: number;
  /** pgbench's "initial connection time" (without -C) or "average connection time" (with -C), ms. */
  connectionMs: number;
  /** tps of each progress interval (-P), in order. */
  progress: number[];
  output: string;
}

const num = (re: RegExp, text: string): number => {
  const m = re.exec(text);
  return m ? Number(m[1]) : NaN;
};

export function parsePgbench(stdout: string, stderr: string): PgbenchResult {
  const progress = [...stderr.matchAll(/^progress: [\d.]+ s, ([\d.]+) tps/gm)].map((m) => Number(m[1]));
  return {
    tps: num(/^tps = ([\d.]+)/m, stdout),
    latencyMs: num(/^latency average = ([\d.]+) ms/m, stdout),
    transactions: num(/^number of transactions actually processed: (\d+)/m, stdout),
    failed: num(/^number of failed transactions: (\d+)/m, stdout) || 0,
    connectionMs: num(/^(?:initial|average) connection time = ([\d.]+) ms/m, stdout),
    progress,
    output: stdout,
  };
}

/**
 * Runs pgbench with the arguments and a clean environment (HOME points nowhere, so no ~/.pgpass or
 * ~/.postgresql/root.crt changes what sslmode=require means); the connection comes from env (PGHOST...).
 */
export function pgbench(args: string[], env: Record<string, string>, home: string, timeoutMs = 0): Promise<PgbenchResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(PGBENCH, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", LANG: "C.UTF-8", HOME: home, PGCONNECT_TIMEOUT: "10", ...env },
    });
    const undo = onCleanup("pgbench", () => stopChild(child, 2000, "SIGINT"));
    // A path that stops answering must not hang the benchmark: pgbench is interrupted, and the run fails.
    let timedOut = false;
    const watchdog = timeoutMs > 0 ? setTimeout(() => {
      timedOut = true;
      void stopChild(child, 2000, "SIGINT");
    }, timeoutMs) : undefined;
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d: Buffer) => (stdout += d.toString("utf8")));
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString("utf8")));
    child.once("error", (err) => {
      undo();
      clearTimeout(watchdog);
      reject(err);
    });
    child.once("close", (code, signal) => {
      undo();
      clearTimeout(watchdog);
      const r = parsePgbench(stdout, stderr);
      if (code !== 0 || !Number.isFinite(r.tps) || !Number.isFinite(r.transactions)) {
        const tail = (stderr.split("\n").filter((l) => !l.startsWith("progress:")).join("\n") + "\n" + stdout).trim().slice(-1500);
        reject(new Error(`pgbench ${args.join(" ")} ${timedOut ? `did not finish within ${timeoutMs / 1000} s` : `failed (exit ${code ?? signal})`}:\n${tail}`));
        return;
      }
      resolve(r);
    });
  });
}
