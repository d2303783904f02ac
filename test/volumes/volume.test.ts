import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { chown, mkdir, readdir, readFile, stat, statfs, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { EncryptedVolume, loopDevicesFor, mountAt, listVolumes } from "../../src/volumes/index.js";
import { ParhelionError } from "../../src/lib/errors.js";
import { account, asService, cleanupRoot, dataRoot, execFileAsync, findInFile, join, leftovers, logger, SIZE } from "./helpers.js";

const acct = account();

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return err instanceof ParhelionError ? err.code : `not a ParhelionError: ${(err as Error).message}`;
  }
  return "no error";
}

describe("encrypted volume", () => {
  let root = "";
  let vol: EncryptedVolume;
  const groupId = randomUUID();
  const key = randomBytes(64);
  const canary = `canary-${randomBytes(12).toString("hex")}`;
  const nameCanary = `name-${randomBytes(12).toString("hex")}`;
  const plainCanary = `plain-${randomBytes(12).toString("hex")}`;
  const newVolume = () => new EncryptedVolume({ dataDir: root, groupId, sizeBytes: SIZE, logger });

  before(async () => {
    root = dataRoot();
    vol = newVolume();
    await vol.create(key);
  });

  after(async () => {
    await cleanupRoot(root);
    assert.deepEqual(await leftovers(root), { mounts: [], loops: [] }, "no mount or loop device of the test is left");
  });

  test("create makes a sparse root-only image, mounts it nodev,nosuid,noexec and a root-owned encrypted directory the service account can only traverse", async () => {
    const img = await stat(vol.image);
    assert.equal(vol.image, join(root, "volumes", `${groupId}.img`));
    assert.equal(img.mode & 0o777, 0o600);
    assert.equal(img.uid, 0);
    assert.equal(img.size, SIZE);
    assert.ok(img.blocks * 512 < SIZE / 2, "the image is sparse");
    const m = await mountAt(vol.mountPoint);
    assert.ok(m, "mounted");
    assert.equal(m.fsType, "ext4");
    for (const o of ["nodev", "nosuid", "noexec"]) assert.ok(m.options.split(",").includes(o), `mount option ${o} in ${m.options}`);
    assert.deepEqual(await loopDevicesFor(vol.image), [m.source]);
    assert.equal((await stat(vol.mountPoint)).mode & 0o777, 0o711);
    const dir = await stat(vol.path);
    assert.equal(dir.uid, 0);
    assert.equal(dir.mode & 0o777, 0o711);
    await assert.rejects(asService(acct, 'mkdir "$1/planted"', vol.path), "the service account cannot add entries to the encrypted directory");
    const s = await vol.state();
    assert.deepEqual({ ...s, identifier: typeof s.identifier }, { image: true, mounted: true, encrypted: true, key: "present", identifier: "string" });
    assert.deepEqual(await listVolumes(root), [groupId]);
  });

  test("the service account writes inside; contents and names never reach the image in plaintext (a plain directory on the same image does)", async () => {
    // As the engine does for each workspace: root makes the directory and hands it to the service account.
    await mkdir(join(vol.path, "sub"), { mode: 0o700 });
    await chown(join(vol.path, "sub"), acct.uid, acct.gid);
    await asService(acct, 'printf %s "$2" > "$1/sub/$3"', vol.path, canary, nameCanary);
    assert.equal(await asService(acct, 'cat "$1/sub/$2"', vol.path, nameCanary), canary);
    // The control: the same kind of write into an unencrypted directory of the same filesystem.
    await mkdir(join(vol.mountPoint, "plain-control"));
    await writeFile(join(vol.mountPoint, "plain-control", plainCanary), plainCanary);
    await execFileAsync("sync", ["-f", vol.mountPoint]);
    assert.ok((await findInFile(vol.image, plainCanary)).length >= 2, "the scan finds plaintext that was written (name and contents)");
    assert.deepEqual(await findInFile(vol.image, canary), [], "file contents are encrypted");
    assert.deepEqual(await findInFile(vol.image, nameCanary), [], "file names are encrypted");
  });

  test("lock: the key leaves the kernel; contents cannot be read and names show encrypted", async () => {
    const r = await vol.lock();
    assert.deepEqual(r, { key: "removed", busy: false });
    assert.equal((await vol.state()).key, "absent");
    const names = await readdir(vol.path);
    assert.equal(names.length, 1);
    assert.notEqual(names[0], "sub");
    const inner = join(vol.path, names[0]!);
    const files = await readdir(inner);
    assert.equal(files.length, 1);
    assert.ok(!files[0]!.includes(nameCanary), "the name is not readable");
    await assert.rejects(readFile(join(inner, files[0]!)), (err: NodeJS.ErrnoException) => err.errno === -126, "ENOKEY (126): Required key not available");
    await assert.rejects(asService(acct, 'cat "$1/sub/$2"', vol.path, nameCanary));
    assert.deepEqual(await vol.lock(), { key: "absent", busy: false }, "locking again is a no-op");
  });

  test("a wrong key does not unlock, and leaves the volume locked", async () => {
    assert.equal(await code(vol.unlock(randomBytes(64))), "ERR_VOLUME_KEY_MISMATCH");
    assert.equal(await code(vol.create(randomBytes(64))), "ERR_VOLUME_KEY_MISMATCH", "nor does create on an existing volume");
    assert.equal(await code(vol.unlock(randomBytes(32))), "ERR_VALIDATION", "a key of the wrong size");
    assert.equal((await vol.state()).key, "absent");
    await assert.rejects(asService(acct, 'cat "$1/sub/$2"', vol.path, nameCanary));
  });

  test("unlock with the right key restores names and contents", async () => {
    await vol.unlock(key);
    assert.equal((await vol.state()).key, "present");
    assert.equal(await asService(acct, 'cat "$1/sub/$2"', vol.path, nameCanary), canary);
  });

  test("lock reports files still open as busy; unmount refuses; once closed, locking finishes", async () => {
    const child: ChildProcess = spawn("/bin/sh", ["-c", 'exec 3< "$1"; echo open; exec sleep 60', "sh", join(vol.path, "sub", nameCanary)], { uid: acct.uid, gid: acct.gid, stdio: ["ignore", "pipe", "ignore"] });
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout!.once("data", () => resolve());
        child.once("exit", (c) => reject(new Error(`holder exited ${c}`)));
      });
      assert.deepEqual(await vol.lock(), { key: "removed", busy: true });
      assert.equal((await vol.state()).key, "incompletely-removed");
      assert.equal(await code(vol.unmount()), "ERR_VOLUME_BUSY");
      assert.ok(await mountAt(vol.mountPoint), "still mounted");
    } finally {
      child.kill("SIGKILL");
      await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(undefined) : child.once("exit", r)));
    }
    assert.deepEqual(await vol.lock(), { key: "removed", busy: false });
    assert.equal((await vol.state()).key, "absent");
    await vol.unlock(key);
    assert.equal(await asService(acct, 'cat "$1/sub/$2"', vol.path, nameCanary), canary);
  });

  test("unmount detaches the loop device; unlock mounts it again with the data", async () => {
    await vol.unmount();
    assert.equal(await mountAt(vol.mountPoint), undefined);
    assert.deepEqual(await loopDevicesFor(vol.image), []);
    assert.deepEqual({ ...(await vol.state()) }, { image: true, mounted: false, encrypted: false, key: "absent", identifier: undefined });
    await vol.unmount(); // idempotent
    await vol.unlock(key);
    assert.equal(await asService(acct, 'cat "$1/sub/$2"', vol.path, nameCanary), canary);
  });

  test("after a crash: a new instance reuses the mount a killed parhelion left, without mounting twice", async () => {
    const before = (await readFile("/proc/self/mountinfo", "utf8")).split("\n").filter((l) => l.includes(` ${vol.mountPoint} `));
    assert.equal(before.length, 1);
    await vol.lock();
    const restarted = newVolume();
    await restarted.unlock(key);
    const afterLines = (await readFile("/proc/self/mountinfo", "utf8")).split("\n").filter((l) => l.includes(` ${vol.mountPoint} `));
    assert.equal(afterLines.length, 1, "one mount");
    assert.equal((await loopDevicesFor(vol.image)).length, 1, "one loop device");
    assert.equal(await asService(acct, 'cat "$1/sub/$2"', vol.path, nameCanary), canary);
    vol = restarted;
  });

  test("after a kill -9 of the process that mounted it: the mount it left is found and reused", async () => {
    await vol.unmount();
    // A separate Node.js process mounts and unlocks the volume (key on its stdin), says so, and is killed with SIGKILL.
    const mod = new URL("../../src/volumes/index.js", import.meta.url).href;
    const script = [
      `import { EncryptedVolume } from ${JSON.stringify(mod)};`,
      `import { createLogger } from ${JSON.stringify(new URL("../../src/log/logger.js", import.meta.url).href)};`,
      "const chunks = []; for await (const c of process.stdin) chunks.push(c);",
      `const v = new EncryptedVolume({ dataDir: ${JSON.stringify(root)}, groupId: ${JSON.stringify(groupId)}, sizeBytes: ${SIZE}, logger: createLogger({ level: "silent" }) });`,
      "await v.unlock(Buffer.concat(chunks)); process.stdout.write('unlocked\\n'); setInterval(() => {}, 1000);",
    ].join("\n");
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["pipe", "pipe", "inherit"] });
    child.stdin.end(key);
    await new Promise<void>((resolve, reject) => {
      child.stdout.once("data", () => resolve());
      child.once("exit", (c) => reject(new Error(`the mounting process exited ${c}`)));
    });
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
    const left = await mountAt(vol.mountPoint);
    assert.ok(left, "the killed process left the volume mounted");
    const restarted = newVolume();
    await restarted.unlock(key);
    assert.equal((await mountAt(vol.mountPoint))?.source, left.source, "the same mount is reused");
    assert.equal((await readFile("/proc/self/mountinfo", "utf8")).split("\n").filter((l) => l.includes(` ${vol.mountPoint} `)).length, 1);
    assert.equal(await asService(acct, 'cat "$1/sub/$2"', vol.path, nameCanary), canary);
    vol = restarted;
  });

  test("after a crash between attaching and mounting: the stray loop device is detached and the image mounted once", async () => {
    await vol.unmount();
    const { stdout } = await execFileAsync("losetup", ["--find", "--show", vol.image]);
    const stray = stdout.trim();
    assert.deepEqual(await loopDevicesFor(vol.image), [stray]);
    const restarted = newVolume();
    await restarted.unlock(key);
    const m = await mountAt(vol.mountPoint);
    assert.ok(m);
    assert.deepEqual(await loopDevicesFor(vol.image), [m.source], "only the mounted device is attached");
    assert.equal(await asService(acct, 'cat "$1/sub/$2"', vol.path, nameCanary), canary);
    vol = restarted;
  });

  test("refuses to mount over something else, and never makes a new image on unlock", async () => {
    const other = new EncryptedVolume({ dataDir: root, groupId: randomUUID(), sizeBytes: SIZE, logger });
    assert.equal(await code(other.unlock(randomBytes(64))), "ERR_VOLUME");
    assert.equal(existsSync(other.image), false);
    // A half-made image (killed during mkfs) is discarded and made again.
    await mkdir(join(root, "volumes"), { recursive: true });
    await writeFile(`${other.image}.new`, "half");
    await other.create(randomBytes(64));
    assert.equal(existsSync(`${other.image}.new`), false);
    assert.equal((await other.state()).key, "present");
    await other.destroy();
    assert.equal(existsSync(other.image), false);
    // Something that is not this volume's image mounted at its mount point is never used.
    const squatted = new EncryptedVolume({ dataDir: root, groupId: randomUUID(), sizeBytes: SIZE, logger });
    await mkdir(squatted.mountPoint, { recursive: true });
    await execFileAsync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", squatted.mountPoint]);
    try {
      assert.equal(await code(squatted.create(randomBytes(64))), "ERR_VOLUME");
      assert.equal(existsSync(squatted.image), false);
    } finally {
      await execFileAsync("umount", [squatted.mountPoint]);
    }
    assert.equal(existsSync(other.mountPoint), false);
    assert.deepEqual(await loopDevicesFor(other.image), []);
  });

  test("grow enlarges the sparse image and, where the host allows online resizing (CAP_SYS_RESOURCE), the mounted filesystem; data stays readable", async () => {
    await vol.unlock(key);
    const before = (await statfs(vol.mountPoint)).blocks;
    const capEff = BigInt(`0x${/^CapEff:\s+([0-9a-f]+)$/m.exec(await readFile("/proc/self/status", "utf8"))?.[1] ?? "0"}`);
    const canResize = (capEff & (1n << 24n)) !== 0n; // CAP_SYS_RESOURCE
    const grown = vol.grow(SIZE * 2);
    if (canResize) {
      assert.equal(await grown, true);
      assert.ok((await statfs(vol.mountPoint)).blocks > before, "the filesystem grew");
      assert.equal(await vol.grow(SIZE * 2), false, "already that large");
    } else {
      // As in this project's container: the kernel refuses EXT4_IOC_RESIZE_FS without CAP_SYS_RESOURCE.
      assert.equal(await code(grown), "ERR_VOLUME");
      assert.equal((await statfs(vol.mountPoint)).blocks, before, "the filesystem keeps its size");
    }
    assert.equal((await stat(vol.image)).size, SIZE * 2, "the image is grown either way");
    assert.ok((await stat(vol.image)).blocks * 512 < SIZE, "and still sparse");
    assert.equal(await vol.imageBytes(), SIZE * 2);
    assert.equal(await asService(acct, 'cat "$1/sub/$2"', vol.path, nameCanary), canary);
    await assert.rejects(vol.grow(1024), (err: ParhelionError) => err.code === "ERR_VALIDATION");
  });

  test("destroy unmounts, detaches and removes the image", async () => {
    await vol.destroy();
    assert.equal(await mountAt(vol.mountPoint), undefined);
    assert.deepEqual(await loopDevicesFor(vol.image), []);
    assert.equal(existsSync(vol.image), false);
    assert.equal(existsSync(vol.mountPoint), false);
    assert.deepEqual(await listVolumes(root), []);
    await vol.destroy(); // idempotent
  });
});
