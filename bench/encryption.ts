/**
 * Encryption-at-rest benchmark (issue 4): PostgreSQL 15 on an fscrypt-encrypted volume against the same on
 * plain disk, in one run.
 *
 *   node dist/bench/encryption.js [-T SEC (30)] [-c CLIENTS (8)] [-j THREADS (2)] [--help for the rest]
 *
 * Two PostgreSQL servers configured alike (a workspace's settings for the size, the same preloaded modules,
 * fsync on, full_page_writes on), both started by parhelion's PostgresServer as the service account:
 *   plain      pgdata in a plain directory on the host's disk (the benchmark's temporary directory)
 *   encrypted  pgdata inside an EncryptedVolume (src/volumes) whose image lives in the same temporary
 *              directory, so both paths end on the same disk
 *   loop       pgdata in an unencrypted directory on the same mounted volume: the loop device and the
 *              second filesystem without the encryption, so the two costs can be told apart (the encrypted
 *              directory is the only one parhelion itself makes there; this one exists for the benchmark)
 * pgbench -i on each, then per script (TPC-B-like, then select-only -S) an unmeasured warm-up and a measured
 * `-c 8 -j 2 -T 30` run on each path, the order reversed between scripts, so drift in the machine's load
 * does not favour one side. The target compares encrypted with plain.
 *
 * Also: the kernel's xts(aes) implementation (/proc/crypto) and sequential write throughput (128 MiB,
 * fsync) into the encrypted and the unencrypted directory of the volume, with the machine's CPU per GiB.
 *
 * Per run: TPS, latency, and CPU per transaction: the server's processes (live ones plus the backends its
 * postmaster reaped) and the whole machine (fscrypt encrypts in the writeback path, which may run in kernel
 * threads, so the machine's figure is the honest one).
 *
 * Then, repeated (--lock-reps): time to lock (key removal) and unlock (add key, check it is the volume's),
 * and the revocation path: from "key disabled" to the server stopped and the volume locked, and from "key
 * re-enabled" to the first query answered.
 *
 * Then (--unwrap-reps, 200) the latency of wrapping and unwrapping a 32-byte key, as the keyring does for every
 * data key it opens, through each root/customer key provider: `local` (the root key file), `pkcs11` (an AES-256
 * key on a SoftHSM2 token, AES-GCM inside the HSM) and `aws-kms` (the real @aws-sdk/client-kms against the repo's
 * KMS stand-in, test/support/kms-server.ts: HTTPS on loopback, keys on SoftHSM2, run in this process). p50, p99 and
 * mean per provider. `--only-unwrap` runs just this part (no root, no volume, no PostgreSQL).
 *
 * Exit status: 0 every target met, 1 a target missed, 2 the benchmark failed, 130 interrupted. Cleanup (the
 * servers, the volume's mount, loop device and image, the temporary directory) runs in every case.
 */
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { open, rm } from "node:fs/promises";
import { cpus, loadavg, release } from "node:os";
import { randomBytes, randomUUID } from "node:crypto";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import pg from "pg";
import { onCleanup, runBench, runCommand, say, tempDir } from "./support/run.js";
import { machineBusy, processesIn, serverCpu } from "./support/proc.js";
import { PGBENCH, pgbench, type PgbenchResult } from "./support/pgbench.js";
import { f0, f1, f2, f3, median, table } from "./support/format.js";
import { PostgresServer, peerIdentMap, resolveServiceAccount, type ServiceAccount } from "../src/engine/postgres.js";
import { PRELOAD_LIBRARIES } from "../src/engine/engine.js";
import { ALLOWED_EXTENSIONS, SYSTEM_ROLE } from "../src/engine/sql.js";
import { WORKSPACE_SIZES, isWorkspaceSize, sizeSettings, type WorkspaceSize } from "../src/engine/sizes.js";
import { createLogger } from "../src/log/logger.js";
import { EncryptedVolume, loopDevicesFor, mountAt } from "../src/volumes/index.js";
import type { KeyProvider, WrapContext } from "../src/kms/provider.js";
import { LocalKeyProvider } from "../src/kms/local.js";
import { Pkcs11KeyProvider } from "../src/kms/pkcs11.js";
import { AwsKmsKeyProvider } from "../src/kms/aws.js";
import { SOFTHSM_MODULE, createTestToken } from "../test/support/softhsm.js";
import { startTestKms } from "../test/support/kms-server.js";

const TARGET_TPCB = 0.9; // encrypted / plain, TPC-B-like TPS
const TARGET_SELECT = 0.95; // encrypted / plain, select-only TPS

interface Options {
  duration: number;
  clients: number;
  jobs: number;
  warmup: number;
  scale: number;
  size: WorkspaceSize;
  imageGiB: number;
  rounds: number;
  lockReps: number;
  unwrapReps: number;
  onlyUnwrap: boolean;
}

const USAGE = `usage: node dist/bench/encryption.js [options]
  -T, --duration SEC   measured pgbench run per path and script (30)
  -c, --clients N      pgbench clients (8)
  -j, --jobs N         pgbench threads (2)
      --warmup SEC     unmeasured pgbench run on the same path first (10)
      --scale N        pgbench scale factor (10)
      --size NAME      workspace size whose settings both servers use (S-1)
      --image-gib N    size of the volume's sparse image (4)
      --rounds N       measured runs per path and script, alternating order; the median counts (1)
      --lock-reps N    repetitions of the lock/unlock and revocation timings (5)
      --unwrap-reps N  wraps and unwraps of a 32-byte key per key provider (local, pkcs11, aws-kms) (200)
      --only-unwrap    only the key providers' wrap/unwrap latency (no root, volume or PostgreSQL needed)
      --quick          smoke run: -T 5, --warmup 2, --scale 2, --lock-reps 2, --unwrap-reps 100`;

function parseArgs(argv: string[]): Options {
  const o: Options = { duration: 30, clients: 8, jobs: 2, warmup: 10, scale: 10, size: "S-1", imageGiB: 4, rounds: 1, lockReps: 5, unwrapReps: 200, onlyUnwrap: false };
  const int = (flag: string, v: string | undefined, min: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new Error(`${flag} needs an integer >= ${min}`);
    return n;
  };
  let quick = false;
  let explicitReps = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = () => argv[++i];
    switch (a) {
      case "-T": case "--duration": o.duration = int(a, next(), 1); break;
      case "-c": case "--clients": o.clients = int(a, next(), 1); break;
      case "-j": case "--jobs": o.jobs = int(a, next(), 1); break;
      case "--warmup": o.warmup = int(a, next(), 0); break;
      case "--scale": o.scale = int(a, next(), 1); break;
      case "--image-gib": o.imageGiB = int(a, next(), 1); break;
      case "--rounds": o.rounds = int(a, next(), 1); break;
      case "--lock-reps": o.lockReps = int(a, next(), 1); break;
      case "--unwrap-reps": o.unwrapReps = int(a, next(), 1); explicitReps = true; break;
      case "--only-unwrap": o.onlyUnwrap = true; break;
      case "--size": {
        const s = next();
        if (!isWorkspaceSize(s)) throw new Error(`--size must be one of ${Object.keys(WORKSPACE_SIZES).join(", ")}`);
        o.size = s;
        break;
      }
      case "--quick": Object.assign(o, { duration: 5, warmup: 2, scale: 2, lockReps: 2 }); quick = true; break;
      case "-h": case "--help": process.stdout.write(USAGE + "\n"); process.exit(0); break;
      default: throw new Error(`unknown option ${a}\n${USAGE}`);
    }
  }
  if (quick && !explicitReps) o.unwrapReps = 100;
  return o;
}

type PathKey = "plain" | "loop" | "encrypted";
const PATHS: PathKey[] = ["plain", "loop", "encrypted"];
type Script = "tpcb" | "select";

interface Measured {
  path: PathKey;
  script: Script;
  result: PgbenchResult;
  serverCpuMs: number;
  machineCpuMs: number;
}

const logger = createLogger({ level: "silent" });

/** The driver the kernel's crypto API picked for xts(aes) (fscrypt's contents mode): AES-NI or a generic C one. */
function xtsDriver(): string {
  try {
    const blocks = readFileSync("/proc/crypto", "utf8").split("\n\n");
    const best = blocks
      .filter((b) => /^name\s+: xts\(aes\)$/m.test(b))
      .map((b) => ({ driver: /^driver\s+: (.+)$/m.exec(b)?.[1] ?? "?", priority: Number(/^priority\s+: (\d+)$/m.exec(b)?.[1] ?? 0) }))
      .sort((a, b) => b.priority - a.priority)[0];
    return best ? `${best.driver} (priority ${best.priority})` : "not registered yet";
  } catch {
    return "unknown";
  }
}

/** Writes 128 MiB (1 MiB writes, then fsync) into each directory; MB/s and the machine's CPU seconds per GiB. */
async function writeThroughput(encDir: string, plainDir: string): Promise<{ driver: string; encMBs: number; plainMBs: number; encCpuPerGiB: number; plainCpuPerGiB: number }> {
  const chunk = randomBytes(1024 * 1024);
  const once = async (dir: string) => {
    const file = join(dir, "throughput");
    const m0 = machineBusy();
    const t0 = performance.now();
    const fh = await open(file, "w", 0o600);
    try {
      for (let i = 0; i < 128; i++) await fh.write(chunk);
      await fh.sync();
    } finally {
      await fh.close();
    }
    const s = (performance.now() - t0) / 1000;
    const cpu = machineBusy() - m0;
    await rm(file);
    return { mbs: (128 * 1.048576) / s, cpuPerGiB: cpu * 8 };
  };
  await once(plainDir); // warms the allocator and the crypto transform
  const p = await once(plainDir);
  const e = await once(encDir);
  return { driver: xtsDriver(), encMBs: e.mbs, plainMBs: p.mbs, encCpuPerGiB: e.cpuPerGiB, plainCpuPerGiB: p.cpuPerGiB };
}

function newServer(dir: string, account: ServiceAccount, size: WorkspaceSize): PostgresServer {
  return new PostgresServer({
    dir,
    account,
    logger,
    name: `benchmark server ${dir}`,
    errorCode: "ERR_ENGINE",
    superuser: SYSTEM_ROLE,
    hba: `local all ${SYSTEM_ROLE} peer map=system\n`,
    ident: peerIdentMap("system", SYSTEM_ROLE, account),
    // What the engine gives a workspace of this size; fsync, synchronous_commit and full_page_writes at their (safe) defaults.
    settings: { password_encryption: "'scram-sha-256'", log_min_messages: "warning", "pgaudit.log": "'none'", ...sizeSettings(size) },
    fixedSettings: { shared_preload_libraries: PRELOAD_LIBRARIES.join(","), "parhelion_guard.extensions": ALLOWED_EXTENSIONS.join(",") },
  });
}

async function firstQuery(socketDir: string): Promise<void> {
  const c = new pg.Client({ host: socketDir, user: SYSTEM_ROLE, database: "postgres", connectionTimeoutMillis: 10_000 });
  c.on("error", () => undefined);
  await c.connect();
  try {
    await c.query("SELECT count(*) FROM pgbench_branches");
  } finally {
    await c.end();
  }
}

type KeyProviderName = "local" | "pkcs11" | "aws-kms";
interface Latency {
  provider: KeyProviderName;
  keyId: string;
  wrapMs: number[];
  unwrapMs: number[];
}

/** Nearest-rank percentile of samples (ms). */
function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? NaN;
}
const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

/**
 * Wrap and unwrap latency of a 32-byte key through each key provider, one call at a time (as the keyring makes
 * them): `reps` of each after 10 unmeasured round trips, the unwraps each of a key wrapped beforehand, bound to a
 * group data key's context.
 */
async function keyProviderLatency(reps: number): Promise<Latency[]> {
  const dir = tempDir("parhelion-bench-kms-");
  const tok = createTestToken("bench-kms");
  onCleanup("SoftHSM2 token", () => tok.cleanup());
  const providers: Array<[KeyProviderName, KeyProvider]> = [];
  const local = LocalKeyProvider.open(join(dir, "keys", "root.key"));
  providers.push(["local", local]);
  const hsm = Pkcs11KeyProvider.open({ module: SOFTHSM_MODULE, token: tok.token, keyLabel: "bench-customer-key", pin: tok.pin });
  onCleanup("pkcs11 provider", () => hsm.close());
  providers.push(["pkcs11", hsm]);
  // The KMS stand-in: the real SDK signs with whatever credentials it finds; none of the operator's are read.
  Object.assign(process.env, { AWS_ACCESS_KEY_ID: "AKIAPARHELIONBENCH01", AWS_SECRET_ACCESS_KEY: randomBytes(20).toString("base64"), AWS_CONFIG_FILE: join(dir, "none"), AWS_SHARED_CREDENTIALS_FILE: join(dir, "none") });
  const kms = await startTestKms(tok);
  onCleanup("KMS stand-in", () => kms.close());
  const caFile = join(dir, "kms-ca.pem");
  writeFileSync(caFile, kms.caPem);
  const aws = await AwsKmsKeyProvider.open({ keyId: kms.createKey("bench"), region: kms.region, endpoint: kms.endpoint, caFile });
  onCleanup("aws-kms provider", () => aws.close());
  providers.push(["aws-kms", aws]);

  const context: WrapContext = { purpose: "parhelion-group-data", keyId: randomUUID(), organizationId: randomUUID(), workspaceGroupId: randomUUID() };
  const key = randomBytes(32);
  const out: Latency[] = [];
  for (const [name, p] of providers) {
    say(`key provider ${name}: ${reps} wraps and unwraps`);
    for (let i = 0; i < 10; i++) await p.unwrap(await p.wrap(key, context), context);
    const wrapMs: number[] = [];
    const wrapped: Buffer[] = [];
    for (let i = 0; i < reps; i++) {
      const t0 = performance.now();
      wrapped.push(await p.wrap(key, context));
      wrapMs.push(performance.now() - t0);
    }
    const unwrapMs: number[] = [];
    for (const w of wrapped) {
      const t0 = performance.now();
      const back = await p.unwrap(w, context);
      unwrapMs.push(performance.now() - t0);
      if (!back.equals(key)) throw new Error(`${name}: unwrap gave another key`);
      back.fill(0);
    }
    out.push({ provider: name, keyId: p.describe().keyId, wrapMs, unwrapMs });
  }
  key.fill(0);
  return out;
}

function latencyReport(reps: number, l: Latency[]): string {
  const rows = l.flatMap((x) => ([["wrap", x.wrapMs], ["unwrap", x.unwrapMs]] as const).map(([op, ms]) => [`${x.provider} ${op}`, f3(pct(ms, 50)), f3(pct(ms, 99)), f3(mean(ms)), f3(Math.max(...ms))]));
  return [
    `key providers: ${reps} wraps, then ${reps} unwraps of a 32-byte key each, one at a time, after 10 unmeasured round trips (aws-kms: @aws-sdk/client-kms over HTTPS to the KMS stand-in on loopback, in this process)`,
    ``,
    table(["provider, operation", "p50 ms", "p99 ms", "mean ms", "max ms"], rows),
    ``,
  ].join("\n");
}

async function run(o: Options): Promise<boolean> {
  if (o.onlyUnwrap) {
    const lat = await keyProviderLatency(o.unwrapReps);
    process.stdout.write([`# Encryption at rest: key providers' wrap/unwrap latency`, ``, `machine: ${cpus().length} CPUs (${cpus()[0]?.model ?? "?"}), Linux ${release()}; load average ${loadavg().map(f2).join(" ")}`, ``, latencyReport(o.unwrapReps, lat)].join("\n") + "\n");
    return true;
  }
  if (process.getuid?.() !== 0) throw new Error("run as root: the encrypted volume needs mount, loop devices and fscrypt keys");
  if (!existsSync(PGBENCH)) throw new Error(`${PGBENCH} is missing (package postgresql-15)`);
  const load0 = loadavg();
  const account = resolveServiceAccount("parhelion");
  const root = tempDir("parhelion-bench-enc-");
  chmodSync(root, 0o711);
  const home = join(root, "home");

  // The volume, registered for cleanup before the servers in it, so it is undone after them.
  const key = randomBytes(64);
  const vol = new EncryptedVolume({ dataDir: root, groupId: randomUUID(), sizeBytes: o.imageGiB * 1024 ** 3, logger });
  onCleanup("encrypted volume", async () => {
    try {
      await vol.destroy();
    } catch (err) {
      say(`destroying the volume: ${(err as Error).message}; killing what is left in it and unmounting lazily`);
      for (const d of [join(vol.path, "w", "pgdata"), join(vol.mountPoint, "plain", "w", "pgdata")]) for (const pid of processesIn(d)) process.kill(pid, "SIGKILL");
      if (await mountAt(vol.mountPoint)) await runCommand("umount", ["--lazy", "--", vol.mountPoint]);
      for (const dev of await loopDevicesFor(vol.image)) await runCommand("losetup", ["--detach", dev]);
    }
    if (await mountAt(vol.mountPoint)) throw new Error(`${vol.mountPoint} is still mounted`);
  });
  let t = performance.now();
  await vol.create(key);
  const createMs = performance.now() - t;
  say(`volume created and mounted in ${f0(createMs)} ms (${o.imageGiB} GiB sparse image)`);

  const unencrypted = join(vol.mountPoint, "plain");
  mkdirSync(unencrypted, { mode: 0o700 });
  chownSync(unencrypted, account.uid, account.gid);
  const crypto = await writeThroughput(vol.path, unencrypted);
  const dirs: Record<PathKey, string> = { plain: join(root, "plain"), loop: join(unencrypted, "w"), encrypted: join(vol.path, "w") };
  const servers: Record<PathKey, PostgresServer> = {
    plain: newServer(dirs.plain, account, o.size),
    loop: newServer(dirs.loop, account, o.size),
    encrypted: newServer(dirs.encrypted, account, o.size),
  };
  for (const p of PATHS) {
    onCleanup(`${p} server`, () => servers[p].stop());
    await servers[p].start();
  }
  const env = (p: PathKey) => ({ PGHOST: servers[p].socketDir, PGUSER: SYSTEM_ROLE, PGDATABASE: "postgres" });
  for (const p of PATHS) {
    say(`pgbench -i -s ${o.scale} on ${p}`);
    const r = await runCommand(PGBENCH, ["-i", "-q", "-s", String(o.scale)], { env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", HOME: home, ...env(p) } });
    if (r.code !== 0) throw new Error(`pgbench -i on ${p} failed: ${r.stderr.slice(-1500)}`);
    await firstQuery(servers[p].socketDir);
  }

  const measured: Measured[] = [];
  const scripts: Script[] = ["tpcb", "select"];
  let flip = false;
  for (let round = 0; round < o.rounds; round++) {
    for (const script of scripts) {
      const order: PathKey[] = flip ? [...PATHS].reverse() : [...PATHS];
      flip = !flip;
      for (const path of order) {
        const base = ["-c", String(o.clients), "-j", String(o.jobs), "-n", ...(script === "select" ? ["-S"] : [])];
        if (o.warmup > 0) {
          say(`${script} on ${path}: warm-up ${o.warmup} s`);
          await pgbench([...base, "-T", String(o.warmup)], env(path), home, (o.warmup + 60) * 1000);
        }
        // A checkpoint before each measured run, so neither path inherits the other's (or the warm-up's) dirty pages.
        await runCommand(PGBENCH.replace(/pgbench$/, "psql"), ["-X", "-q", "-c", "CHECKPOINT"], { env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", HOME: home, ...env(path) } });
        say(`${script} on ${path}: measuring ${o.duration} s`);
        const pgdata = servers[path].dataDir;
        const s0 = serverCpu(pgdata);
        const m0 = machineBusy();
        const result = await pgbench([...base, "-T", String(o.duration)], env(path), home, (o.duration + 60) * 1000);
        const serverCpuMs = ((serverCpu(pgdata) - s0) * 1000) / result.transactions;
        const machineCpuMs = ((machineBusy() - m0) * 1000) / result.transactions;
        measured.push({ path, script, result, serverCpuMs, machineCpuMs });
        say(`${script} on ${path}: ${f0(result.tps)} tps`);
      }
    }
  }

  // Lock and unlock alone (the server stopped, as revocation leaves it), then the whole revocation path.
  say("timing lock, unlock and revocation");
  const lockMs: number[] = [];
  const unlockMs: number[] = [];
  const revokeMs: number[] = [];
  const restoreMs: number[] = [];
  const enc = servers.encrypted;
  for (let i = 0; i < o.lockReps; i++) {
    // Revocation: the key is disabled now; stop the server, then remove the key.
    t = performance.now();
    await enc.stop();
    const lock = await vol.lock();
    revokeMs.push(performance.now() - t);
    if (lock.busy) throw new Error("the volume was busy after its server stopped");
    // Re-enabled: unlock, start, first query answered.
    t = performance.now();
    await vol.unlock(key);
    await enc.start();
    await firstQuery(enc.socketDir);
    restoreMs.push(performance.now() - t);
  }
  await enc.stop();
  for (let i = 0; i < o.lockReps; i++) {
    t = performance.now();
    await vol.lock();
    lockMs.push(performance.now() - t);
    t = performance.now();
    await vol.unlock(key);
    unlockMs.push(performance.now() - t);
  }
  key.fill(0);
  say("timing the key providers' wrap and unwrap");
  const latency = await keyProviderLatency(o.unwrapReps);
  const load1 = loadavg();

  // ------------------------------------------------------------------------------------------ report
  const pick = (path: PathKey, script: Script) => measured.filter((m) => m.path === path && m.script === script);
  const med = (path: PathKey, script: Script, f: (m: Measured) => number) => median(pick(path, script).map(f));
  const rows: string[][] = [];
  const verdicts: boolean[] = [];
  for (const script of scripts) {
    for (const path of PATHS) {
      rows.push([
        `${script === "tpcb" ? "TPC-B-like" : "select-only"}, ${path}`,
        f0(med(path, script, (m) => m.result.tps)),
        f2(med(path, script, (m) => m.result.latencyMs)),
        f3(med(path, script, (m) => m.serverCpuMs)),
        f3(med(path, script, (m) => m.machineCpuMs)),
      ]);
    }
  }
  const ratioRows: string[][] = [];
  for (const script of scripts) {
    const ratio = med("encrypted", script, (m) => m.result.tps) / med("plain", script, (m) => m.result.tps);
    const target = script === "tpcb" ? TARGET_TPCB : TARGET_SELECT;
    const ok = ratio >= target;
    verdicts.push(ok);
    const name = script === "tpcb" ? "TPC-B-like" : "select-only";
    ratioRows.push([`${name}: encrypted / plain`, f3(ratio), `>= ${target}`, ok ? "met" : "MISSED"]);
    const tps = (p: PathKey) => med(p, script, (m) => m.result.tps);
    ratioRows.push([`${name}: loop / plain (the loop device alone)`, f3(tps("loop") / tps("plain")), "", "info"]);
    ratioRows.push([`${name}: encrypted / loop (the encryption alone)`, f3(tps("encrypted") / tps("loop")), "", "info"]);
  }
  const out = [
    `# Encryption at rest: fscrypt volume vs plain disk`,
    ``,
    `machine: ${cpus().length} CPUs (${cpus()[0]?.model ?? "?"}), Linux ${release()}; load average before ${load0.map(f2).join(" ")}, after ${load1.map(f2).join(" ")}`,
    `pgbench ${o.clients} clients, ${o.jobs} threads, ${o.duration} s measured after ${o.warmup} s warm-up, scale ${o.scale}, ${o.rounds} round(s) alternating order; size ${o.size} settings, fsync on`,
    `volume: ${o.imageGiB} GiB sparse ext4 image (-O encrypt), loop device with direct I/O, fscrypt v2 AES-256-XTS/AES-256-CTS; created and mounted in ${f0(createMs)} ms`,
    ``,
    table(["run", "TPS", "latency ms", "server CPU ms/txn", "machine CPU ms/txn"], rows),
    ``,
    table(["ratio of TPS", "value", "target", "verdict"], ratioRows),
    ``,
    `kernel xts(aes): ${crypto.driver}; sequential write 128 MiB + fsync on the volume: unencrypted directory ${f0(crypto.plainMBs)} MB/s (${f2(crypto.plainCpuPerGiB)} CPU s/GiB), encrypted directory ${f0(crypto.encMBs)} MB/s (${f2(crypto.encCpuPerGiB)} CPU s/GiB)`,
    ``,
    table(["operation (median of " + o.lockReps + ")", "ms", "min", "max"], [
      ["lock (remove the key; server stopped)", f1(median(lockMs)), f1(Math.min(...lockMs)), f1(Math.max(...lockMs))],
      ["unlock (add the key, check it)", f1(median(unlockMs)), f1(Math.min(...unlockMs)), f1(Math.max(...unlockMs))],
      ["key disabled -> server stopped and volume locked", f1(median(revokeMs)), f1(Math.min(...revokeMs)), f1(Math.max(...revokeMs))],
      ["key re-enabled -> unlocked, started, first query", f1(median(restoreMs)), f1(Math.min(...restoreMs)), f1(Math.max(...restoreMs))],
    ]),
    ``,
    latencyReport(o.unwrapReps, latency),
  ].join("\n");
  process.stdout.write(out + "\n");
  return verdicts.every(Boolean);
}

void runBench(() => run(parseArgs(process.argv.slice(2))));
