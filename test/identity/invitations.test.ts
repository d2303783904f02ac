import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomUUID } from "node:crypto";
import { startTestStore } from "../support/pg.js";
import type { Db } from "../../src/store/db.js";
import { acceptInvitation, createInvitation, getInvitation, listInvitations, revokeInvitation } from "../../src/identity/invitations.js";
import { createUser, findUserByEmail, verifyUserPassword } from "../../src/identity/users.js";
import { ParhelionError } from "../../src/lib/errors.js";
import { FakeClock, GOOD_PASSWORD, email, makeOrg, rejectsWith } from "./helpers.js";

const INVALID = "The invitation is unknown, expired, revoked or already used.";

describe("invitations", () => {
  let store: Awaited<ReturnType<typeof startTestStore>>;
  let db: Db;
  let orgId: string;
  let teamId: string;
  const clock = new FakeClock();

  before(async () => {
    store = await startTestStore();
    db = store.db;
    orgId = await makeOrg(db);
    teamId = randomUUID();
    await db.insertInto("teams").values({ id: teamId, org_id: orgId, name: "dba", description: "" }).execute();
  });
  after(async () => {
    await store?.stop();
  });

  async function invite(e = email("inv"), c = clock, over: Partial<{ ttlSeconds: number; teamIDs: string[] }> = {}) {
    return createInvitation(db, { orgId, email: e, role: "Operator", teamIDs: [teamId], message: "welcome", createdBy: null, ttlSeconds: 3600, ...over }, c.now);
  }

  test("creates a Pending invitation; the token is stored only as sha256", async () => {
    const { invitation, token } = await invite("  New.Person@Example.com ");
    assert.equal(invitation.email, "new.person@example.com");
    assert.equal(invitation.state, "Pending");
    assert.equal(invitation.expired, false);
    assert.equal(invitation.role, "Operator");
    assert.deepEqual(invitation.teamIDs, [teamId]);
    assert.equal(invitation.actedAt, null);
    assert.equal(invitation.expiresAt, new Date(clock.ms + 3600_000).toISOString());
    const row = await db.selectFrom("invitations").selectAll().where("id", "=", invitation.invitationID).executeTakeFirstOrThrow();
    assert.deepEqual(row.token_hash, createHash("sha256").update(Buffer.from(token, "base64url")).digest());
    assert.ok(!JSON.stringify(row).includes(token));
    assert.deepEqual(await getInvitation(db, orgId, invitation.invitationID, clock.now), invitation);
  });

  test("conflicts with an active user or a pending invitation for the same email", async () => {
    const e = email("dup");
    await invite(e);
    await rejectsWith(invite(e.toUpperCase()), "ERR_CONFLICT", /pending invitation/);
    const taken = email("taken");
    await createUser(db, { orgId, email: taken, firstName: "", lastName: "", passwordHash: null });
    await rejectsWith(invite(taken), "ERR_CONFLICT", /user/);
  });

  test("concurrent invitations of one email: exactly one is created", async () => {
    const e = email("race");
    const results = await Promise.allSettled([invite(e), invite(e), invite(e)]);
    assert.equal(results.filter((r) => r.status === "fulfilled").length, 1);
    for (const r of results) if (r.status === "rejected") assert.equal((r.reason as ParhelionError).code, "ERR_CONFLICT");
  });

  test("an expired pending invitation no longer blocks a new one and reports expired", async () => {
    const c = new FakeClock(clock.ms);
    const e = email("exp");
    const first = await invite(e, c, { ttlSeconds: 60 });
    c.advance(61);
    assert.equal((await getInvitation(db, orgId, first.invitation.invitationID, c.now)).expired, true);
    assert.equal((await getInvitation(db, orgId, first.invitation.invitationID, c.now)).state, "Pending");
    await invite(e, c);
  });

  test("rejects unknown teams, roles and out-of-range lifetimes", async () => {
    await rejectsWith(invite(email(), clock, { teamIDs: [randomUUID()] }), "ERR_VALIDATION", /teamIDs/);
    await rejectsWith(invite(email(), clock, { ttlSeconds: 0 }), "ERR_VALIDATION", /ttlSeconds/);
    await rejectsWith(createInvitation(db, { orgId, email: email(), role: "God" as never, teamIDs: [], createdBy: null, ttlSeconds: 3600 }, clock.now), "ERR_VALIDATION", /role/);
  });

  test("accepts once: creates the user, runs the callback in the transaction, marks the invitation Accepted", async () => {
    const e = email("acc");
    const { invitation, token } = await invite(e);
    let seen: { userID: string; role: string; teamIDs: string[]; orgId: string } | undefined;
    const r = await acceptInvitation(db, { token, password: GOOD_PASSWORD, firstName: "Grace", lastName: "H" }, clock.now, async (trx, user, inv) => {
      await trx.insertInto("team_members").values({ team_id: inv.teamIDs[0]!, member_type: "user", member_id: user.userID }).execute();
      seen = { userID: user.userID, role: inv.role, teamIDs: inv.teamIDs, orgId: inv.orgId };
    });
    assert.equal(r.user.email, e);
    assert.equal(r.user.firstName, "Grace");
    assert.equal(r.role, "Operator");
    assert.deepEqual(r.teamIDs, [teamId]);
    assert.equal(r.orgId, orgId);
    assert.deepEqual(seen, { userID: r.user.userID, role: "Operator", teamIDs: [teamId], orgId });
    assert.equal((await verifyUserPassword(db, e, GOOD_PASSWORD)).userID, r.user.userID);
    const after = await getInvitation(db, orgId, invitation.invitationID, clock.now);
    assert.equal(after.state, "Accepted");
    assert.equal(after.actedAt, new Date(clock.ms).toISOString());
    const member = await db.selectFrom("team_members").selectAll().where("member_id", "=", r.user.userID).execute();
    assert.equal(member.length, 1);
    // Twice: the second use fails with the one message.
    await rejectsWith(acceptInvitation(db, { token, password: GOOD_PASSWORD, firstName: "", lastName: "" }, clock.now), "ERR_INVITATION_INVALID", INVALID);
  });

  test("a failing callback rolls everything back: the invitation stays Pending and no user exists", async () => {
    const e = email("rollback");
    const { invitation, token } = await invite(e);
    await assert.rejects(
      acceptInvitation(db, { token, password: GOOD_PASSWORD, firstName: "", lastName: "" }, clock.now, async () => {
        throw new Error("grant failed");
      }),
      /grant failed/,
    );
    assert.equal((await getInvitation(db, orgId, invitation.invitationID, clock.now)).state, "Pending");
    assert.equal(await findUserByEmail(db, e), undefined);
  });

  test("the password policy is checked before the invitation is consumed", async () => {
    const e = email("weak");
    const { invitation, token } = await invite(e);
    await rejectsWith(acceptInvitation(db, { token, password: "password1234", firstName: "", lastName: "" }, clock.now), "ERR_PASSWORD_POLICY");
    await rejectsWith(acceptInvitation(db, { token, password: e, firstName: "", lastName: "" }, clock.now), "ERR_PASSWORD_POLICY");
    assert.equal((await getInvitation(db, orgId, invitation.invitationID, clock.now)).state, "Pending");
    const r = await acceptInvitation(db, { token, password: GOOD_PASSWORD, firstName: "", lastName: "" }, clock.now);
    assert.equal(r.user.email, e);
  });

  test("an expired invitation cannot be accepted", async () => {
    const c = new FakeClock(clock.ms);
    const { token } = await invite(email("late"), c, { ttlSeconds: 60 });
    c.advance(60);
    await rejectsWith(acceptInvitation(db, { token, password: GOOD_PASSWORD, firstName: "", lastName: "" }, c.now), "ERR_INVITATION_INVALID", INVALID);
  });

  test("a revoked invitation cannot be accepted; only Pending invitations can be revoked", async () => {
    const { invitation, token } = await invite(email("rev"));
    const rev = await revokeInvitation(db, orgId, invitation.invitationID, clock.now);
    assert.equal(rev.state, "Revoked");
    await rejectsWith(acceptInvitation(db, { token, password: GOOD_PASSWORD, firstName: "", lastName: "" }, clock.now), "ERR_INVITATION_INVALID", INVALID);
    await rejectsWith(revokeInvitation(db, orgId, invitation.invitationID, clock.now), "ERR_CONFLICT");
    await rejectsWith(revokeInvitation(db, orgId, randomUUID(), clock.now), "ERR_NOT_FOUND");
    await rejectsWith(revokeInvitation(db, await makeOrg(db, "x"), invitation.invitationID, clock.now), "ERR_NOT_FOUND");
  });

  test("unknown and malformed tokens get the same error and message", async () => {
    for (const t of ["", "nope", "A".repeat(43), "A".repeat(42) + "B", randomUUID()]) {
      await rejectsWith(acceptInvitation(db, { token: t, password: GOOD_PASSWORD, firstName: "", lastName: "" }, clock.now), "ERR_INVITATION_INVALID", INVALID);
    }
  });

  test("concurrent accepts of one token: exactly one succeeds", async () => {
    const e = email("race-accept");
    const { invitation, token } = await invite(e);
    const attempts = await Promise.allSettled(
      Array.from({ length: 5 }, (_, i) => acceptInvitation(db, { token, password: GOOD_PASSWORD, firstName: `${i}`, lastName: "" }, clock.now)),
    );
    const ok = attempts.filter((a) => a.status === "fulfilled");
    assert.equal(ok.length, 1);
    for (const a of attempts) {
      if (a.status === "rejected") assert.equal((a.reason as ParhelionError).code, "ERR_INVITATION_INVALID", String(a.reason));
    }
    const users = await db.selectFrom("users").select("id").where("email", "=", e).execute();
    assert.equal(users.length, 1);
    const row = await db.selectFrom("invitations").select(["state", "user_id"]).where("id", "=", invitation.invitationID).executeTakeFirstOrThrow();
    assert.equal(row.state, "Accepted");
    assert.equal(row.user_id, users[0]!.id);
  });

  test("lists invitations in keyset pages, filtered by state", async () => {
    const org = await makeOrg(db, "inv-list");
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await createInvitation(db, { orgId: org, email: email("li"), role: "Member", teamIDs: [], createdBy: null, ttlSeconds: 3600 }, clock.now);
      ids.push(r.invitation.invitationID);
    }
    await revokeInvitation(db, org, ids[1]!, clock.now);
    const p1 = await listInvitations(db, org, { limit: 2 }, clock.now);
    const p2 = await listInvitations(db, org, { limit: 2, after: p1.at(-1)!.invitationID }, clock.now);
    const p3 = await listInvitations(db, org, { limit: 2, after: p2.at(-1)!.invitationID }, clock.now);
    assert.deepEqual(new Set([...p1, ...p2].map((i) => i.invitationID)), new Set(ids));
    assert.equal(p3.length, 0);
    const revoked = await listInvitations(db, org, { limit: 10, state: "Revoked" }, clock.now);
    assert.deepEqual(revoked.map((i) => i.invitationID), [ids[1]]);
    await rejectsWith(listInvitations(db, org, { limit: 10, state: "Expired" as never }, clock.now), "ERR_VALIDATION");
  });
});
