import { randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import { sql } from "kysely";
import { ParhelionError } from "../lib/errors.js";
import type { Logger } from "../log/logger.js";
import type { Db } from "../store/schema.js";
import { asDate, decodeToken, isRole, isUniqueViolation, isUuid, isoNN, iso, pageLimit, requireRole, requireUuid, sha256, text } from "./internal.js";
import { systemClock, type Clock, type OrgRole, type Principal } from "./types.js";

/** The longest lifetime an API key may be given. */
export const API_KEY_MAX_LIFETIME_MS = 2 * 366 * 24 * 3600 * 1000;
const NAME_MAX = 200;
const INVALID = "The API key is malformed, unknown, expired or revoked.";

/** An API key as the API shows it: the prefix is public, the secret and its hash never leave the store. */
export interface ApiKeyView {
  apiKeyID: string;
  name: string;
  prefix: string;
  role: OrgRole;
  createdBy: string | null;
  createdAt: string;
  expiresAt: string;
  lastUsedAt: string | null;
  revokedAt: string | null;
  state: "ACTIVE" | "EXPIRED" | "REVOKED";
}

const PREFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"; // RFC 4648 base32, lower-case
const PREFIX_LENGTH = 10;
const TOKEN_RE = /^phk_([a-z2-7]{10})_([A-Za-z0-9_-]{43})$/;

function newPrefix(): string {
  const bytes = randomBytes(PREFIX_LENGTH);
  let out = "";
  for (const b of bytes) out += PREFIX_ALPHABET[b & 31]; // 256 is a multiple of 32: uniform
  return out;
}

/** Splits `phk_<prefix>_<secret>`; null unless the prefix is 10 base32 characters and the secret canonical base64url of 32 bytes. */
export function parseApiKeyToken(token: unknown): { prefix: string; secret: Buffer } | null {
  if (typeof token !== "string" || token.length !== 58) return null;
  const m = TOKEN_RE.exec(token);
  if (!m) return null;
  const secret = decodeToken(m[2]);
  return secret && m[1] ? { prefix: m[1], secret } : null;
}

const VIEW_COLUMNS = ["id", "name", "prefix", "role", "created_by", "created_at", "expires_at", "last_used_at", "revoked_at"] as const;

interface ViewRow {
  id: string;
  name: string;
  prefix: string;
  role: string;
  created_by: string | null;
  created_at: Date | string;
  expires_at: Date | string;
  last_used_at: Date | string | null;
  revoked_at: Date | string | null;
}

function view(r: ViewRow, now: Date): ApiKeyView {
  const state = r.revoked_at !== null ? "REVOKED" : asDate(r.expires_at).getTime() <= now.getTime() ? "EXPIRED" : "ACTIVE";
  return {
    apiKeyID: r.id,
    name: r.name,
    prefix: r.prefix,
    role: r.role as OrgRole,
    createdBy: r.created_by,
    createdAt: isoNN(r.created_at),
    expiresAt: isoNN(r.expires_at),
    lastUsedAt: iso(r.last_used_at),
    revokedAt: iso(r.revoked_at),
    state,
  };
}

/**
 * Creates an API key and returns its token once (`phk_<prefix>_<secret>`); only the prefix and sha256 of
 * the secret are stored. expiresAt must be in the future and at most two years ahead (ERR_VALIDATION).
 */
export async function createApiKey(
  db: Db,
  input: { orgId: string; name: string; role: OrgRole; expiresAt: Date; createdBy: string | null },
  clock: Clock = systemClock,
): Promise<{ key: ApiKeyView; token: string }> {
  const orgId = requireUuid(input.orgId, "orgId");
  const name = text(input.name, "name", { max: NAME_MAX, allowEmpty: false });
  const role = requireRole(input.role);
  const createdBy = input.createdBy === null ? null : requireUuid(input.createdBy, "createdBy");
  const now = clock();
  if (!(input.expiresAt instanceof Date) || Number.isNaN(input.expiresAt.getTime())) {
    throw new ParhelionError("ERR_VALIDATION", "expiresAt must be a valid date");
  }
  if (input.expiresAt.getTime() <= now.getTime()) throw new ParhelionError("ERR_VALIDATION", "expiresAt must be in the future");
  if (input.expiresAt.getTime() > now.getTime() + API_KEY_MAX_LIFETIME_MS) {
    throw new ParhelionError("ERR_VALIDATION", "expiresAt must be at most two years ahead");
  }
  if (createdBy !== null) {
    const creator = await db.selectFrom("users").select("id").where("id", "=", createdBy).where("org_id", "=", orgId).where("removed_at", "is", null).executeTakeFirst();
    if (!creator) throw new ParhelionError("ERR_VALIDATION", "createdBy must be an active user of the organization");
  }
  for (let attempt = 0; ; attempt++) {
    const prefix = newPrefix();
    const secret = randomBytes(32);
    try {
      const row = await db
        .insertInto("api_keys")
        .values({
          id: randomUUID(),
          org_id: orgId,
          name,
          prefix,
          secret_hash: sha256(secret),
          role,
          created_by: createdBy,
          created_at: now,
          expires_at: input.expiresAt,
          last_used_at: null,
          revoked_at: null,
        })
        .returning(VIEW_COLUMNS)
        .executeTakeFirstOrThrow();
      return { key: view(row, now), token: `phk_${prefix}_${secret.toString("base64url")}` };
    } catch (err) {
      // 50 random bits: a prefix collision is rare; draw again a couple of times.
      if (attempt < 3 && isUniqueViolation(err)) continue;
      throw err;
    }
  }
}

/** Lists the organization's API keys by (created_at, id); `after` is the last apiKeyID of the previous page. */
export async function listApiKeys(db: Db, orgId: string, opts: { limit: number; after?: string }, clock: Clock = systemClock): Promise<ApiKeyView[]> {
  const limit = pageLimit(opts.limit);
  const org = requireUuid(orgId, "orgId");
  let q = db.selectFrom("api_keys").select(VIEW_COLUMNS).where("org_id", "=", org);
  if (opts.after !== undefined) {
    const after = requireUuid(opts.after, "after");
    const exists = await db.selectFrom("api_keys").select("id").where("id", "=", after).where("org_id", "=", org).executeTakeFirst();
    if (!exists) throw new ParhelionError("ERR_VALIDATION", "after: no such API key in this organization");
    q = q.where(sql<boolean>`(created_at, id) > (select c.created_at, c.id from api_keys c where c.id = ${after})`);
  }
  const rows = await q.orderBy("created_at").orderBy("id").limit(limit).execute();
  const now = clock();
  return rows.map((r) => view(r, now));
}

/** Returns one API key of the organization; ERR_NOT_FOUND otherwise. */
export async function getApiKey(db: Db, orgId: string, apiKeyId: string, clock: Clock = systemClock): Promise<ApiKeyView> {
  if (!isUuid(orgId) || !isUuid(apiKeyId)) throw new ParhelionError("ERR_NOT_FOUND", "API key not found");
  const row = await db.selectFrom("api_keys").select(VIEW_COLUMNS).where("id", "=", apiKeyId).where("org_id", "=", orgId).executeTakeFirst();
  if (!row) throw new ParhelionError("ERR_NOT_FOUND", "API key not found");
  return view(row, clock());
}

/**
 * Revokes an API key: ERR_NOT_FOUND if missing, ERR_CONFLICT if already revoked. Pass this process's
 * authenticator (or call its `invalidate`) so its cache drops the key at once; other processes notice
 * within their revalidation interval.
 */
export async function revokeApiKey(
  db: Db,
  orgId: string,
  apiKeyId: string,
  clock: Clock = systemClock,
  authenticator?: Pick<ApiKeyAuthenticator, "invalidate">,
): Promise<ApiKeyView> {
  if (!isUuid(orgId) || !isUuid(apiKeyId)) throw new ParhelionError("ERR_NOT_FOUND", "API key not found");
  const now = clock();
  const row = await db
    .updateTable("api_keys")
    .set({ revoked_at: now })
    .where("id", "=", apiKeyId)
    .where("org_id", "=", orgId)
    .where("revoked_at", "is", null)
    .returning(VIEW_COLUMNS)
    .executeTakeFirst();
  authenticator?.invalidate(apiKeyId);
  if (row) return view(row, now);
  const exists = await db.selectFrom("api_keys").select("id").where("id", "=", apiKeyId).where("org_id", "=", orgId).executeTakeFirst();
  if (!exists) throw new ParhelionError("ERR_NOT_FOUND", "API key not found");
  throw new ParhelionError("ERR_CONFLICT", "The API key is already revoked.");
}

interface CacheEntry {
  id: string;
  orgId: string;
  role: OrgRole;
  userId: string | null;
  email: string | null;
  expiresAt: number;
  validatedAt: number;
  lastUsedAt: number | null;
}

export interface ApiKeyAuthenticatorOptions {
  /** Most tokens kept in memory (default 10,000); the least recently used goes first. */
  maxEntries?: number;
  /** A cached key is re-read from the store when its last check is older than this (default 5,000 ms). */
  revalidateMs?: number;
  /** last_used_at is written at most this often per key (default 60,000 ms). */
  touchIntervalMs?: number;
  logger?: Pick<Logger, "warn">;
}

const DUMMY_HASH = Buffer.alloc(32);

/**
 * Authenticates `phk_` tokens with a bounded in-memory cache keyed by sha256 of the token. Expiry is checked
 * against the clock on every call; cached entries are re-validated against the store every `revalidateMs`;
 * `invalidate` drops a key at once.
 */
export class ApiKeyAuthenticator {
  private readonly cache = new Map<string, CacheEntry>();
  private readonly byId = new Map<string, string>();
  private readonly pending = new Set<Promise<void>>();
  private readonly lookups = new Map<string, { epoch: number; promise: Promise<Principal> }>();
  private readonly maxEntries: number;
  private readonly revalidateMs: number;
  private readonly touchIntervalMs: number;
  private readonly logger: Pick<Logger, "warn"> | undefined;
  // Bumped by every invalidate(): a lookup that began before an invalidation must not fill the cache.
  private epoch = 0;

  constructor(
    private readonly db: Db,
    private readonly clock: Clock = systemClock,
    opts: ApiKeyAuthenticatorOptions = {},
  ) {
    this.maxEntries = opts.maxEntries ?? 10_000;
    this.revalidateMs = opts.revalidateMs ?? 5_000;
    this.touchIntervalMs = opts.touchIntervalMs ?? 60_000;
    this.logger = opts.logger;
    for (const [k, v] of Object.entries({ maxEntries: this.maxEntries, revalidateMs: this.revalidateMs, touchIntervalMs: this.touchIntervalMs })) {
      if (!Number.isInteger(v) || v < 0) throw new ParhelionError("ERR_CONFIG", `ApiKeyAuthenticator: ${k} must be a non-negative integer`);
    }
  }

  /** Resolves a token to its Principal; ERR_API_KEY_INVALID (one message) for malformed, unknown, expired or revoked keys. */
  async authenticate(token: string): Promise<Principal> {
    const parsed = parseApiKeyToken(token);
    if (!parsed) throw new ParhelionError("ERR_API_KEY_INVALID", INVALID);
    const cacheKey = sha256(token).toString("base64");
    const now = this.clock().getTime();

    const hit = this.cache.get(cacheKey);
    if (hit && now >= hit.validatedAt && now - hit.validatedAt < this.revalidateMs) {
      if (hit.expiresAt <= now) {
        this.drop(cacheKey, hit.id);
        throw new ParhelionError("ERR_API_KEY_INVALID", INVALID);
      }
      this.cache.delete(cacheKey); // re-insert: most recently used last
      this.cache.set(cacheKey, hit);
      this.touch(hit, now);
      return principal(hit);
    }

    // Single flight: requests that find the same token stale share one lookup, unless a key was
    // invalidated since it started (a revocation must fail the very next request).
    const pending = this.lookups.get(cacheKey);
    if (pending && pending.epoch === this.epoch) return pending.promise;
    const promise = this.lookup(cacheKey, parsed, now, hit);
    const flight = { epoch: this.epoch, promise };
    this.lookups.set(cacheKey, flight);
    try {
      return await promise;
    } finally {
      if (this.lookups.get(cacheKey) === flight) this.lookups.delete(cacheKey);
    }
  }

  private async lookup(cacheKey: string, parsed: { prefix: string; secret: Buffer }, now: number, hit: CacheEntry | undefined): Promise<Principal> {
    const epoch = this.epoch;
    const row = await this.db
      .selectFrom("api_keys as k")
      .leftJoin("users as u", (j) => j.onRef("u.id", "=", "k.created_by").on("u.removed_at", "is", null))
      .select(["k.id", "k.org_id", "k.secret_hash", "k.role", "k.expires_at", "k.revoked_at", "k.last_used_at", "u.id as user_id", "u.email"])
      .where("k.prefix", "=", parsed.prefix)
      .executeTakeFirst();
    const presented = sha256(parsed.secret);
    const stored = row && row.secret_hash.length === 32 ? row.secret_hash : DUMMY_HASH;
    const secretOk = timingSafeEqual(presented, stored) && row !== undefined;
    if (!row || !secretOk || row.revoked_at !== null || asDate(row.expires_at).getTime() <= now || !isRole(row.role)) {
      if (hit) this.drop(cacheKey, hit.id);
      throw new ParhelionError("ERR_API_KEY_INVALID", INVALID);
    }
    const entry: CacheEntry = {
      id: row.id,
      orgId: row.org_id,
      role: row.role,
      userId: row.user_id,
      email: row.email,
      expiresAt: asDate(row.expires_at).getTime(),
      validatedAt: now,
      lastUsedAt: row.last_used_at === null ? null : asDate(row.last_used_at).getTime(),
    };
    if (hit) this.drop(cacheKey, hit.id);
    if (epoch === this.epoch) this.insert(cacheKey, entry);
    this.touch(entry, now);
    return principal(entry);
  }

  /** Drops a key from the cache at once (call after revoking it); lookups already in flight will not re-cache it. */
  invalidate(apiKeyId: string): void {
    this.epoch++;
    const cacheKey = this.byId.get(apiKeyId);
    if (cacheKey !== undefined) this.drop(cacheKey, apiKeyId);
  }

  /** Empties the cache. */
  clear(): void {
    this.epoch++;
    this.cache.clear();
    this.byId.clear();
  }

  /** Number of cached keys. */
  get size(): number {
    return this.cache.size;
  }

  /** Waits for background last_used_at writes (for shutdown and tests). */
  async flush(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending]);
  }

  private insert(cacheKey: string, entry: CacheEntry): void {
    this.cache.set(cacheKey, entry);
    this.byId.set(entry.id, cacheKey);
    while (this.cache.size > this.maxEntries) {
      const oldest = this.cache.entries().next().value;
      if (!oldest) break;
      this.drop(oldest[0], oldest[1].id);
    }
  }

  private drop(cacheKey: string, id: string): void {
    this.cache.delete(cacheKey);
    if (this.byId.get(id) === cacheKey) this.byId.delete(id);
  }

  private touch(entry: CacheEntry, now: number): void {
    if (entry.lastUsedAt !== null && now - entry.lastUsedAt < this.touchIntervalMs && now >= entry.lastUsedAt) return;
    entry.lastUsedAt = now;
    const p: Promise<void> = Promise.resolve()
      .then(() => this.db.updateTable("api_keys").set({ last_used_at: new Date(now) }).where("id", "=", entry.id).execute())
      .then(
        () => undefined,
        (err: unknown) => this.logger?.warn({ err: { message: (err as Error)?.message }, apiKeyId: entry.id }, "could not record API key use"),
      )
      .finally(() => this.pending.delete(p));
    this.pending.add(p);
  }
}

function principal(e: CacheEntry): Principal {
  return { kind: "apiKey", orgId: e.orgId, userId: e.userId, email: e.email, apiKeyId: e.id, sessionId: null, keyRole: e.role };
}

/**
 * Revokes every active API key a user created (when the user leaves the organization, their keys go with
 * them) and drops them from the authenticator's cache; answers the revoked keys' ids.
 */
export async function revokeApiKeysCreatedBy(
  db: Db,
  orgId: string,
  userId: string,
  clock: Clock = systemClock,
  authenticator?: Pick<ApiKeyAuthenticator, "invalidate">,
): Promise<string[]> {
  if (!isUuid(orgId) || !isUuid(userId)) return [];
  const rows = await db
    .updateTable("api_keys")
    .set({ revoked_at: clock() })
    .where("org_id", "=", orgId)
    .where("created_by", "=", userId)
    .where("revoked_at", "is", null)
    .returning("id")
    .execute();
  for (const r of rows) authenticator?.invalidate(r.id);
  return rows.map((r) => r.id);
}
