import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { createInterface } from "node:readline";
import { tmpdir } from "node:os";
import { isAlive } from "../../src/engine/postgres.js";
import { WORKSPACE_SIZES } from "../../src/engine/index.js";
import { ParhelionError } from "../../src/lib/errors.js";
import {
  ADMIN_PASSWORD, ADMIN_VERIFIER, FAST, SERVICE_USER, asAdmin, cleanup, connectAs, newEngine, postmasters, serverProcesses, serviceUid,
  socketInodes, sqlstate, tcpInodes, tempRoot, withTimeout,
} from "./helpers.js";

// Process crashes only: the OS keeps written WAL, and synchronous_commit puts a commit there before it is acknowledged.
const DURABLE = { ...FAST, synchronous_commit: "on" };
const isCode = (code: string) => (err: unknown) => err instanceof ParhelionError && err.code === code;

describe("workspace engine lifecycle", { concurrency: 2 }, () => {
  test("create, stop, start and destroy: data survives a stop, nothing is left after destroy", async () => {
    const root = tempRoot();
    const engine = newEngine(root);
    const id = randomUUID();
    try {
      await engine.ensureRunning({ id, size: "S-00", adminVerifier: ADMIN_VERIFIER });
      assert.equal(engine.isRunning(id), true);
      assert.deepEqual(engine.listOnDisk(), [id]);
      await asAdmin(engine, id, (c) => c.query("CREATE TABLE t (v text); INSERT INTO t VALUES ('kept across stop')"));
      await engine.ensureRunning({ id, size: "S-00", adminVerifier: ADMIN_VERIFIER }); // idempotent while running
      const [pid] = postmasters(root, id);
      assert.ok(pid);

      await engine.ensureStopped(id);
      assert.equal(engine.isRunning(id), false);
      assert.equal(isAlive(pid), false, "the postmaster is gone: its memory is freed");
      assert.deepEqual(serverProcesses(root, id), [], "no server process left after ensureStopped");
      await engine.ensureStopped(id); // idempotent
      assert.deepEqual(engine.listOnDisk(), [id], "a stopped workspace keeps its directory");
      await assert.rejects(engine.listUsers(id), isCode("ERR_WORKSPACE_UNAVAILABLE"));

      await engine.ensureRunning({ id, size: "S-00", adminVerifier: ADMIN_VERIFIER });
      assert.deepEqual((await asAdmin(engine, id, (c) => c.query("SELECT v FROM t"))).rows, [{ v: "kept across stop" }]);

      await engine.destroy(id);
      assert.equal(engine.isRunning(id), false);
      assert.deepEqual(serverProcesses(root, id), [], "no server process left after destroy");
      assert.equal(existsSync(join(root, "ws", id)), false, "the workspace directory is gone");
      assert.deepEqual(engine.listOnDisk(), []);
      await engine.destroy(id); // idempotent
    } finally {
      await cleanup(root, engine);
    }
  });

  test("runs as the service user on a private unix socket with no TCP listener, and authenticates the admin by SCRAM only", async () => {
    const root = tempRoot();
    // Tests cannot turn TCP on either: the listening settings are fixed on the command line.
    const engine = newEngine(root, { settings: { ...FAST, listen_addresses: "'*'", port: 54331 } });
    const id = randomUUID();
    try {
      await engine.ensureRunning({ id, size: "S-00", adminVerifier: ADMIN_VERIFIER });
      const uid = serviceUid();
      assert.notEqual(uid, 0);
      const procs = serverProcesses(root, id);
      assert.ok(procs.length >= 3, `expected a postmaster and its children, found ${procs.length}`);
      for (const p of procs) assert.equal(p.uid, uid, `process ${p.pid} (${p.cmdline}) runs as uid ${p.uid}`);

      const mine = socketInodes(procs.map((p) => p.pid));
      const socketPath = join(engine.socketDir(id), ".s.PGSQL.5432");
      const unixLines = readFileSync("/proc/net/unix", "utf8").split("\n").filter((l) => l.trim().endsWith(" " + socketPath));
      assert.ok(unixLines.some((l) => mine.has(l.trim().split(/\s+/)[6] ?? "")), "the postmaster holds its unix socket (control for the inode scan)");
      const tcp = tcpInodes();
      assert.deepEqual([...mine].filter((i) => tcp.has(i)), [], "no server process owns a TCP socket");

      const top = statSync(join(root, "ws"));
      assert.deepEqual([top.mode & 0o777, top.uid], [0o711, process.getuid?.()], "the servers may traverse the engine's directory but not change it");
      for (const d of [join(root, "ws", id), join(root, "ws", id, "pgdata"), engine.socketDir(id)]) {
        const st = statSync(d);
        assert.equal(st.mode & 0o777, 0o700, `${d} mode ${(st.mode & 0o777).toString(8)}`);
        assert.equal(st.uid, uid, `${d} owner`);
      }
      assert.equal(statSync(join(root, "ws", id, "postgres.log")).mode & 0o777, 0o600);

      const row = (await asAdmin(engine, id, (c) => c.query("SELECT current_setting('listen_addresses') AS la, current_setting('unix_socket_permissions') AS perm, current_setting('password_encryption') AS pe, current_user AS who"))).rows[0];
      assert.deepEqual(row, { la: "", perm: "0700", pe: "scram-sha-256", who: "admin" });
      const preload = await engine.withSystem(id, "postgres", async (c) => (await c.query("SELECT current_setting('shared_preload_libraries') AS libs, current_setting('pgaudit.log') AS audit")).rows[0]);
      assert.deepEqual(preload, { libs: "parhelion_guard,pgaudit", audit: "none" }, "the guard and pgaudit are loaded");
      const hba = await engine.withSystem(id, "postgres", async (c) => (await c.query("SELECT type, user_name, auth_method, options FROM pg_hba_file_rules ORDER BY line_number")).rows);
      assert.deepEqual(hba, [
        { type: "local", user_name: ["parhelion_system"], auth_method: "peer", options: ["map=system"] },
        { type: "local", user_name: ["+parhelion_token_login"], auth_method: "trust", options: null },
        { type: "local", user_name: ["all"], auth_method: "scram-sha-256", options: null },
      ]);

      assert.equal(await sqlstate(connectAs(engine, id, "admin", "wrong password")), "28P01", "a wrong password is refused");
      const info = await engine.getLoginInfo(id, "admin");
      assert.deepEqual(info, { verifier: ADMIN_VERIFIER, canLogin: true, validUntil: null, tokenLogin: false });
      const system = await engine.getLoginInfo(id, "parhelion_system");
      assert.deepEqual(system, { verifier: null, canLogin: false, validUntil: null, tokenLogin: false }, "the platform's role never logs in through the gateway");
      assert.equal(await engine.getLoginInfo(id, "nobody"), null);
    } finally {
      await cleanup(root, engine);
    }
  });

  test("a size sets shared_buffers, max_connections and work_mem, a new size restarts the server, and limits() reports the enforced memory limit", async () => {
    const root = tempRoot();
    const engine = newEngine(root);
    const id = randomUUID();
    try {
      await engine.ensureRunning({ id, size: "S-00", adminVerifier: ADMIN_VERIFIER });
      const show = () => asAdmin(engine, id, async (c) => (await c.query("SELECT current_setting('shared_buffers') AS sb, current_setting('max_connections') AS mc, current_setting('work_mem') AS wm")).rows[0]);
      assert.deepEqual(await show(), { sb: "32MB", mc: "25", wm: "2MB" });
      const before = engine.limits(id);
      assert.equal(before.size, "S-00");
      if (before.memory.mechanism === "none") {
        assert.equal(before.memory.maxBytes, null);
        assert.ok(before.memory.reason, "limits() says why nothing is enforced");
      } else {
        assert.equal(before.memory.maxBytes, WORKSPACE_SIZES["S-00"].memoryLimitBytes);
        assert.equal(before.memory.reason, null);
      }
      const [pm] = postmasters(root, id);
      const backend = serverProcesses(root, id).find((p) => p.cmdline.startsWith("postgres:"));
      assert.equal(readFileSync(`/proc/${backend?.pid}/oom_score_adj`, "utf8").trim(), "0", "the postmaster's children are fair game for the OOM killer");
      // Lowering an OOM score takes CAP_SYS_RESOURCE, which some containers (this one) withhold from root.
      const protectable = (BigInt("0x" + (/^CapEff:\s+([0-9a-f]+)/m.exec(readFileSync("/proc/self/status", "utf8"))?.[1] ?? "0")) >> 24n) & 1n;
      assert.equal(readFileSync(`/proc/${pm}/oom_score_adj`, "utf8").trim(), protectable ? "-1000" : "0", "the postmaster is shielded from the OOM killer where the host allows it");

      await engine.ensureRunning({ id, size: "S-0", adminVerifier: ADMIN_VERIFIER });
      assert.deepEqual(await show(), { sb: "128MB", mc: "50", wm: "4MB" });
      assert.notEqual(postmasters(root, id)[0], pm, "the resize restarted the server");
      const after = engine.limits(id);
      assert.equal(after.size, "S-0");
      if (after.memory.mechanism !== "none") assert.equal(after.memory.maxBytes, WORKSPACE_SIZES["S-0"].memoryLimitBytes);
    } finally {
      await cleanup(root, engine);
    }
  });

  test("the memory limit is enforced: a backend that outgrows it is killed and the server recovers", async (t) => {
    const root = tempRoot();
    const engine = newEngine(root, { spare: false });
    const id = randomUUID();
    try {
      await engine.ensureRunning({ id, size: "S-00", adminVerifier: ADMIN_VERIFIER });
      const limits = engine.limits(id);
      if (limits.memory.mechanism === "none") {
        // Honest reporting is all there is on such a host; this one has cgroups, see DESIGN.md.
        t.diagnostic(`no memory limit on this host: ${limits.memory.reason}`);
        return;
      }
      const [pm] = postmasters(root, id);
      // ~512 MiB of text in one backend, twice the S-00 limit.
      const big = asAdmin(engine, id, (c) => c.query("SELECT length(string_agg(repeat('x', 1048576), '')) FROM generate_series(1, 512)"));
      await assert.rejects(big, /Connection terminated/, "the backend is killed, not merely refused an allocation");
      const cg = limits.memory.cgroup ?? "";
      const counters = limits.memory.mechanism === "cgroup2" ? readFileSync(join(cg, "memory.events"), "utf8") : readFileSync(join(cg, "memory.oom_control"), "utf8");
      assert.ok(Number(/^oom_kill (\d+)$/m.exec(counters)?.[1] ?? 0) >= 1, `the kernel's OOM killer acted in the workspace's cgroup:\n${counters}`);
      assert.equal(postmasters(root, id)[0], pm, "the postmaster survived");
      const deadline = Date.now() + 20_000;
      for (;;) {
        try {
          assert.deepEqual((await asAdmin(engine, id, (c) => c.query("SELECT 1 AS one"))).rows, [{ one: 1 }]);
          break;
        } catch (err) {
          if (Date.now() > deadline) throw err;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
    } finally {
      await cleanup(root, engine);
    }
  });

  test("restarts a workspace server after kill -9 of its postmaster, with its data and its admin", async () => {
    const root = tempRoot();
    const engine = newEngine(root, { spare: false, settings: DURABLE });
    const id = randomUUID();
    try {
      await engine.ensureRunning({ id, size: "S-00", adminVerifier: ADMIN_VERIFIER });
      await asAdmin(engine, id, (c) => c.query("CREATE TABLE t (v text); INSERT INTO t VALUES ('before crash')"));
      const [oldPid] = postmasters(root, id);
      assert.ok(oldPid);
      const crashed = withTimeout(new Promise<{ id: string }>((r) => engine.on("crash", r)), 10_000, '"crash"');
      const restarted = withTimeout(new Promise<{ id: string }>((r) => engine.on("restarted", r)), 25_000, '"restarted"');
      process.kill(oldPid, "SIGKILL");
      assert.equal((await crashed).id, id);
      assert.equal((await restarted).id, id);
      assert.equal(engine.isRunning(id), true);
      const now = postmasters(root, id);
      assert.equal(now.length, 1, "exactly one postmaster");
      assert.notEqual(now[0], oldPid);
      assert.deepEqual((await asAdmin(engine, id, (c) => c.query("SELECT v FROM t"))).rows, [{ v: "before crash" }]);
    } finally {
      await cleanup(root, engine);
    }
  });

  test("after kill -9 of parhelion: a new engine reaps the orphan server and starts it cleanly, and destroys a directory the reconciler does not know", async () => {
    const root = tempRoot();
    const keep = randomUUID();
    const unknown = randomUUID();
    const dist = resolve(import.meta.dirname, "..", "..");
    const mod = (p: string) => JSON.stringify(pathToFileURL(join(dist, p)).href);
    const script = `
      const { createWorkspaceEngine } = await import(${mod("src/engine/index.js")});
      const { createLogger } = await import(${mod("src/log/logger.js")});
      const e = createWorkspaceEngine({ dir: ${JSON.stringify(join(root, "ws"))}, serviceUser: ${JSON.stringify(SERVICE_USER)}, logger: createLogger({ level: "silent" }), settings: ${JSON.stringify(DURABLE)}, spare: false });
      for (const id of ${JSON.stringify([keep, unknown])}) await e.ensureRunning({ id, size: "S-00", adminVerifier: ${JSON.stringify(ADMIN_VERIFIER)} });
      console.log("ready");
      setInterval(() => {}, 60000);
    `;
    let parent: ChildProcess | undefined;
    const engine = newEngine(root, { spare: false, settings: DURABLE });
    try {
      parent = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
      const lines = createInterface({ input: parent.stdout! });
      await withTimeout(new Promise<string>((r) => lines.once("line", r)), 30_000, "the child engine to start its workspaces");
      const [orphan] = postmasters(root, keep);
      const [orphan2] = postmasters(root, unknown);
      assert.ok(orphan && orphan2);
      await asAdmin(engine, keep, (c) => c.query("CREATE TABLE t (v text); INSERT INTO t VALUES ('survives the orphan')"));

      const exited = new Promise((r) => parent!.once("exit", r));
      parent.kill("SIGKILL");
      await exited;
      assert.ok(isAlive(orphan), "the postmaster outlived its SIGKILLed parent (control)");

      assert.deepEqual(engine.listOnDisk(), [keep, unknown].sort());
      assert.equal(engine.isRunning(keep), false, "the new engine does not supervise the orphan");
      await engine.ensureRunning({ id: keep, size: "S-00", adminVerifier: ADMIN_VERIFIER });
      assert.equal(isAlive(orphan), false, "the orphan postmaster is gone");
      const now = postmasters(root, keep);
      assert.equal(now.length, 1, "exactly one postmaster");
      assert.notEqual(now[0], orphan);
      assert.deepEqual((await asAdmin(engine, keep, (c) => c.query("SELECT v FROM t"))).rows, [{ v: "survives the orphan" }]);

      await engine.destroy(unknown);
      assert.equal(isAlive(orphan2), false, "destroy stops an orphan it never started");
      assert.deepEqual(serverProcesses(root, unknown), []);
      assert.deepEqual(engine.listOnDisk(), [keep]);
    } finally {
      if (parent && parent.exitCode === null && parent.signalCode === null) parent.kill("SIGKILL");
      await cleanup(root, engine);
    }
  });

  test("half-made directories are discarded: an interrupted initdb, a partial data directory, a dead engine's spare scratch", async () => {
    const root = tempRoot();
    const id = randomUUID();
    const wsDir = join(root, "ws", id);
    mkdirSync(join(wsDir, "pgdata", "base"), { recursive: true });
    writeFileSync(join(wsDir, "pgdata", "half-written"), "x");
    mkdirSync(join(wsDir, "pgdata.initdb"), { recursive: true });
    mkdirSync(join(root, "ws", ".spare.initdb-999999999"), { recursive: true });
    mkdirSync(join(root, "ws", ".spare", "base"), { recursive: true }); // a spare without PG_VERSION is no spare
    const engine = newEngine(root);
    try {
      assert.equal(existsSync(join(root, "ws", ".spare.initdb-999999999")), false, "a dead engine's scratch is discarded");
      await engine.ensureRunning({ id, size: "S-00", adminVerifier: ADMIN_VERIFIER });
      assert.ok(existsSync(join(wsDir, "pgdata", "PG_VERSION")));
      assert.equal(existsSync(join(wsDir, "pgdata", "half-written")), false);
      assert.equal(existsSync(join(wsDir, "pgdata.initdb")), false);
      assert.deepEqual((await asAdmin(engine, id, (c) => c.query("SELECT current_user AS u"))).rows, [{ u: "admin" }]);
    } finally {
      await cleanup(root, engine);
    }
  });

  test("with a spare ready, a create is a rename and a start (under 3 s to the first query), each workspace has its own system identifier, and stopAll stops them all", async (t) => {
    const root = tempRoot();
    const engine = newEngine(root);
    const a = randomUUID();
    const b = randomUUID();
    try {
      await engine.ensureRunning({ id: a, size: "S-00", adminVerifier: ADMIN_VERIFIER });
      const spare = join(root, "ws", ".spare", "PG_VERSION");
      const deadline = Date.now() + 20_000;
      while (!existsSync(spare)) {
        assert.ok(Date.now() < deadline, "a new spare was prepared after the create");
        await new Promise((r) => setTimeout(r, 50));
      }
      const t0 = performance.now();
      await engine.ensureRunning({ id: b, size: "S-00", adminVerifier: ADMIN_VERIFIER });
      const ready = performance.now() - t0;
      const c = await connectAs(engine, b, "admin", ADMIN_PASSWORD);
      await c.query("SELECT 1");
      const firstQuery = performance.now() - t0;
      await c.end();
      t.diagnostic(`create with a spare: ready in ${ready.toFixed(0)} ms, first query at ${firstQuery.toFixed(0)} ms`);
      assert.ok(firstQuery < 3000, `create to first query took ${firstQuery.toFixed(0)} ms`);
      const sysid = (id: string) => engine.withSystem(id, "postgres", async (cl) => String((await cl.query("SELECT system_identifier FROM pg_control_system()")).rows[0]?.system_identifier));
      assert.notEqual(await sysid(a), await sysid(b));

      await engine.stopAll();
      assert.equal(engine.isRunning(a) || engine.isRunning(b), false);
      assert.deepEqual([...serverProcesses(root, a), ...serverProcesses(root, b)], [], "stopAll leaves no server process");
      assert.deepEqual(engine.listOnDisk(), [a, b].sort(), "stopAll keeps the workspaces' data");
    } finally {
      await cleanup(root, engine);
    }
  });

  test("refuses bad input and never starts a workspace without parhelion_guard", async () => {
    const root = tempRoot();
    const libDir = mkdtempSync(join(tmpdir(), "parhelion-nolib-"));
    const engine = newEngine(root, { spare: false, libDir });
    const id = randomUUID();
    try {
      await assert.rejects(engine.ensureRunning({ id: "../../etc", size: "S-00", adminVerifier: ADMIN_VERIFIER }), isCode("ERR_VALIDATION"));
      await assert.rejects(engine.ensureRunning({ id, size: "XL" as never, adminVerifier: ADMIN_VERIFIER }), isCode("ERR_VALIDATION"));
      await assert.rejects(engine.ensureRunning({ id, size: "S-00", adminVerifier: ADMIN_PASSWORD }), isCode("ERR_VALIDATION"), "a plaintext password is not a verifier");
      assert.throws(() => engine.socketDir("not-a-uuid"), isCode("ERR_VALIDATION"));
      await assert.rejects(engine.destroy("../x"), isCode("ERR_VALIDATION"));

      await assert.rejects(engine.ensureRunning({ id, size: "S-00", adminVerifier: ADMIN_VERIFIER }), (err: unknown) => {
        assert.ok(err instanceof ParhelionError);
        assert.equal(err.code, "ERR_ENGINE");
        assert.match(err.message, /parhelion_guard is not installed/);
        return true;
      });
      assert.equal(engine.isRunning(id), false);
      assert.deepEqual(serverProcesses(root, id), []);
    } finally {
      await cleanup(root, engine);
      await cleanup(libDir);
    }
  });
});
