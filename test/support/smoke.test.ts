import { test } from "node:test";
import assert from "node:assert/strict";
import { startTestStore } from "./pg.js";
import { sql } from "kysely";

test("a migrated test store answers queries", async () => {
  const s = await startTestStore();
  try {
    const r = await sql<{ n: number }>`select count(*)::int as n from organizations`.execute(s.db);
    assert.equal(r.rows[0]?.n, 0);
  } finally {
    await s.stop();
  }
});
