import { test } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, statSync, writeFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../../src/config/load.js";
import { createLogger } from "../../src/log/logger.js";
import { startPlatform, type Platform } from "../../src/platform.js";
import { mountAt } from "../../src/volumes/index.js";
import { cleanupRoot } from "../volumes/helpers.js";

const logger = createLogger({ level: "silent" });

function tempDataDir(): string {
  const d = mkdtempSync(join(tmpdir(), "parhelion-store-volume-"));
  chmodSync(d, 0o711);
  return d;
}

function start(dataDir: string, env: Record<string, string> = {}): Promise<Platform> {
  return startPlatform({ config: loadConfig({ flags: { dataDir, apiPort: 0, gatewayPort: 0 }, env, cwd: dataDir }), logger });
}

test("the embedded store's data directory is on its own encrypted volume; a restart finds the data again", async () => {
  const dataDir = tempDataDir();
  let p: Platform | undefined;
  try {
    p = await start(dataDir);
    const mount = join(dataDir, "volumes", "store");
    assert.ok(await mountAt(mount), "the store's volume is mounted while parhelion runs");
    assert.equal(p.store?.dataDir, join(mount, "data", "store", "pgdata"), "the store's data directory is on the volume");
    assert.ok(!existsSync(join(dataDir, "store", "pgdata")), "nothing of it on plain disk");
    assert.ok(p.store!.socketDir.startsWith(join(dataDir, "store")), "the socket stays outside the volume");
    const keyFile = join(dataDir, "keys", "store-volume.key");
    assert.equal(statSync(keyFile).mode & 0o777, 0o600, "the wrapped key file is 0600");
    assert.ok(statSync(keyFile).size > 64, "and holds the key wrapped, not the bare 64 bytes");
    const org = await p.db.selectFrom("organizations").select("id").executeTakeFirstOrThrow();
    await p.db.insertInto("teams").values({ id: randomUUID(), org_id: org.id, name: "kept-across-restarts", description: "" }).execute();
    await p.stop();
    p = undefined;
    assert.equal(await mountAt(mount), undefined, "stop unmounts the store's volume");

    p = await start(dataDir);
    const rows = await p.db.selectFrom("teams").select("name").where("name", "=", "kept-across-restarts").execute();
    assert.equal(rows.length, 1, "the store's data is still there after a restart");
    assert.equal(p.ownerKeyFile, null, "no second bootstrap");
    await p.stop();
    p = undefined;
  } finally {
    await p?.stop().catch(() => undefined);
    await cleanupRoot(dataDir);
  }
});

test("a store on plain disk is refused with volumeEncryption fscrypt, and a store on a volume with none: never plaintext, never migrated", async () => {
  const plain = tempDataDir();
  const encrypted = tempDataDir();
  try {
    mkdirSync(join(plain, "store", "pgdata"), { recursive: true });
    writeFileSync(join(plain, "store", "pgdata", "PG_VERSION"), "17\n");
    await assert.rejects(start(plain), (err: { code?: string; message: string }) => {
      assert.equal(err.code, "ERR_CONFIG");
      assert.match(err.message, new RegExp(join(plain, "store", "pgdata").replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")));
      return true;
    });
    assert.ok(!existsSync(join(plain, "volumes", "store.img")), "no volume is made beside it");

    mkdirSync(join(encrypted, "volumes"), { recursive: true });
    writeFileSync(join(encrypted, "volumes", "store.img"), "");
    await assert.rejects(start(encrypted, { PARHELION_VOLUME_ENCRYPTION: "none" }), (err: { code?: string; message: string }) => {
      assert.equal(err.code, "ERR_CONFIG");
      assert.match(err.message, /store\.img/);
      return true;
    });
    assert.ok(!existsSync(join(encrypted, "store", "pgdata")), "no plaintext store is made beside it");
  } finally {
    await cleanupRoot(plain);
    await cleanupRoot(encrypted);
  }
});
