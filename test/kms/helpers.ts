import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ParhelionError } from "../../src/lib/errors.js";
import { KEY_UNAVAILABLE_MESSAGE } from "../../src/kms/index.js";

/** A 0700 temporary directory, removed by `cleanup` (call it from `after` / `finally`). */
export function tempDir(tag: string): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), `parhelion-kms-${tag}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Asserts the one opaque decryption error: ERR_KEY_UNAVAILABLE with its fixed message and no details. */
export async function rejectsOpaque(fn: () => unknown, what = ""): Promise<void> {
  let caught: unknown;
  try {
    await fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof ParhelionError, `${what}: expected ERR_KEY_UNAVAILABLE, got ${caught === undefined ? "no error" : String(caught)}`);
  assert.equal(caught.code, "ERR_KEY_UNAVAILABLE", what);
  assert.equal(caught.message, KEY_UNAVAILABLE_MESSAGE, what);
  assert.equal(caught.details, undefined, what);
}
