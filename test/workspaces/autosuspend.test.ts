import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestPlatform, type TestPlatform } from "../support/platform.js";
import { createTestWorkspace, gatewayClient, waitForState, type TestWorkspace } from "../support/workspaces.js";

let tp: TestPlatform;
let ws: TestWorkspace;
let offsetMs = 0;

before(async () => {
  tp = await startTestPlatform({ env: { PARHELION_WORKSPACE_FSYNC: "false" }, clock: () => new Date(Date.now() + offsetMs) });
  ws = await createTestWorkspace(tp);
  const r = await tp.call("PATCH", `/v1/workspaces/${ws.workspaceId}`, { body: { autoSuspend: { suspendType: "IDLE", suspendAfterSeconds: 60 } } });
  assert.equal(r.status, 200, r.text);
});

after(async () => {
  await tp?.stop();
});

async function pass(): Promise<void> {
  tp.platform.reconciler.kick();
  await tp.platform.reconciler.idle();
}

test("autoSuspend: a workspace with an open session stays up; idle for suspendAfterSeconds it is suspended and audited", async () => {
  const c = gatewayClient(tp, ws);
  await c.connect();
  offsetMs = 10 * 60_000;
  await pass();
  await pass();
  assert.equal((await tp.call("GET", `/v1/workspaces/${ws.workspaceId}`)).body.state, "ACTIVE", "a session keeps it up");
  await c.query("select 1");
  await c.end();
  offsetMs = 0;
  await pass();
  assert.equal((await tp.call("GET", `/v1/workspaces/${ws.workspaceId}`)).body.state, "ACTIVE", "just used: not idle yet");
  offsetMs = 2 * 60_000;
  await pass();
  await waitForState(tp, ws.workspaceId, "SUSPENDED");
  const logs = await tp.call("GET", "/v1/auditLogs?type=WorkspaceAutoSuspend");
  assert.equal(logs.body.auditLogs.length, 1);
  assert.equal(logs.body.auditLogs[0].resourceID, ws.workspaceId);
  // Back to the real time first: with the clock still two minutes ahead, the resumed workspace is idle at
  // once and the next pass may suspend it again before the poll sees it ACTIVE.
  offsetMs = 0;
  const r = await tp.call("POST", `/v1/workspaces/${ws.workspaceId}/resume`);
  assert.equal(r.status, 200);
  await waitForState(tp, ws.workspaceId, "ACTIVE");
});

test("autoSuspend rejects SCHEDULED and periods under a minute", async () => {
  for (const autoSuspend of [{ suspendType: "SCHEDULED", suspendAfterSeconds: 3600 }, { suspendType: "IDLE", suspendAfterSeconds: 5 }]) {
    const r = await tp.call("PATCH", `/v1/workspaces/${ws.workspaceId}`, { body: { autoSuspend } });
    assert.equal(r.status, 400, r.text);
  }
});
