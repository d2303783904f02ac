import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestStore } from "../support/pg.js";
import { createAuditLog, type AuditLog, type AuditQuery } from "../../src/audit/index.js";
import { ParhelionError } from "../../src/lib/errors.js";
import { ev, silentLogger, ORG_A, ORG_B } from "./helpers.js";

let store: Awaited<ReturnType<typeof startTestStore>>;
let audit: AuditLog;
const USER = "33333333-3333-4333-8333-333333333333";
const KEY = "44444444-4444-4444-8444-444444444444";

// 60 records for ORG_A, one per day from 2024-01-01, alternating types and sources; 5 for ORG_B.
before(async () => {
  store = await startTestStore();
  let now = Date.UTC(2024, 0, 1, 12);
  const writer = createAuditLog({ db: store.db, logger: silentLogger(), clock: () => new Date(now) });
  for (let i = 0; i < 60; i++) {
    const apiKey = i % 3 === 0;
    assert.equal(
      await writer.record(ev({
        type: i % 2 === 0 ? "Login" : "ApiKeyCreate",
        source: apiKey ? "API" : "Portal",
        actor: apiKey ? { type: "apiKey", id: KEY } : { type: "user", id: USER, email: "ada@example.com" },
        reason: `a${i}`,
      })),
      true,
    );
    now += 86_400_000;
  }
  for (let i = 0; i < 5; i++) assert.equal(await writer.record(ev({ orgId: ORG_B, reason: `b${i}` })), true);
  assert.equal(await writer.record(ev({ orgId: ORG_A, type: "Maintenance", source: "System", actor: { type: "system" }, resource: null, reason: "sys" })), true);
  assert.equal(await writer.record(ev({ orgId: ORG_A, type: "AuthFailure", result: "DENIED", actor: { type: "anonymous", email: "who@x" }, reason: "anon" })), true);
  await writer.close();
  audit = createAuditLog({ db: store.db, logger: silentLogger() });
});
after(async () => {
  await audit?.close();
  await store?.stop();
});

async function all(q: Omit<AuditQuery, "nextToken">): Promise<string[]> {
  const out: string[] = [];
  let nextToken: string | undefined;
  let pages = 0;
  do {
    const page = await audit.list({ ...q, ...(nextToken ? { nextToken } : {}) });
    assert.ok(page.auditLogs.length <= (q.limit ?? 100));
    out.push(...page.auditLogs.map((l) => l.reason));
    nextToken = page.nextToken;
    assert.ok(++pages < 100, "paging does not end");
  } while (nextToken);
  return out;
}

test("list returns one organization's records newest first, in the Helios shape", async () => {
  const { auditLogs, nextToken } = await audit.list({ orgId: ORG_A });
  assert.equal(nextToken, undefined);
  assert.equal(auditLogs.length, 62);
  assert.deepEqual(auditLogs.slice(0, 3).map((l) => l.reason), ["anon", "sys", "a59"]);
  assert.ok(auditLogs.every((l) => l.orgID === ORG_A));
  const seqs = auditLogs.map((l) => BigInt(l.seq));
  assert.ok(seqs.every((s, i) => i === 0 || s < seqs[i - 1]!), "not newest first");
  const a59 = auditLogs[2]!;
  assert.deepEqual(Object.keys(a59).sort(), ["attributes", "auditID", "createdAt", "orgID", "reason", "requestID", "resourceID", "resourceType", "result", "seq", "source", "sourceIP", "type", "userEmail", "userID", "userType"]);
  assert.equal(a59.createdAt, "2024-02-29T12:00:00.000Z");
  assert.equal(a59.type, "ApiKeyCreate");
  assert.equal(a59.userID, USER);
  assert.equal(a59.userEmail, "ada@example.com");
  assert.equal(a59.sourceIP, "192.0.2.7");
  assert.equal(a59.resourceType, "Organization");
  assert.deepEqual(a59.attributes, { mfa: false, n: 1 });
});

test("userType maps actor.type: user Customer, apiKey Automation, system System, anonymous Unspecified", async () => {
  const { auditLogs } = await audit.list({ orgId: ORG_A, limit: 5 });
  const byReason = new Map(auditLogs.map((l) => [l.reason, l]));
  assert.equal(byReason.get("anon")?.userType, "Unspecified");
  assert.equal(byReason.get("anon")?.userID, null);
  assert.equal(byReason.get("sys")?.userType, "System");
  assert.equal(byReason.get("sys")?.resourceType, null);
  assert.equal(byReason.get("a59")?.userType, "Customer");
  assert.equal(byReason.get("a57")?.userType, "Automation");
  assert.equal(byReason.get("a57")?.userID, KEY);
});

test("list filters by type, source and date range (both ends inclusive, as in Helios)", async () => {
  const logins = await all({ orgId: ORG_A, type: "Login" });
  assert.equal(logins.length, 30);
  assert.ok(logins.every((r) => Number(r.slice(1)) % 2 === 0));
  const api = await all({ orgId: ORG_A, source: "API" });
  assert.equal(api.length, 20);
  assert.ok(api.every((r) => Number(r.slice(1)) % 3 === 0));
  const both = await all({ orgId: ORG_A, source: "API", type: "Login" });
  assert.deepEqual(both, ["a54", "a48", "a42", "a36", "a30", "a24", "a18", "a12", "a6", "a0"]);
  // Days 10..20 (2024-01-11 12:00 .. 2024-01-21 12:00, both ends included).
  const jan = await all({ orgId: ORG_A, startDate: "2024-01-11T12:00:00Z", endDate: "2024-01-21T12:00:00Z" });
  assert.deepEqual(jan, ["a20", "a19", "a18", "a17", "a16", "a15", "a14", "a13", "a12", "a11", "a10"]);
  assert.deepEqual(await all({ orgId: ORG_A, startDate: "2024-01-01", endDate: "2024-01-02" }), ["a0"]);
  assert.deepEqual(await all({ orgId: ORG_A, startDate: "2024-02-29T13:00:00+01:00", endDate: "2024-03-01T00:00:00Z" }), ["a59"]);
  assert.deepEqual(await all({ orgId: ORG_B }), ["b4", "b3", "b2", "b1", "b0"]);
  assert.deepEqual(await all({ orgId: "55555555-5555-4555-8555-555555555555" }), []);
});

test("paging with nextToken returns every record exactly once", async () => {
  for (const limit of [1, 7, 61, 62]) {
    const got = await all({ orgId: ORG_A, limit });
    assert.equal(got.length, 62, `limit ${limit}`);
    assert.equal(new Set(got).size, 62, `limit ${limit}`);
  }
  const filtered = await all({ orgId: ORG_A, type: "Login", limit: 4 });
  assert.equal(filtered.length, 30);
  assert.equal(new Set(filtered).size, 30);
  // The last full page carries no token when nothing follows.
  const exact = await audit.list({ orgId: ORG_B, limit: 5 });
  assert.equal(exact.auditLogs.length, 5);
  assert.equal(exact.nextToken, undefined);
  const more = await audit.list({ orgId: ORG_B, limit: 4 });
  assert.equal(typeof more.nextToken, "string");
  assert.match(more.nextToken!, /^[A-Za-z0-9_-]+$/);
});

function rejects(q: AuditQuery, parameter: string) {
  return assert.rejects(audit.list(q), (err: unknown) => {
    assert.ok(err instanceof ParhelionError);
    assert.equal(err.code, "ERR_VALIDATION");
    assert.equal(err.details?.parameter, parameter);
    assert.match(err.message, new RegExp(`^${parameter}`));
    return true;
  }, parameter);
}

test("a bad nextToken is ERR_VALIDATION naming nextToken", async () => {
  const enc = (s: string) => Buffer.from(s).toString("base64url");
  for (const t of ["", "!!", "not base64", enc("abc"), enc("0"), enc("-5"), enc("1 or 1=1"), enc("99999999999999999999"), enc("01"), "MTA=", "x".repeat(100)]) {
    await rejects({ orgId: ORG_A, nextToken: t }, "nextToken");
  }
});

test("bad dates, limits, sources and orgIds are ERR_VALIDATION naming the parameter", async () => {
  for (const d of ["yesterday", "2024-13-01", "2024-02-30", "2024-01-01T25:00:00Z", "2024-01-01T10:00:00", "1704067200", "2024-01-01'; drop table audit_log; --"]) {
    await rejects({ orgId: ORG_A, startDate: d }, "startDate");
    await rejects({ orgId: ORG_A, endDate: d }, "endDate");
  }
  await rejects({ orgId: ORG_A, startDate: "2024-02-01", endDate: "2024-01-01" }, "startDate");
  for (const limit of [0, -1, 1001, 1.5, Number.NaN, "10" as never]) await rejects({ orgId: ORG_A, limit }, "limit");
  await rejects({ orgId: ORG_A, source: "Web" }, "source");
  await rejects({ orgId: ORG_A, type: "" }, "type");
  await rejects({ orgId: "org-a" }, "orgId");
});

test("filter values are parameters, not SQL: an injection attempt in type just matches nothing", async () => {
  const page = await audit.list({ orgId: ORG_A, type: "Login' or '1'='1" });
  assert.deepEqual(page.auditLogs, []);
  const v = await audit.verify();
  assert.equal(v.ok, true);
  assert.equal(v.checked, 67);
});
