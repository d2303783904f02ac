import { Readable } from "node:stream";
import { z } from "zod";
import { listBothPlanes } from "../../audit/stream/listing.js";
import { defineRoute, StreamBody } from "../route.js";
import { heliosUnsupported } from "../schemas.js";

const AuditLogView = z.object({
  auditID: z.string(), orgID: z.string().nullable(), createdAt: z.string(), type: z.string(), source: z.string(), result: z.string(), reason: z.string(),
  userID: z.string().nullable(), userEmail: z.string().nullable(), userType: z.string(), resourceType: z.string().nullable(), resourceID: z.string().nullable(),
  sourceIP: z.string().nullable(), requestID: z.string().nullable(), attributes: z.record(z.string(), z.unknown()), seq: z.string(),
});

// Bounds only: src/audit/query.ts checks each value and names the parameter in its ERR_VALIDATION.
const Filters = {
  startDate: z.string().max(64).optional().describe("RFC 3339 time or calendar date (UTC): lower bound, inclusive."),
  endDate: z.string().max(64).optional().describe("RFC 3339 time or calendar date (UTC): upper bound, inclusive."),
  type: z.string().max(6000).optional().describe("Event type, or a comma-separated list of up to 20 (any of them): Login, ApiRequest, DatabaseLoginFailure, DatabaseStatement, ..."),
  source: z.string().max(200).optional().describe("Portal, API, CLI, System or Gateway, or a comma-separated list."),
  result: z.string().max(200).optional().describe("SUCCESS, DENIED or FAILURE, or a comma-separated list."),
  user: z.string().max(1000).optional().describe("A user or API key ID (the actor); otherwise an e-mail (any case) or a database user name (exact)."),
  workspaceID: z.string().max(64).optional().describe("Records about this workspace: its API calls and its gateway sessions."),
  workspaceGroupID: z.string().max(64).optional().describe("Records about this workspace group, its workspaces, and its gateway traffic."),
  class: z.string().max(200).optional().describe("Statement class READ, WRITE, FUNCTION, ROLE, DDL or MISC, or a comma-separated list: DatabaseStatement records holding any of them."),
};

/** NDJSON: one record per line, gathered into chunks of about 64 KiB. */
async function* ndjson(records: AsyncIterable<unknown>): AsyncGenerator<string> {
  let chunk = "";
  for await (const r of records) {
    chunk += JSON.stringify(r) + "\n";
    if (chunk.length >= 65_536) {
      yield chunk;
      chunk = "";
    }
  }
  if (chunk.length > 0) yield chunk;
}

export const auditRoutes = [
  defineRoute({
    method: "GET", path: "/v1/auditLogs", operationId: "listAuditLogs", tag: "Audit",
    summary: "Audit records of both planes (API and gateway), newest first, filtered and paged with nextToken.", access: "auditLogs:read",
    query: z.object({
      ...Filters,
      limit: z.coerce.number().int().min(1).max(1000).optional().describe("Page size, 1-1000 (default 100)."),
      nextToken: z.string().max(512).optional().describe("The nextToken of the previous page (same filters)."),
      firstName: heliosUnsupported("firstName"), lastName: heliosUnsupported("lastName"),
    }).strict(),
    response: z.object({ auditLogs: z.array(AuditLogView), nextToken: z.string().optional() }),
    handler: async ({ query, principal, services }) => {
      const { firstName: _f, lastName: _l, ...q } = query;
      // The store and, for statement records held only there, the organization's statement sink (src/audit/stream/listing.ts).
      return listBothPlanes({ audit: services.audit, pipeline: services.auditSinks.pipeline }, { orgId: principal!.orgId, ...q });
    },
  }),
  defineRoute({
    method: "GET", path: "/v1/auditLogs/export", operationId: "exportAuditLogs", tag: "Audit",
    summary: "Every matching audit record as of the request, oldest first, as NDJSON (one record per line, with its chain hashes).", access: "auditLogs:read",
    produces: "application/x-ndjson",
    alwaysAudited: true,
    query: z.object({
      ...Filters,
      limit: z.coerce.number().int().min(1).max(1_000_000_000).optional().describe("Stop after this many records (default: no cap)."),
    }).strict(),
    response: AuditLogView.extend({
      actorType: z.string().describe("The actor's type as hashed (user, apiKey, anonymous, system, databaseUser): userType folds some together."),
      prevHash: z.string().describe("Hex SHA-256 of the previous record in the chain (64 zeros for seq 1)."),
      hash: z.string().describe("Hex SHA-256 of prevHash and this record's canonical form (src/audit/DESIGN.md, \"The hash chain\")."),
    }),
    handler: async ({ query, principal, services, audit }) => {
      audit.attributes = { filters: query }; // who exported what
      const records = await services.audit.export({ orgId: principal!.orgId, ...query });
      return new StreamBody(Readable.from(ndjson(records), { objectMode: false, highWaterMark: 65_536 }));
    },
  }),
  defineRoute({
    method: "GET", path: "/v1/auditLogs/verify", operationId: "verifyAuditLogs", tag: "Audit",
    summary: "Re-computes the hash chain and names every changed, inserted or deleted record.", access: "auditLogs:read",
    response: z.object({ ok: z.boolean(), checked: z.number(), headSeq: z.string().nullable(), headHash: z.string().nullable(), problems: z.array(z.object({ seq: z.string(), kind: z.string(), detail: z.string() })) }),
    handler: async ({ services }) => services.audit.verify(),
  }),
];
