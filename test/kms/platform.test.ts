import { test, after } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { randomBytes, randomUUID } from "node:crypto";
import { join } from "node:path";
import { Secret, TOTP } from "otpauth";
import { loadConfig } from "../../src/config/load.js";
import { createLogger } from "../../src/log/logger.js";
import { startPlatform, type Platform } from "../../src/platform.js";
import { createUser } from "../../src/identity/users.js";
import { createSession } from "../../src/identity/sessions.js";
import { beginTotpEnrollment, confirmTotpEnrollment, verifyTotp } from "../../src/identity/mfa.js";
import { ParhelionError } from "../../src/lib/errors.js";
import { rejectsOpaque, tempDir } from "./helpers.js";

const tmp = tempDir("platform");
chmodSync(tmp.dir, 0o711);
const logLines: string[] = [];
after(() => tmp.cleanup());

function start(): Promise<Platform> {
  const config = loadConfig({ flags: { dataDir: tmp.dir, apiPort: 0, gatewayPort: 0 }, env: {}, cwd: tmp.dir });
  const logger = createLogger({ level: "debug", destination: { write: (s: string) => (logLines.push(s), true) } as never });
  return startPlatform({ config, logger });
}

function codeAt(secret: string, ms: number): string {
  return new TOTP({ secret: Secret.fromBase32(secret), algorithm: "SHA1", digits: 6, period: 30 }).generate({ timestamp: ms });
}

test("the platform makes its root key at first start, and after a restart still decrypts; a legacy plaintext row is encrypted at start", async () => {
  const keyFile = join(tmp.dir, "keys", "root.key");
  let p: Platform | undefined = await start();
  let secret: string;
  let userId: string;
  let sessionId: string;
  let legacyId: string;
  const legacySecret = new Secret({ size: 20 }).base32;
  try {
    assert.equal(statSync(keyFile).mode & 0o777, 0o600);
    assert.equal(statSync(keyFile).size, 32);
    const org = await p.db.selectFrom("organizations").select("id").executeTakeFirstOrThrow();
    const u = await createUser(p.db, { orgId: org.id, email: `kms.${randomUUID().slice(0, 8)}@example.com`, firstName: "", lastName: "", passwordHash: null });
    userId = u.userID;
    sessionId = (await createSession(p.db, { userId, orgId: org.id, sourceIp: null, ttlSeconds: 3600 })).sessionID;
    const e = await beginTotpEnrollment(p.db, { userId, email: u.email, issuer: "parhelion" });
    secret = e.secret;
    await confirmTotpEnrollment(p.db, { userId, sessionId, code: codeAt(secret, Date.now()) });
    // A row as a version before 0007_keys wrote it.
    const other = await createUser(p.db, { orgId: org.id, email: `legacy.${randomUUID().slice(0, 8)}@example.com`, firstName: "", lastName: "", passwordHash: null });
    legacyId = randomUUID();
    await p.db.insertInto("mfa_totp").values({ id: legacyId, user_id: other.userID, name: "old", secret: legacySecret, secret_enc: null, enroll_expires_at: null, confirmed_at: new Date(), last_used_step: null, last_used_at: null }).execute();
  } finally {
    await p.stop();
    p = undefined;
  }
  const rootKey = readFileSync(keyFile);

  p = await start();
  try {
    assert.deepEqual(readFileSync(keyFile), rootKey, "the root key changed across a restart");
    const legacy = await p.db.selectFrom("mfa_totp").select(["secret", "secret_enc"]).where("id", "=", legacyId).executeTakeFirstOrThrow();
    assert.equal(legacy.secret, null, "the legacy row is still plaintext after a start");
    assert.ok(legacy.secret_enc !== null);
    // The next time step, so the code is not a replay of the one used at enrollment.
    const at = await verifyTotp(p.db, { userId, sessionId, code: codeAt(secret, Date.now() + 30_000) });
    assert.ok(at instanceof Date);
  } finally {
    await p.stop();
  }
  const all = logLines.join("");
  for (const s of [secret, legacySecret, rootKey.toString("hex"), rootKey.toString("base64")]) assert.ok(!all.includes(s), "a secret reached the log");
  assert.match(all, /key hierarchy ready/);
});

test("the platform refuses to start with a root key file others can read, and with a replaced root key (the store's encrypted volume does not open)", async () => {
  const keyFile = join(tmp.dir, "keys", "root.key");
  const original = readFileSync(keyFile);
  chmodSync(keyFile, 0o644);
  await assert.rejects(start(), (err: unknown) => err instanceof ParhelionError && err.code === "ERR_CONFIG" && /chmod 600/.test(err.message));
  chmodSync(keyFile, 0o600);
  writeFileSync(keyFile, randomBytes(32));
  try {
    await assert.rejects(start(), (err: unknown) => err instanceof ParhelionError && err.code === "ERR_KEY_UNAVAILABLE");
  } finally {
    writeFileSync(keyFile, original);
  }
  // The right key opens everything again.
  const p = await start();
  await p.stop();
});
