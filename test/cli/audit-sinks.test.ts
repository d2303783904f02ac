import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startTestPlatform } from "../support/platform.js";
import { runCli, tempDir } from "./helpers.js";

test("CLI: audit sink create|list|show|export|verify|update|delete, and audit verify <file> names a changed line", async () => {
  const dir = tempDir("parhelion-cli-sinks-");
  const tp = await startTestPlatform().catch((err: unknown) => {
    dir.remove();
    throw err;
  });
  try {
    const keyFile = join(dir.path, "key");
    writeFileSync(keyFile, tp.ownerKey, { mode: 0o600 });
    const env = { PARHELION_HOME: join(dir.path, "home") };
    assert.equal((await runCli(["login", "--data-dir", tp.dataDir, "--api-key-file", keyFile], { env })).code, 0);

    const bad = await runCli(["audit", "sink", "create", "--name", "w", "--type", "webhook", "--url", "https://localhost:1/x"], { env });
    assert.equal(bad.code, 6, "a webhook without its secret is refused by the API (400)");
    assert.match(bad.stderr, /secrets\.secret is required/);

    const made = await runCli(["audit", "sink", "create", "--name", "evidence", "--type", "file", "--checkpoint-seconds", "1", "--output", "json"], { env });
    assert.equal(made.code, 0, made.stderr);
    const id = JSON.parse(made.stdout).auditSinkID as string;
    for (const name of ["a", "b", "c"]) assert.equal((await runCli(["team", "create", name], { env })).code, 0);

    const list = await runCli(["audit", "sink", "list", "--output", "table"], { env });
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /evidence\s+file/);
    assert.match(list.stdout, /default\s+file/);

    // Wait for the timed checkpoint, then the sink verifies against its live head.
    const deadline = Date.now() + 15_000;
    for (;;) {
      const show = JSON.parse((await runCli(["audit", "sink", "show", id, "--output", "json"], { env })).stdout);
      if (show.status.sealedSeq >= 3 || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 300));
    }
    const verified = await runCli(["audit", "sink", "verify", id, "--output", "table"], { env });
    assert.equal(verified.code, 0, verified.stdout + verified.stderr);
    assert.match(verified.stdout, /OK/);

    const out = join(dir.path, "evidence.jsonl");
    const exp = await runCli(["audit", "sink", "export", id, "--out", out], { env });
    assert.equal(exp.code, 0, exp.stderr);
    assert.equal(statSync(out).mode & 0o777, 0o600);
    const lines = readFileSync(out, "utf8").split("\n").filter((l) => l.length > 0);
    assert.ok(lines.some((l) => l.includes(`"type":"TeamCreate"`)));
    const file = await runCli(["audit", "verify", out], { env });
    assert.equal(file.code, 0, file.stdout + file.stderr);

    const i = lines.findIndex((l) => l.includes(`"type":"TeamCreate"`));
    lines[i] = lines[i]!.replace(`"result":"SUCCESS"`, `"result":"FAILURE"`);
    writeFileSync(out, lines.join("\n") + "\n");
    const tampered = await runCli(["audit", "verify", out, "--output", "json"], { env });
    assert.equal(tampered.code, 8, tampered.stderr);
    const r = JSON.parse(tampered.stdout);
    assert.equal(r.ok, false);
    assert.deepEqual([r.problems[0].kind, r.problems[0].line], ["modified", i + 1]);

    const upd = await runCli(["audit", "sink", "update", id, "--retention-days", "30", "--output", "json"], { env });
    assert.equal(upd.code, 0, upd.stderr);
    assert.equal(JSON.parse(upd.stdout).settings.retentionDays, 30);
    assert.equal((await runCli(["audit", "sink", "delete", id], { env })).code, 0);
    assert.equal((await runCli(["audit", "sink", "show", id], { env })).code, 5);
  } finally {
    await tp.stop();
    dir.remove();
  }
});
