import { isUuid } from "../lib/ids.js";
import type { Db } from "../store/db.js";
import { ParhelionError } from "../lib/errors.js";
import { AUDIT_SOURCES, type ActorType, type AuditLogView, type AuditQuery, type AuditResult, type HeliosUserType } from "./types.js";

export const DEFAULT_LIMIT = 100;
export const MAX_LIMIT = 1000;

// A calendar date (UTC midnight) or a date-time with an explicit zone; no local-time guessing.
const ISO_RE = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2}))?$/;
const SEQ_RE = /^[1-9][0-9]{0,18}$/;
const INT64_MAX = 9223372036854775807n;

const USER_TYPES: Record<ActorType, HeliosUserType> = {
  user: "Customer",
  apiKey: "Automation",
  system: "System",
  anonymous: "Unspecified",
  databaseUser: "Customer",
};

function bad(param: string, why: string): ParhelionError {
  return new ParhelionError("ERR_VALIDATION", `${param} ${why}`, { details: { parameter: param } });
}

/** Parses an ISO 8601 date or date-time (with zone); throws ERR_VALIDATION naming `param`. */
export function parseDateParam(v: unknown, param: string): Date {
  if (typeof v !== "string") throw bad(param, "must be an ISO 8601 date-time string");
  const m = ISO_RE.exec(v);
  const ms = m ? Date.parse(v) : NaN;
  if (!m || Number.isNaN(ms)) throw bad(param, "must be an ISO 8601 date-time, e.g. 2024-05-01T00:00:00Z");
  // Date.parse rolls 2024-02-30 over to March; refuse dates that do not exist.
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const day = new Date(Date.UTC(y, mo - 1, d));
  if (day.getUTCFullYear() !== y || day.getUTCMonth() !== mo - 1 || day.getUTCDate() !== d) throw bad(param, "is not a real calendar date");
  if ((m[4] !== undefined && Number(m[4]) > 23) || (m[5] !== undefined && Number(m[5]) > 59) || (m[6] !== undefined && Number(m[6]) > 59)) throw bad(param, "has an out-of-range time");
  return new Date(ms);
}

/** The opaque paging token: base64url of the last returned seq. */
export function encodeNextToken(seq: string): string {
  return Buffer.from(seq, "utf8").toString("base64url");
}

/** Decodes a paging token to a seq; throws ERR_VALIDATION naming nextToken. */
export function decodeNextToken(token: unknown): bigint {
  if (typeof token !== "string" || !/^[A-Za-z0-9_-]{1,32}$/.test(token)) throw bad("nextToken", "is invalid");
  const seq = Buffer.from(token, "base64url").toString("utf8");
  if (!SEQ_RE.test(seq) || encodeNextToken(seq) !== token) throw bad("nextToken", "is invalid");
  const n = BigInt(seq);
  if (n > INT64_MAX) throw bad("nextToken", "is invalid");
  return n;
}

/** Audit records of one organization, newest (highest seq) first, keyset-paged by seq. */
export async function listAuditLogs(db: Db, q: AuditQuery): Promise<{ auditLogs: AuditLogView[]; nextToken?: string }> {
  if (q === null || typeof q !== "object") throw bad("query", "must be an object");
  if (!isUuid(q.orgId)) throw bad("orgId", "must be a UUID");
  const start = q.startDate === undefined ? undefined : parseDateParam(q.startDate, "startDate");
  const end = q.endDate === undefined ? undefined : parseDateParam(q.endDate, "endDate");
  if (start && end && start.getTime() > end.getTime()) throw bad("startDate", "must not be after endDate");
  if (q.type !== undefined && (typeof q.type !== "string" || q.type.length === 0 || q.type.length > 200)) throw bad("type", "must be a non-empty string of at most 200 characters");
  if (q.source !== undefined && (typeof q.source !== "string" || !(AUDIT_SOURCES as readonly string[]).includes(q.source))) throw bad("source", `must be one of ${AUDIT_SOURCES.join(", ")}`);
  const limit = q.limit ?? DEFAULT_LIMIT;
  if (typeof limit !== "number" || !Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT) throw bad("limit", `must be an integer in 1..${MAX_LIMIT}`);
  const before = q.nextToken === undefined ? undefined : decodeNextToken(q.nextToken);

  // Every value is a bound parameter; nothing from the query is spliced into SQL text.
  // Records without an organization (anonymous sign-in attempts, platform events) belong to the install
  // and are shown to every organization's auditors. The two sources are separate index-ordered branches
  // (org_id, seq DESC) merged by a UNION ALL: an `org_id = $1 OR org_id IS NULL` filter makes the planner
  // scan and sort the whole table once its statistics lag behind a fast-growing log.
  const branch = (org: string | null) => {
    let sel = db
      .selectFrom("audit_log")
      .select(["seq", "id", "org_id", "created_at", "type", "source", "result", "actor_type", "actor_id", "actor_email", "resource_type", "resource_id", "source_ip", "request_id", "reason", "attributes"])
      .where("org_id", org === null ? "is" : "=", org);
    if (start) sel = sel.where("created_at", ">=", start);
    if (end) sel = sel.where("created_at", "<=", end); // Helios: endDate is inclusive
    if (q.type !== undefined) sel = sel.where("type", "=", q.type);
    if (q.source !== undefined) sel = sel.where("source", "=", q.source);
    if (before !== undefined) sel = sel.where("seq", "<", before.toString());
    return sel.orderBy("seq", "desc").limit(limit + 1);
  };
  const rows = await db
    .selectFrom(branch(q.orgId.toLowerCase()).as("own"))
    .selectAll()
    .unionAll(db.selectFrom(branch(null).as("shared")).selectAll())
    .orderBy("seq", "desc")
    .limit(limit + 1)
    .execute();

  const page = rows.slice(0, limit);
  const auditLogs: AuditLogView[] = page.map((r) => ({
    auditID: r.id,
    orgID: r.org_id,
    createdAt: r.created_at.toISOString(),
    type: r.type,
    source: r.source,
    result: r.result as AuditResult,
    reason: r.reason,
    userID: r.actor_id,
    userEmail: r.actor_email,
    userType: USER_TYPES[r.actor_type as ActorType] ?? "Unspecified",
    resourceType: r.resource_type,
    resourceID: r.resource_id,
    sourceIP: r.source_ip,
    requestID: r.request_id,
    attributes: r.attributes,
    seq: String(r.seq),
  }));
  const last = page[page.length - 1];
  return rows.length > limit && last ? { auditLogs, nextToken: encodeNextToken(String(last.seq)) } : { auditLogs };
}
