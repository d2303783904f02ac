import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { rmSync, statSync, mkdirSync, writeFileSync, readFileSync, existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { createInterface } from "node:readline";
import pg from "pg";
import { EmbeddedPostgres, findPgBin, isAlive, postgresProcessesIn } from "../../src/store/embedded.js";
import { openDb, migrate } from "../../src/store/db.js";
import { createLogger } from "../../src/log/logger.js";
import { SERVICE_USER, serviceUid, socketInodes, tcpInodes, tempRoot as tempRootIn, withTimeout } from "../support/proc.js";

// fsync off is safe against process crashes (the OS keeps the pages); synchronous_commit stays on so a
// commit is in the WAL before the client hears of it, which the kill -9 tests rely on.
const FAST = { fsync: "off", full_page_writes: "off" };
const POSTGRES = join(findPgBin(), "postgres");

/** A temporary root the service user can traverse, with the store beneath it. */
function tempRoot(): string {
  return tempRootIn("parhelion-store-test-");
}

function newStore(root: string, settings: Record<string, string | number> = {}): EmbeddedPostgres {
  return new EmbeddedPostgres({ dir: join(root, "store"), serviceUser: SERVICE_USER, logger: createLogger({ level: "silent" }), settings: { ...FAST, ...settings } });
}

/** Stops what the test started, kills whatever still runs in the data directory, removes the root. */
async function cleanup(root: string, ...stores: EmbeddedPostgres[]): Promise<void> {
  for (const s of stores) await s.stop().catch(() => undefined);
  const dataDir = join(root, "store", "pgdata");
  for (const p of postgresProcessesIn(dataDir, POSTGRES)) {
    try {
      process.kill(p.pid, "SIGKILL");
    } catch {
      // gone
    }
  }
  rmSync(root, { recursive: true, force: true });
}

async function query(connectionString: string, sql: string, params: unknown[] = []): Promise<Record<string, unknown>[]> {
  const c = new pg.Client({ connectionString });
  await c.connect();
  try {
    return (await c.query(sql, params)).rows as Record<string, unknown>[];
  } finally {
    await c.end();
  }
}


// Each test has its own store in its own directory, so they run side by side.
describe("EmbeddedPostgres", { concurrency: 3 }, () => {
  test("listens on no TCP port even when settings ask for one, keeps its directories private and runs unprivileged", async () => {
    const root = tempRoot();
    // A caller asking for TCP must not get it: the listening settings are fixed.
    const store = newStore(root, { listen_addresses: "'*'", port: 54329 });
    try {
      await store.start();
      const uid = serviceUid();
      assert.notEqual(uid, 0);

      const procs = store.processes();
      assert.ok(procs.length >= 3, `expected a postmaster and its children, found ${procs.length}`);
      assert.ok(procs.some((p) => p.pid === store.pid), "the postmaster is among the store's processes");
      for (const p of procs) assert.equal(p.uid, uid, `process ${p.pid} (${p.cmdline}) runs as uid ${p.uid}`);

      const mine = socketInodes(procs.map((p) => p.pid));
      const socketPath = join(store.socketDir, ".s.PGSQL.5432");
      const unixLines = readFileSync("/proc/net/unix", "utf8").split("\n").filter((l) => l.trim().endsWith(" " + socketPath));
      assert.ok(unixLines.some((l) => mine.has(l.trim().split(/\s+/)[6] ?? "")), "the postmaster holds its unix socket (control for the inode scan)");
      const tcp = tcpInodes();
      const leaked = [...mine].filter((i) => tcp.has(i));
      assert.deepEqual(leaked, [], "no postgres process owns a TCP socket");
      const ss = execFileSync("ss", ["-ltnpH"], { encoding: "utf8" });
      for (const p of procs) assert.ok(!ss.includes(`pid=${p.pid},`), `ss lists a TCP listener of pid ${p.pid}`);

      const [row] = await query(store.connectionString, "SELECT current_setting('listen_addresses') AS la, current_setting('unix_socket_permissions') AS perm");
      assert.equal(row?.["la"], "");
      assert.equal(row?.["perm"], "0700");

      for (const d of [join(root, "store"), store.dataDir, store.socketDir]) {
        const st = statSync(d);
        assert.equal(st.mode & 0o777, 0o700, `${d} mode ${(st.mode & 0o777).toString(8)}`);
        assert.equal(st.uid, uid, `${d} owner`);
      }
      assert.equal(statSync(store.logFile).mode & 0o777, 0o600);

      const pid = store.pid;
      assert.ok(pid);
      const t0 = Date.now();
      await store.stop();
      assert.ok(Date.now() - t0 < 10_000, `stop took ${Date.now() - t0} ms`);
      assert.equal(isAlive(pid), false, "postmaster gone after stop()");
      assert.deepEqual(store.processes(), [], "no process left after stop()");
    } finally {
      await cleanup(root, store);
    }
  });

  test("restarts the server after kill -9 of the postmaster and keeps committed data", async () => {
    const root = tempRoot();
    const store = newStore(root);
    try {
      await store.start();
      await query(store.connectionString, "CREATE TABLE t (v text); INSERT INTO t VALUES ('before crash')");
      const oldPid = store.pid;
      assert.ok(oldPid);
      let crashed = false;
      store.once("crash", () => (crashed = true));
      const restarted = withTimeout(new Promise<void>((r) => store.once("restarted", () => r())), 25_000, '"restarted"');
      process.kill(oldPid, "SIGKILL");
      await restarted;
      assert.ok(crashed, '"crash" was emitted');
      assert.ok(store.pid && store.pid !== oldPid, "a new postmaster runs");
      assert.equal(isAlive(oldPid), false);
      const postmasters = store.processes().filter((p) => !p.cmdline.startsWith("postgres:"));
      assert.deepEqual(postmasters.map((p) => p.pid), [store.pid], "exactly one postmaster in the data directory");
      const rows = await query(store.connectionString, "SELECT v FROM t");
      assert.deepEqual(rows, [{ v: "before crash" }]);
    } finally {
      await cleanup(root, store);
    }
  });

  test("reaps an orphan postmaster left by a SIGKILLed parhelion and starts cleanly on the same directory", async () => {
    const root = tempRoot();
    const dist = resolve(import.meta.dirname, "..", "..");
    const script = `
      const { EmbeddedPostgres } = await import(${JSON.stringify(pathToFileURL(join(dist, "src/store/embedded.js")).href)});
      const { createLogger } = await import(${JSON.stringify(pathToFileURL(join(dist, "src/log/logger.js")).href)});
      const s = new EmbeddedPostgres({ dir: ${JSON.stringify(join(root, "store"))}, serviceUser: ${JSON.stringify(SERVICE_USER)}, logger: createLogger({ level: "silent" }), settings: ${JSON.stringify(FAST)} });
      await s.start();
      console.log(JSON.stringify({ pid: s.pid }));
      setInterval(() => {}, 60000);
    `;
    let parent: ChildProcess | undefined;
    const store = newStore(root);
    try {
      parent = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
      const lines = createInterface({ input: parent.stdout! });
      const first = await withTimeout(new Promise<string>((r) => lines.once("line", r)), 20_000, "the child to start its store");
      const orphanPid = (JSON.parse(first) as { pid: number }).pid;
      assert.ok(orphanPid > 0);
      await query(store.connectionString, "CREATE TABLE t (v text); INSERT INTO t VALUES ('survives the orphan')");

      const exited = new Promise((r) => parent!.once("exit", r));
      parent.kill("SIGKILL");
      await exited;
      assert.ok(isAlive(orphanPid), "the postmaster outlived its SIGKILLed parent (control)");

      await store.start();
      assert.equal(isAlive(orphanPid), false, "the orphan postmaster is gone");
      assert.ok(store.pid && store.pid !== orphanPid);
      const postmasters = store.processes().filter((p) => !p.cmdline.startsWith("postgres:"));
      assert.deepEqual(postmasters.map((p) => p.pid), [store.pid]);
      assert.deepEqual(await query(store.connectionString, "SELECT v FROM t"), [{ v: "survives the orphan" }]);
    } finally {
      if (parent && parent.exitCode === null && parent.signalCode === null) parent.kill("SIGKILL");
      await cleanup(root, store);
    }
  });

  test("a stale postmaster.pid naming a live non-postmaster process does not block the start, and that process is left alone", async () => {
    const rootA = tempRoot();
    const rootB = tempRoot();
    const a = newStore(rootA);
    const b = newStore(rootB);
    const uid = serviceUid();
    const gid = Number(execFileSync("id", ["-g", SERVICE_USER], { encoding: "utf8" }).trim());
    // Owned by the service user, so PostgreSQL's own kill(pid, 0) check sees it alive and would refuse.
    const sleeper = spawn("sleep", ["120"], { uid, gid, stdio: "ignore" });
    try {
      await Promise.all([a.start(), b.start()]);
      await query(a.connectionString, "CREATE TABLE t (v text); INSERT INTO t VALUES ('a')");
      await a.stop();
      const lockFile = join(a.dataDir, "postmaster.pid");
      assert.equal(existsSync(lockFile), false);
      const bPid = b.pid;
      assert.ok(bPid && sleeper.pid);

      for (const [what, pid] of [["a live process of the service user", sleeper.pid], ["the test process itself", process.pid], ["the postmaster of another data directory", bPid]] as const) {
        writeFileSync(lockFile, `${pid}\n${a.dataDir}\n${Math.floor(Date.now() / 1000)}\n5432\n${a.socketDir}\n\n  5432001  0\nready   \n`, { mode: 0o600 });
        execFileSync("chown", [`${uid}:${gid}`, lockFile]);
        await a.start();
        assert.ok(a.pid && a.pid !== pid, `started past a lock naming ${what}`);
        assert.deepEqual(await query(a.connectionString, "SELECT v FROM t"), [{ v: "a" }]);
        await a.stop();
      }
      assert.ok(isAlive(sleeper.pid), "the unrelated process was not killed");
      assert.ok(isAlive(bPid), "the other store's postmaster was not killed");
      assert.deepEqual(await query(b.connectionString, "SELECT 1 AS one"), [{ one: 1 }]);
    } finally {
      sleeper.kill("SIGKILL");
      await cleanup(rootA, a);
      await cleanup(rootB, b);
    }
  });

  test("a start that fails puts that start's server log in parhelion's log (the file may sit on a volume the failed start unmounts), not what earlier runs logged", async () => {
    const root = tempRoot();
    const lines: string[] = [];
    const logger = createLogger({ level: "info", destination: { write: (l: string) => (lines.push(l), true) } as never });
    const first = newStore(root);
    let broken: EmbeddedPostgres | undefined;
    try {
      await first.start();
      await first.stop();
      // Something an earlier run logged: it stays in the file, and out of parhelion's log.
      const earlier = `earlier-run-${Date.now()}`;
      writeFileSync(join(root, "store", "postgres.log"), `${earlier}\n`, { flag: "a" });
      broken = new EmbeddedPostgres({ dir: join(root, "store"), serviceUser: SERVICE_USER, logger, settings: { ...FAST, shared_buffers: "'not-a-size'" } });
      await assert.rejects(broken.start(), (err: Error) => /failed to start; its log of this start is in parhelion's log, and in .*postgres\.log/.test(err.message));
      const records = lines.map((l) => JSON.parse(l) as { msg: string; serverLog?: string[] }).filter((r) => r.serverLog !== undefined);
      assert.equal(records.length, 1, lines.join("\n"));
      const text = records[0]!.serverLog!.join("\n");
      assert.match(text, /shared_buffers/, "the server's own words about this start");
      assert.ok(!text.includes(earlier), "nothing from before this start");
      assert.ok(readFileSync(join(root, "store", "postgres.log"), "utf8").includes(earlier), "the file keeps everything");
    } finally {
      await cleanup(root, first, ...(broken ? [broken] : []));
    }
  });

  test("re-initialises a data directory left without PG_VERSION by an interrupted initdb", async () => {
    const root = tempRoot();
    const store = newStore(root);
    try {
      mkdirSync(join(store.dataDir, "base"), { recursive: true });
      writeFileSync(join(store.dataDir, "half-written"), "x");
      mkdirSync(`${store.dataDir}.initdb`, { recursive: true });
      writeFileSync(join(`${store.dataDir}.initdb`, "half-written"), "x");
      await store.start();
      assert.ok(existsSync(join(store.dataDir, "PG_VERSION")));
      assert.equal(existsSync(join(store.dataDir, "half-written")), false);
      assert.equal(existsSync(`${store.dataDir}.initdb`), false, "initdb's scratch directory was renamed into place");
      const [row] = await query(store.connectionString, "SELECT current_database() AS db");
      assert.equal(row?.["db"], "parhelion");
    } finally {
      await cleanup(root, store);
    }
  });

  test("two concurrent migrate() calls on one fresh store both succeed and apply each migration once", async () => {
    const root = tempRoot();
    const store = newStore(root);
    const one = openDb({ connectionString: store.connectionString, max: 3 });
    const two = openDb({ connectionString: store.connectionString, max: 3 });
    try {
      await store.start();
      const [r1, r2] = await Promise.allSettled([migrate(one.db), migrate(two.db)]);
      assert.equal(r1.status, "fulfilled", r1.status === "rejected" ? String(r1.reason) : "");
      assert.equal(r2.status, "fulfilled", r2.status === "rejected" ? String(r2.reason) : "");
      const applied = [...(r1.status === "fulfilled" ? r1.value : []), ...(r2.status === "fulfilled" ? r2.value : [])].sort();
      const rows = await query(store.connectionString, "SELECT name FROM parhelion_migrations ORDER BY name");
      const names = rows.map((r) => String(r["name"]));
      assert.ok(names.length >= 1);
      assert.equal(new Set(names).size, names.length, "no migration recorded twice");
      assert.deepEqual(applied, names, "each migration applied by exactly one of the two callers");
      assert.deepEqual(await migrate(one.db), [], "a third run finds nothing to do");
    } finally {
      await one.db.destroy().catch(() => undefined);
      await two.db.destroy().catch(() => undefined);
      await cleanup(root, store);
    }
  });
});
