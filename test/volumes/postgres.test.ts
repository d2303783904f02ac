import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import pg from "pg";
import { EncryptedVolume } from "../../src/volumes/index.js";
import { PostgresServer, peerIdentMap, postgresProcessesIn } from "../../src/engine/postgres.js";
import { account, cleanupRoot, dataRoot, findInFile, join, leftovers, logger, SIZE } from "./helpers.js";
import { POSTGRES } from "../engine/helpers.js";

const SUPERUSER = "parhelion_system";
const acct = account();

describe("PostgreSQL on an encrypted volume", () => {
  let root = "";
  let vol: EncryptedVolume;
  let server: PostgresServer | undefined;
  const key = randomBytes(64);
  const canary = `canary-${randomBytes(12).toString("hex")}`;
  // A short directory name: the server's socket is in <dir>/run, and a socket path is at most 107 bytes.
  const workspaceId = "w";

  const newServer = () =>
    new PostgresServer({
      dir: join(vol.path, workspaceId),
      account: acct,
      logger,
      name: "volume test",
      errorCode: "ERR_ENGINE",
      superuser: SUPERUSER,
      hba: `local all ${SUPERUSER} peer map=system\n`,
      ident: peerIdentMap("system", SUPERUSER, acct),
      // fsync on: the point is what reaches the disk.
      settings: { shared_buffers: "'16MB'" },
    });

  async function query<T extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<T[]> {
    const c = new pg.Client({ host: server!.socketDir, user: SUPERUSER, database: "postgres" });
    await c.connect();
    try {
      return (await c.query<T>(sql, params)).rows;
    } finally {
      await c.end();
    }
  }

  before(async () => {
    root = dataRoot();
    vol = new EncryptedVolume({ dataDir: root, groupId: randomUUID(), sizeBytes: SIZE, logger });
    await vol.create(key);
  });

  after(async () => {
    await server?.stop().catch(() => undefined);
    for (const p of postgresProcessesIn(join(vol.path, workspaceId, "pgdata"), POSTGRES)) process.kill(p.pid, "SIGKILL");
    await cleanupRoot(root);
    assert.deepEqual(await leftovers(root), { mounts: [], loops: [] });
  });

  test("a server's data and WAL live inside the volume; a canary row never reaches the image in plaintext", async () => {
    server = newServer();
    await server.start();
    await query("CREATE TABLE t (v text)");
    // STORAGE PLAIN-sized value, no compression: the bytes are the canary's own.
    await query("INSERT INTO t SELECT $1 FROM generate_series(1, 50)", [canary]);
    await query("CHECKPOINT");
    const [{ path } = { path: "" }] = await query<{ path: string }>("SELECT pg_relation_filepath('t') AS path");
    await server.stop();
    // Through the unlocked mount the heap file and the WAL hold the canary: it was written, in these files.
    const pgdata = join(vol.path, workspaceId, "pgdata");
    assert.ok((await readFile(join(pgdata, path))).includes(canary), "the heap file holds the canary");
    const wal = (await readdir(join(pgdata, "pg_wal"))).filter((n) => /^[0-9A-F]{24}$/.test(n));
    let inWal = false;
    for (const w of wal) inWal ||= (await readFile(join(pgdata, "pg_wal", w))).includes(canary);
    assert.ok(inWal, "a WAL segment holds the canary");
    assert.deepEqual(await vol.lock(), { key: "removed", busy: false });
    assert.deepEqual(await findInFile(vol.image, canary), [], "the image holds no plaintext canary");
  });

  test("with the volume locked the server cannot start; unlocked again, it serves the data", async () => {
    const locked = newServer();
    await assert.rejects(locked.start());
    await locked.stop();
    await vol.unlock(key);
    server = newServer();
    await server.start();
    const rows = await query<{ n: string }>("SELECT count(*) AS n FROM t WHERE v = $1", [canary]);
    assert.equal(rows[0]?.n, "50");
    await server.stop();
    server = undefined;
    await vol.unmount();
  });
});
