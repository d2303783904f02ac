import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { startTestStore } from "../support/pg.js";
import type { Db } from "../../src/store/db.js";
import { ApiKeyAuthenticator, createApiKey, getApiKey, listApiKeys, parseApiKeyToken, revokeApiKey } from "../../src/identity/apiKeys.js";
import { createUser, removeUser } from "../../src/identity/users.js";
import { FakeClock, email, makeOrg, rejectsWith } from "./helpers.js";

/** A Db whose methods run `hooks[name]` first (a hook may throw), then the real method bound to the real Db. */
function wrapDb(db: Db, hooks: Record<string, () => void>): Db {
  return new Proxy(db, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target) as unknown;
      if (typeof value !== "function") return value;
      const hook = typeof prop === "string" ? hooks[prop] : undefined;
      return (...args: unknown[]) => {
        hook?.();
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}

const INVALID = "The API key is malformed, unknown, expired or revoked.";
const DAY = 24 * 3600 * 1000;

describe("API keys", () => {
  let store: Awaited<ReturnType<typeof startTestStore>>;
  let db: Db;
  let orgId: string;
  let userId: string;
  let userEmail: string;
  const clock = new FakeClock();

  before(async () => {
    store = await startTestStore();
    db = store.db;
    orgId = await makeOrg(db);
    userEmail = email("owner");
    userId = (await createUser(db, { orgId, email: userEmail, firstName: "O", lastName: "W", passwordHash: null })).userID;
  });
  after(async () => {
    await store?.stop();
  });

  async function newKey(over: Partial<{ expiresAt: Date; role: "Owner" | "Admin" | "Operator" | "Auditor" | "Member"; name: string; createdBy: string | null }> = {}) {
    return createApiKey(db, { orgId, name: "ci", role: "Operator", expiresAt: new Date(clock.ms + 30 * DAY), createdBy: userId, ...over }, clock.now);
  }

  test("creates a key in the phk_<prefix>_<secret> format and stores only the prefix and sha256 of the secret", async () => {
    const { key, token } = await newKey();
    assert.match(token, /^phk_[a-z2-7]{10}_[A-Za-z0-9_-]{43}$/);
    const parsed = parseApiKeyToken(token);
    assert.ok(parsed);
    assert.equal(key.prefix, parsed.prefix);
    assert.equal(key.state, "ACTIVE");
    assert.equal(key.role, "Operator");
    assert.equal(key.createdBy, userId);
    const row = await db.selectFrom("api_keys").selectAll().where("id", "=", key.apiKeyID).executeTakeFirstOrThrow();
    const { createHash } = await import("node:crypto");
    assert.deepEqual(row.secret_hash, createHash("sha256").update(parsed.secret).digest());
    assert.ok(!JSON.stringify(row).includes(token.slice(15)), "the secret must not be stored");
  });

  test("rejects an expiry in the past, now, or more than two years ahead", async () => {
    await rejectsWith(newKey({ expiresAt: new Date(clock.ms - 1000) }), "ERR_VALIDATION", /future/);
    await rejectsWith(newKey({ expiresAt: new Date(clock.ms) }), "ERR_VALIDATION", /future/);
    await rejectsWith(newKey({ expiresAt: new Date(clock.ms + 800 * DAY) }), "ERR_VALIDATION", /two years/);
    await rejectsWith(newKey({ expiresAt: new Date(Number.NaN) }), "ERR_VALIDATION");
    const ok = await newKey({ expiresAt: new Date(clock.ms + 730 * DAY) });
    assert.equal(ok.key.state, "ACTIVE");
  });

  test("rejects an unknown role, an empty name and a creator outside the organization", async () => {
    await rejectsWith(newKey({ role: "Root" as never }), "ERR_VALIDATION", /role/);
    await rejectsWith(newKey({ name: "  " }), "ERR_VALIDATION", /name/);
    await rejectsWith(newKey({ createdBy: randomUUID() }), "ERR_VALIDATION", /createdBy/);
  });

  test("authenticates a valid token to an apiKey principal carrying the creator and the key's role", async () => {
    const { key, token } = await newKey({ role: "Auditor" });
    const auth = new ApiKeyAuthenticator(db, clock.now);
    const p = await auth.authenticate(token);
    assert.deepEqual(p, { kind: "apiKey", orgId, userId, email: userEmail, apiKeyId: key.apiKeyID, sessionId: null, keyRole: "Auditor" });
  });

  test("a wrong secret with a real prefix is refused", async () => {
    const { token } = await newKey();
    const auth = new ApiKeyAuthenticator(db, clock.now);
    const forged = token.slice(0, 15) + (token[15] === "A" ? "B" : "A") + token.slice(16);
    await rejectsWith(auth.authenticate(forged), "ERR_API_KEY_INVALID", INVALID);
  });

  test("serves repeat requests from the cache without the database", async () => {
    const { token } = await newKey();
    let queries = 0;
    const counting = wrapDb(db, { selectFrom: () => void queries++ });
    const auth2 = new ApiKeyAuthenticator(counting, clock.now);
    await auth2.authenticate(token);
    await auth2.authenticate(token);
    await auth2.authenticate(token);
    assert.equal(queries, 1);
    assert.equal(auth2.size, 1);
  });

  test("an expired key fails even while cached: expiry is checked against the clock on every call", async () => {
    const c = new FakeClock(clock.ms);
    const { token } = await createApiKey(db, { orgId, name: "short", role: "Member", expiresAt: new Date(c.ms + 2000), createdBy: userId }, c.now);
    const auth = new ApiKeyAuthenticator(db, c.now, { revalidateMs: 3_600_000 });
    await auth.authenticate(token);
    c.advance(1);
    await auth.authenticate(token);
    c.advance(1);
    await rejectsWith(auth.authenticate(token), "ERR_API_KEY_INVALID", INVALID);
    // And a fresh authenticator (no cache) agrees.
    await rejectsWith(new ApiKeyAuthenticator(db, c.now).authenticate(token), "ERR_API_KEY_INVALID", INVALID);
  });

  test("a revoked key fails on the very next request even when cached", async () => {
    const { key, token } = await newKey();
    const auth = new ApiKeyAuthenticator(db, clock.now, { revalidateMs: 3_600_000 });
    await auth.authenticate(token);
    const revoked = await revokeApiKey(db, orgId, key.apiKeyID, clock.now, auth);
    assert.equal(revoked.state, "REVOKED");
    assert.equal(revoked.revokedAt, new Date(clock.ms).toISOString());
    await rejectsWith(auth.authenticate(token), "ERR_API_KEY_INVALID", INVALID);
  });

  test("a key revoked by another process fails here once the cache entry is older than the revalidation interval", async () => {
    const c = new FakeClock(clock.ms);
    const { key, token } = await createApiKey(db, { orgId, name: "other", role: "Member", expiresAt: new Date(c.ms + DAY), createdBy: userId }, c.now);
    const auth = new ApiKeyAuthenticator(db, c.now);
    await auth.authenticate(token);
    await revokeApiKey(db, orgId, key.apiKeyID, c.now); // no invalidate: simulates another process
    await auth.authenticate(token); // still cached, within 5 s
    c.advance(5);
    await rejectsWith(auth.authenticate(token), "ERR_API_KEY_INVALID", INVALID);
    assert.equal(auth.size, 0);
  });

  test("invalidate() during an in-flight lookup keeps it from re-filling the cache", async () => {
    const { key, token } = await newKey();
    const auth = new ApiKeyAuthenticator(db, clock.now, { revalidateMs: 3_600_000 });
    const inflight = auth.authenticate(token);
    auth.invalidate(key.apiKeyID);
    await inflight;
    assert.equal(auth.size, 0);
  });

  test("revoking twice answers ERR_CONFLICT; an unknown key ERR_NOT_FOUND; another org's key ERR_NOT_FOUND", async () => {
    const { key } = await newKey();
    await revokeApiKey(db, orgId, key.apiKeyID, clock.now);
    await rejectsWith(revokeApiKey(db, orgId, key.apiKeyID, clock.now), "ERR_CONFLICT");
    await rejectsWith(revokeApiKey(db, orgId, randomUUID(), clock.now), "ERR_NOT_FOUND");
    await rejectsWith(revokeApiKey(db, orgId, "not-a-uuid", clock.now), "ERR_NOT_FOUND");
    const other = await makeOrg(db, "other");
    await rejectsWith(revokeApiKey(db, other, key.apiKeyID, clock.now), "ERR_NOT_FOUND");
    await rejectsWith(getApiKey(db, other, key.apiKeyID, clock.now), "ERR_NOT_FOUND");
  });

  test("malformed tokens of many shapes are refused with one error and message", async () => {
    const { token } = await newKey();
    const auth = new ApiKeyAuthenticator(db, clock.now);
    const prefix = token.slice(4, 14);
    const secret = token.slice(15);
    const shapes = [
      "",
      "phk_",
      "phk__",
      token + "A",
      token.slice(0, -1),
      token.toUpperCase(),
      "PHK" + token.slice(3),
      "pk_" + token.slice(4),
      `phk_${prefix}-${secret}`,
      `phk_${prefix}_${secret}=`,
      `phk_${prefix.slice(0, 9)}_${secret}`,
      `phk_${prefix}0_${secret.slice(1)}`, // 0 is not base32
      `phk_${prefix}_${secret.slice(0, 42)}/`,
      `phk_${prefix}_${secret.slice(0, 42)}B`, // non-canonical trailing bits when B ≠ the real last char class
      ` ${token}`,
      `${token}\n`,
      `Bearer ${token}`,
      "phk_" + "a".repeat(10) + "_" + "A".repeat(43),
      "x".repeat(10_000),
    ];
    for (const s of shapes) {
      if (s === token) continue;
      await rejectsWith(auth.authenticate(s), "ERR_API_KEY_INVALID", INVALID);
    }
    await rejectsWith(auth.authenticate(undefined as never), "ERR_API_KEY_INVALID", INVALID);
    await rejectsWith(auth.authenticate(42 as never), "ERR_API_KEY_INVALID", INVALID);
  });

  test("lists keys with their prefix, never the secret or its hash, in pages", async () => {
    const org = await makeOrg(db, "listing");
    const u = await createUser(db, { orgId: org, email: email("lister"), firstName: "", lastName: "", passwordHash: null });
    const made: { id: string; token: string }[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await createApiKey(db, { orgId: org, name: `k${i}`, role: "Member", expiresAt: new Date(clock.ms + DAY), createdBy: u.userID }, clock.now);
      made.push({ id: r.key.apiKeyID, token: r.token });
    }
    const page1 = await listApiKeys(db, org, { limit: 2 }, clock.now);
    const page2 = await listApiKeys(db, org, { limit: 2, after: page1.at(-1)!.apiKeyID }, clock.now);
    const page3 = await listApiKeys(db, org, { limit: 2, after: page2.at(-1)!.apiKeyID }, clock.now);
    const all = [...page1, ...page2, ...page3];
    assert.deepEqual([page1.length, page2.length, page3.length], [2, 2, 1]);
    assert.deepEqual(new Set(all.map((k) => k.apiKeyID)), new Set(made.map((m) => m.id)));
    const rows = await db.selectFrom("api_keys").select(["secret_hash"]).where("org_id", "=", org).execute();
    const text = JSON.stringify(all);
    for (const m of made) assert.ok(!text.includes(m.token.slice(15)), "secret leaked into the list");
    for (const r of rows) {
      assert.ok(!text.includes(r.secret_hash.toString("hex")) && !text.includes(r.secret_hash.toString("base64")), "hash leaked into the list");
    }
    for (const k of all) {
      assert.deepEqual(Object.keys(k).sort(), ["apiKeyID", "createdAt", "createdBy", "expiresAt", "lastUsedAt", "name", "prefix", "revokedAt", "role", "state"]);
      assert.match(k.prefix, /^[a-z2-7]{10}$/);
    }
    await rejectsWith(listApiKeys(db, org, { limit: 0 }, clock.now), "ERR_VALIDATION");
    await rejectsWith(listApiKeys(db, org, { limit: 2, after: randomUUID() }, clock.now), "ERR_VALIDATION");
  });

  test("list and get report EXPIRED and REVOKED states", async () => {
    const c = new FakeClock(clock.ms);
    const a = await createApiKey(db, { orgId, name: "exp", role: "Member", expiresAt: new Date(c.ms + 1000), createdBy: userId }, c.now);
    c.advance(2);
    assert.equal((await getApiKey(db, orgId, a.key.apiKeyID, c.now)).state, "EXPIRED");
    await revokeApiKey(db, orgId, a.key.apiKeyID, c.now);
    assert.equal((await getApiKey(db, orgId, a.key.apiKeyID, c.now)).state, "REVOKED");
  });

  test("last_used_at is written in the background at most once per interval", async () => {
    const c = new FakeClock(clock.ms);
    const { key, token } = await createApiKey(db, { orgId, name: "touch", role: "Member", expiresAt: new Date(c.ms + DAY), createdBy: userId }, c.now);
    const auth = new ApiKeyAuthenticator(db, c.now);
    await auth.authenticate(token);
    await auth.flush();
    const first = (await getApiKey(db, orgId, key.apiKeyID, c.now)).lastUsedAt;
    assert.equal(first, new Date(c.ms).toISOString());
    c.advance(30);
    await auth.authenticate(token);
    await auth.flush();
    assert.equal((await getApiKey(db, orgId, key.apiKeyID, c.now)).lastUsedAt, first);
    c.advance(31);
    await auth.authenticate(token);
    await auth.flush();
    assert.equal((await getApiKey(db, orgId, key.apiKeyID, c.now)).lastUsedAt, new Date(c.ms).toISOString());
  });

  test("a failing last_used_at write never fails the request", async () => {
    const { token } = await newKey();
    const warnings: unknown[] = [];
    const failing = wrapDb(db, {
      updateTable: () => {
        throw new Error("store down");
      },
    });
    // Even a synchronous throw from the query builder must not escape authenticate.
    const auth = new ApiKeyAuthenticator(failing, clock.now, { logger: { warn: (...a: unknown[]) => void warnings.push(a) } as never });
    const p = await auth.authenticate(token);
    await auth.flush();
    assert.equal(p.kind, "apiKey");
    assert.equal(warnings.length, 1);
  });

  test("a key whose creator was removed still works, with no user in the principal", async () => {
    const u = await createUser(db, { orgId, email: email("leaver"), firstName: "", lastName: "", passwordHash: null });
    const { token } = await newKey({ createdBy: u.userID });
    await removeUser(db, orgId, u.userID, clock.now);
    const p = await new ApiKeyAuthenticator(db, clock.now).authenticate(token);
    assert.equal(p.userId, null);
    assert.equal(p.email, null);
  });

  test("the cache is bounded: the least recently used entry goes first", async () => {
    const auth = new ApiKeyAuthenticator(db, clock.now, { maxEntries: 2 });
    const keys = [await newKey(), await newKey(), await newKey()];
    for (const k of keys) await auth.authenticate(k.token);
    assert.equal(auth.size, 2);
    // The first one was evicted, then re-read from the store without error.
    await auth.authenticate(keys[0]!.token);
    assert.equal(auth.size, 2);
  });
});
