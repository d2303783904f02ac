import assert from "node:assert/strict";
import { ParhelionError, type ErrorCode } from "../../../src/lib/errors.js";

/** Asserts fn throws a ParhelionError of this code (and message, if given); answers it. */
export function throwsWith(fn: () => unknown, code: ErrorCode, message?: string | RegExp): ParhelionError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof ParhelionError, `expected ParhelionError ${code}, got ${caught === undefined ? "no error" : String(caught)}`);
  assert.equal(caught.code, code, `expected ${code}, got ${caught.code}: ${caught.message}`);
  if (typeof message === "string") assert.equal(caught.message, message);
  else if (message) assert.match(caught.message, message);
  return caught;
}

/** Concatenates buffers or latin1 strings. */
export function bytes(...parts: (Buffer | string | number[])[]): Buffer {
  return Buffer.concat(parts.map((p) => (typeof p === "string" ? Buffer.from(p, "latin1") : Buffer.isBuffer(p) ? p : Buffer.from(p))));
}

/** A big-endian int32 as 4 bytes. */
export function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

/** A typed message: type byte, length word counting itself, body. */
export function msg(type: string, body: Buffer | string = Buffer.alloc(0)): Buffer {
  const b = typeof body === "string" ? Buffer.from(body, "latin1") : body;
  return bytes(type, int32(b.length + 4), b);
}

/** An untyped startup-phase packet around a body. */
export function packet(body: Buffer): Buffer {
  return bytes(int32(body.length + 4), body);
}
