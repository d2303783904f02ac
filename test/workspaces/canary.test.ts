import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, lstatSync, readdirSync } from "node:fs";
import { sql } from "kysely";
import { dirname, join, relative } from "node:path";
import { startTestPlatform, type TestPlatform } from "../support/platform.js";
import { conninfo, createTestWorkspace, gatewayClient, psql } from "../support/workspaces.js";
import { execFileAsync } from "../volumes/helpers.js";
import { volumeStoreDataDir, volumeStoreLogFile } from "../../src/volumes/store.js";

/** Every regular file under dir (symbolic links are not followed; sockets and other special files have no bytes to scan). */
function regularFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...regularFiles(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/** The scan of root once needle is in a file whose name passes want (the logging collector writes a moment after the statement), or after 10 s. */
async function scanUntil(root: string, needle: string, want: (hit: string) => boolean): Promise<{ hits: string[]; files: number; bytes: number }> {
  for (const deadline = Date.now() + 10_000; ; ) {
    const s = await scan(root, needle);
    if (s.hits.some(want) || Date.now() > deadline) return s;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * The files (relative to root) holding needle, and how many files and bytes there were. GNU grep reads every
 * byte of every regular file but skips the holes of sparse files (SEEK_DATA/SEEK_HOLE; reading a 4 GiB image's
 * holes byte by byte costs ~17 s of system time on this VM): holes hold no data, only zeros.
 */
async function scan(root: string, needle: string): Promise<{ hits: string[]; files: number; bytes: number }> {
  const files = regularFiles(root);
  const bytes = files.reduce((n, f) => n + lstatSync(f).size, 0);
  const r = await execFileAsync("grep", ["-r", "-l", "-F", "--devices=skip", "--", needle, root]).catch((err: { code?: number; stdout?: string; stderr?: string }) => {
    if (err.code === 1) return { stdout: "", stderr: "" }; // no match
    throw new Error(`grep failed: ${err.stderr ?? ""}`);
  });
  const hits = r.stdout.split("\n").filter(Boolean).map((f) => relative(root, f)).sort();
  return { hits, files: files.length, bytes };
}

test("a canary written through the gateway (plain column, TOASTed text, indexed column, a transaction only in WAL, a failing statement in the server's logs) appears in no byte of the data dir once parhelion stops; a group name in the metadata store (and a failing statement in its log) appears in no byte of the store's volume image or directory", async () => {
  const canary = `canary-${randomBytes(16).toString("hex")}`;
  let tp: TestPlatform | undefined = await startTestPlatform();
  try {
    // The group's default statement audit level (ADMIN-ONLY): DML is not recorded, so its literals are not either.
    // The group's name is a second canary: it lives only in the metadata store (and the audit log's records),
    // whose data directory is on the store's own encrypted volume.
    const storeCanary = `sc-${randomBytes(12).toString("hex")}`;
    const ws = await createTestWorkspace(tp, { group: { name: storeCanary, adminPassword: "canary-test-admin-password-1" } });
    const c = gatewayClient(tp, ws);
    await c.connect();
    await c.query("CREATE TABLE t (id int PRIMARY KEY, plain text, long text, indexed text)");
    await c.query("CREATE INDEX t_indexed ON t (indexed)");
    // A plain column (a literal in the statement text), a long value stored out of line in TOAST (random, so
    // not compressed away), an indexed column (btree pages), each as a parameter.
    await c.query(`INSERT INTO t (id, plain) VALUES (1, '${canary}')`);
    await c.query("INSERT INTO t (id, long) VALUES (2, $1)", [`${canary}${randomBytes(6000).toString("base64")}${canary}`]);
    await c.query("INSERT INTO t (id, indexed) VALUES (3, $1)", [canary]);
    const toasted = await c.query("SELECT pg_column_size(long) > 2000 AND (SELECT reltoastrelid <> 0 FROM pg_class WHERE relname = 't') AS toasted FROM t WHERE id = 2");
    assert.equal(toasted.rows[0].toasted, true, "the long value is stored in TOAST");
    await c.query("CHECKPOINT");
    // After the checkpoint: a transaction whose only durable copy is the WAL (written through psql, TLS verify-full).
    const r = await psql(conninfo(ws), ["-c", `BEGIN; INSERT INTO t (id, plain) VALUES (4, 'wal ${canary}'); COMMIT;`], { PGPASSWORD: "canary-test-admin-password-1" });
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await c.query("SELECT count(*)::int AS n FROM t WHERE plain LIKE $1 OR long LIKE $1 OR indexed = $2", [`%${canary}%`, canary])).rows[0].n, 4);
    // A failing statement: the server logs its text (log_min_error_statement = error) and the DETAIL "Key (id)=(1)
    // already exists", in postgres.log and postgres.csv, beside the data directory on the group's volume.
    await assert.rejects(c.query(`INSERT INTO t (id, plain) VALUES (1, '${canary}')`), (err: { code?: string }) => err.code === "23505");
    await c.end();

    // The control: while the volume is mounted and unlocked, the canary is in the data directory's files (the
    // scan finds what is there), and nowhere outside it.
    const pgdata = join(tp.dataDir, "volumes", ws.groupId, "data", ws.workspaceId, "pgdata");
    const inside = await scan(pgdata, canary);
    assert.ok(inside.hits.some((h) => h.startsWith("base/")), `the canary is in the workspace's table files while unlocked: ${inside.hits.join(", ")}`);
    assert.ok(inside.hits.some((h) => h.startsWith("pg_wal/")), `and in its WAL: ${inside.hits.join(", ")}`);
    const logs = await scanUntil(dirname(pgdata), canary, (h) => h === "postgres.csv");
    for (const f of ["postgres.log", "postgres.csv"]) assert.ok(logs.hits.includes(f), `the failing statement is in the workspace's ${f} on the volume while unlocked: ${logs.hits.join(", ")}`);

    // The same control for the store: its data directory on the mounted, unlocked volume holds the group's name.
    const storeData = volumeStoreDataDir(tp.dataDir);
    assert.equal(tp.platform.store?.dataDir, storeData);
    await tp.platform.db.executeQuery(sql`CHECKPOINT`.compile(tp.platform.db));
    // A failing statement naming the store's canary: the store logs its text, beside its data directory on its volume.
    await assert.rejects(tp.platform.db.executeQuery(sql.raw(`SELECT 1/0 AS "${storeCanary}"`).compile(tp.platform.db)), (err: { code?: string }) => err.code === "22012");
    const storeInside = await scan(storeData, storeCanary);
    assert.ok(storeInside.hits.some((h) => h.startsWith("base/")), `the group's name is in the store's table files while unlocked: ${storeInside.hits.join(", ")}`);
    assert.ok(storeInside.hits.some((h) => h.startsWith("pg_wal/")), `and in its WAL: ${storeInside.hits.join(", ")}`);
    assert.equal(tp.platform.store?.logFile, volumeStoreLogFile(tp.dataDir));
    const storeLog = await scanUntil(dirname(storeData), storeCanary, (h) => h === "postgres.log");
    assert.ok(storeLog.hits.includes("postgres.log"), `the failing statement is in the store's log on its volume while unlocked: ${storeLog.hits.join(", ")}`);

    await tp.platform.stop();
    const dataDir = tp.dataDir;
    // The store's files on disk once stopped: its volume's image, and what stays outside it (the socket directory).
    assert.ok(existsSync(join(dataDir, "volumes", "store.img")), "the store's volume image exists");
    for (const root of [join(dataDir, "volumes"), join(dataDir, "store")]) {
      const s = await scan(root, storeCanary);
      assert.deepEqual(s.hits, [], `the group's name appears in none of the store's files on disk (${root})`);
    }
    const all = await scan(dataDir, canary);
    assert.ok(all.files > 10 && all.bytes > 64 * 1024 * 1024, `the whole data dir was scanned (${all.files} files, ${all.bytes} bytes): the volume images (the group's and the metadata store's), audit, logs`);
    assert.ok(regularFiles(dataDir).some((f) => f.endsWith(`${ws.groupId}.img`)), "the group's volume image was among them");
    assert.ok(regularFiles(dataDir).some((f) => f.endsWith("store.img")), "and the store's");
    assert.deepEqual(all.hits, [], "the canary appears nowhere on disk");
  } finally {
    await tp?.stop();
    tp = undefined;
  }
});
