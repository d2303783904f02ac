import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { ENVELOPE_VERSION, envelopeKeyId, open, seal } from "../../src/kms/envelope.js";
import { rejectsOpaque } from "./helpers.js";

const key = randomBytes(32);
const purpose = "mfa_totp.secret:7d3b6a2e-0000-4000-8000-000000000001";

test("an envelope round-trips and names its version and key id", () => {
  const env = seal(key, "dek-1", purpose, Buffer.from("JBSWY3DPEHPK3PXP"));
  assert.equal(env[0], ENVELOPE_VERSION);
  assert.equal(envelopeKeyId(env), "dek-1");
  assert.equal(open(key, purpose, env).toString(), "JBSWY3DPEHPK3PXP");
  assert.ok(!env.includes(Buffer.from("JBSWY3DPEHPK3PXP")), "the plaintext is visible in the envelope");
  // A fresh IV each time: the same plaintext never gives the same envelope.
  assert.ok(!seal(key, "dek-1", purpose, Buffer.from("JBSWY3DPEHPK3PXP")).equals(env));
});

test("flipping any bit of any byte of an envelope gives the one opaque error", async () => {
  const env = seal(key, "dek-1", purpose, Buffer.from("a client secret"));
  for (let i = 0; i < env.length; i++) {
    for (const bit of [0x01, 0x80]) {
      const bad = Buffer.from(env);
      bad[i] = (bad[i] ?? 0) ^ bit;
      await rejectsOpaque(() => open(key, purpose, bad), `byte ${i} bit ${bit}`);
    }
  }
});

test("a wrong purpose (another row or column), a wrong key or a truncated envelope give the same error", async () => {
  const env = seal(key, "dek-1", purpose, Buffer.from("secret"));
  await rejectsOpaque(() => open(key, purpose.replace("0001", "0002"), env), "another row");
  await rejectsOpaque(() => open(key, "sso_providers.client_secret:" + purpose.split(":")[1], env), "another column");
  await rejectsOpaque(() => open(randomBytes(32), purpose, env), "another key");
  for (const n of [0, 1, 2, 5, env.length - 1]) await rejectsOpaque(() => open(key, purpose, env.subarray(0, n)), `truncated to ${n}`);
  await rejectsOpaque(() => open(key, purpose, Buffer.concat([env, Buffer.from([0])])), "extended");
});

test("the key id is authenticated: an envelope relabelled with another key id does not open", async () => {
  const env = seal(key, "dek-a", purpose, Buffer.from("secret"));
  const relabelled = Buffer.from(env);
  relabelled.write("dek-b", 2, "ascii");
  assert.equal(envelopeKeyId(relabelled), "dek-b");
  await rejectsOpaque(() => open(key, purpose, relabelled));
});

test("seal refuses a key that is not 32 bytes and a malformed key id", () => {
  assert.throws(() => seal(randomBytes(16), "dek-1", purpose, Buffer.from("x")), TypeError);
  assert.throws(() => seal(key, "", purpose, Buffer.from("x")), TypeError);
  assert.throws(() => seal(key, "dek 1", purpose, Buffer.from("x")), TypeError);
  assert.throws(() => seal(key, "k".repeat(65), purpose, Buffer.from("x")), TypeError);
});
