import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { checkPasswordPolicy, hashPassword, verifyPassword, needsRehash } from "../../src/identity/passwords.js";
import { rejectsWith, GOOD_PASSWORD } from "./helpers.js";

const EMAIL = { email: "Jane.Doe@Example.com" };

describe("password policy", () => {
  test("accepts a long, uncommon password", () => {
    assert.doesNotThrow(() => checkPasswordPolicy(GOOD_PASSWORD, EMAIL));
  });
  test("rejects a password shorter than 12 characters", async () => {
    await rejectsWith(() => checkPasswordPolicy("short-pw-1!", EMAIL), "ERR_PASSWORD_POLICY", /at least 12 characters/);
  });
  test("counts characters, not UTF-16 units or bytes", async () => {
    // 11 astral characters are 22 UTF-16 units but still too short.
    await rejectsWith(() => checkPasswordPolicy("🔑🌲🐙🚀🎲🧭🪐🦉🍋🎻🧊", EMAIL), "ERR_PASSWORD_POLICY", /at least 12/);
    assert.doesNotThrow(() => checkPasswordPolicy("🔑🌲🐙🚀🎲🧭🪐🦉🍋🎻🧊🛶", EMAIL));
  });
  test("rejects a password longer than 256 characters", async () => {
    assert.doesNotThrow(() => checkPasswordPolicy("ab".repeat(128), EMAIL));
    await rejectsWith(() => checkPasswordPolicy("ab".repeat(128) + "c", EMAIL), "ERR_PASSWORD_POLICY", /at most 256 characters/);
  });
  test("rejects a single repeated character", async () => {
    await rejectsWith(() => checkPasswordPolicy("zzzzzzzzzzzzzzzz", EMAIL), "ERR_PASSWORD_POLICY", /single repeated character/);
  });
  test("rejects the email itself, case-insensitively", async () => {
    await rejectsWith(() => checkPasswordPolicy("jane.doe@example.COM", EMAIL), "ERR_PASSWORD_POLICY", /email address/);
  });
  test("rejects a password containing the email's local part", async () => {
    await rejectsWith(() => checkPasswordPolicy("xX-JANE.DOE-2024-Xx", EMAIL), "ERR_PASSWORD_POLICY", /email address/);
  });
  test("rejects a password containing the whole email", async () => {
    await rejectsWith(() => checkPasswordPolicy("my jane.doe@example.com!", EMAIL), "ERR_PASSWORD_POLICY", /email address/);
  });
  test("rejects a common password, case-insensitively", async () => {
    await rejectsWith(() => checkPasswordPolicy("Password1234", EMAIL), "ERR_PASSWORD_POLICY", /too common/);
    await rejectsWith(() => checkPasswordPolicy("1q2w3e4r5t6y", EMAIL), "ERR_PASSWORD_POLICY", /too common/);
  });
});

describe("argon2id hashing", () => {
  test("hashes to a PHC string with the documented parameters and a fresh salt", async () => {
    const a = await hashPassword(GOOD_PASSWORD);
    const b = await hashPassword(GOOD_PASSWORD);
    assert.match(a, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$/);
    assert.notEqual(a, b);
    assert.equal(needsRehash(a), false);
  });
  test("verifies the right password and refuses a wrong one", async () => {
    const phc = await hashPassword(GOOD_PASSWORD);
    assert.equal(await verifyPassword(GOOD_PASSWORD, phc), true);
    assert.equal(await verifyPassword(GOOD_PASSWORD + "x", phc), false);
    assert.equal(await verifyPassword("", phc), false);
  });
  test("verifies a hash made with other parameters (read from the PHC string)", async () => {
    const phc = await hashPassword(GOOD_PASSWORD);
    const { argon2Sync } = await import("node:crypto");
    const salt = Buffer.from(phc.split("$")[4]!, "base64");
    const tag = argon2Sync("argon2id", { message: GOOD_PASSWORD, nonce: salt, memory: 8192, passes: 3, parallelism: 2, tagLength: 32 });
    const other = `$argon2id$v=19$m=8192,t=3,p=2$${salt.toString("base64").replace(/=+$/, "")}$${tag.toString("base64").replace(/=+$/, "")}`;
    assert.equal(await verifyPassword(GOOD_PASSWORD, other), true);
    assert.equal(needsRehash(other), true);
  });
  test("a null hash answers false after a full argon2 computation", async () => {
    const phc = await hashPassword(GOOD_PASSWORD);
    // The fastest of several runs: the work itself, without the pauses a busy machine adds.
    let real = Infinity;
    let dummy = Infinity;
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      assert.equal(await verifyPassword(GOOD_PASSWORD, phc), true);
      real = Math.min(real, performance.now() - t0);
      const t1 = performance.now();
      assert.equal(await verifyPassword(GOOD_PASSWORD, null), false);
      dummy = Math.min(dummy, performance.now() - t1);
    }
    // Same work: the dummy check takes at least a third of a real one (generous for noisy CI).
    assert.ok(dummy > real / 3, `dummy ${dummy.toFixed(1)} ms vs real ${real.toFixed(1)} ms`);
  });
  test("a malformed PHC string answers false and never throws", async () => {
    const phc = await hashPassword(GOOD_PASSWORD);
    const [, , v, params, salt, hash] = phc.split("$");
    const bad = [
      "",
      "not a hash",
      "$argon2i$v=19$m=19456,t=2,p=1$" + salt + "$" + hash,
      "$argon2id$v=16$" + params + "$" + salt + "$" + hash,
      `$argon2id$${v}$m=19456,t=2$${salt}$${hash}`,
      `$argon2id$${v}$m=0,t=2,p=1$${salt}$${hash}`,
      `$argon2id$${v}$m=99999999999,t=2,p=1$${salt}$${hash}`,
      `$argon2id$${v}$m=19456,t=0,p=1$${salt}$${hash}`,
      `$argon2id$${v}$m=19456,t=2,p=1$${salt}==$${hash}`,
      `$argon2id$${v}$m=19456,t=2,p=1$!!!!$${hash}`,
      `$argon2id$${v}$m=19456,t=2,p=1$${salt}$`,
      `$argon2id$${v}$m=19456,t=2,p=1$${salt}$${hash}$extra`,
      `$argon2id$${v}$m=19456,t=2,p=1$QQ$${hash}`,
      phc + "A",
      phc.slice(0, -4),
    ];
    for (const b of bad) assert.equal(await verifyPassword(GOOD_PASSWORD, b), false, `accepted ${JSON.stringify(b)}`);
    // A password far beyond any policy limit is refused without error.
    assert.equal(await verifyPassword("x".repeat(100_000), phc), false);
  });
});
