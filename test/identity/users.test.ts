import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { startTestStore } from "../support/pg.js";
import type { Db } from "../../src/store/db.js";
import { changePassword, createUser, findUserByEmail, getUser, listUsers, removeUser, setPassword, verifyUserPassword } from "../../src/identity/users.js";
import { authenticateSession, createSession } from "../../src/identity/sessions.js";
import { hashPassword, verifyPassword } from "../../src/identity/passwords.js";
import { FakeClock, GOOD_PASSWORD, email, makeOrg, rejectsWith } from "./helpers.js";

describe("users", () => {
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

  test("creates a user with a lower-cased, trimmed email; a second active user with it conflicts", async () => {
    const u = await createUser(db, { orgId, email: "  Mixed.Case@Example.COM ", firstName: "Ada", lastName: "L", passwordHash: null });
    assert.equal(u.email, "mixed.case@example.com");
    assert.deepEqual(Object.keys(u).sort(), ["createdAt", "email", "firstName", "lastName", "userID"]);
    assert.deepEqual(await getUser(db, orgId, u.userID), u);
    await rejectsWith(createUser(db, { orgId, email: "mixed.case@example.com", firstName: "", lastName: "", passwordHash: null }), "ERR_CONFLICT");
    await rejectsWith(createUser(db, { orgId, email: "not an email", firstName: "", lastName: "", passwordHash: null }), "ERR_VALIDATION");
  });

  test("a removed user's email can be used again; removal is soft and revokes sessions", async () => {
    const e = email("gone");
    const u = await createUser(db, { orgId, email: e, firstName: "", lastName: "", passwordHash: null });
    const s = await createSession(db, { userId: u.userID, orgId, sourceIp: null, ttlSeconds: 3600 }, clock.now);
    await removeUser(db, orgId, u.userID, clock.now);
    const row = await db.selectFrom("users").select(["removed_at"]).where("id", "=", u.userID).executeTakeFirstOrThrow();
    assert.ok(row.removed_at !== null);
    const sess = await db.selectFrom("sessions").select(["revoked_at"]).where("id", "=", s.sessionID).executeTakeFirstOrThrow();
    assert.ok(sess.revoked_at !== null);
    await rejectsWith(getUser(db, orgId, u.userID), "ERR_NOT_FOUND");
    await rejectsWith(removeUser(db, orgId, u.userID, clock.now), "ERR_NOT_FOUND");
    assert.equal(await findUserByEmail(db, e), undefined);
    const again = await createUser(db, { orgId, email: e, firstName: "", lastName: "", passwordHash: null });
    assert.notEqual(again.userID, u.userID);
  });

  test("getUser and removeUser answer ERR_NOT_FOUND across organizations and for junk ids", async () => {
    const u = await createUser(db, { orgId, email: email(), firstName: "", lastName: "", passwordHash: null });
    const other = await makeOrg(db, "other");
    await rejectsWith(getUser(db, other, u.userID), "ERR_NOT_FOUND");
    await rejectsWith(removeUser(db, other, u.userID, clock.now), "ERR_NOT_FOUND");
    await rejectsWith(getUser(db, orgId, "junk"), "ERR_NOT_FOUND");
  });

  test("findUserByEmail and verifyUserPassword", async () => {
    const e = email("login");
    const u = await createUser(db, { orgId, email: e, firstName: "", lastName: "", passwordHash: await hashPassword(GOOD_PASSWORD) });
    const found = await findUserByEmail(db, e.toUpperCase());
    assert.equal(found?.userID, u.userID);
    assert.equal(found?.orgId, orgId);
    assert.equal((await verifyUserPassword(db, e, GOOD_PASSWORD)).userID, u.userID);
    const wrong = await rejectsWith(verifyUserPassword(db, e, GOOD_PASSWORD + "!"), "ERR_INVALID_CREDENTIALS");
    const unknown = await rejectsWith(verifyUserPassword(db, "nobody@example.com", GOOD_PASSWORD), "ERR_INVALID_CREDENTIALS");
    assert.equal(wrong.message, unknown.message);
    assert.equal(await findUserByEmail(db, "not an email"), undefined);
  });

  test("lists active users in keyset pages, optionally by email", async () => {
    const org = await makeOrg(db, "list");
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await createUser(db, { orgId: org, email: email("l"), firstName: `${i}`, lastName: "", passwordHash: null })).userID);
    await removeUser(db, org, ids[2]!, clock.now);
    const p1 = await listUsers(db, org, { limit: 3 });
    const p2 = await listUsers(db, org, { limit: 3, after: p1.at(-1)!.userID });
    assert.equal(p1.length, 3);
    assert.equal(p2.length, 1);
    assert.deepEqual(new Set([...p1, ...p2].map((u) => u.userID)), new Set(ids.filter((_, i) => i !== 2)));
    const one = await listUsers(db, org, { limit: 10, email: p2[0]!.email.toUpperCase() });
    assert.deepEqual(one.map((u) => u.userID), [p2[0]!.userID]);
    await rejectsWith(listUsers(db, org, { limit: 3, after: randomUUID() }), "ERR_VALIDATION");
    await rejectsWith(listUsers(db, org, { limit: 1001 }), "ERR_VALIDATION");
  });

  test("changePassword requires the current password, applies the policy and revokes other sessions", async () => {
    const e = email("chg");
    const u = await createUser(db, { orgId, email: e, firstName: "", lastName: "", passwordHash: await hashPassword(GOOD_PASSWORD) });
    const keep = await createSession(db, { userId: u.userID, orgId, sourceIp: null, ttlSeconds: 3600 }, clock.now);
    const drop = await createSession(db, { userId: u.userID, orgId, sourceIp: null, ttlSeconds: 3600 }, clock.now);
    const next = "amber-quarry-lantern-77";
    await rejectsWith(changePassword(db, { userId: u.userID, currentPassword: "wrong-password-here", newPassword: next, exceptSessionID: keep.sessionID }, clock.now), "ERR_INVALID_CREDENTIALS");
    await rejectsWith(changePassword(db, { userId: u.userID, currentPassword: null, newPassword: next }, clock.now), "ERR_INVALID_CREDENTIALS");
    await rejectsWith(changePassword(db, { userId: u.userID, currentPassword: GOOD_PASSWORD, newPassword: "short" }, clock.now), "ERR_PASSWORD_POLICY");
    await rejectsWith(changePassword(db, { userId: u.userID, currentPassword: GOOD_PASSWORD, newPassword: `${e.split("@")[0]}-xyz` }, clock.now), "ERR_PASSWORD_POLICY");
    // Nothing changed so far.
    await authenticateSession(db, drop.token, clock.now);
    await changePassword(db, { userId: u.userID, currentPassword: GOOD_PASSWORD, newPassword: next, exceptSessionID: keep.sessionID }, clock.now);
    const account = await findUserByEmail(db, e);
    assert.equal(await verifyPassword(next, account!.passwordHash), true);
    assert.equal(await verifyPassword(GOOD_PASSWORD, account!.passwordHash), false);
    await authenticateSession(db, keep.token, clock.now);
    await rejectsWith(authenticateSession(db, drop.token, clock.now), "ERR_SESSION_INVALID");
  });

  test("a user without a password sets one without a current password; setPassword stores a hash", async () => {
    const e = email("nopw");
    const u = await createUser(db, { orgId, email: e, firstName: "", lastName: "", passwordHash: null });
    await changePassword(db, { userId: u.userID, currentPassword: null, newPassword: GOOD_PASSWORD }, clock.now);
    assert.equal((await verifyUserPassword(db, e, GOOD_PASSWORD)).userID, u.userID);
    await setPassword(db, u.userID, await hashPassword("another-long-passphrase"), clock.now);
    assert.equal((await verifyUserPassword(db, e, "another-long-passphrase")).userID, u.userID);
    await rejectsWith(setPassword(db, randomUUID(), "x", clock.now), "ERR_NOT_FOUND");
  });
});
