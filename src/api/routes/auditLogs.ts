import { z } from "zod";
import { defineRoute } from "../route.js";
import { heliosUnsupported } from "../schemas.js";

const AuditLogView = z.object({
  auditID: z.string(), orgID: z.string().nullable(), createdAt: z.string(), type: z.string(), source: z.string(), result: z.string(), reason: z.string(),
  userID: z.string().nullable(), userEmail: z.string().nullable(), userType: z.string(), resourceType: z.string().nullable(), resourceID: z.string().nullable(),
  sourceIP: z.string().nullable(), requestID: z.string().nullable(), attributes: z.record(z.string(), z.unknown()), seq: z.string(),
});

export const auditRoutes = [
  defineRoute({
    method: "GET", path: "/v1/auditLogs", operationId: "listAuditLogs", tag: "Audit",
    summary: "Audit records, newest first, filtered and paged with nextToken.", access: "auditLogs:read",
    query: z.object({
      startDate: z.string().max(64).optional().describe("RFC 3339 lower bound (inclusive)."),
      endDate: z.string().max(64).optional().describe("RFC 3339 upper bound (inclusive)."),
      type: z.string().max(128).optional(), source: z.string().max(64).optional(),
      limit: z.coerce.number().int().min(1).max(1000).optional(), nextToken: z.string().max(512).optional(),
      firstName: heliosUnsupported("firstName"), lastName: heliosUnsupported("lastName"),
    }).strict(),
    response: z.object({ auditLogs: z.array(AuditLogView), nextToken: z.string().optional() }),
    handler: async ({ query, principal, services }) => {
      const { firstName: _f, lastName: _l, ...q } = query;
      return services.audit.list({ orgId: principal!.orgId, ...q });
    },
  }),
  defineRoute({
    method: "GET", path: "/v1/auditLogs/verify", operationId: "verifyAuditLogs", tag: "Audit",
    summary: "Re-computes the hash chain and names every changed, inserted or deleted record.", access: "auditLogs:read",
    response: z.object({ ok: z.boolean(), checked: z.number(), headSeq: z.string().nullable(), headHash: z.string().nullable(), problems: z.array(z.object({ seq: z.string(), kind: z.string(), detail: z.string() })) }),
    handler: async ({ services }) => services.audit.verify(),
  }),
];
