import { test, after } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, existsSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { Secret, TOTP } from "otpauth";
import { loadConfig } from "../../src/config/load.js";
import { createLogger } from "../../src/log/logger.js";
import { startPlatform, type Platform } from "../../src/platform.js";
import { createUser } from "../../src/identity/users.js";
import { createSession } from "../../src/identity/sessions.js";
import { beginTotpEnrollment, confirmTotpEnrollment } from "../../src/identity/mfa.js";
import { openColumn } from "../../src/kms/index.js";
import { SOFTHSM_MODULE, createTestToken } from "../support/softhsm.js";
import { tempDir } from "./helpers.js";

const tok = createTestToken("platform-hsm");
const tmp = tempDir("platform-hsm");
chmodSync(tmp.dir, 0o711);
const logLines: string[] = [];
after(() => {
  tmp.cleanup();
  tok.cleanup();
});

function start(): Promise<Platform> {
  const config = loadConfig({ flags: { dataDir: tmp.dir, apiPort: 0, gatewayPort: 0, kms: "pkcs11", kmsHsmModule: SOFTHSM_MODULE, kmsHsmToken: tok.token }, env: { PARHELION_KMS_HSM_PIN: tok.pin }, cwd: tmp.dir });
  const logger = createLogger({ level: "debug", destination: { write: (s: string) => (logLines.push(s), true) } as never });
  return startPlatform({ config, logger });
}

test("with kms pkcs11 the organization's KEK is wrapped by the HSM key, no root key file is made, and a restart still decrypts", async () => {
  let p = await start();
  let factorID: string;
  let secret: string;
  try {
    assert.ok(!existsSync(join(tmp.dir, "keys", "root.key")), "a local root key file was made");
    const org = await p.db.selectFrom("organizations").select("id").executeTakeFirstOrThrow();
    const u = await createUser(p.db, { orgId: org.id, email: `hsm.${randomUUID().slice(0, 8)}@example.com`, firstName: "", lastName: "", passwordHash: null });
    const sessionId = (await createSession(p.db, { userId: u.userID, orgId: org.id, sourceIp: null, ttlSeconds: 3600 })).sessionID;
    const e = await beginTotpEnrollment(p.db, { userId: u.userID, email: u.email, issuer: "parhelion" });
    factorID = e.factorID;
    secret = e.secret;
    await confirmTotpEnrollment(p.db, { userId: u.userID, sessionId, code: new TOTP({ secret: Secret.fromBase32(secret) }).generate() });
    const kek = await p.db.selectFrom("kms_keys").selectAll().where("kind", "=", "org-kek").executeTakeFirstOrThrow();
    assert.equal(kek.provider, "pkcs11");
    assert.match(kek.wrapped_by, /^pkcs11:platform-hsm\/parhelion-root#[0-9a-f]{32}$/);
  } finally {
    await p.stop();
  }
  p = await start();
  try {
    const row = await p.db.selectFrom("mfa_totp").select("secret_enc").where("id", "=", factorID).executeTakeFirstOrThrow();
    assert.equal(await openColumn(p.db, "mfa_totp.secret", factorID, row.secret_enc!), secret);
  } finally {
    await p.stop();
  }
  assert.ok(!logLines.join("").includes(tok.pin), "the PIN reached the log");
});
