import { test } from "node:test";
import assert from "node:assert/strict";
import { startTestStore } from "../support/pg.js";
import { createAuditLog } from "../../src/audit/index.js";
import { ev, captureLogger } from "./helpers.js";

test("store server stopped: record() resolves false promptly and never throws into the caller", async () => {
  const store = await startTestStore();
  try {
    const { logger, lines } = captureLogger();
    const audit = createAuditLog({ db: store.db, logger });
    assert.equal(await audit.record(ev()), true);
    await store.pg.server.stop();
    const t0 = Date.now();
    const results = await Promise.all(Array.from({ length: 20 }, () => audit.record(ev({ attributes: { secretMarker: "s3cr3t-attr" } }))));
    assert.deepEqual(results, Array.from({ length: 20 }, () => false));
    assert.ok(Date.now() - t0 < 10_000, "record() hung with the store down");
    assert.match(lines.join(""), /audit batch could not be written/);
    assert.doesNotMatch(lines.join(""), /s3cr3t-attr/);
    await audit.close();
  } finally {
    await store.stop();
  }
});
