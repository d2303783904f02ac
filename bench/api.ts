/**
 * Management API benchmark (one run, every target):
 *
 *   1. Idle memory of `parhelion up` (PSS and RSS of the node process plus every process of its metadata store).
 *   2. Throughput and latency of a bare Fastify hello-world over HTTPS (same certificate and TLS settings),
 *      in its own process, as the baseline.
 *   3. Throughput and latency of GET /v1/organizations/current and GET /v1/auditLogs?limit=20 on the real
 *      control plane (started in this process, owner API key), each as a ratio of the baseline.
 *
 * The load generator (autocannon) runs as a child process so it never shares an event loop with a server.
 *
 *   node dist/bench/api.js [--duration 10] [--warmup 2] [--connections 100] [--idle 5] [--skip-rss] [--skip-load]
 *
 * autocannon is closed-loop: each connection sends its next request when the previous answer arrives, so at
 * saturation latency ≈ connections / throughput (Little's law). (Its -R fixed-rate mode is not used: with many
 * connections it reports latencies that grow as the rate falls, an artefact of its pacing.)
 *
 * Exit status: 0 every target met, 1 a target missed, 2 the benchmark itself failed.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, existsSync, readFileSync, readdirSync, readlinkSync, realpathSync } from "node:fs";
import { request as httpsRequest } from "node:https";
import { createRequire } from "node:module";
import { cpus, loadavg, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { AddressInfo } from "node:net";
import { alive, childPort, cleanupAll, onCleanup, runBench, sleep, stopChild, tempDir } from "./support/run.js";
import { memoryKb } from "./support/proc.js";
import { f0, f1, f2, table } from "./support/format.js";
import { plainStoreDataDir, volumeStoreDataDir } from "../src/volumes/store.js";

// ---------------------------------------------------------------------------------------------- targets

const TARGET_RATIO = 0.5;
const TARGET_P99_MS = 20;
const TARGET_PSS_MB = 300;

// ---------------------------------------------------------------------------------------------- options

interface Options {
  duration: number;
  warmup: number;
  connections: number;
  idle: number;
  skipRss: boolean;
  skipLoad: boolean;
  /** The platform's auditReads setting under load: "all" (the default) or "failures". */
  auditReads: "all" | "failures";
}

function usage(): never {
  process.stderr.write(
    "usage: node dist/bench/api.js [--duration SEC (10)] [--warmup SEC (2)] [--connections N (100)] [--idle SEC (5)] [--skip-rss] [--skip-load] [--audit-reads all|failures]\n",
  );
  process.exit(2);
}

function parseOptions(argv: string[]): Options {
  const o: Options = { duration: 10, warmup: 2, connections: 100, idle: 5, skipRss: false, skipLoad: false, auditReads: "all" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const [flag, inline] = a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, undefined];
    const num = (min: number): number => {
      const v = inline ?? argv[++i];
      const n = Number(v);
      if (v === undefined || !Number.isFinite(n) || n < min) {
        process.stderr.write(`bench: ${flag} needs a number >= ${min}\n`);
        usage();
      }
      return n;
    };
    switch (flag) {
      case "--duration": o.duration = num(1); break;
      case "--warmup": o.warmup = num(0); break;
      case "--connections": o.connections = Math.floor(num(1)); break;
      case "--idle": o.idle = num(0); break;
      case "--skip-rss": o.skipRss = true; break;
      case "--skip-load": o.skipLoad = true; break;
      case "--audit-reads": {
        const v = inline ?? argv[++i];
        if (v !== "all" && v !== "failures") {
          process.stderr.write("bench: --audit-reads takes all or failures\n");
          usage();
        }
        o.auditReads = v;
        break;
      }
      case "-h": case "--help": usage(); break;
      default:
        process.stderr.write(`bench: unknown argument ${a}\n`);
        usage();
    }
  }
  return o;
}

// ---------------------------------------------------------------------------------------------- cleanup

// ---------------------------------------------------------------------------------------------- /proc

function procStatus(pid: number): { ppid: number; utime: number; stime: number } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    const rest = s.slice(s.lastIndexOf(")") + 2).split(" "); // fields from 3 (state) on
    return { ppid: Number(rest[1]), utime: Number(rest[11]), stime: Number(rest[12]) };
  } catch {
    return undefined;
  }
}

/** Seconds of CPU (user + system) a process has used; clock ticks are 100/s on Linux. */
function cpuSeconds(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    const s = procStatus(pid);
    if (s) ticks += s.utime + s.stime;
  }
  return ticks / 100;
}

/** The store's PostgreSQL data directory: on its encrypted volume (the default), or on plain disk (volumeEncryption none). */
function storeDataDir(dataDir: string): string {
  const onVolume = volumeStoreDataDir(dataDir);
  return existsSync(onVolume) ? onVolume : plainStoreDataDir(dataDir);
}

/**
 * Every process of the metadata store of the platform in `dataDir`: those whose working directory is the
 * store's data directory (a postmaster chdirs there and its children inherit it) and every child of the
 * postmaster named in postmaster.pid.
 */
function storeProcesses(dataDir: string): number[] {
  const pids = new Set<number>();
  let dir: string;
  try {
    dir = realpathSync(storeDataDir(dataDir));
  } catch {
    return [];
  }
  let postmaster: number | undefined;
  try {
    const first = Number(readFileSync(join(dir, "postmaster.pid"), "utf8").split("\n")[0]);
    if (Number.isInteger(first) && first > 0) postmaster = first;
  } catch {
    // not running
  }
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (pid === process.pid) continue;
    let cwd: string | undefined;
    try {
      cwd = readlinkSync(`/proc/${pid}/cwd`);
    } catch {
      cwd = undefined;
    }
    if (cwd === dir) pids.add(pid);
    else if (postmaster !== undefined && (pid === postmaster || procStatus(pid)?.ppid === postmaster)) pids.add(pid);
  }
  return [...pids].sort((a, b) => a - b);
}

// ---------------------------------------------------------------------------------------------- HTTPS helpers

function httpsGetStatus(url: string, ca: string, timeoutMs = 2000): Promise<number> {
  return new Promise((res) => {
    const req = httpsRequest(url, { ca, timeout: timeoutMs, agent: false }, (r) => {
      r.resume();
      r.on("end", () => res(r.statusCode ?? 0));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", () => res(0));
    req.end();
  });
}

// ---------------------------------------------------------------------------------------------- hello-world child

/** Runs in the child: a bare Fastify over HTTPS with the platform's certificate, answering GET / with {hello:"world"}. */
async function helloServer(certFile: string, keyFile: string): Promise<void> {
  const { default: Fastify } = await import("fastify");
  const app = Fastify({ logger: false, https: { cert: readFileSync(certFile, "utf8"), key: readFileSync(keyFile, "utf8"), minVersion: "TLSv1.2" } });
  app.get("/", async () => ({ hello: "world" }));
  await app.listen({ host: "127.0.0.1", port: 0 });
  process.stdout.write(JSON.stringify({ port: (app.server.address() as AddressInfo).port }) + "\n");
  const stop = () => void app.close().then(() => process.exit(0), () => process.exit(1));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  process.on("disconnect", stop);
}

function startHelloChild(certFile: string, keyFile: string): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), "--hello-server", certFile, keyFile], { stdio: ["ignore", "pipe", "inherit"] });
  onCleanup("hello-world server", () => stopChild(child, 3000));
  return childPort(child, "hello-world server").then((port) => ({ child, url: `https://127.0.0.1:${port}/` }));
}

// ---------------------------------------------------------------------------------------------- autocannon

interface Histo {
  average: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  total?: number;
}

interface AutocannonResult {
  requests: Histo & { total: number };
  latency: Histo;
  duration: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  "2xx": number;
}

const require = createRequire(import.meta.url);

async function autocannon(url: string, o: { connections: number; duration: number; caFile: string; headers: Record<string, string> }): Promise<AutocannonResult> {
  const cli = require.resolve("autocannon");
  const args = [cli, "--json", "--no-progress", "-c", String(o.connections), "-d", String(o.duration)];
  for (const [k, v] of Object.entries(o.headers)) args.push("-H", `${k}=${v}`);
  args.push(url);
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NODE_EXTRA_CA_CERTS: o.caFile } });
  const forget = onCleanup("autocannon", () => stopChild(child, 1000));
  let out = "";
  let err = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString("utf8")));
  child.stderr!.on("data", (d: Buffer) => (err += d.toString("utf8")));
  const code = await new Promise<number | null>((r) => child.once("exit", (c) => r(c)));
  forget();
  const line = out.trim().split("\n").filter((l) => l.startsWith("{")).pop();
  if (code !== 0 || line === undefined) throw new Error(`autocannon failed (exit ${code}): ${err.trim().slice(0, 500)}`);
  return JSON.parse(line) as AutocannonResult;
}

// ---------------------------------------------------------------------------------------------- measurements

interface LoadRow {
  name: string;
  path: string;
  rps: number;
  p50: number;
  p99: number;
  max: number;
  total: number;
  non2xx: number;
  errors: number;
  /** CPU seconds per 1000 requests, by process group. */
  cpu: Record<string, number>;
  /** 1-minute load average when the measured run started and ended (other work on the machine shows here). */
  load: [number, number];
}

async function measure(
  name: string,
  url: string,
  o: Options,
  caFile: string,
  headers: Record<string, string>,
  cpuGroups: Record<string, () => number>,
): Promise<LoadRow> {
  process.stderr.write(`bench: ${name}: warm-up ${o.warmup} s, then ${o.duration} s at ${o.connections} connections\n`);
  if (o.warmup > 0) await autocannon(url, { connections: o.connections, duration: o.warmup, caFile, headers });
  const before = Object.fromEntries(Object.entries(cpuGroups).map(([k, f]) => [k, f()]));
  const load0 = loadavg()[0]!;
  const r = await autocannon(url, { connections: o.connections, duration: o.duration, caFile, headers });
  const cpu = Object.fromEntries(Object.entries(cpuGroups).map(([k, f]) => [k, ((f() - before[k]!) / Math.max(1, r.requests.total)) * 1000]));
  const load1 = loadavg()[0]!;
  return {
    name, path: new URL(url).pathname + new URL(url).search,
    rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, max: r.latency.max,
    total: r.requests.total, non2xx: r.non2xx, errors: r.errors + r.timeouts, cpu, load: [load0, load1],
  };
}

interface RssResult {
  source: string;
  processes: Array<{ pid: number; role: string; pss: number; rss: number }>;
  pssMb: number;
  rssMb: number;
  note?: string;
}

function memorySnapshot(nodePid: number, dataDir: string, source: string): RssResult {
  const processes: RssResult["processes"] = [];
  const n = memoryKb(nodePid);
  if (n) processes.push({ pid: nodePid, role: "parhelion (node)", ...n });
  for (const pid of storeProcesses(dataDir)) {
    const m = memoryKb(pid);
    if (!m) continue;
    let role = "postgres";
    try {
      role = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean).join(" ").slice(0, 60) || role;
    } catch {
      // gone
    }
    processes.push({ pid, role, ...m });
  }
  const sum = (k: "pss" | "rss") => processes.reduce((a, p) => a + p[k], 0) / 1024;
  return { source, processes, pssMb: sum("pss"), rssMb: sum("rss") };
}

/** Starts `parhelion up` as a subprocess, waits until ready and idle, and sums its memory. */
async function measureUp(o: Options, root: string): Promise<RssResult> {
  const main = join(root, "dist", "src", "cli", "main.js");
  if (!existsSync(main)) throw new Error(`${main} does not exist (build first)`);
  const dir = tempDir("parhelion-bench-up-");
  chmodSync(dir, 0o711);
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith("PARHELION_")) delete env[k];
  const child = spawn(process.execPath, [main, "up", "--data-dir", dir, "--api-port", "0", "--gateway-port", "0", "--log-format", "json"], {
    stdio: ["ignore", "pipe", "pipe"], env, cwd: dir,
  });
  let log = "";
  child.stdout!.on("data", (d: Buffer) => (log += d.toString("utf8")));
  child.stderr!.on("data", (d: Buffer) => (log += d.toString("utf8")));
  onCleanup("parhelion up", async () => {
    const storePids = storeProcesses(dir);
    await stopChild(child, 15_000);
    // Had it to be killed, its store would be left running: end what is left of it.
    const left = storePids.filter(alive);
    for (const pid of left) process.kill(pid, "SIGQUIT");
  });
  const deadline = Date.now() + 120_000;
  let apiUrl: string | undefined;
  let ca: string | undefined;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`parhelion up exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${log.slice(-2000)}`);
    if (Date.now() > deadline) throw new Error(`parhelion up was not ready within 120 s:\n${log.slice(-2000)}`);
    const rt = join(dir, "runtime.json");
    if (apiUrl === undefined && existsSync(rt)) {
      try {
        const j = JSON.parse(readFileSync(rt, "utf8")) as { apiUrl: string; caFile: string | null };
        apiUrl = j.apiUrl;
        ca = readFileSync(j.caFile ?? join(dir, "tls", "ca.crt"), "utf8");
      } catch {
        apiUrl = undefined; // half-written; try again
      }
    }
    if (apiUrl !== undefined && (await httpsGetStatus(`${apiUrl}/healthz`, ca!)) === 200) break;
    await sleep(200);
  }
  process.stderr.write(`bench: parhelion up is ready (pid ${child.pid}); idling ${o.idle} s\n`);
  await sleep(o.idle * 1000);
  const r = memorySnapshot(child.pid!, dir, "`parhelion up` subprocess");
  if (!r.processes.some((p) => p.role === "parhelion (node)")) throw new Error("could not read the memory of the parhelion process");
  return r;
}

// ---------------------------------------------------------------------------------------------- output

// ---------------------------------------------------------------------------------------------- main

async function run(o: Options): Promise<boolean> {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
  let allPass = true;
  const out: string[] = [];
  const machine = `node ${process.version}, ${cpus().length} CPU (${cpus()[0]?.model ?? "?"}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM`;
  out.push(`parhelion API benchmark — ${machine}`);
  out.push(`machine load average (1/5/15 min) at start: ${loadavg().map(f1).join(" / ")}`);
  out.push(`platform setting under load: auditReads=${o.auditReads}${o.auditReads === "all" ? " (every authenticated read writes a hash-chained audit record before it is answered)" : " (successful reads are not audited; failures, denials, sign-ins and mutations are)"}`);
  out.push(`load: autocannon, ${o.connections} connections, ${o.duration} s per target after ${o.warmup} s warm-up; load generator and servers share the machine`);

  // 1. Idle memory first, alone: other node/postgres processes would share (and so lower) its PSS.
  let rss: RssResult | undefined;
  let upError: string | undefined;
  if (!o.skipRss) {
    try {
      rss = await measureUp(o, root);
    } catch (err) {
      upError = (err as Error).message;
      process.stderr.write(`bench: measuring \`parhelion up\` failed, measuring the in-process platform instead: ${upError}\n`);
    }
    // Stop it (and remove its data dir) now, before the load phase.
    await cleanupAll();
  }

  // 2. The control plane in this process.
  const { loadConfig } = await import("../src/config/load.js");
  const { createLogger } = await import("../src/log/logger.js");
  const { startPlatform } = await import("../src/platform.js");
  const dataDir = tempDir("parhelion-bench-");
  chmodSync(dataDir, 0o711);
  const config = loadConfig({ flags: { dataDir, apiPort: 0, gatewayPort: 0, auditReads: o.auditReads }, env: {}, cwd: dataDir });
  const logger = createLogger({ level: "warn", destination: process.stderr as never });
  const platform = await startPlatform({ config, logger });
  onCleanup("platform", () => platform.stop());
  const caFile = join(dataDir, "tls", "ca.crt");
  const ownerKey = readFileSync(join(dataDir, "bootstrap", "owner-api-key"), "utf8").trim();

  if (!o.skipRss && rss === undefined) {
    process.stderr.write(`bench: in-process platform ready; idling ${o.idle} s\n`);
    await sleep(o.idle * 1000);
    rss = memorySnapshot(process.pid, dataDir, "in-process platform (fallback: `parhelion up` could not be measured)");
    rss.note = `the benchmark process itself is counted as the parhelion process; reason: ${upError}`;
  }

  if (rss) {
    out.push("", `Idle memory after ${o.idle} s — ${rss.source}`);
    out.push(table(["process", "pid", "PSS MB", "RSS MB"], rss.processes.map((p) => [p.role, String(p.pid), f1(p.pss / 1024), f1(p.rss / 1024)])));
    const pass = rss.pssMb < TARGET_PSS_MB;
    allPass &&= pass;
    out.push(`total: PSS ${f1(rss.pssMb)} MB, RSS ${f1(rss.rssMb)} MB (${rss.processes.length} processes) — target PSS < ${TARGET_PSS_MB} MB: ${pass ? "PASS" : "FAIL"}`);
    if (rss.note) out.push(`note: ${rss.note}`);
  }

  // 3. Load.
  if (!o.skipLoad) {
    const hello = await startHelloChild(join(dataDir, "tls", "server.crt"), join(dataDir, "tls", "server.key"));
    if ((await httpsGetStatus(hello.url, readFileSync(caFile, "utf8"))) !== 200) throw new Error("the hello-world server does not answer 200");
    const auth = { authorization: `Bearer ${ownerKey}` };
    for (const p of ["/v1/organizations/current", "/v1/auditLogs?limit=20"]) {
      const s = await new Promise<number>((res) => {
        const req = httpsRequest(platform.apiUrl + p, { ca: readFileSync(caFile, "utf8"), headers: auth, agent: false }, (r) => {
          r.resume();
          r.on("end", () => res(r.statusCode ?? 0));
        });
        req.on("error", () => res(0));
        req.end();
      });
      if (s !== 200) throw new Error(`GET ${p} answered ${s}, not 200`);
    }
    const storePids = () => storeProcesses(dataDir);
    const self = process.pid;
    const helloPid = hello.child.pid!;
    const groups = (server: "hello" | "platform"): Record<string, () => number> =>
      server === "hello"
        ? { server: () => cpuSeconds([helloPid]) }
        : { node: () => cpuSeconds([self]), postgres: () => cpuSeconds(storePids()) };

    const rows: LoadRow[] = [];
    rows.push(await measure("bare Fastify hello-world", hello.url, o, caFile, {}, groups("hello")));
    // The baseline's server is no longer needed: stop it so it does not hold memory or CPU.
    await stopChild(hello.child, 3000);
    rows.push(await measure("GET /v1/organizations/current", `${platform.apiUrl}/v1/organizations/current`, o, caFile, auth, groups("platform")));
    rows.push(await measure("GET /v1/auditLogs?limit=20", `${platform.apiUrl}/v1/auditLogs?limit=20`, o, caFile, auth, groups("platform")));
    // autocannon hangs up with requests in flight; let the platform finish (and audit) them before it stops.
    await sleep(2000);

    const base = rows[0]!;
    const tableRows = rows.map((r, i) => {
      const ratio = r.rps / base.rps;
      const ratioOk = ratio >= TARGET_RATIO;
      const p99Ok = r.p99 < TARGET_P99_MS;
      const clean = r.non2xx === 0 && r.errors === 0;
      const verdict = i === 0 ? (clean ? "baseline" : "baseline (errors!)") : ratioOk && p99Ok && clean ? "PASS" : `FAIL (${[!ratioOk && "ratio", !p99Ok && "p99", !clean && "non-2xx/errors"].filter(Boolean).join(", ")})`;
      if (i > 0) allPass &&= ratioOk && p99Ok && clean;
      if (i === 0 && !clean) allPass = false;
      const cpu = Object.entries(r.cpu).map(([k, v]) => `${k} ${f2(v)}`).join(", ");
      return [r.name, f0(r.rps), String(r.p50), String(r.p99), String(r.max), f0(r.total), String(r.non2xx + r.errors), i === 0 ? "1.00" : f2(ratio), cpu, `${f1(r.load[0])}→${f1(r.load[1])}`, verdict];
    });
    out.push("", `Load — ${o.connections} connections, ${o.duration} s each (targets: ratio >= ${TARGET_RATIO}, p99 < ${TARGET_P99_MS} ms, no non-2xx)`);
    out.push(table(["target", "req/s", "p50 ms", "p99 ms", "max ms", "requests", "non-2xx+err", "ratio", "server CPU s / 1000 req", "load avg", "verdict"], tableRows));
  }

  out.push("", `overall: ${allPass ? "PASS" : "FAIL"}`);
  process.stdout.write(out.join("\n") + "\n");
  return allPass;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === "--hello-server") {
    await helloServer(argv[1]!, argv[2]!);
    return;
  }
  const o = parseOptions(argv);
  await runBench(() => run(o));
}

await main();
