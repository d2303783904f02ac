import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestPlatform, type TestPlatform } from "../support/platform.js";

let tp: TestPlatform;
before(async () => {
  tp = await startTestPlatform({ env: { PARHELION_AUDIT_READS: "failures" } });
});
after(async () => {
  await tp?.stop();
});

async function records(requestId: string): Promise<Array<{ type: string; result: string }>> {
  const rows = await tp.platform.db.selectFrom("audit_log").select(["type", "result"]).where("request_id", "=", requestId).execute();
  return rows;
}

test("auditReads=failures: successful reads are not recorded; denied reads, failed sign-ins, exports of the audit log and mutations are", async () => {
  const ok = await tp.call("GET", "/v1/organizations/current");
  assert.equal(ok.status, 200);
  assert.deepEqual(await records(String(ok.headers["x-request-id"])), []);

  const denied = await tp.call("GET", "/v1/organizations/current", { key: "phk_bogus_bogus" });
  assert.equal(denied.status, 401);
  assert.deepEqual(await records(denied.body.requestId), [{ type: "AuthFailure", result: "DENIED" }]);

  const missing = await tp.call("GET", "/v1/teams/00000000-0000-4000-8000-000000000000");
  assert.equal(missing.status, 404);
  assert.deepEqual(await records(missing.body.requestId), [{ type: "ApiRequest", result: "FAILURE" }]);

  // Exports of the audit log are recorded whatever auditReads says: who took a copy of the log, and with what filters.
  const exported = await tp.call("GET", "/v1/auditLogs/export?type=TeamCreate");
  assert.equal(exported.status, 200);
  assert.deepEqual(await records(String(exported.headers["x-request-id"])), [{ type: "ApiRequest", result: "SUCCESS" }]);
  const sinks = await tp.call("GET", "/v1/auditSinks");
  assert.equal(sinks.status, 200);
  const sink = (sinks.body as Array<{ name: string; auditSinkID: string }>).find((x) => x.name === "default");
  assert.ok(sink, "the organization's default file sink");
  const sinkExport = await tp.call("GET", `/v1/auditSinks/${sink.auditSinkID}/export`);
  assert.equal(sinkExport.status, 200);
  assert.deepEqual(await records(String(sinkExport.headers["x-request-id"])), [{ type: "ApiRequest", result: "SUCCESS" }]);
  assert.deepEqual(await records(String(sinks.headers["x-request-id"])), [], "the list itself is an ordinary read");

  const created = await tp.call("POST", "/v1/teams", { body: { name: "audited-anyway" } });
  assert.equal(created.status, 200);
  assert.deepEqual(await records(String(created.headers["x-request-id"])), [{ type: "TeamCreate", result: "SUCCESS" }]);
});
