import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, stat, writeFile } from "node:fs/promises";
import { cleanupRoot, dataRoot, execFileAsync, HELPER, join, leftovers } from "./helpers.js";

/** Runs the helper with optional stdin; answers exit code and output. */
function helper(args: string[], stdin?: Buffer): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn(HELPER, args, { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    c.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    c.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    c.stdin.on("error", () => undefined);
    c.once("error", reject);
    c.once("close", (code) => resolve({ code, stdout, stderr }));
    c.stdin.end(stdin ?? Buffer.alloc(0));
  });
}

describe("parhelion-fscrypt helper", () => {
  let root = "";
  let mnt = "";

  before(async () => {
    root = dataRoot();
    mnt = join(root, "m");
    const img = join(root, "h.img");
    await execFileAsync("truncate", ["-s", "64M", img]);
    await execFileAsync("mkfs.ext4", ["-q", "-F", "-O", "encrypt", img]);
    await mkdir(mnt);
    await execFileAsync("mount", ["-o", "loop,nodev,nosuid,noexec", img, mnt]);
  });

  after(async () => {
    await cleanupRoot(root);
    assert.deepEqual(await leftovers(root), { mounts: [], loops: [] });
  });

  test("is installed root-owned and not writable by others", async () => {
    const s = await stat(HELPER);
    assert.equal(s.uid, 0);
    assert.equal(s.mode & 0o7777, 0o755);
  });

  test("refuses bad arguments with exit status 2", async () => {
    assert.equal((await helper([])).code, 2);
    assert.equal((await helper(["frobnicate", mnt])).code, 2);
    assert.equal((await helper(["add-key"])).code, 2);
    assert.equal((await helper(["add-key", mnt, "extra"], randomBytes(64))).code, 2);
    assert.equal((await helper(["set-policy", mnt, "ABCDEF"])).code, 2);
    assert.equal((await helper(["set-policy", mnt, "A".repeat(32)])).code, 2, "upper case is refused: one spelling");
    assert.equal((await helper(["remove-key", mnt, "0".repeat(31) + "g"])).code, 2);
    assert.equal((await helper(["status"])).code, 2);
  });

  test("takes a key of exactly 64 bytes from stdin", async () => {
    const short = await helper(["add-key", mnt], randomBytes(63));
    assert.equal(short.code, 2);
    assert.match(short.stderr, /exactly 64 bytes/);
    assert.equal((await helper(["add-key", mnt], randomBytes(65))).code, 2);
    assert.equal((await helper(["add-key", mnt])).code, 2, "no key at all");
  });

  test("add-key, set-policy, status, remove-key: the identifier is the kernel's, removal is reported", async () => {
    const key = randomBytes(64);
    const add = await helper(["add-key", mnt], key);
    assert.equal(add.code, 0, add.stderr);
    const id = add.stdout.trim();
    assert.match(id, /^[0-9a-f]{32}$/);
    assert.equal((await helper(["add-key", mnt], key)).stdout.trim(), id, "the same key, the same identifier");
    assert.notEqual((await helper(["add-key", mnt], randomBytes(64))).stdout.trim(), id);

    const dir = join(mnt, "enc");
    await mkdir(dir);
    assert.equal((await helper(["set-policy", dir, id])).code, 0);
    assert.equal((await helper(["set-policy", dir, id])).code, 0, "the same policy again is fine");
    assert.equal((await helper(["set-policy", dir, "0".repeat(32)])).code, 4, "another policy is refused");
    const full = join(mnt, "full");
    await mkdir(full);
    await writeFile(join(full, "x"), "x");
    const notEmpty = await helper(["set-policy", full, id]);
    assert.equal(notEmpty.code, 4);
    assert.match(notEmpty.stderr, /not empty/);

    const st = await helper(["status", dir]);
    assert.equal(st.code, 0);
    assert.match(st.stdout, /^policy=v2$/m);
    assert.match(st.stdout, /^contents=aes-256-xts$/m);
    assert.match(st.stdout, /^filenames=aes-256-cts$/m);
    assert.match(st.stdout, /^padding=32$/m);
    assert.match(st.stdout, new RegExp(`^identifier=${id}$`, "m"));
    assert.match(st.stdout, /^key=present$/m);
    assert.match((await helper(["status", full])).stdout, /^policy=none$/m);

    const rm = await helper(["remove-key", mnt, id]);
    assert.equal(rm.code, 0, rm.stderr);
    assert.equal(rm.stdout.trim(), "removed");
    assert.match((await helper(["status", dir])).stdout, /^key=absent$/m);
    assert.equal((await helper(["remove-key", mnt, id])).code, 3, "a key that is not there");
  });

  test("says so when the filesystem cannot encrypt", async () => {
    const r = await helper(["add-key", "/proc"], randomBytes(64));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /does not support encryption/);
  });
});
