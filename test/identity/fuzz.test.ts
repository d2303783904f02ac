import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { startTestStore } from "../support/pg.js";
import type { Db } from "../../src/store/db.js";
import { ApiKeyAuthenticator, createApiKey } from "../../src/identity/apiKeys.js";
import { authenticateSession, checkCsrf, createSession } from "../../src/identity/sessions.js";
import { acceptInvitation } from "../../src/identity/invitations.js";
import { createUser } from "../../src/identity/users.js";
import { verifyPassword } from "../../src/identity/passwords.js";
import { ParhelionError } from "../../src/lib/errors.js";
import { email, makeOrg } from "./helpers.js";

/** Runs fn and answers the error code it threw; anything but a ParhelionError fails the property. */
async function codeOf(fn: () => Promise<unknown>): Promise<string | null> {
  try {
    await fn();
    return null;
  } catch (err) {
    if (!(err instanceof ParhelionError)) throw new Error(`untyped error: ${String(err)}`, { cause: err });
    return err.code;
  }
}

describe("hostile credential strings", () => {
  let store: Awaited<ReturnType<typeof startTestStore>>;
  let db: Db;
  let realApiKey: string;
  let realSession: string;

  before(async () => {
    store = await startTestStore();
    db = store.db;
    const orgId = await makeOrg(db);
    const u = await createUser(db, { orgId, email: email(), firstName: "", lastName: "", passwordHash: null });
    realApiKey = (await createApiKey(db, { orgId, name: "k", role: "Member", expiresAt: new Date(Date.now() + 86_400_000), createdBy: u.userID })).token;
    realSession = (await createSession(db, { userId: u.userID, orgId, sourceIp: null, ttlSeconds: 3600 })).token;
  });
  after(async () => {
    await store?.stop();
  });

  const b64url = fc.string({ unit: fc.constantFrom(..."ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), minLength: 40, maxLength: 46 });
  const base32 = fc.string({ unit: fc.constantFrom(..."abcdefghijklmnopqrstuvwxyz234567019"), minLength: 8, maxLength: 12 });
  const hostile = fc.oneof(
    fc.string(),
    fc.string({ unit: "binary" }),
    fc.string({ unit: "grapheme", maxLength: 80 }),
    fc.tuple(base32, b64url).map(([p, s]) => `phk_${p}_${s}`),
    b64url,
    fc.constantFrom("\u0000", "phk_\u0000", "%00", "' or 1=1 --"),
  );

  test("ApiKeyAuthenticator.authenticate only ever throws ERR_API_KEY_INVALID", async () => {
    const auth = new ApiKeyAuthenticator(db);
    await fc.assert(
      fc.asyncProperty(hostile, async (s) => {
        if (s === realApiKey) return;
        assert.equal(await codeOf(() => auth.authenticate(s)), "ERR_API_KEY_INVALID");
      }),
      { numRuns: 300 },
    );
    await auth.flush();
  });

  test("authenticateSession only ever throws ERR_SESSION_INVALID", async () => {
    await fc.assert(
      fc.asyncProperty(hostile, async (s) => {
        if (s === realSession) return;
        assert.equal(await codeOf(() => authenticateSession(db, s)), "ERR_SESSION_INVALID");
      }),
      { numRuns: 300 },
    );
  });

  test("checkCsrf only ever throws ERR_CSRF, and acceptInvitation only typed errors", async () => {
    const hash = Buffer.alloc(32, 7);
    await fc.assert(
      fc.asyncProperty(hostile, async (s) => {
        assert.equal(await codeOf(async () => checkCsrf(hash, s)), "ERR_CSRF");
        const code = await codeOf(() => acceptInvitation(db, { token: s, password: s, firstName: "", lastName: "" }));
        assert.equal(code, "ERR_INVITATION_INVALID");
      }),
      { numRuns: 200 },
    );
  });

  test("verifyPassword never throws on arbitrary PHC-like input", async () => {
    const phcish = fc.oneof(fc.string(), fc.tuple(fc.nat(), fc.nat(), fc.nat(), fc.base64String(), fc.base64String()).map(([m, t, p, s, h]) => `$argon2id$v=19$m=${m % 40000},t=${t % 4},p=${p % 3}$${s.replace(/=+$/, "")}$${h.replace(/=+$/, "")}`));
    await fc.assert(
      fc.asyncProperty(phcish, async (phc) => {
        assert.equal(typeof (await verifyPassword("pw", phc)), "boolean");
      }),
      { numRuns: 40 },
    );
  });
});
