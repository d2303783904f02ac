/**
 * Where each workspace group's data lives: its encrypted volume (volumeEncryption fscrypt, the default), or
 * the engine's own directory in plaintext (volumeEncryption none, an explicit choice of the operator).
 */
import { access, constants, stat } from "node:fs/promises";
import { join } from "node:path";
import { ParhelionError } from "../lib/errors.js";
import { isUuid } from "../lib/ids.js";
import type { Logger } from "../log/logger.js";
import { FSCRYPT_HELPER } from "./fscrypt.js";
import { EncryptedVolume, MIN_VOLUME_BYTES, listVolumes, type LockResult } from "./volume.js";
import { mountAt } from "./mounts.js";

export type VolumeEncryption = "fscrypt" | "none";

/** Where a group's volume key comes from (the keyring: HKDF of the group's data key); the caller zeroes it. */
export interface GroupKeySource {
  groupVolumeKey(orgId: string, groupId: string): Promise<Buffer>;
}

/** What the reconciler needs of the groups' storage. */
export interface GroupStorage {
  readonly encryption: VolumeEncryption;
  /**
   * The directory the group's workspaces' data directories go in (`<root>/<workspaceId>/pgdata`): the volume's
   * encrypted directory; undefined with encryption none (the engine's own directory).
   */
  root(groupId: string): string | undefined;
  /**
   * Makes the group's storage ready for its workspaces, sized for sizeBytes: with fscrypt, unwraps the group's
   * volume key, makes or mounts the volume, unlocks it, zeroes the key; grows the volume when sizeBytes exceeds
   * it. Idempotent (a volume this process unlocked is not unlocked again). ERR_KEY_UNAVAILABLE when the key
   * cannot be had: never a plaintext fallback.
   */
  open(g: { groupId: string; orgId: string; sizeBytes: number }): Promise<void>;
  /** True when this process has the group's storage open (always true with encryption none). */
  isOpen(groupId: string): boolean;
  /** Removes the group's key from the kernel (stop its servers first: files still open stay readable, `busy`). */
  lock(groupId: string): Promise<LockResult>;
  /** Locks and unmounts the group's volume (ERR_VOLUME_BUSY while files on it are open). */
  close(groupId: string): Promise<void>;
  /** Unmounts the group's volume and deletes its image: the group's data is gone for good. */
  destroy(groupId: string): Promise<void>;
  /** Group ids with storage on disk (volume images). */
  onDisk(): Promise<string[]>;
  /** Locks and unmounts every mounted volume of this data directory (platform stop, after the servers). */
  closeAll(): Promise<void>;
  /** The group's volume for a re-key of its data key (src/workspaces/rekey.ts); undefined with encryption none. */
  rekeyVolume(groupId: string): RekeyVolume | undefined;
}

/** What a re-key does on a group's volume (EncryptedVolume's re-key steps). */
export type RekeyVolume = Pick<EncryptedVolume, "mountOnly" | "beginRekey" | "copyRekey" | "switchRekey" | "finishRekey" | "abortRekey" | "imageBytes">;

export interface GroupStorageOptions {
  encryption: VolumeEncryption;
  /** parhelion's data directory (volumes under `<dataDir>/volumes`). */
  dataDir: string;
  keys: GroupKeySource;
  logger: Logger;
  /** The parhelion-fscrypt helper (default: where the bootstrap installs it). */
  helper?: string;
}

export function createGroupStorage(o: GroupStorageOptions): GroupStorage {
  return o.encryption === "fscrypt" ? new EncryptedGroupStorage(o) : new PlainGroupStorage(o);
}

/** The host can run fscrypt volumes: root, ext4 encryption in the kernel, loop devices, the helper and e2fsprogs. Throws ERR_CONFIG naming what is missing and the option. */
export async function checkVolumeSupport(helper: string = FSCRYPT_HELPER): Promise<void> {
  const missing: string[] = [];
  if (process.getuid?.() !== 0) missing.push("parhelion must run as root (mounting images, loop devices and encryption keys need it; PostgreSQL still runs unprivileged)");
  if (!(await exists("/sys/fs/ext4/features/encryption"))) missing.push("the kernel has no ext4 encryption (CONFIG_FS_ENCRYPTION; /sys/fs/ext4/features/encryption is absent)");
  if (!(await exists("/dev/loop-control"))) missing.push("no loop devices (/dev/loop-control is absent: modprobe loop, or give the container access to it)");
  try {
    await access(helper, constants.X_OK);
  } catch {
    missing.push(`the helper ${helper} is not installed (./bin/parhelion's bootstrap builds it from engine/fscrypt)`);
  }
  for (const tool of ["mkfs.ext4", "resize2fs", "losetup", "mount", "umount"]) {
    if (!(await onPath(tool))) missing.push(`${tool} is not installed (apt-get install e2fsprogs mount)`);
  }
  if (missing.length > 0) {
    throw new ParhelionError("ERR_CONFIG", `volumeEncryption is fscrypt (the default), but encrypted volumes cannot work on this host: ${missing.join("; ")}. Fix that, or choose plaintext workspace data explicitly with --volume-encryption none (PARHELION_VOLUME_ENCRYPTION=none; see docs/security.md, "Encryption at rest")`);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

async function onPath(tool: string): Promise<boolean> {
  for (const dir of ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]) {
    try {
      await access(join(dir, tool), constants.X_OK);
      return true;
    } catch {
      // next
    }
  }
  return false;
}

function checkGroup(groupId: string): string {
  if (!isUuid(groupId)) throw new ParhelionError("ERR_VALIDATION", "a workspace group id must be a UUID");
  return groupId.toLowerCase();
}

/** volumeEncryption fscrypt: one EncryptedVolume per group under `<dataDir>/volumes`. */
class EncryptedGroupStorage implements GroupStorage {
  readonly encryption = "fscrypt" as const;
  private readonly volumes = new Map<string, EncryptedVolume>();
  /** Groups whose volume this process has unlocked (and not locked since). */
  private readonly unlocked = new Set<string>();
  private readonly opening = new Map<string, Promise<void>>();
  /** The size a grow last failed for, per group (not retried every pass). */
  private readonly growFailed = new Map<string, number>();

  constructor(private readonly o: GroupStorageOptions) {}

  private volume(groupId: string): EncryptedVolume {
    const id = checkGroup(groupId);
    let v = this.volumes.get(id);
    if (!v) {
      v = new EncryptedVolume({ dataDir: this.o.dataDir, groupId: id, sizeBytes: MIN_VOLUME_BYTES, logger: this.o.logger, ...(this.o.helper ? { helper: this.o.helper } : {}) });
      this.volumes.set(id, v);
    }
    return v;
  }

  root(groupId: string): string {
    return this.volume(groupId).path;
  }

  isOpen(groupId: string): boolean {
    return this.unlocked.has(checkGroup(groupId));
  }

  open(g: { groupId: string; orgId: string; sizeBytes: number }): Promise<void> {
    const id = checkGroup(g.groupId);
    const inflight = this.opening.get(id);
    if (inflight) return inflight;
    const p = this.doOpen(id, g.orgId, g.sizeBytes).finally(() => this.opening.delete(id));
    this.opening.set(id, p);
    return p;
  }

  private async doOpen(id: string, orgId: string, sizeBytes: number): Promise<void> {
    const size = Math.max(MIN_VOLUME_BYTES, Math.ceil(sizeBytes / (1024 * 1024)) * 1024 * 1024);
    const vol = this.volume(id);
    if (!this.unlocked.has(id)) {
      const key = await this.o.keys.groupVolumeKey(orgId, id);
      try {
        await vol.create(key, size);
      } finally {
        key.fill(0);
      }
      this.unlocked.add(id);
    }
    if (((await vol.imageBytes()) ?? 0) < size && this.growFailed.get(id) !== size) {
      try {
        await vol.grow(size);
      } catch (err) {
        // Not fatal: the workspaces run in the space the volume has. Said once per size asked for.
        this.growFailed.set(id, size);
        this.o.logger.warn({ groupId: id, sizeBytes: size, err: { message: (err as Error).message } }, "could not grow the workspace group's encrypted volume online; it keeps its size (see docs/operations.md)");
      }
    }
  }

  async lock(groupId: string): Promise<LockResult> {
    const id = checkGroup(groupId);
    this.unlocked.delete(id);
    return this.volume(id).lock();
  }

  async close(groupId: string): Promise<void> {
    const id = checkGroup(groupId);
    this.unlocked.delete(id);
    await this.volume(id).unmount();
  }

  async destroy(groupId: string): Promise<void> {
    const id = checkGroup(groupId);
    this.unlocked.delete(id);
    await this.volume(id).destroy();
    this.volumes.delete(id);
  }

  onDisk(): Promise<string[]> {
    return listVolumes(this.o.dataDir);
  }

  rekeyVolume(groupId: string): RekeyVolume {
    return this.volume(groupId);
  }

  async closeAll(): Promise<void> {
    this.unlocked.clear();
    for (const id of await this.onDisk()) {
      const vol = this.volume(id);
      if (!(await mountAt(vol.mountPoint))) continue;
      try {
        await vol.unmount();
      } catch (err) {
        // Locked as far as the kernel allows; a later start unlocks and reuses it.
        this.o.logger.error({ groupId: id, err: { message: (err as Error).message } }, "encrypted volume left mounted at stop");
      }
    }
  }
}

/**
 * volumeEncryption none: workspace data in the engine's own directory, in plaintext. A group that already has
 * an encrypted volume is refused rather than started afresh beside it.
 */
class PlainGroupStorage implements GroupStorage {
  readonly encryption = "none" as const;

  constructor(private readonly o: GroupStorageOptions) {}

  root(): undefined {
    return undefined;
  }

  isOpen(): boolean {
    return true;
  }

  async open(g: { groupId: string }): Promise<void> {
    const id = checkGroup(g.groupId);
    if ((await listVolumes(this.o.dataDir)).includes(id)) {
      throw new ParhelionError("ERR_CONFIG", `workspace group ${id} keeps its data on an encrypted volume (${join(this.o.dataDir, "volumes", `${id}.img`)}); start parhelion with volumeEncryption fscrypt to serve it`);
    }
  }

  async lock(): Promise<LockResult> {
    return { key: "absent", busy: false };
  }

  async close(): Promise<void> {}

  async destroy(groupId: string): Promise<void> {
    // A volume made while volumeEncryption was fscrypt: deleting it needs no key.
    const id = checkGroup(groupId);
    if ((await listVolumes(this.o.dataDir)).includes(id)) {
      await new EncryptedVolume({ dataDir: this.o.dataDir, groupId: id, sizeBytes: MIN_VOLUME_BYTES, logger: this.o.logger }).destroy();
    }
  }

  onDisk(): Promise<string[]> {
    return listVolumes(this.o.dataDir);
  }

  async closeAll(): Promise<void> {}

  rekeyVolume(): undefined {
    return undefined;
  }
}
