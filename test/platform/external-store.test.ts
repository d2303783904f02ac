import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { startTestPostgres } from "../support/pg.js";
import { startTestPlatform, type TestPlatform } from "../support/platform.js";

test("PARHELION_DATABASE_URL: two control planes on one external store migrate and bootstrap once, and share state", async () => {
  const pg = await startTestPostgres();
  const started: TestPlatform[] = [];
  try {
    const env = { PARHELION_DATABASE_URL: pg.connectionString };
    const results = await Promise.allSettled([startTestPlatform({ env }), startTestPlatform({ env })]);
    for (const r of results) if (r.status === "fulfilled") started.push(r.value);
    assert.equal(started.length, 2, results.map((r) => (r.status === "rejected" ? String(r.reason) : "ok")).join("; "));
    const [a, b] = started as [TestPlatform, TestPlatform];
    for (const p of started) assert.ok(!existsSync(join(p.dataDir, "store")), "no embedded store is created");
    const withKey = started.filter((p) => p.ownerKey !== "");
    assert.equal(withKey.length, 1, "exactly one process bootstrapped the organization");
    const key = withKey[0]!.ownerKey;
    const orgA = await a.call("GET", "/v1/organizations/current", { key });
    const orgB = await b.call("GET", "/v1/organizations/current", { key });
    assert.equal(orgA.status, 200);
    assert.deepEqual(orgA.body, orgB.body);
    const t = await a.call("POST", "/v1/teams", { key, body: { name: "shared" } });
    assert.equal(t.status, 200);
    const list = await b.call("GET", "/v1/teams", { key });
    assert.deepEqual(list.body.map((x: { name: string }) => x.name), ["shared"]);
    const orgs = await a.platform.db.selectFrom("organizations").select("id").execute();
    assert.equal(orgs.length, 1);
    const migrations = await a.platform.db.selectFrom("parhelion_migrations" as never).selectAll().execute();
    assert.equal(new Set(migrations.map((m) => (m as { name: string }).name)).size, migrations.length, "each migration recorded once");
    const v = await b.call("GET", "/v1/auditLogs/verify", { key });
    assert.equal(v.body.ok, true, JSON.stringify(v.body.problems));
  } finally {
    for (const p of started) await p.stop().catch(() => undefined);
    await pg.stop();
  }
});
