import { test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { listBothPlanes, matches } from "../../src/audit/stream/listing.js";
import { decodeNextToken, encodeNextToken, parseFilters } from "../../src/audit/query.js";
import type { AuditLogView, AuditQuery } from "../../src/audit/types.js";
import type { StreamRecord } from "../../src/audit/stream/format.js";
import { ORG_A } from "./helpers.js";

const GROUP = "33333333-3333-4333-8333-333333333333";
const SINK = "55555555-5555-4555-8555-555555555555";

function view(i: number, over: Partial<AuditLogView> = {}): AuditLogView {
  return {
    auditID: randomUUID(), orgID: ORG_A, createdAt: new Date(1_800_000_000_000 + i * 1000).toISOString(), type: "ApiRequest", source: "API", result: "SUCCESS", reason: `r${i}`,
    userID: null, userEmail: "ada@example.com", userType: "Customer", resourceType: null, resourceID: null, sourceIP: null, requestID: null, attributes: {}, seq: String(i), ...over,
  };
}

/** The store: records with seq, newest first, `nextToken` = the last returned seq (as src/audit/query.ts). */
function storeOf(records: AuditLogView[]) {
  return {
    async list(q: AuditQuery) {
      const f = parseFilters(q);
      const below = q.nextToken === undefined ? Infinity : Number(decodeNextToken(q.nextToken));
      const all = records.filter((r) => Number(r.seq) < below && matches({ ...r }, f)).sort((a, b) => Number(b.seq) - Number(a.seq));
      const limit = q.limit ?? 100;
      const page = all.slice(0, limit);
      return all.length > limit ? { auditLogs: page, nextToken: encodeNextToken(page[page.length - 1]!.seq) } : { auditLogs: page };
    },
  };
}

/** The statement sink: stream lines 1..n; store records appear in it too (with their store seq) and must not be listed twice. */
function streamOf(records: StreamRecord[]) {
  return {
    statementSink: (org: string) => (org === ORG_A ? SINK : null),
    *recordsNewestFirst(_id: string, beforeSeq = Infinity) {
      for (let i = records.length; i >= 1; i--) if (i < beforeSeq) yield { streamSeq: i, record: records[i - 1]! };
    },
  };
}

async function all(o: Parameters<typeof listBothPlanes>[0], q: Omit<AuditQuery, "orgId">): Promise<AuditLogView[]> {
  const out: AuditLogView[] = [];
  let nextToken: string | undefined;
  for (let pages = 0; pages < 1000; pages++) {
    const r = await listBothPlanes(o, { orgId: ORG_A, ...q, ...(nextToken ? { nextToken } : {}) });
    out.push(...r.auditLogs);
    if (!r.nextToken) return out;
    nextToken = r.nextToken;
  }
  throw new Error("paging did not end");
}

test("listing merges store records and stream-only statement records newest first; paging returns each exactly once; filters hold on both sides", async () => {
  const store: AuditLogView[] = [];
  const stream: StreamRecord[] = [];
  for (let i = 1; i <= 120; i++) {
    const v = view(i * 2, i % 3 === 0 ? { type: "DatabaseLoginSuccess", source: "Gateway", attributes: { workspaceGroupID: GROUP, databaseUser: "app" } } : {});
    store.push(v);
    stream.push(v); // store records are in the stream too
    const st = view(i * 2 + 1, {
      type: "DatabaseStatement", source: "Gateway", seq: null as unknown as string, userEmail: null,
      result: i % 5 === 0 ? "FAILURE" : "SUCCESS", attributes: { workspaceGroupID: GROUP, databaseUser: i % 2 ? "app" : "etl", statementClasses: [i % 4 === 0 ? "WRITE" : "READ"] },
    });
    stream.push({ ...st, seq: null });
  }
  const o = { audit: storeOf(store), pipeline: streamOf(stream) };
  for (const limit of [1, 7, 50, 1000]) {
    const got = await all(o, { limit });
    assert.equal(got.length, 240, `limit ${limit}`);
    assert.equal(new Set(got.map((r) => r.auditID)).size, 240, "each exactly once");
    for (let i = 1; i < got.length; i++) assert.ok(got[i - 1]!.createdAt >= got[i]!.createdAt, "newest first");
  }
  const writes = await all(o, { class: "WRITE", limit: 3 });
  assert.equal(writes.length, 30);
  assert.ok(writes.every((r) => r.type === "DatabaseStatement"));
  const failedEtl = await all(o, { result: "FAILURE", user: "etl", limit: 5 });
  assert.deepEqual(failedEtl.map((r) => r.reason), stream.filter((r) => r.seq === null && r.result === "FAILURE" && (r.attributes as { databaseUser: string }).databaseUser === "etl").map((r) => r.reason).reverse());
  const logins = await all(o, { type: "DatabaseLoginSuccess", limit: 10 });
  assert.equal(logins.length, 40, "a type filter without statements reads the store alone");
  const group = await all(o, { workspaceGroupID: GROUP, startDate: new Date(1_800_000_000_000 + 100_000).toISOString(), limit: 9 });
  assert.ok(group.length > 0 && group.every((r) => (r.attributes as { workspaceGroupID?: string }).workspaceGroupID === GROUP && Date.parse(r.createdAt) >= 1_800_000_100_000));

  // A store-only token from an older page still works; garbage tokens are refused.
  const first = await listBothPlanes({ audit: storeOf(store), pipeline: { statementSink: () => null, recordsNewestFirst: streamOf(stream).recordsNewestFirst } }, { orgId: ORG_A, limit: 5 });
  assert.ok(first.nextToken && !first.nextToken.startsWith("m."));
  const cont = await listBothPlanes(o, { orgId: ORG_A, limit: 5, nextToken: first.nextToken });
  assert.ok(cont.auditLogs.every((r) => r.type !== "DatabaseStatement"));
  for (const bad of ["m.", "m.bm90IGpzb24", `m.${Buffer.from(JSON.stringify({ s: "x", j: 1 })).toString("base64url")}`, `m.${Buffer.from(JSON.stringify({ s: null, j: -1 })).toString("base64url")}`]) {
    await assert.rejects(listBothPlanes(o, { orgId: ORG_A, nextToken: bad }), (e: { code?: string }) => e.code === "ERR_VALIDATION", bad);
  }
});
