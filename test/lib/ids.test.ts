import { test } from "node:test";
import assert from "node:assert/strict";
import { isUuid, uuidV4 } from "../../src/lib/ids.js";

test("uuidV4 makes version 4 UUIDs in canonical form, each new", () => {
  const seen = new Set<string>();
  const nibbles = new Set<string>();
  // More than one pool of random bytes (256 ids) goes by.
  for (let i = 0; i < 3000; i++) {
    const id = uuidV4();
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.ok(isUuid(id));
    assert.ok(!seen.has(id), "no id twice");
    seen.add(id);
    nibbles.add(id[0]!);
  }
  assert.equal(nibbles.size, 16, "random digits take every value");
});
