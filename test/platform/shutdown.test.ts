import { test } from "node:test";
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { connect } from "node:tls";
import { openDb } from "../../src/store/db.js";
import { startTestPostgres } from "../support/pg.js";
import { startTestPlatform } from "../support/platform.js";

/** Sends a request and hangs up without waiting for the answer, as a load generator does when it stops. */
function fireAndHangUp(url: URL, ca: string, key: string, body: string): Promise<void> {
  return new Promise((resolve) => {
    const s = connect({ host: url.hostname, port: Number(url.port), ca, servername: "localhost" }, () => {
      s.write(`POST /v1/teams HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer ${key}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
      setTimeout(() => {
        s.destroy();
        resolve();
      }, 2);
    });
    s.on("error", () => resolve());
  });
}

test("stopping while clients hang up mid-request: every committed mutation has its audit record; none is dropped", async () => {
  const pg = await startTestPostgres();
  const logs: string[] = [];
  const sink = new PassThrough();
  sink.on("data", (c: Buffer) => logs.push(c.toString()));
  try {
    const tp = await startTestPlatform({ env: { PARHELION_DATABASE_URL: pg.connectionString }, logDestination: sink });
    const url = new URL(tp.apiUrl);
    const sent = Array.from({ length: 400 }, (_, i) => fireAndHangUp(url, tp.caPem, tp.ownerKey, JSON.stringify({ name: `load-${i}` })));
    // Stop once requests are reaching their handlers (a fixed delay is too short on a loaded machine).
    const probe = openDb({ connectionString: pg.connectionString });
    try {
      for (let i = 0; i < 200 && !(await probe.db.selectFrom("teams").select("id").limit(1).executeTakeFirst()); i++) await new Promise((r) => setTimeout(r, 25));
    } finally {
      await probe.db.destroy();
    }
    const t0 = Date.now();
    await tp.stop();
    assert.ok(Date.now() - t0 < 10_000, "stops within 10 s");
    await Promise.all(sent);

    const { db } = openDb({ connectionString: pg.connectionString });
    try {
      const teams = await db.selectFrom("teams").select("id").execute();
      assert.ok(teams.length > 0, "some requests reached their handler");
      const rows = await db.selectFrom("audit_log").select("resource_id").where("type", "=", "TeamCreate").execute();
      const audited = new Set(rows.map((r) => r.resource_id));
      const missing = teams.filter((t) => !audited.has(t.id));
      assert.deepEqual(missing, [], `${missing.length} of ${teams.length} created teams have no audit record`);
    } finally {
      await db.destroy();
    }
    assert.ok(!logs.join("").includes("dropped"), "an audit record was dropped at shutdown");
  } finally {
    await pg.stop();
  }
});
