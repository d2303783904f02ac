import { chmod, chown, mkdir, open, readdir, rename, rm, rmdir, stat, statfs } from "node:fs/promises";
import { join, resolve } from "node:path";
import { realpathSync } from "node:fs";
import { ParhelionError } from "../lib/errors.js";
import { isUuid } from "../lib/ids.js";
import type { Logger } from "../log/logger.js";
import { run, runChecked } from "./exec.js";
import { Fscrypt, VOLUME_KEY_BYTES, type KeyStatus } from "./fscrypt.js";
import { loopBackingFile, loopDevicesFor, mountAt, readMounts } from "./mounts.js";
import { xtsAesSupport } from "./cpu.js";
import { copyTree, fsyncPath, measureTree, type TreeSize } from "./copytree.js";

/** The smallest image parhelion makes (ext4 with a journal needs some room; PostgreSQL needs ~40 MB). */
export const MIN_VOLUME_BYTES = 64 * 1024 * 1024;

/** The encrypted directory at the top of every volume's filesystem; everything PostgreSQL writes goes below it. */
export const ENCRYPTED_DIR = "data";

/** A re-key's new encrypted directory (the new key's policy) while the data is copied into it. */
export const REKEY_DIR = ".data.rekey";

/** The old encrypted directory between a re-key's switch and its removal. */
export const REKEYED_OLD_DIR = ".data.old";

/** Mount options: no device files, no set-uid programs, nothing executable from the volume. */
export const MOUNT_OPTIONS = "nodev,nosuid,noexec";

/** The volume id of the embedded metadata store's own volume (`<dataDir>/volumes/store.img`); every other volume is a workspace group's (a UUID). */
export const STORE_VOLUME_ID = "store";

export interface EncryptedVolumeOptions {
  /** parhelion's data directory: images and mount points go under `<dataDir>/volumes`. */
  dataDir: string;
  /** The workspace group whose volume this is (a UUID), or STORE_VOLUME_ID for the metadata store's volume. */
  groupId: string;
  /** Size of a new image (sparse: disk is used as data is written). Ignored when the image exists. */
  sizeBytes: number;
  logger: Logger;
  /** The parhelion-fscrypt helper (default: where the bootstrap installs it). */
  helper?: string;
}

export interface VolumeState {
  image: boolean;
  mounted: boolean;
  /** The encrypted directory exists (with a v2 policy). */
  encrypted: boolean;
  /** Whether the volume's key is on the mounted filesystem ("absent" when unmounted). */
  key: KeyStatus;
  /** The key identifier of the encrypted directory (not secret: a one-way function of the key). */
  identifier: string | undefined;
}

export interface LockResult {
  /** The key was on the filesystem and is now removed ("absent": there was nothing to remove). */
  key: "removed" | "absent";
  /** Files were still open: they stay readable until closed; lock() again retries evicting them. */
  busy: boolean;
}

const asRoot = (): boolean => process.getuid?.() === 0;

let cryptoChecked = false;

/** Warns once per process when the kernel's AES-XTS is not accelerated: every write is then encrypted in slow C. */
async function warnIfSlowCrypto(logger: Logger): Promise<void> {
  if (cryptoChecked) return;
  cryptoChecked = true;
  const s = await xtsAesSupport();
  if (!s.accelerated) {
    logger.warn({ driver: s.driver ?? "none registered" }, "the kernel has no accelerated AES-XTS (no aesni_intel or equivalent): encrypted volumes will cost much CPU on writes; see docs/security.md");
  }
}

/**
 * One workspace group's encrypted volume: an ext4 image with the `encrypt` feature under
 * `<dataDir>/volumes/<groupId>.img`, loop-mounted at `<dataDir>/volumes/<groupId>/`, whose top directory
 * `data/` has an fscrypt v2 policy (AES-256-XTS contents, AES-256-CTS names) keyed by the group's 64-byte
 * data key. The key is never kept here: it goes to the kernel on each unlock and is the caller's to drop.
 *
 * Every operation is idempotent and finds what a killed parhelion left (a mounted image, a loop device
 * without a mount, a half-made image or directory) from the kernel's own records, not from files of ours.
 * Operations on one instance run one at a time; one volume must have one instance.
 */
export class EncryptedVolume {
  readonly groupId: string;
  readonly image: string;
  readonly mountPoint: string;
  /** The encrypted directory: where data lives (root-owned 0711; each workspace's directory in it is the service account's). */
  readonly path: string;
  private readonly volumesDir: string;
  private readonly fscrypt: Fscrypt;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: EncryptedVolumeOptions) {
    if (!isUuid(opts.groupId) && opts.groupId !== STORE_VOLUME_ID) throw new ParhelionError("ERR_VALIDATION", "a workspace group id must be a UUID");
    if (!Number.isSafeInteger(opts.sizeBytes) || opts.sizeBytes < MIN_VOLUME_BYTES) {
      throw new ParhelionError("ERR_VALIDATION", `a volume is at least ${MIN_VOLUME_BYTES} bytes`);
    }
    this.groupId = opts.groupId.toLowerCase();
    // mountinfo and sysfs show canonical paths: compare against those.
    let dataDir = resolve(opts.dataDir);
    try {
      dataDir = realpathSync(dataDir);
    } catch {
      // made later by create()
    }
    this.volumesDir = join(dataDir, "volumes");
    this.image = join(this.volumesDir, `${this.groupId}.img`);
    this.mountPoint = join(this.volumesDir, this.groupId);
    this.path = join(this.mountPoint, ENCRYPTED_DIR);
    this.fscrypt = new Fscrypt(opts.helper);
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.catch(() => undefined).then(fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private fail(message: string, cause?: unknown): ParhelionError {
    return new ParhelionError("ERR_VOLUME", `volume ${this.groupId}: ${message}`, cause === undefined ? undefined : { cause });
  }

  /**
   * Makes the volume if it does not exist (image of sizeBytes, default the constructor's; filesystem; encrypted
   * directory), mounts it if it is not mounted, and unlocks it with key. An existing volume is reused (its size
   * unchanged: see grow): then the key must be its key.
   */
  create(key: Uint8Array, sizeBytes: number = this.opts.sizeBytes): Promise<void> {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < MIN_VOLUME_BYTES) return Promise.reject(new ParhelionError("ERR_VALIDATION", `a volume is at least ${MIN_VOLUME_BYTES} bytes`));
    return this.serial(() => this.open(key, sizeBytes));
  }

  /** Mounts (if needed) and unlocks an existing volume; ERR_VOLUME_KEY_MISMATCH when key is not its key. */
  unlock(key: Uint8Array): Promise<void> {
    return this.serial(() => this.open(key, undefined));
  }

  /**
   * Removes the key from the kernel: the files' contents and names become unreadable through the mount.
   * Files still open (a running server) stay readable until closed: the result says so, and calling again
   * after they are closed finishes the job. Nothing to do when the volume is not mounted.
   */
  lock(): Promise<LockResult> {
    return this.serial(() => this.doLock());
  }

  /** Locks, unmounts and detaches the loop device. ERR_VOLUME_BUSY while files on it are in use. */
  unmount(): Promise<void> {
    return this.serial(() => this.doUnmount());
  }

  /** Unmounts and deletes the image and the mount point: the data is gone for good. */
  destroy(): Promise<void> {
    return this.serial(async () => {
      await this.doUnmount();
      await rm(this.image, { force: true });
      await rm(`${this.image}.new`, { force: true });
      await rmdir(this.mountPoint).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== "ENOENT") throw this.fail(`removing ${this.mountPoint}`, err);
      });
      this.opts.logger.info({ groupId: this.groupId }, "encrypted volume destroyed");
    });
  }

  /**
   * Grows the image to sizeBytes and the mounted filesystem with it, online (the image stays sparse: disk is
   * used as data is written). Never shrinks; false when the image is already that large. Online resizing needs
   * CAP_SYS_RESOURCE (a container may withhold it from root): then ERR_VOLUME, the image grown but the
   * filesystem not (a later grow, or resize2fs on the device, finishes it).
   */
  grow(sizeBytes: number): Promise<boolean> {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < MIN_VOLUME_BYTES) return Promise.reject(new ParhelionError("ERR_VALIDATION", `a volume is at least ${MIN_VOLUME_BYTES} bytes`));
    return this.serial(async () => {
      const m = await this.currentMount();
      if (!m) throw this.fail("growing needs the volume mounted");
      const before = (await stat(this.image)).size;
      const fsBytes = await this.filesystemBytes(m.device);
      if (before >= sizeBytes && fsBytes >= sizeBytes) return false;
      if (before < sizeBytes) {
        const fh = await open(this.image, "r+");
        try {
          await fh.truncate(sizeBytes);
        } finally {
          await fh.close();
        }
      }
      await runChecked("losetup", ["--set-capacity", m.device], "telling the loop device the image grew");
      await runChecked("resize2fs", [m.device], "growing the volume's filesystem");
      this.opts.logger.info({ groupId: this.groupId, from: before, to: sizeBytes }, "encrypted volume grown");
      return true;
    });
  }

  /** The size of the mounted filesystem, from its superblock (block count x block size). */
  private async filesystemBytes(device: string): Promise<number> {
    const out = await runChecked("dumpe2fs", ["-h", device], "reading the volume's superblock");
    const blocks = Number(/^Block count:\s+(\d+)$/m.exec(out)?.[1]);
    const size = Number(/^Block size:\s+(\d+)$/m.exec(out)?.[1]);
    if (!Number.isSafeInteger(blocks) || !Number.isSafeInteger(size)) throw this.fail("dumpe2fs did not say the filesystem's size");
    return blocks * size;
  }

  /** The image's size in bytes (undefined when there is no image). */
  async imageBytes(): Promise<number | undefined> {
    try {
      return (await stat(this.image)).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
  }

  /** What is on disk and in the kernel now. */
  state(): Promise<VolumeState> {
    return this.serial(async () => {
      const image = await exists(this.image);
      const mounted = (await this.currentMount()) !== undefined;
      if (!mounted || !(await exists(this.path))) return { image, mounted, encrypted: false, key: "absent", identifier: undefined };
      const s = await this.fscrypt.status(this.path);
      return { image, mounted, encrypted: s.policy === "v2", key: s.key ?? "absent", identifier: s.identifier };
    });
  }

  // ------------------------------------------------------------------------------------------ re-keying
  // The volume's data copied under a new key on the same filesystem (src/workspaces/rekey.ts drives the phases and
  // records each in the metadata store first). Only renames happen in the unencrypted mount root; contents move
  // from one encrypted directory to the other through memory. Every step is idempotent.

  /** Mounts the image if it is not mounted, without adding any key (a re-key's recovery renames and removes only). */
  mountOnly(): Promise<void> {
    return this.serial(async () => {
      if (await this.currentMount()) return;
      if (!(await exists(this.image))) throw this.fail(`the image ${this.image} does not exist`);
      await this.mount();
    });
  }

  /**
   * Adds newKey to the mounted, unlocked volume and makes the re-key's directory (emptied first) with its policy.
   * Answers the identifiers of the current key and the new one (not secret), what there is to copy and the free space.
   */
  beginRekey(newKey: Uint8Array): Promise<{ oldIdentifier: string; newIdentifier: string; size: TreeSize; freeBytes: number }> {
    return this.serial(async () => {
      this.checkKey(newKey);
      if (!(await this.currentMount()) || !(await exists(this.path))) throw this.fail("re-keying needs the volume mounted with its encrypted directory");
      const s = await this.fscrypt.status(this.path);
      if (s.policy !== "v2" || !s.identifier) throw this.fail(`${this.path} has no v2 encryption policy`);
      if (s.key !== "present") throw this.fail("re-keying needs the volume unlocked with its current key");
      const staging = join(this.mountPoint, REKEY_DIR);
      await rm(staging, { recursive: true, force: true });
      const id = await this.fscrypt.addKey(this.mountPoint, newKey);
      if (id === s.identifier) throw this.fail("the new key is the volume's current key");
      try {
        await mkdir(staging, { mode: 0o700 });
        await this.fscrypt.setPolicy(staging, id);
        await chown(staging, 0, 0);
        await chmod(staging, 0o711);
        await fsyncPath(this.mountPoint);
      } catch (err) {
        // Nothing is under the new key yet: take it back out of the kernel.
        await rm(staging, { recursive: true, force: true }).catch(() => undefined);
        await this.fscrypt.removeKey(this.mountPoint, id).catch(() => undefined);
        throw err;
      }
      const size = await measureTree(this.path);
      const fs = await statfs(this.mountPoint);
      this.opts.logger.info({ groupId: this.groupId, identifier: id, bytes: size.bytes, files: size.files }, "re-key: new encrypted directory made");
      return { oldIdentifier: s.identifier, newIdentifier: id, size, freeBytes: fs.bavail * fs.bsize };
    });
  }

  /** Copies the encrypted directory into the re-key's directory (contents through memory only), fsyncing everything. */
  copyRekey(o: { progress: (bytes: number) => void; signal?: AbortSignal | undefined }): Promise<number> {
    return copyTree(this.path, join(this.mountPoint, REKEY_DIR), {
      ...o, skipped: (p) => this.opts.logger.warn({ groupId: this.groupId, path: p }, "re-key: not a file, directory or symbolic link; not copied"),
    });
  }

  /**
   * The switch: `data` becomes `.data.old` and the re-key's directory becomes `data` (two renames in the mount
   * root, then an fsync of it). Idempotent: a switch interrupted between the renames is finished.
   */
  switchRekey(): Promise<void> {
    return this.serial(async () => {
      if (!(await this.currentMount())) throw this.fail("the switch of a re-key needs the volume mounted");
      const staging = join(this.mountPoint, REKEY_DIR);
      const old = join(this.mountPoint, REKEYED_OLD_DIR);
      if (!(await exists(staging))) {
        if (await exists(this.path)) return; // switched already
        throw this.fail(`neither ${this.path} nor ${staging} exists`);
      }
      if (await exists(this.path)) {
        if (await exists(old)) throw this.fail(`${old} and ${this.path} both exist beside ${staging}; refusing to guess`);
        await rename(this.path, old);
      }
      await rename(staging, this.path);
      await fsyncPath(this.mountPoint);
      this.opts.logger.info({ groupId: this.groupId }, "re-key: switched to the new encrypted directory");
    });
  }

  /** After the switch: the old key out of the kernel, the old directory removed (no key needed to unlink). */
  finishRekey(oldIdentifier: string | null): Promise<void> {
    return this.serial(async () => {
      if (!(await this.currentMount())) throw this.fail("finishing a re-key needs the volume mounted");
      const s = await this.fscrypt.status(this.path);
      if (oldIdentifier !== null && oldIdentifier !== s.identifier) await this.fscrypt.removeKey(this.mountPoint, oldIdentifier);
      await rm(join(this.mountPoint, REKEYED_OLD_DIR), { recursive: true, force: true });
      await fsyncPath(this.mountPoint);
      this.opts.logger.info({ groupId: this.groupId }, "re-key: old key removed and old directory deleted");
    });
  }

  /** Before the switch: the re-key's directory removed and its key out of the kernel; `data` is left as it was. */
  abortRekey(newIdentifier: string | null): Promise<void> {
    return this.serial(async () => {
      if (!(await this.currentMount())) throw this.fail("rolling back a re-key needs the volume mounted");
      const staging = join(this.mountPoint, REKEY_DIR);
      if (!(await exists(this.path))) throw this.fail(`${this.path} is missing: this re-key is past its switch and cannot be rolled back`);
      const current = (await this.fscrypt.status(this.path)).identifier;
      let id = newIdentifier;
      if (await exists(staging)) {
        id = (await this.fscrypt.status(staging)).identifier ?? id;
        await rm(staging, { recursive: true, force: true });
        await fsyncPath(this.mountPoint);
      }
      if (id !== null && id !== current) await this.fscrypt.removeKey(this.mountPoint, id);
      this.opts.logger.info({ groupId: this.groupId }, "re-key rolled back: the volume keeps its key");
    });
  }

  // ------------------------------------------------------------------------------------------ internals

  private checkKey(key: Uint8Array): void {
    if (!(key instanceof Uint8Array) || key.length !== VOLUME_KEY_BYTES) {
      throw new ParhelionError("ERR_VALIDATION", `a volume key is ${VOLUME_KEY_BYTES} bytes`);
    }
  }

  /** sizeBytes: the size of the image to make when there is none; undefined: never make one. */
  private async open(key: Uint8Array, sizeBytes: number | undefined): Promise<void> {
    this.checkKey(key);
    if (!asRoot()) throw this.fail("encrypted volumes need root (mount, loop devices, fscrypt keys)");
    await warnIfSlowCrypto(this.opts.logger);
    if (!(await this.currentMount())) {
      if (!(await exists(this.image))) {
        if (sizeBytes === undefined) throw this.fail(`the image ${this.image} does not exist`);
        await this.makeImage(sizeBytes);
      }
      await this.mount();
    }
    await this.unlockMounted(key);
  }

  /** The mount at the mount point, checked to be this volume's image on a loop device. */
  private async currentMount(): Promise<{ device: string } | undefined> {
    const m = await mountAt(this.mountPoint);
    if (!m) return undefined;
    const backing = await loopBackingFile(m.source);
    if (m.fsType !== "ext4" || (backing !== this.image && backing !== `${this.image} (deleted)`)) {
      throw this.fail(`${this.mountPoint} has something else mounted on it (${m.fsType} from ${m.source}${backing ? ` backed by ${backing}` : ""})`);
    }
    return { device: m.source };
  }

  /** A sparse image with an ext4 filesystem that supports encryption, made under a temporary name and renamed when whole. */
  private async makeImage(sizeBytes: number): Promise<void> {
    await mkdir(this.volumesDir, { recursive: true, mode: 0o711 });
    await chmod(this.volumesDir, 0o711);
    const tmp = `${this.image}.new`;
    await rm(tmp, { force: true }); // an interrupted creation
    const fh = await open(tmp, "wx", 0o600);
    try {
      await fh.truncate(sizeBytes);
    } finally {
      await fh.close();
    }
    await chmod(tmp, 0o600);
    // -O encrypt: fscrypt support; -m 0: PostgreSQL runs unprivileged, a root reserve would be space it can never use.
    // lazy_journal_init: the image is a fresh sparse file, so the journal's blocks already read as zeros; writing
    // them out would cost 32-512 MiB of disk per image before any data (measured: a 16 GiB image then takes 4 MiB).
    await runChecked("mkfs.ext4", ["-q", "-F", "-O", "encrypt", "-m", "0", "-E", "lazy_journal_init=1", "-L", `ph-${this.groupId.slice(0, 8)}`, tmp], "making the volume's filesystem");
    await fsyncPath(tmp);
    await rename(tmp, this.image);
    await fsyncPath(this.volumesDir);
    this.opts.logger.info({ groupId: this.groupId, sizeBytes }, "encrypted volume image created");
  }

  /**
   * Attaches the image to a loop device (direct I/O: no second copy in the page cache) and mounts it. The
   * device is then detached lazily, which the kernel turns into "detach when unmounted", so no loop device
   * outlives its mount. Loop devices a killed parhelion left without a mount are detached first.
   */
  private async mount(): Promise<void> {
    await this.detachStrayLoops();
    await mkdir(this.mountPoint, { recursive: true, mode: 0o711 });
    await chmod(this.mountPoint, 0o711);
    const device = (await runChecked("losetup", ["--find", "--show", "--direct-io=on", "--", this.image], "attaching the image to a loop device")).trim();
    if (!/^\/dev\/loop\d+$/.test(device)) throw this.fail(`losetup answered "${device}", not a loop device`);
    try {
      await runChecked("mount", ["-t", "ext4", "-o", MOUNT_OPTIONS, "--", device, this.mountPoint], "mounting the volume");
    } finally {
      // Mounted: marks the device to detach at unmount. Not mounted: detaches it now.
      await run("losetup", ["--detach", device]);
    }
    // The filesystem's root: root-owned, traversable by the service account (0711) like the mount point under it.
    await chmod(this.mountPoint, 0o711);
    await chown(this.mountPoint, 0, 0);
    this.opts.logger.info({ groupId: this.groupId, device }, "encrypted volume mounted");
  }

  /** Detaches loop devices on this image that nothing mounts; refuses when one is mounted elsewhere (two mounts would corrupt it). */
  private async detachStrayLoops(): Promise<void> {
    const mounts = await readMounts();
    for (const dev of await loopDevicesFor(this.image)) {
      const where = mounts.filter((m) => m.source === dev).map((m) => m.mountPoint);
      if (where.includes(this.mountPoint)) continue;
      if (where.length > 0) throw this.fail(`the image is mounted elsewhere (${dev} on ${where.join(", ")}); unmount it first`);
      this.opts.logger.warn({ groupId: this.groupId, device: dev }, "detaching a loop device left without a mount");
      await runChecked("losetup", ["--detach", dev], `detaching ${dev}`);
    }
  }

  /** Adds the key to the mounted filesystem and checks it is the encrypted directory's key; makes the directory on a new volume. */
  private async unlockMounted(key: Uint8Array): Promise<void> {
    const staging = join(this.mountPoint, `.${ENCRYPTED_DIR}.new`);
    if (!(await exists(this.path))) {
      if ((await exists(join(this.mountPoint, REKEY_DIR))) || (await exists(join(this.mountPoint, REKEYED_OLD_DIR)))) {
        // A re-key stopped between its two renames: never an empty directory in place of the data.
        throw this.fail(`${this.path} is missing while a re-key's directories exist: the re-key's recovery must finish first`);
      }
      // A new volume (or one whose creation was interrupted before the rename below): nothing is stored yet.
      await rm(staging, { recursive: true, force: true });
      const id = await this.fscrypt.addKey(this.mountPoint, key);
      await mkdir(staging, { mode: 0o700 });
      await this.fscrypt.setPolicy(staging, id);
      await chown(staging, 0, 0);
      await chmod(staging, 0o711);
      await rename(staging, this.path);
      await fsyncPath(this.mountPoint);
      this.opts.logger.info({ groupId: this.groupId, identifier: id }, "encrypted volume unlocked (new encrypted directory)");
      return;
    }
    const s = await this.fscrypt.status(this.path);
    if (s.policy !== "v2" || s.contents !== "aes-256-xts" || s.filenames !== "aes-256-cts" || !s.identifier) {
      throw this.fail(`${this.path} does not have parhelion's encryption policy (policy ${s.policy}); refusing to use it`);
    }
    const id = await this.fscrypt.addKey(this.mountPoint, key);
    if (id !== s.identifier) {
      // The kernel derived another identifier: not this volume's key. Take it back out; say nothing more.
      await this.fscrypt.removeKey(this.mountPoint, id).catch(() => undefined);
      throw new ParhelionError("ERR_VOLUME_KEY_MISMATCH", `volume ${this.groupId}: the key does not unlock this volume`);
    }
    // Root-owned and traversable only: the servers (all one OS user) cannot rename, remove or plant entries here.
    await chown(this.path, 0, 0);
    await chmod(this.path, 0o711);
    this.opts.logger.info({ groupId: this.groupId, identifier: id }, "encrypted volume unlocked");
  }

  private async doLock(): Promise<LockResult> {
    if (!(await this.currentMount()) || !(await exists(this.path))) return { key: "absent", busy: false };
    const s = await this.fscrypt.status(this.path);
    if (s.policy !== "v2" || !s.identifier) throw this.fail(`${this.path} has no v2 encryption policy`);
    // "incompletely-removed": an earlier lock found busy files; removing again retries evicting them.
    if (s.key === "absent") return { key: "absent", busy: false };
    const r = await this.fscrypt.removeKey(this.mountPoint, s.identifier);
    const result: LockResult = { key: r === "absent" ? "absent" : "removed", busy: r === "busy" };
    if (result.busy) this.opts.logger.warn({ groupId: this.groupId }, "encrypted volume locked, but files on it are still open and stay readable until closed");
    else this.opts.logger.info({ groupId: this.groupId }, "encrypted volume locked");
    return result;
  }

  private async doUnmount(): Promise<void> {
    const m = await this.currentMount();
    if (m) {
      const locked = await this.doLock();
      if (locked.busy) throw new ParhelionError("ERR_VOLUME_BUSY", `volume ${this.groupId}: files on it are in use; stop the servers using it and retry`);
      const r = await run("umount", ["--", this.mountPoint]);
      if (r.code !== 0) {
        if (/busy/i.test(r.stderr)) throw new ParhelionError("ERR_VOLUME_BUSY", `volume ${this.groupId}: ${r.stderr.trim()}`);
        throw this.fail(`unmounting failed: ${r.stderr.trim()}`);
      }
      this.opts.logger.info({ groupId: this.groupId }, "encrypted volume unmounted");
    }
    // The kernel detaches an auto-clearing loop device as the unmount releases it; wait briefly, then detach what remains.
    for (let i = 0; i < 40 && (await loopDevicesFor(this.image)).length > 0; i++) await new Promise((r) => setTimeout(r, 25));
    await this.detachStrayLoops();
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}


/** The group ids that have a volume image under `<dataDir>/volumes` (the metadata store's volume is not a group's: never listed). */
export async function listVolumes(dataDir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(join(dataDir, "volumes"));
  } catch {
    return [];
  }
  return names.filter((n) => n.endsWith(".img") && isUuid(n.slice(0, -4))).map((n) => n.slice(0, -4)).sort();
}
