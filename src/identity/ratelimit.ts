import { ParhelionError } from "../lib/errors.js";
import { systemClock, type Clock } from "./types.js";

export interface LoginThrottleOptions {
  /** Failures per account allowed within the window; a source address is allowed 4 × this. */
  threshold: number;
  /** Length of the sliding window and of the lockout, in seconds. */
  lockoutSeconds: number;
  clock?: Clock;
  /** Most keys remembered per kind (accounts, sources); the least recently touched are forgotten first. Default 100,000. */
  maxKeys?: number;
}

/** What a throttled attempt is keyed on: the account (email, lower-cased) if known, and the source address. */
export interface ThrottleSubject {
  account?: string | null | undefined;
  source: string;
}

interface Counter {
  /** Failure times (ms) within the window, oldest first; never longer than the limit. */
  failures: number[];
  lockedUntil: number;
}

/** Failure counters of one kind of key, in least-recently-touched order, bounded. */
class CounterTable {
  private readonly map = new Map<string, Counter>();
  constructor(
    readonly limit: number,
    private readonly maxKeys: number,
  ) {}

  get(key: string): Counter | undefined {
    return this.map.get(key);
  }

  touch(key: string): Counter {
    let c = this.map.get(key);
    if (c) this.map.delete(key);
    else c = { failures: [], lockedUntil: 0 };
    this.map.set(key, c);
    while (this.map.size > this.maxKeys) {
      const oldest = this.map.keys().next().value;
      if (oldest === undefined) break;
      this.map.delete(oldest);
    }
    return c;
  }

  delete(key: string): void {
    this.map.delete(key);
  }

  get size(): number {
    return this.map.size;
  }
}

/**
 * Locks out an account after `threshold` failures, and a source address after 4 × `threshold`, within a
 * sliding window of `lockoutSeconds`; a locked key stays locked for `lockoutSeconds`. In memory, per process.
 */
export class LoginThrottle {
  private readonly accounts: CounterTable;
  private readonly sources: CounterTable;
  private readonly windowMs: number;
  private readonly clock: Clock;

  constructor(opts: LoginThrottleOptions) {
    if (!Number.isInteger(opts.threshold) || opts.threshold < 1) throw new ParhelionError("ERR_CONFIG", "LoginThrottle: threshold must be a positive integer");
    if (!Number.isFinite(opts.lockoutSeconds) || opts.lockoutSeconds <= 0) throw new ParhelionError("ERR_CONFIG", "LoginThrottle: lockoutSeconds must be positive");
    const maxKeys = opts.maxKeys ?? 100_000;
    if (!Number.isInteger(maxKeys) || maxKeys < 1) throw new ParhelionError("ERR_CONFIG", "LoginThrottle: maxKeys must be a positive integer");
    this.windowMs = opts.lockoutSeconds * 1000;
    this.clock = opts.clock ?? systemClock;
    this.accounts = new CounterTable(opts.threshold, maxKeys);
    this.sources = new CounterTable(4 * opts.threshold, maxKeys);
  }

  /** Throws ERR_RATE_LIMITED with `details.retryAfterSeconds` if the account or the source is locked. */
  check(subject: ThrottleSubject): void {
    const now = this.clock().getTime();
    let until = 0;
    for (const [table, key] of this.keys(subject)) {
      const c = table.get(key);
      if (c && c.lockedUntil > now) until = Math.max(until, c.lockedUntil);
    }
    if (until > 0) {
      const retryAfterSeconds = Math.max(1, Math.ceil((until - now) / 1000));
      throw new ParhelionError("ERR_RATE_LIMITED", `Too many failed attempts; try again in ${retryAfterSeconds} s.`, { details: { retryAfterSeconds } });
    }
  }

  /** Counts one failure against the account (if given) and the source; answers whether either is now locked. */
  recordFailure(subject: ThrottleSubject): boolean {
    const now = this.clock().getTime();
    let locked = false;
    for (const [table, key] of this.keys(subject)) {
      const c = table.touch(key);
      if (c.lockedUntil > now) {
        locked = true;
        continue;
      }
      if (c.lockedUntil !== 0) {
        // A lockout that has run out starts a fresh count.
        c.lockedUntil = 0;
        c.failures = [];
      }
      const since = now - this.windowMs;
      while (c.failures.length > 0 && (c.failures[0] ?? 0) <= since) c.failures.shift();
      c.failures.push(now);
      if (c.failures.length >= table.limit) {
        c.lockedUntil = now + this.windowMs;
        c.failures = [];
        locked = true;
      }
    }
    return locked;
  }

  /** A successful sign-in clears the account's counter (the source's stays). */
  recordSuccess(subject: { account?: string | null | undefined }): void {
    const key = normalizeAccount(subject.account);
    if (key !== null) this.accounts.delete(key);
  }

  /** Number of keys remembered, per kind (for metrics and tests). */
  get size(): { accounts: number; sources: number } {
    return { accounts: this.accounts.size, sources: this.sources.size };
  }

  private keys(subject: ThrottleSubject): Array<[CounterTable, string]> {
    const out: Array<[CounterTable, string]> = [[this.sources, String(subject.source)]];
    const account = normalizeAccount(subject.account);
    if (account !== null) out.push([this.accounts, account]);
    return out;
  }
}

function normalizeAccount(account: string | null | undefined): string | null {
  if (typeof account !== "string") return null;
  const a = account.trim().toLowerCase();
  return a.length > 0 ? a.slice(0, 320) : null;
}
