import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { Agent, request } from "undici";
import { startTestPlatform, type TestPlatform } from "../support/platform.js";
import type { AuditEvent } from "../../src/audit/index.js";

// GET /v1/auditLogs with both planes' filters, and GET /v1/auditLogs/export (NDJSON), over real HTTPS.
let tp: TestPlatform;
let orgId = "";
let ownerKeyId = "";
let memberKey = "";
let auditorKey = "";
const WS = randomUUID();
const GROUP = randomUUID();
const OTHER_ORG = randomUUID();
const ROWS = 3000;

/** A gateway record as gateway/server.ts writes it. */
function gw(i: number, org: string): AuditEvent {
  const classes = i % 10 === 0 ? ["DDL"] : i % 3 === 0 ? ["WRITE"] : ["READ"];
  return {
    type: i % 50 === 1 ? "DatabaseLoginFailure" : "DatabaseStatement", source: "Gateway", result: i % 50 === 1 ? "DENIED" : "SUCCESS", orgId: org,
    actor: { type: "databaseUser" }, resource: { type: "Workspace", id: WS }, sourceIp: "198.51.100.9", reason: `stmt ${i}`,
    attributes: { databaseUser: i % 2 === 0 ? "app" : "etl", workspaceGroupID: GROUP, database: "postgres", sessionID: "s1", protocol: "extended", statement: `select $1 -- ${"x".repeat(200)}`, statementClasses: classes, commands: ["SelectStmt"] },
  };
}

before(async () => {
  tp = await startTestPlatform();
  const who = await tp.call("GET", "/v1/auth/whoami");
  orgId = who.body.orgID;
  const keys = await tp.call("GET", "/v1/apiKeys");
  ownerKeyId = keys.body[0].apiKeyID;
  const expiresAt = new Date(Date.now() + 86_400_000).toISOString();
  for (const role of ["Member", "Auditor"] as const) {
    const r = await tp.call("POST", "/v1/apiKeys", { body: { name: `export-${role}`, role, expiresAt } });
    assert.equal(r.status, 201, r.text);
    if (role === "Member") memberKey = r.body.key;
    else auditorKey = r.body.key;
  }
  const done: Array<Promise<boolean>> = [];
  for (let i = 0; i < ROWS; i++) done.push(tp.platform.audit.record(gw(i, i % 7 === 6 ? OTHER_ORG : orgId)));
  assert.ok((await Promise.all(done)).every(Boolean));
});
after(async () => {
  await tp?.stop();
});

const ours = (f: (i: number) => boolean) => Array.from({ length: ROWS }, (_, i) => i).filter((i) => i % 7 !== 6 && f(i));

async function listAll(query: string): Promise<Array<{ seq: string; reason: string; type: string }>> {
  const out: Array<{ seq: string; reason: string; type: string }> = [];
  let token: string | undefined;
  do {
    const r = await tp.call("GET", `/v1/auditLogs?${query}&limit=400${token ? `&nextToken=${token}` : ""}`);
    assert.equal(r.status, 200, r.text);
    out.push(...r.body.auditLogs);
    token = r.body.nextToken;
  } while (token);
  return out;
}

test("GET /v1/auditLogs filters both planes by class, result, user, workspace and group, and pages each match once", async () => {
  const ddl = await listAll("class=DDL");
  assert.deepEqual(ddl.map((l) => l.reason), ours((i) => i % 10 === 0 && i % 50 !== 1).reverse().map((i) => `stmt ${i}`));
  const denied = await listAll(`result=DENIED&workspaceID=${WS}`);
  assert.deepEqual(denied.map((l) => l.reason), ours((i) => i % 50 === 1).reverse().map((i) => `stmt ${i}`));
  assert.ok(denied.every((l) => l.type === "DatabaseLoginFailure"));
  const etlWrites = await listAll(`user=etl&class=WRITE,DDL&workspaceGroupID=${GROUP}&source=Gateway`);
  assert.deepEqual(etlWrites.map((l) => l.reason), ours((i) => i % 2 === 1 && i % 50 !== 1 && (i % 3 === 0 || i % 10 === 0)).reverse().map((i) => `stmt ${i}`));
  assert.equal(new Set(etlWrites.map((l) => l.seq)).size, etlWrites.length);
  // The API's own records of this test (the owner key's reads) are there too, by the key's id.
  const mine = await tp.call("GET", `/v1/auditLogs?user=${ownerKeyId}&type=ApiRequest&limit=5`);
  assert.equal(mine.status, 200);
  assert.ok(mine.body.auditLogs.length > 0 && mine.body.auditLogs.every((l: { userID: string; source: string }) => l.userID === ownerKeyId && l.source === "API"));
});

test("a bad filter answers 400 ERR_VALIDATION naming it, an unknown one ERR_UNKNOWN_FIELD", async () => {
  const cases: Array<[string, string]> = [
    ["class=DML", "class"], ["result=ok", "result"], ["source=Web", "source"], [`workspaceID=${encodeURIComponent("1' or '1'='1")}`, "workspaceID"],
    ["workspaceGroupID=g1", "workspaceGroupID"], [`user=${"u".repeat(300)}`, "user"], [`type=${Array.from({ length: 21 }, (_, i) => `T${i}`).join(",")}`, "type"], ["class=READ%3BDROP", "class"],
  ];
  for (const [q, parameter] of cases) {
    for (const path of ["/v1/auditLogs", "/v1/auditLogs/export"]) {
      const r = await tp.call("GET", `${path}?${q}`);
      assert.equal(r.status, 400, `${path}?${q}: ${r.text}`);
      assert.match(String(r.headers["content-type"]), /^application\/problem\+json/);
      assert.equal(r.body.code, "ERR_VALIDATION");
      assert.match(r.body.message, new RegExp(`^${parameter} `), `${path}?${q}`);
    }
  }
  const tooLong = await tp.call("GET", `/v1/auditLogs/export?user=${"u".repeat(5000)}`);
  assert.equal(tooLong.status, 400);
  assert.equal(tooLong.body.code, "ERR_VALIDATION");
  for (const q of ["nextToken=MTA", "fields=seq", "firstName=Ada", "colour=red"]) {
    const r = await tp.call("GET", `/v1/auditLogs/export?${q}`);
    assert.equal(r.status, 400, q);
    assert.equal(r.body.code, "ERR_UNKNOWN_FIELD", q);
  }
});

/** The export as a stream of chunks, read as it arrives. */
async function exportRaw(query: string, key: string): Promise<{ status: number; headers: Record<string, unknown>; chunks: number; text: string }> {
  const agent = new Agent({ connect: { ca: tp.caPem } });
  try {
    const res = await request(`${tp.apiUrl}/v1/auditLogs/export${query ? `?${query}` : ""}`, { headers: { authorization: `Bearer ${key}` }, dispatcher: agent });
    let chunks = 0;
    let text = "";
    for await (const c of res.body) {
      chunks++;
      text += (c as Buffer).toString("utf8");
    }
    return { status: res.statusCode, headers: res.headers, chunks, text };
  } finally {
    await agent.close();
  }
}

test("GET /v1/auditLogs/export streams every match as NDJSON, oldest first, with links that check", async () => {
  const r = await exportRaw(`source=Gateway&workspaceID=${WS}`, auditorKey);
  assert.equal(r.status, 200, r.text.slice(0, 500));
  assert.equal(r.headers["content-type"], "application/x-ndjson");
  assert.equal(r.headers["content-length"], undefined, "streamed, not buffered");
  assert.equal(r.headers["cache-control"], "no-store");
  assert.ok(r.chunks > 1, `${r.chunks} chunk(s)`);
  assert.ok(r.text.endsWith("\n"));
  const lines = r.text.slice(0, -1).split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((l) => l.reason), ours(() => true).map((i) => `stmt ${i}`));
  const seqs = lines.map((l) => BigInt(l.seq));
  assert.ok(seqs.every((s, i) => i === 0 || s > seqs[i - 1]!), "oldest first");
  const first = lines[0];
  assert.deepEqual(Object.keys(first).sort(), ["actorType", "attributes", "auditID", "createdAt", "hash", "orgID", "prevHash", "reason", "requestID", "resourceID", "resourceType", "result", "seq", "source", "sourceIP", "type", "userEmail", "userID", "userType"]);
  assert.equal(first.actorType, "databaseUser");
  assert.equal(first.userType, "Customer");
  assert.match(first.hash, /^[0-9a-f]{64}$/);
  // Neighbours in the chain link: each record's prevHash is the hash of the one before it.
  let linked = 0;
  for (let i = 1; i < lines.length; i++) {
    if (seqs[i] === seqs[i - 1]! + 1n) {
      assert.equal(lines[i].prevHash, lines[i - 1].hash);
      linked++;
    }
  }
  assert.ok(linked > ROWS / 2);
  // The whole log, with the cap: the oldest records, the organization's bootstrap first.
  const capped = await exportRaw("limit=3", auditorKey);
  const three = capped.text.trim().split("\n").map((l) => JSON.parse(l));
  assert.equal(three.length, 3);
  assert.equal(three[0].seq, "1");
  assert.equal(three[0].prevHash, "0".repeat(64));
  // Another organization's records never leave.
  const all = (await exportRaw("", tp.ownerKey)).text.trim().split("\n").map((l) => JSON.parse(l));
  assert.ok(all.length > ROWS * 6 / 7);
  assert.ok(all.every((l) => l.orgID === orgId || l.orgID === null));
});

test("the export needs auditLogs:read: a Member key and no key are refused, and the refusal is audited", async () => {
  const member = await exportRaw("", memberKey);
  assert.equal(member.status, 403);
  const problem = JSON.parse(member.text);
  assert.equal(problem.code, "ERR_FORBIDDEN");
  assert.doesNotMatch(member.text, /stmt \d/);
  const rows = await tp.platform.db.selectFrom("audit_log").select(["type", "result", "attributes"]).where("request_id", "=", problem.requestId).execute();
  assert.equal(rows.length, 1);
  assert.equal(rows[0]!.result, "DENIED");
  assert.equal(rows[0]!.attributes["operation"], "exportAuditLogs");
  const anonymous = await tp.call("GET", "/v1/auditLogs/export", { key: null });
  assert.equal(anonymous.status, 401);
  assert.equal(anonymous.body.code, "ERR_UNAUTHENTICATED");
});

test("an export is recorded like other reads: who, and with which filters", async () => {
  const r = await tp.call("GET", `/v1/auditLogs/export?class=READ&user=app&startDate=2020-01-01`);
  assert.equal(r.status, 200);
  assert.ok(r.text.split("\n").length > 100);
  const rec = await tp.platform.db.selectFrom("audit_log").selectAll().where("request_id", "=", String(r.headers["x-request-id"])).executeTakeFirstOrThrow();
  assert.equal(rec.type, "ApiRequest");
  assert.equal(rec.result, "SUCCESS");
  assert.equal(rec.actor_id, ownerKeyId);
  assert.equal(rec.org_id, orgId);
  assert.equal(rec.attributes["operation"], "exportAuditLogs");
  assert.deepEqual(rec.attributes["filters"], { class: "READ", user: "app", startDate: "2020-01-01" });
  // The record comes after the export's cut, so the export did not contain it.
  assert.ok(!r.text.includes(rec.id));
});

test("the OpenAPI document describes the export: NDJSON lines, the filters, no paging", async () => {
  const doc = (await tp.call("GET", "/v1/openapi.json", { key: null })).body;
  const op = doc.paths["/v1/auditLogs/export"].get;
  assert.equal(op["x-parhelion-permission"], "auditLogs:read");
  assert.deepEqual(Object.keys(op.responses["200"].content), ["application/x-ndjson"]);
  const line = op.responses["200"].content["application/x-ndjson"].schema;
  for (const f of ["seq", "auditID", "prevHash", "hash", "actorType", "attributes"]) assert.ok(line.properties[f], f);
  const params = op.parameters.map((p: { name: string }) => p.name).sort();
  assert.deepEqual(params, ["class", "endDate", "limit", "result", "source", "startDate", "type", "user", "workspaceGroupID", "workspaceID"]);
  const list = doc.paths["/v1/auditLogs"].get;
  for (const p of ["class", "result", "user", "workspaceID", "workspaceGroupID", "nextToken", "fields"]) assert.ok(list.parameters.some((x: { name: string }) => x.name === p), p);
  assert.ok(list.responses["200"].content["application/json"]);
});

test("a store failure midway aborts the export: the client sees an error, never a clean but short NDJSON", async () => {
  const audit = tp.platform.audit as { export: typeof tp.platform.audit.export };
  const some: unknown[] = [];
  for await (const r of await tp.platform.audit.export({ orgId, source: "Gateway", limit: 400 })) some.push(r);
  audit.export = async () => (async function* () {
    yield* some;
    throw new Error("connection to the store lost");
  })() as never;
  try {
    await assert.rejects(exportRaw("", auditorKey), (err: Error) => /terminated|closed|socket|aborted/i.test(`${err.message} ${(err.cause as Error | undefined)?.message ?? ""}`));
    // Failing before the first byte is an ordinary (masked) problem answer.
    audit.export = async () => (async function* () {
      throw new Error("connection to the store lost");
    })() as never;
    const early = await exportRaw("", auditorKey);
    assert.equal(early.status, 500);
    assert.equal(JSON.parse(early.text).code, "ERR_INTERNAL");
  } finally {
    delete (audit as { export?: unknown }).export;
  }
  const r = await exportRaw("limit=2", auditorKey);
  assert.equal(r.status, 200);
  assert.equal(r.text.trim().split("\n").length, 2);
});
