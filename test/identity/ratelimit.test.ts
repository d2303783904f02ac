import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { LoginThrottle } from "../../src/identity/ratelimit.js";
import { FakeClock, rejectsWith } from "./helpers.js";

function setup(threshold = 3, lockoutSeconds = 60) {
  const clock = new FakeClock();
  return { clock, t: new LoginThrottle({ threshold, lockoutSeconds, clock: clock.now }) };
}

describe("LoginThrottle", () => {
  test("locks an account after `threshold` failures, whatever the source", async () => {
    const { t } = setup(3);
    for (let i = 0; i < 2; i++) {
      t.check({ account: "a@x.io", source: `10.0.0.${i}` });
      assert.equal(t.recordFailure({ account: "a@x.io", source: `10.0.0.${i}` }), false);
    }
    t.check({ account: "a@x.io", source: "10.0.0.9" });
    assert.equal(t.recordFailure({ account: "A@X.io ", source: "10.0.0.9" }), true);
    const err = await rejectsWith(() => t.check({ account: "a@x.io", source: "192.0.2.1" }), "ERR_RATE_LIMITED");
    assert.equal(err.details?.["retryAfterSeconds"], 60);
    // Another account from the same sources is not locked.
    assert.doesNotThrow(() => t.check({ account: "b@x.io", source: "10.0.0.0" }));
  });

  test("locks a source after 4 × threshold failures across accounts", async () => {
    const { t } = setup(3);
    for (let i = 0; i < 11; i++) t.recordFailure({ account: `u${i}@x.io`, source: "203.0.113.7" });
    assert.doesNotThrow(() => t.check({ account: "new@x.io", source: "203.0.113.7" }));
    t.recordFailure({ account: "u11@x.io", source: "203.0.113.7" });
    await rejectsWith(() => t.check({ account: "new@x.io", source: "203.0.113.7" }), "ERR_RATE_LIMITED");
    await rejectsWith(() => t.check({ source: "203.0.113.7" }), "ERR_RATE_LIMITED");
    assert.doesNotThrow(() => t.check({ account: "new@x.io", source: "203.0.113.8" }));
  });

  test("the lockout expires after lockoutSeconds and the count starts afresh", async () => {
    const { t, clock } = setup(2, 30);
    t.recordFailure({ account: "a@x.io", source: "s" });
    t.recordFailure({ account: "a@x.io", source: "s" });
    await rejectsWith(() => t.check({ account: "a@x.io", source: "s2" }), "ERR_RATE_LIMITED");
    clock.advance(20);
    const err = await rejectsWith(() => t.check({ account: "a@x.io", source: "s2" }), "ERR_RATE_LIMITED");
    assert.equal(err.details?.["retryAfterSeconds"], 10);
    clock.advance(10);
    assert.doesNotThrow(() => t.check({ account: "a@x.io", source: "s2" }));
    assert.equal(t.recordFailure({ account: "a@x.io", source: "s3" }), false, "one failure after expiry must not relock");
  });

  test("failures older than the sliding window do not count", () => {
    const { t, clock } = setup(3, 60);
    t.recordFailure({ account: "a@x.io", source: "s" });
    clock.advance(40);
    t.recordFailure({ account: "a@x.io", source: "s" });
    clock.advance(30); // the first failure is now 70 s old
    assert.equal(t.recordFailure({ account: "a@x.io", source: "s" }), false);
    assert.doesNotThrow(() => t.check({ account: "a@x.io", source: "s" }));
    assert.equal(t.recordFailure({ account: "a@x.io", source: "s" }), true);
  });

  test("a success clears the account counter but not the source counter", async () => {
    const { t } = setup(3);
    t.recordFailure({ account: "a@x.io", source: "s" });
    t.recordFailure({ account: "a@x.io", source: "s" });
    t.recordSuccess({ account: "a@x.io" });
    assert.equal(t.recordFailure({ account: "a@x.io", source: "s" }), false);
    assert.equal(t.recordFailure({ account: "a@x.io", source: "s" }), false);
    for (let i = 0; i < 7; i++) t.recordFailure({ source: "s" });
    assert.doesNotThrow(() => t.check({ source: "s" }), "11 source failures are below 4 × 3");
    t.recordFailure({ source: "s" });
    await rejectsWith(() => t.check({ source: "s" }), "ERR_RATE_LIMITED");
  });

  test("memory stays bounded: the least recently touched keys are forgotten", () => {
    const clock = new FakeClock();
    const t = new LoginThrottle({ threshold: 1, lockoutSeconds: 60, clock: clock.now, maxKeys: 100 });
    for (let i = 0; i < 1000; i++) t.recordFailure({ account: `u${i}@x.io`, source: `s${i}` });
    assert.deepEqual(t.size, { accounts: 100, sources: 100 });
    assert.doesNotThrow(() => t.check({ account: "u0@x.io", source: "s0" }));
    assert.throws(() => t.check({ account: "u999@x.io", source: "other" }));
  });

  test("rejects nonsensical options", async () => {
    await rejectsWith(() => new LoginThrottle({ threshold: 0, lockoutSeconds: 60 }), "ERR_CONFIG");
    await rejectsWith(() => new LoginThrottle({ threshold: 3, lockoutSeconds: 0 }), "ERR_CONFIG");
  });
});
