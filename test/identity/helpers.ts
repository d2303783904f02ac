import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { ParhelionError, type ErrorCode } from "../../src/lib/errors.js";
import type { Db } from "../../src/store/db.js";
import type { Clock } from "../../src/identity/types.js";

/** A clock tests move by hand. */
export class FakeClock {
  constructor(public ms: number = Date.parse("2030-01-01T00:00:00.000Z")) {}
  readonly now: Clock = () => new Date(this.ms);
  advance(seconds: number): void {
    this.ms += seconds * 1000;
  }
}

/** Asserts the promise (or function) fails with a ParhelionError of this code (and message, if given). */
export async function rejectsWith(fn: Promise<unknown> | (() => unknown), code: ErrorCode, message?: string | RegExp): Promise<ParhelionError> {
  let caught: unknown;
  try {
    await (typeof fn === "function" ? fn() : fn);
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof ParhelionError, `expected ParhelionError ${code}, got ${caught === undefined ? "no error" : String(caught)}`);
  assert.equal(caught.code, code, `expected ${code}, got ${caught.code}: ${caught.message}`);
  if (typeof message === "string") assert.equal(caught.message, message);
  else if (message) assert.match(caught.message, message);
  return caught;
}

/** Inserts an organization and answers its id. */
export async function makeOrg(db: Db, name = "acme"): Promise<string> {
  const id = randomUUID();
  await db.insertInto("organizations").values({ id, name }).execute();
  return id;
}

let n = 0;
/** A fresh unique email. */
export function email(tag = "user"): string {
  n++;
  return `${tag}.${n}.${randomUUID().slice(0, 8)}@example.com`;
}

export const GOOD_PASSWORD = "violet-harbor-tangent-91";
