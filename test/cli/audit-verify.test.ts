import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { sql } from "kysely";
import { startTestPlatform } from "../support/platform.js";
import { runCli, tempDir } from "./helpers.js";

test("audit verify exits 8 after tampering and names each problem's seq and kind", async () => {
  const dir = tempDir("parhelion-cli-verify-");
  const tp = await startTestPlatform().catch((err: unknown) => {
    dir.remove();
    throw err;
  });
  try {
    const keyFile = join(dir.path, "key");
    writeFileSync(keyFile, tp.ownerKey, { mode: 0o600 });
    const env = { PARHELION_HOME: join(dir.path, "home") };
    assert.equal((await runCli(["login", "--data-dir", tp.dataDir, "--api-key-file", keyFile], { env })).code, 0);
    for (const name of ["a", "b", "c"]) assert.equal((await runCli(["team", "create", name], { env })).code, 0);
    const ok = await runCli(["audit", "verify"], { env });
    assert.equal(ok.code, 0, ok.stderr);

    await sql`update audit_log set reason = 'nothing happened' where seq = 2`.execute(tp.platform.db);
    const json = await runCli(["audit", "verify", "--output", "json"], { env });
    assert.equal(json.code, 8, json.stderr);
    const v = JSON.parse(json.stdout);
    assert.equal(v.ok, false);
    assert.deepEqual(v.problems.map((p: { seq: string; kind: string }) => [p.seq, p.kind]), [["2", "modified"]]);
    assert.match(json.stderr, /seq 2 modified/);

    const table = await runCli(["audit", "verify", "--output", "table"], { env });
    assert.equal(table.code, 8);
    assert.match(table.stdout, /^2\s+modified\s+/m);

    // Straight from the store, without the API or any credential: the same verdict.
    const direct = await runCli(["audit", "verify", "--store", tp.dataDir, "--output", "json"], { env: { PARHELION_HOME: join(dir.path, "nobody") } });
    assert.equal(direct.code, 8, direct.stderr);
    assert.deepEqual(JSON.parse(direct.stdout).problems.map((p: { seq: string; kind: string }) => [p.seq, p.kind]), [["2", "modified"]]);
    const missing = await runCli(["audit", "verify", "--store", join(dir.path, "no-such-dir")], { env });
    assert.equal(missing.code, 7);
    assert.match(missing.stderr, /no running metadata store/);
  } finally {
    await tp.stop();
    dir.remove();
  }
});
