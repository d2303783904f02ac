import { test, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LocalKeyProvider } from "../../src/kms/index.js";
import { ParhelionError } from "../../src/lib/errors.js";
import { rejectsOpaque, tempDir } from "./helpers.js";

const tmp = tempDir("local");
after(() => tmp.cleanup());

function refuses(file: string, message: RegExp): void {
  assert.throws(() => LocalKeyProvider.open(file), (err: unknown) => err instanceof ParhelionError && err.code === "ERR_CONFIG" && message.test(err.message));
}

test("the first open makes a 32-byte root key file, mode 0600 in a 0700 directory; the next open finds the same key", async () => {
  const file = join(tmp.dir, "a", "keys", "root.key");
  const p = LocalKeyProvider.open(file);
  assert.equal(p.created, true);
  assert.equal(statSync(file).mode & 0o777, 0o600);
  assert.equal(statSync(join(tmp.dir, "a", "keys")).mode & 0o777, 0o700);
  assert.equal(statSync(file).size, 32);
  const d = p.describe();
  assert.equal(d.provider, "local");
  assert.match(d.keyId, /^local:[0-9a-f]{16}$/);
  const key = randomBytes(32);
  const ctx = { purpose: "parhelion-org-kek", keyId: "kek-1", organizationId: "o1" };
  const wrapped = await p.wrap(key, ctx);
  assert.ok(!wrapped.includes(key));
  assert.ok(!wrapped.includes(readFileSync(file)), "the wrapped key shows the root key");
  const again = LocalKeyProvider.open(file);
  assert.equal(again.created, false);
  assert.equal(again.describe().keyId, d.keyId);
  assert.deepEqual(await again.unwrap(wrapped, ctx), key);
  assert.deepEqual(await p.health(), { ok: true, detail: "ok" });
  await p.close();
  await again.close();
});

test("unwrap with another context, another root key or a tampered blob gives the one opaque error", async () => {
  const p = LocalKeyProvider.open(join(tmp.dir, "b.key"));
  const other = LocalKeyProvider.open(join(tmp.dir, "c.key"));
  assert.notEqual(p.describe().keyId, other.describe().keyId);
  const ctx = { purpose: "parhelion-org-kek", keyId: "kek-1", organizationId: "o1" };
  const wrapped = await p.wrap(randomBytes(32), ctx);
  await rejectsOpaque(() => p.unwrap(wrapped, { ...ctx, organizationId: "o2" }), "other context");
  await rejectsOpaque(() => other.unwrap(wrapped, ctx), "other root key");
  for (let i = 0; i < wrapped.length; i++) {
    const bad = Buffer.from(wrapped);
    bad[i] = (bad[i] ?? 0) ^ 0x01;
    await rejectsOpaque(() => p.unwrap(bad, ctx), `byte ${i}`);
  }
  await rejectsOpaque(() => p.unwrap(Buffer.alloc(0), ctx), "empty");
});

test("refuses a root key file readable or writable by others, of the wrong size, a symbolic link or a directory", () => {
  const file = join(tmp.dir, "d.key");
  writeFileSync(file, randomBytes(32), { mode: 0o600 });
  for (const mode of [0o644, 0o640, 0o604, 0o660, 0o602]) {
    chmodSync(file, mode);
    refuses(file, /readable by its owner only/);
  }
  chmodSync(file, 0o400);
  assert.doesNotThrow(() => LocalKeyProvider.open(file));
  for (const size of [0, 16, 31, 33, 64]) {
    const f = join(tmp.dir, `size-${size}.key`);
    writeFileSync(f, randomBytes(size), { mode: 0o600 });
    refuses(f, /exactly 32/);
  }
  const link = join(tmp.dir, "link.key");
  chmodSync(file, 0o600);
  symlinkSync(file, link);
  refuses(link, /symbolic link/);
  const dir = join(tmp.dir, "dir.key");
  mkdirSync(dir, { mode: 0o700 });
  refuses(dir, /not a regular file/);
});
