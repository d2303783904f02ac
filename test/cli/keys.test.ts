import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { runCli, startSignedInPlatform, type SignedInPlatform } from "./helpers.js";
import { createTestWorkspace, type TestWorkspace } from "../support/workspaces.js";

let env: SignedInPlatform;
let ws: TestWorkspace;
const cli = (args: string[]) => runCli(args, { env: { PARHELION_HOME: env.home }, timeoutMs: 60_000 });

before(async () => {
  env = await startSignedInPlatform("parhelion-cli-keys-");
  ws = await createTestWorkspace(env.tp);
});
after(async () => {
  await env?.stop();
});

test("key rotate --group re-wraps the group's data key; key status --group shows it and its wrapping", async () => {
  const before = JSON.parse((await cli(["key", "status", "--group", ws.groupId, "--output", "json"])).stdout);
  assert.equal(before.kmsKey, null);
  assert.equal(before.dataKey.provider, "platform");
  const r = await cli(["key", "rotate", "--group", ws.groupId, "--output", "table"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`version ${before.dataKey.keyVersion + 1} at `));
  const s = await cli(["key", "status", "--group", ws.groupId, "--output", "table"]);
  assert.equal(s.code, 0, s.stderr);
  assert.match(s.stdout, /none \(platform key\)/);
  assert.match(s.stdout, new RegExp(before.dataKey.keyID));
  const all = await cli(["key", "status", "--output", "table"]);
  assert.equal(all.code, 0, all.stderr);
  assert.match(all.stdout, new RegExp(before.dataKey.keyID));
});

test("workspace-group set-kms: --platform re-wraps under the platform key; a key the installation cannot use is refused with its code", async () => {
  const p = await cli(["workspace-group", "set-kms", ws.groupId, "--platform", "--output", "table"]);
  assert.equal(p.code, 0, p.stderr);
  assert.match(p.stdout, /wrapped by the platform key/);
  const bad = await cli(["workspace-group", "set-kms", ws.groupId, "--provider", "pkcs11", "--key-id", "tok/label"]);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /ERR_VALIDATION|pin/i);
  const usage = await cli(["workspace-group", "set-kms", ws.groupId]);
  assert.notEqual(usage.code, 0);
  assert.match(usage.stderr, /--provider and --key-id, or --platform/);
});

test("key rekey --group waits and prints its progress; --no-wait answers at once and a second one is refused; key status --group shows it", async () => {
  const before = JSON.parse((await cli(["key", "status", "--group", ws.groupId, "--output", "json"])).stdout);
  const r = await cli(["key", "rekey", "--group", ws.groupId, "--output", "table"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /COPYING [\d.]+ MiB \/ [\d.]+ MiB \(\d+%\)/, "progress lines");
  assert.match(r.stdout, new RegExp(`re-keyed: data key dek-[0-9a-f-]+ active, ${before.dataKey.keyID} retired`));
  const s = await cli(["key", "status", "--group", ws.groupId, "--output", "table"]);
  assert.equal(s.code, 0, s.stderr);
  assert.match(s.stdout, /DONE DONE [\d.]+ MiB \/ [\d.]+ MiB \(100%\)/);

  const nw = await cli(["key", "rekey", "--group", ws.groupId, "--no-wait", "--output", "json"]);
  assert.equal(nw.code, 0, nw.stderr);
  const op = JSON.parse(nw.stdout);
  assert.equal(op.state, "RUNNING");
  const again = await cli(["key", "rekey", "--group", ws.groupId]);
  assert.equal(again.code, 6, again.stderr);
  assert.match(again.stderr, /ERR_REKEY_REFUSED/);
  for (const until = Date.now() + 50_000; ;) {
    const st = JSON.parse((await cli(["key", "status", "--group", ws.groupId, "--output", "json"])).stdout);
    if (st.rekey.operationID === op.operationID && st.rekey.state !== "RUNNING") {
      assert.equal(st.rekey.state, "DONE", st.rekey.error);
      break;
    }
    assert.ok(Date.now() < until, "the re-key did not finish");
    await new Promise((res) => setTimeout(res, 250));
  }
});
