import { createCipheriv, createDecipheriv, createHmac, randomBytes } from "node:crypto";
import { closeSync, constants, fchmodSync, fstatSync, fsyncSync, linkSync, mkdirSync, openSync, rmSync, statSync, chmodSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import { ParhelionError } from "../lib/errors.js";
import { readAt } from "../lib/files.js";
import { keyUnavailable } from "./errors.js";
import { contextBytes, probe, type KeyProvider, type ProviderDescription, type ProviderHealth, type WrapContext } from "./provider.js";

export const ROOT_KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const WRAP_VERSION = 1;

/**
 * Writes a new key file without ever replacing one: a temporary file is written and synced, then hard-linked
 * to the name, which fails if another process made the key first (that key wins, this one is discarded).
 */
function createKeyFile(file: string, key: Buffer): void {
  const tmp = `${file}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
  const fd = openSync(tmp, "wx", 0o600);
  try {
    fchmodSync(fd, 0o600);
    for (let off = 0; off < key.length; ) off += writeSync(fd, key, off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(tmp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw new ParhelionError("ERR_CONFIG", `cannot create the root key file ${file}: ${(err as NodeJS.ErrnoException).code ?? "error"}`, { cause: err });
  } finally {
    rmSync(tmp, { force: true });
  }
  const dfd = openSync(dirname(file), "r");
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

/**
 * Reads the root key file, refusing anything but a regular file of exactly 32 bytes that only its owner
 * can read or write (mode 0600 or 0400), owned by this process's user.
 */
function readRootKey(file: string): Buffer {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ParhelionError("ERR_CONFIG", `cannot open the root key file ${file}: ${code === "ELOOP" ? "it is a symbolic link" : (code ?? "error")}`, { cause: err });
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new ParhelionError("ERR_CONFIG", `the root key file ${file} is not a regular file`);
    if ((st.mode & 0o077) !== 0) throw new ParhelionError("ERR_CONFIG", `the root key file ${file} has mode ${(st.mode & 0o777).toString(8).padStart(4, "0")}: it must be readable by its owner only (chmod 600)`);
    if (typeof process.getuid === "function" && st.uid !== process.getuid()) throw new ParhelionError("ERR_CONFIG", `the root key file ${file} belongs to another user`);
    if (st.size !== ROOT_KEY_BYTES) throw new ParhelionError("ERR_CONFIG", `the root key file ${file} is ${st.size} bytes: a root key is exactly ${ROOT_KEY_BYTES}`);
    const key = readAt(fd, 0, ROOT_KEY_BYTES);
    if (key.length !== ROOT_KEY_BYTES) throw new ParhelionError("ERR_CONFIG", `the root key file ${file} changed while it was read`);
    return key;
  } finally {
    closeSync(fd);
  }
}

/**
 * The embedded default: a 256-bit root key in a file (0600, in a 0700 directory) made at first start.
 * Wrapping is AES-256-GCM with the context as additional data. Whoever holds the file and the metadata
 * store can read every secret; whoever loses the file loses every secret (back it up apart from the store).
 */
export class LocalKeyProvider implements KeyProvider {
  private constructor(private readonly key: Buffer, private readonly file: string, private readonly keyId: string, readonly created: boolean) {}

  /** Opens the root key file, making it (and a 0700 directory) when it does not exist. */
  static open(file: string): LocalKeyProvider {
    let created = false;
    let exists = true;
    try {
      statSync(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw new ParhelionError("ERR_CONFIG", `cannot read the root key file ${file}: ${(err as NodeJS.ErrnoException).code ?? "error"}`, { cause: err });
      exists = false;
    }
    if (!exists) {
      const dir = dirname(file);
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      chmodSync(dir, 0o700);
      const fresh = randomBytes(ROOT_KEY_BYTES);
      createKeyFile(file, fresh);
      fresh.fill(0);
      created = true;
    }
    const key = readRootKey(file);
    const keyId = "local:" + createHmac("sha256", key).update("parhelion root key id").digest("hex").slice(0, 16);
    return new LocalKeyProvider(key, file, keyId, created);
  }

  async wrap(key: Buffer, context: WrapContext): Promise<Buffer> {
    const iv = randomBytes(IV_BYTES);
    const c = createCipheriv("aes-256-gcm", this.key, iv, { authTagLength: TAG_BYTES });
    c.setAAD(contextBytes(context));
    const body = Buffer.concat([c.update(key), c.final()]);
    return Buffer.concat([Buffer.from([WRAP_VERSION]), iv, body, c.getAuthTag()]);
  }

  async unwrap(wrapped: Buffer, context: WrapContext): Promise<Buffer> {
    if (!Buffer.isBuffer(wrapped) || wrapped.length < 1 + IV_BYTES + TAG_BYTES + 1 || wrapped[0] !== WRAP_VERSION) throw keyUnavailable();
    try {
      const d = createDecipheriv("aes-256-gcm", this.key, wrapped.subarray(1, 1 + IV_BYTES), { authTagLength: TAG_BYTES });
      d.setAAD(contextBytes(context));
      d.setAuthTag(wrapped.subarray(wrapped.length - TAG_BYTES));
      return Buffer.concat([d.update(wrapped.subarray(1 + IV_BYTES, wrapped.length - TAG_BYTES)), d.final()]);
    } catch (err) {
      throw keyUnavailable(err);
    }
  }

  describe(): ProviderDescription {
    return { provider: "local", keyId: this.keyId, details: { file: this.file } };
  }

  health(): Promise<ProviderHealth> {
    return probe(this);
  }

  async close(): Promise<void> {
    this.key.fill(0);
  }
}
