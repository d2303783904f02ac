import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomUUID } from "node:crypto";
import { startTestStore } from "../support/pg.js";
import type { Db } from "../../src/store/db.js";
import { SESSION_COOKIE, authenticateSession, checkCsrf, createSession, revokeSession, revokeUserSessions } from "../../src/identity/sessions.js";
import { createUser, removeUser } from "../../src/identity/users.js";
import { FakeClock, email, makeOrg, rejectsWith } from "./helpers.js";

const INVALID = "The session is invalid or has expired; sign in again.";

describe("console sessions", () => {
  let store: Awaited<ReturnType<typeof startTestStore>>;
  let db: Db;
  let orgId: string;
  const clock = new FakeClock();

  before(async () => {
    store = await startTestStore();
    db = store.db;
    orgId = await makeOrg(db);
  });
  after(async () => {
    await store?.stop();
  });

  async function user() {
    const e = email("s");
    const u = await createUser(db, { orgId, email: e, firstName: "", lastName: "", passwordHash: null });
    return { id: u.userID, email: e };
  }

  test("the cookie is named parhelion_session", () => {
    assert.equal(SESSION_COOKIE, "parhelion_session");
  });

  test("creates a session whose tokens are stored only as sha256, and authenticates it", async () => {
    const u = await user();
    const s = await createSession(db, { userId: u.id, orgId, sourceIp: "192.0.2.4", ttlSeconds: 3600 }, clock.now);
    assert.match(s.token, /^[A-Za-z0-9_-]{43}$/);
    assert.match(s.csrfToken, /^[A-Za-z0-9_-]{43}$/);
    assert.notEqual(s.token, s.csrfToken);
    assert.equal(s.expiresAt, new Date(clock.ms + 3600_000).toISOString());
    const row = await db.selectFrom("sessions").selectAll().where("id", "=", s.sessionID).executeTakeFirstOrThrow();
    assert.deepEqual(row.token_hash, createHash("sha256").update(Buffer.from(s.token, "base64url")).digest());
    assert.deepEqual(row.csrf_hash, createHash("sha256").update(Buffer.from(s.csrfToken, "base64url")).digest());
    assert.ok(!JSON.stringify(row).includes(s.token) && !JSON.stringify(row).includes(s.csrfToken));
    const a = await authenticateSession(db, s.token, clock.now);
    assert.equal(a.sessionID, s.sessionID);
    assert.deepEqual(a.principal, { kind: "user", orgId, userId: u.id, email: u.email, apiKeyId: null, sessionId: s.sessionID, keyRole: null });
    assert.doesNotThrow(() => checkCsrf(a.csrfHash, s.csrfToken));
  });

  test("refuses a session for a user outside the organization or removed", async () => {
    const u = await user();
    await rejectsWith(createSession(db, { userId: u.id, orgId: await makeOrg(db, "other"), sourceIp: null, ttlSeconds: 3600 }, clock.now), "ERR_NOT_FOUND");
    await rejectsWith(createSession(db, { userId: randomUUID(), orgId, sourceIp: null, ttlSeconds: 3600 }, clock.now), "ERR_NOT_FOUND");
    await rejectsWith(createSession(db, { userId: u.id, orgId, sourceIp: null, ttlSeconds: 0 }, clock.now), "ERR_VALIDATION");
  });

  test("an expired session is refused", async () => {
    const c = new FakeClock(clock.ms);
    const u = await user();
    const s = await createSession(db, { userId: u.id, orgId, sourceIp: null, ttlSeconds: 60 }, c.now);
    c.advance(59);
    await authenticateSession(db, s.token, c.now);
    c.advance(1);
    await rejectsWith(authenticateSession(db, s.token, c.now), "ERR_SESSION_INVALID", INVALID);
  });

  test("a revoked session is refused; revoking twice answers false", async () => {
    const u = await user();
    const s = await createSession(db, { userId: u.id, orgId, sourceIp: null, ttlSeconds: 3600 }, clock.now);
    assert.equal(await revokeSession(db, s.sessionID, clock.now), true);
    await rejectsWith(authenticateSession(db, s.token, clock.now), "ERR_SESSION_INVALID", INVALID);
    assert.equal(await revokeSession(db, s.sessionID, clock.now), false);
  });

  test("revokeUserSessions ends all of a user's sessions except the one spared", async () => {
    const u = await user();
    const [a, b, c] = await Promise.all([1, 2, 3].map(() => createSession(db, { userId: u.id, orgId, sourceIp: null, ttlSeconds: 3600 }, clock.now)));
    assert.equal(await revokeUserSessions(db, u.id, { exceptSessionID: b!.sessionID, clock: clock.now }), 2);
    await rejectsWith(authenticateSession(db, a!.token, clock.now), "ERR_SESSION_INVALID");
    await rejectsWith(authenticateSession(db, c!.token, clock.now), "ERR_SESSION_INVALID");
    assert.equal((await authenticateSession(db, b!.token, clock.now)).sessionID, b!.sessionID);
  });

  test("a removed user's session is refused", async () => {
    const u = await user();
    const s = await createSession(db, { userId: u.id, orgId, sourceIp: null, ttlSeconds: 3600 }, clock.now);
    await removeUser(db, orgId, u.id, clock.now);
    await rejectsWith(authenticateSession(db, s.token, clock.now), "ERR_SESSION_INVALID", INVALID);
    // Even if its revocation were lost, the removed user check still refuses it.
    await db.updateTable("sessions").set({ revoked_at: null }).where("id", "=", s.sessionID).execute();
    await rejectsWith(authenticateSession(db, s.token, clock.now), "ERR_SESSION_INVALID", INVALID);
  });

  test("malformed and unknown tokens are refused with one error and message", async () => {
    const u = await user();
    const s = await createSession(db, { userId: u.id, orgId, sourceIp: null, ttlSeconds: 3600 }, clock.now);
    const shapes = ["", "x", s.token + "A", s.token.slice(0, -1), `${s.token}=`, ` ${s.token}`, s.token.slice(0, 42) + "B", "A".repeat(43), "\u0000".repeat(43), s.csrfToken];
    for (const t of shapes) await rejectsWith(authenticateSession(db, t, clock.now), "ERR_SESSION_INVALID", INVALID);
  });

  test("a missing or mismatched CSRF token is refused", async () => {
    const u = await user();
    const s1 = await createSession(db, { userId: u.id, orgId, sourceIp: null, ttlSeconds: 3600 }, clock.now);
    const s2 = await createSession(db, { userId: u.id, orgId, sourceIp: null, ttlSeconds: 3600 }, clock.now);
    const a = await authenticateSession(db, s1.token, clock.now);
    await rejectsWith(() => checkCsrf(a.csrfHash, undefined), "ERR_CSRF");
    await rejectsWith(() => checkCsrf(a.csrfHash, ""), "ERR_CSRF");
    await rejectsWith(() => checkCsrf(a.csrfHash, s2.csrfToken), "ERR_CSRF");
    await rejectsWith(() => checkCsrf(a.csrfHash, s1.token), "ERR_CSRF");
    await rejectsWith(() => checkCsrf(a.csrfHash, s1.csrfToken + "x"), "ERR_CSRF");
    await rejectsWith(() => checkCsrf(a.csrfHash, "x".repeat(10_000)), "ERR_CSRF");
    assert.doesNotThrow(() => checkCsrf(a.csrfHash, s1.csrfToken));
  });

  test("last_seen_at advances at most once a minute", async () => {
    const c = new FakeClock(clock.ms);
    const u = await user();
    const s = await createSession(db, { userId: u.id, orgId, sourceIp: null, ttlSeconds: 3600 }, c.now);
    const seen = async () => (await db.selectFrom("sessions").select("last_seen_at").where("id", "=", s.sessionID).executeTakeFirstOrThrow()).last_seen_at?.getTime();
    const t0 = c.ms;
    c.advance(30);
    await authenticateSession(db, s.token, c.now);
    assert.equal(await seen(), t0);
    c.advance(31);
    await authenticateSession(db, s.token, c.now);
    assert.equal(await seen(), c.ms);
  });
});
