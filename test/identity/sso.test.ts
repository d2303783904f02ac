import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { createHash, randomBytes } from "node:crypto";
import { startTestStore } from "../support/pg.js";
import { startTestIdp, TestBrowser, type TestAccount, type TestIdp } from "../support/idp.js";
import type { Db } from "../../src/store/db.js";
import { createUser } from "../../src/identity/users.js";
import { hashPassword } from "../../src/identity/passwords.js";
import { assertPasswordSignInAllowed, completeSsoLogin, putSsoConfig, redeemSsoHandoff, startSsoLogin, type SsoTrail } from "../../src/identity/sso.js";
import { ParhelionError } from "../../src/lib/errors.js";
import { FakeClock, GOOD_PASSWORD, makeOrg, rejectsWith } from "./helpers.js";

const REDIRECT = "https://parhelion.test/v1/auth/sso/callback";
const OWNER = new Set(["Owner"] as const);

describe("single sign-on (identity)", () => {
  let store: Awaited<ReturnType<typeof startTestStore>>;
  let db: Db;
  let idp: TestIdp;
  let orgId: string;
  let browser: TestBrowser;
  // Starts at the real time: the IdP signs tokens with the system clock, parhelion judges them with this one.
  const clock = new FakeClock(Date.now());

  before(async () => {
    store = await startTestStore();
    db = store.db;
    idp = await startTestIdp({ redirectUris: [REDIRECT], idTokenTtlSeconds: 60 });
    browser = new TestBrowser([idp.caPem]);
    orgId = await makeOrg(db, "sso-org");
    await putSsoConfig(db, orgId, {
      issuer: idp.issuer, clientID: idp.clientId, clientSecret: idp.clientSecret, redirectURI: REDIRECT, caPem: idp.caPem,
      scopes: ["openid", "email", "profile", "groups"], roleMappings: [{ group: "ops", role: "Operator" }],
    }, OWNER, clock.now);
  });
  after(async () => {
    await browser?.close();
    await idp?.close();
    await store?.stop();
  });

  /** Starts a sign-in and walks the IdP: answers the callback's query and the console binding token. */
  async function toCallback(account: TestAccount, start: { redirect?: string; clientChallenge?: string } = {}): Promise<{ query: Record<string, string>; binding: string | undefined }> {
    clock.ms = Date.now(); // earlier tests moved the clock on
    const s = await startSsoLogin(db, { orgId, sourceIp: "192.0.2.10", ...start }, clock.now);
    idp.account = account;
    const b = new TestBrowser([idp.caPem]);
    try {
      const cb = await b.authorize(s.authorizationURL, REDIRECT);
      return { query: Object.fromEntries(cb.searchParams), binding: s.bindingToken ?? undefined };
    } finally {
      await b.close();
    }
  }

  test("an expired login transaction is refused as state_invalid (expired)", async () => {
    const { query, binding } = await toCallback({ sub: "t-1", email: "t1@corp.example", email_verified: true });
    clock.advance(601);
    const trail: SsoTrail = {};
    const err = await rejectsWith(completeSsoLogin(db, { query, bindingCookie: binding }, clock.now, trail), "ERR_SSO_FAILED");
    assert.equal(err.details?.["reason"], "state_invalid");
    assert.equal(trail["stateCheck"], "expired");
  });

  test("ID token expiry is judged by parhelion's clock", async () => {
    const { query, binding } = await toCallback({ sub: "t-2", email: "t2@corp.example", email_verified: true });
    clock.advance(120); // the transaction lives 600 s, the IdP's ID token 60 s (+30 s tolerance)
    const err = await rejectsWith(completeSsoLogin(db, { query, bindingCookie: binding }, clock.now), "ERR_SSO_FAILED");
    assert.equal(err.details?.["reason"], "token_expired");
  });

  test("two callbacks racing with the same state: exactly one signs in", async () => {
    const { query, binding } = await toCallback({ sub: "t-3", email: "t3@corp.example", email_verified: true });
    const results = await Promise.allSettled([0, 1, 2].map(() => completeSsoLogin(db, { query, bindingCookie: binding }, clock.now)));
    assert.equal(results.filter((r) => r.status === "fulfilled").length, 1);
    for (const r of results) if (r.status === "rejected") assert.equal((r.reason as { details?: Record<string, unknown> }).details?.["reason"], "state_invalid");
  });

  test("SSO never removes Owner: an Owner linked by verified email keeps it beside the mapped role", async () => {
    const u = await createUser(db, { orgId, email: "boss@corp.example", firstName: "", lastName: "", passwordHash: null });
    await db.insertInto("access_controls").values({ org_id: orgId, resource_type: "Organization", resource_id: orgId, principal_type: "user", principal_id: u.userID, role: "Owner", granted_by: null }).execute();
    const { query, binding } = await toCallback({ sub: "boss-1", email: "boss@corp.example", email_verified: true, groups: ["ops"] });
    const r = await completeSsoLogin(db, { query, bindingCookie: binding }, clock.now);
    assert.equal(r.userId, u.userID);
    assert.equal(r.linked, true);
    const roles = (await db.selectFrom("access_controls").select("role").where("principal_id", "=", u.userID).execute()).map((x) => x.role).sort();
    assert.deepEqual(roles, ["Operator", "Owner"]);
  });

  test("a CLI's one-time code expires after 60 s", async () => {
    const verifier = randomBytes(32).toString("base64url");
    const challenge = createHash("sha256").update(verifier).digest("base64url");
    const { query } = await toCallback({ sub: "t-4", email: "t4@corp.example", email_verified: true }, { redirect: "http://127.0.0.1:9/cb", clientChallenge: challenge });
    const r = await completeSsoLogin(db, { query, bindingCookie: undefined }, clock.now);
    assert.equal(r.mode, "cli");
    const code = new URL(r.mode === "cli" ? r.location : "").searchParams.get("code")!;
    clock.advance(61);
    const err = await rejectsWith(redeemSsoHandoff(db, { code, codeVerifier: verifier }, clock.now), "ERR_SSO_FAILED");
    assert.equal(err.details?.["reason"], "handoff_invalid");
  });

  test("a break-glass owner who is no longer an Owner is refused a password sign-in under ssoOnly", async () => {
    const owner = await createUser(db, { orgId, email: "glass@corp.example", firstName: "", lastName: "", passwordHash: await hashPassword(GOOD_PASSWORD) });
    await db.insertInto("access_controls").values({ org_id: orgId, resource_type: "Organization", resource_id: orgId, principal_type: "user", principal_id: owner.userID, role: "Owner", granted_by: null }).execute();
    const other = await createUser(db, { orgId, email: "plain@corp.example", firstName: "", lastName: "", passwordHash: null });
    await putSsoConfig(db, orgId, { issuer: idp.issuer, clientID: idp.clientId, redirectURI: REDIRECT, caPem: idp.caPem, ssoOnly: true, breakGlassUserIDs: [owner.userID] }, OWNER, clock.now);
    await assertPasswordSignInAllowed(db, { userID: owner.userID, orgId });
    await rejectsWith(assertPasswordSignInAllowed(db, { userID: other.userID, orgId }), "ERR_SSO_REQUIRED");
    await db.deleteFrom("access_controls").where("principal_id", "=", owner.userID).where("role", "=", "Owner").execute();
    await rejectsWith(assertPasswordSignInAllowed(db, { userID: owner.userID, orgId }), "ERR_SSO_REQUIRED");
    // Another organization's policy does not apply.
    const org2 = await makeOrg(db, "no-sso");
    const u2 = await createUser(db, { orgId: org2, email: "free@corp.example", firstName: "", lastName: "", passwordHash: null });
    await assertPasswordSignInAllowed(db, { userID: u2.userID, orgId: org2 });
  });

  test("only an Owner may turn ssoOnly on, and a non-Owner's attempt changes nothing", async () => {
    const org3 = await makeOrg(db, "policy");
    await putSsoConfig(db, org3, { issuer: idp.issuer, clientID: idp.clientId, redirectURI: REDIRECT }, new Set(["Admin"] as const), clock.now);
    await rejectsWith(putSsoConfig(db, org3, { issuer: idp.issuer, clientID: "changed", redirectURI: REDIRECT, ssoOnly: true }, new Set(["Admin"] as const), clock.now), "ERR_FORBIDDEN");
    const row = await db.selectFrom("sso_providers").select(["client_id", "sso_only"]).where("org_id", "=", org3).executeTakeFirstOrThrow();
    assert.deepEqual(row, { client_id: idp.clientId, sso_only: false });
  });

  test("hostile callback queries and hand-off codes get only typed refusals", async () => {
    const reasonOf = async (fn: () => Promise<unknown>): Promise<string> => {
      try {
        await fn();
        return "accepted";
      } catch (err) {
        if (!(err instanceof ParhelionError)) throw new Error(`untyped error: ${String(err)}`, { cause: err });
        return `${err.code}:${String(err.details?.["reason"])}`;
      }
    };
    await fc.assert(fc.asyncProperty(fc.dictionary(fc.constantFrom("state", "code", "iss", "error", "session_state"), fc.string({ maxLength: 600 })), async (query) => {
      const r = await reasonOf(() => completeSsoLogin(db, { query, bindingCookie: undefined }, clock.now));
      assert.equal(r, "ERR_SSO_FAILED:state_invalid");
    }), { numRuns: 200 });
    await fc.assert(fc.asyncProperty(fc.string({ maxLength: 128 }), fc.string({ maxLength: 128 }), async (code, codeVerifier) => {
      assert.equal(await reasonOf(() => redeemSsoHandoff(db, { code, codeVerifier }, clock.now)), "ERR_SSO_FAILED:handoff_invalid");
    }), { numRuns: 200 });
  });
});
