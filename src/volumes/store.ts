/**
 * The embedded metadata store's own encrypted volume (issue 4): its PostgreSQL data directory (tables, WAL) and
 * its log on an EncryptedVolume at `<dataDir>/volumes/store.img`, keyed by a random 64-byte key kept only wrapped by
 * the root key provider in `<dataDir>/keys/store-volume.key`. The store starts before the keyring (which
 * reads kms_keys from it), so this key hangs directly off the root key, not off an organization's KEK.
 */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, mkdir, open, readFile, rename, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { KeyProvider, WrapContext } from "../kms/provider.js";
import { ParhelionError } from "../lib/errors.js";
import type { Logger } from "../log/logger.js";
import { VOLUME_KEY_BYTES } from "./fscrypt.js";
import { ENCRYPTED_DIR, EncryptedVolume, STORE_VOLUME_ID } from "./volume.js";
import { fsyncPath } from "./copytree.js";

/** The store's image size: sparse, so disk is used only as the store writes (ext4 cannot grow it online in a container without CAP_SYS_RESOURCE). */
export const STORE_VOLUME_BYTES = 32 * 1024 * 1024 * 1024;

/** What the store's wrapped volume key is bound to: copied anywhere else (another purpose), it does not unwrap. */
export const STORE_KEY_CONTEXT: WrapContext = { purpose: "parhelion-metadata-store-volume-key" };

export interface StoreVolumeOptions {
  /** parhelion's data directory. */
  dataDir: string;
  /** The root key provider: wraps the store's volume key at first start, unwraps it at every start. */
  provider: Pick<KeyProvider, "wrap" | "unwrap">;
  logger: Logger;
  /** The parhelion-fscrypt helper (default: where the bootstrap installs it). */
  helper?: string;
}

export interface StoreVolume {
  readonly volume: EncryptedVolume;
  /** The store's PostgreSQL data directory on the volume (`<mount>/data/store/pgdata`). */
  readonly pgdata: string;
  /** Locks and unmounts the volume (after the store has stopped: ERR_VOLUME_BUSY while its files are open). */
  close(): Promise<void>;
}

/** The store's data directory in the plaintext layout (volumeEncryption none, or an install made before the store's volume). */
export function plainStoreDataDir(dataDir: string): string {
  return join(dataDir, "store", "pgdata");
}

/** The store's data directory on its encrypted volume (the default layout): `<dataDir>/volumes/store/data/store/pgdata`. */
export function volumeStoreDataDir(dataDir: string): string {
  return join(dataDir, "volumes", STORE_VOLUME_ID, ENCRYPTED_DIR, "store", "pgdata");
}

/** The store's server log beside its data directory on the volume: `<dataDir>/volumes/store/data/store/postgres.log`. */
export function volumeStoreLogFile(dataDir: string): string {
  return join(dirname(volumeStoreDataDir(dataDir)), "postgres.log");
}

export function storeKeyFile(dataDir: string): string {
  return join(dataDir, "keys", "store-volume.key");
}

/**
 * Makes (first start) or mounts and unlocks (later starts, also after a kill -9 left it mounted) the store's
 * volume, with the key unwrapped from `<dataDir>/keys/store-volume.key` (made, wrapped, at first start) and
 * zeroed once the kernel has it. Refuses with ERR_CONFIG an install whose store is on plain disk: parhelion
 * neither serves it in plaintext nor migrates it on its own.
 */
export async function openStoreVolume(o: StoreVolumeOptions): Promise<StoreVolume> {
  const plain = plainStoreDataDir(o.dataDir);
  if (existsSync(plain)) {
    throw new ParhelionError("ERR_CONFIG", `volumeEncryption is fscrypt (the default), but the metadata store's data directory ${plain} is on plain disk (made by an install without the store's encrypted volume, or with volumeEncryption none). parhelion does not serve it in plaintext and does not migrate it on its own: dump it and restore it into a new data directory, or start with --volume-encryption none (PARHELION_VOLUME_ENCRYPTION=none; see docs/security.md, "Encryption at rest")`);
  }
  const volume = new EncryptedVolume({ dataDir: o.dataDir, groupId: STORE_VOLUME_ID, sizeBytes: STORE_VOLUME_BYTES, logger: o.logger, ...(o.helper ? { helper: o.helper } : {}) });
  const keyFile = storeKeyFile(o.dataDir);
  let key: Buffer;
  if (existsSync(keyFile)) {
    key = await o.provider.unwrap(await readFile(keyFile), STORE_KEY_CONTEXT);
    if (key.length !== VOLUME_KEY_BYTES) {
      key.fill(0);
      throw new ParhelionError("ERR_KEY_UNAVAILABLE", `the metadata store's volume key (${keyFile}) does not unwrap to a ${VOLUME_KEY_BYTES}-byte key`);
    }
  } else {
    // No key and an image: the key is lost, and a new one would never unlock it. Never made afresh beside it.
    if (existsSync(volume.image)) {
      throw new ParhelionError("ERR_KEY_UNAVAILABLE", `the metadata store's volume ${volume.image} exists but its wrapped key ${keyFile} does not: restore the key file from a backup (it is useless without the root key)`);
    }
    key = randomBytes(VOLUME_KEY_BYTES);
    try {
      // Written (and durable) before the image is made: an image never exists without its key.
      await writeDurably(keyFile, await o.provider.wrap(key, STORE_KEY_CONTEXT));
    } catch (err) {
      key.fill(0);
      throw err;
    }
    o.logger.info({ keyFile }, "metadata store volume key made, wrapped by the root key");
  }
  try {
    await volume.create(key);
  } finally {
    key.fill(0);
  }
  return {
    volume,
    pgdata: join(volume.path, "store", "pgdata"),
    close: () => volume.unmount(),
  };
}

/** volumeEncryption none with a store on an encrypted volume: refused (ERR_CONFIG) rather than started afresh, empty, beside it. */
export function refuseEncryptedStore(dataDir: string): void {
  const image = join(dataDir, "volumes", `${STORE_VOLUME_ID}.img`);
  if (existsSync(image)) {
    throw new ParhelionError("ERR_CONFIG", `volumeEncryption is none, but the metadata store keeps its data on an encrypted volume (${image}); start parhelion with volumeEncryption fscrypt to serve it`);
  }
}

/** Writes data to file (0600) through a temporary file, fsync'd, renamed, the directory fsync'd. */
async function writeDurably(file: string, data: Buffer): Promise<void> {
  const dir = join(file, "..");
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = `${file}.new`;
  await rm(tmp, { force: true });
  const fh = await open(tmp, "wx", 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await chmod(tmp, 0o600);
  await rename(tmp, file);
  await fsyncPath(dir);
}
