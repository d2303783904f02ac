/**
 * `GET /v1/auditLogs` over both places records live: the metadata store (every control-plane and gateway
 * session record, and statement records of organizations without a file sink) and the organization's
 * statement sink — its oldest enabled organization-wide file sink — which alone holds statement records when
 * the organization has one (pipeline.ts `publishDirect`). Pages merge the two newest first by `createdAt`; the
 * `nextToken` carries a cursor for each (`m.` + base64url JSON). A store-only token (from an older page) still
 * works. The stream side is read newest frame first and filtered in memory: a page costs the frames read to
 * fill it, bounded below by `startDate` (frame times are in the clear part of each frame).
 */
import { ParhelionError } from "../../lib/errors.js";
import { decodeNextToken, encodeNextToken, parseFilters, type Filters } from "../query.js";
import type { AuditLog, AuditLogView, AuditQuery } from "../types.js";
import type { StreamRecord } from "./format.js";
import { STREAM_ONLY_TYPES, type AuditPipeline } from "./pipeline.js";

const DEFAULT_LIMIT = 100;
/** Stream lines examined per page at most, so a filter that matches nothing cannot make one request read everything. */
export const MAX_STREAM_SCAN = 200_000;

interface Cursor {
  /** Store: the previous store token, null to start, "end" when exhausted. */
  s: string | null;
  /** Stream: below this stream seq, null to start, "end" when exhausted. */
  j: number | null | "end";
}

function badToken(): ParhelionError {
  return new ParhelionError("ERR_VALIDATION", "nextToken is invalid", { details: { parameter: "nextToken" } });
}

function decode(token: string | undefined): Cursor {
  if (token === undefined) return { s: null, j: null };
  if (!token.startsWith("m.")) {
    decodeNextToken(token); // throws on garbage
    return { s: token, j: "end" };
  }
  let c: unknown;
  try {
    c = JSON.parse(Buffer.from(token.slice(2), "base64url").toString("utf8"));
  } catch {
    throw badToken();
  }
  const o = c as Partial<Cursor>;
  if (o === null || typeof o !== "object") throw badToken();
  if (!(o.s === null || o.s === "end" || (typeof o.s === "string" && (decodeNextToken(o.s), true)))) throw badToken();
  if (!(o.j === null || o.j === "end" || (typeof o.j === "number" && Number.isSafeInteger(o.j) && o.j > 0))) throw badToken();
  return { s: o.s ?? null, j: o.j ?? null };
}

function encode(c: Cursor): string {
  return `m.${Buffer.from(JSON.stringify(c), "utf8").toString("base64url")}`;
}

/** Whether a stream record matches the filters (the same meaning as the store query's SQL). */
export function matches(r: StreamRecord, f: Filters): boolean {
  const t = Date.parse(r.createdAt);
  if (f.start && t < f.start.getTime()) return false;
  if (f.end && t > f.end.getTime()) return false;
  if (f.types && !f.types.includes(r.type)) return false;
  if (f.sources && !f.sources.includes(r.source)) return false;
  if (f.results && !f.results.includes(r.result)) return false;
  const a = r.attributes as { statementClasses?: unknown; databaseUser?: unknown; workspaceGroupID?: unknown };
  if (f.classes && !(r.type === "DatabaseStatement" && Array.isArray(a.statementClasses) && a.statementClasses.some((c) => f.classes!.includes(String(c))))) return false;
  if (f.user && "id" in f.user && r.userID?.toLowerCase() !== f.user.id) return false;
  if (f.user && "name" in f.user && !(r.userEmail?.toLowerCase() === f.user.name.toLowerCase() || a.databaseUser === f.user.name)) return false;
  if (f.workspaceId !== undefined && !(r.resourceType === "Workspace" && r.resourceID?.toLowerCase() === f.workspaceId)) return false;
  if (f.workspaceGroupId !== undefined && !(a.workspaceGroupID === f.workspaceGroupId || (r.resourceType === "WorkspaceGroup" && r.resourceID?.toLowerCase() === f.workspaceGroupId))) return false;
  return true;
}

export async function listBothPlanes(o: { audit: Pick<AuditLog, "list">; pipeline: Pick<AuditPipeline, "statementSink" | "recordsNewestFirst"> }, q: AuditQuery): Promise<{ auditLogs: AuditLogView[]; nextToken?: string }> {
  const filters = parseFilters(q);
  const sinkId = o.pipeline.statementSink(filters.orgId);
  const statementsWanted = !filters.types || filters.types.some((t) => STREAM_ONLY_TYPES.has(t));
  if (sinkId === null || !statementsWanted) {
    if (q.nextToken?.startsWith("m.")) {
      const c = decode(q.nextToken);
      if (c.s === "end") return { auditLogs: [] };
      return o.audit.list({ ...q, ...(c.s === null ? { nextToken: undefined } : { nextToken: c.s }) } as AuditQuery);
    }
    return o.audit.list(q);
  }
  const limit = q.limit ?? DEFAULT_LIMIT;
  const cur = decode(q.nextToken);

  // Store side: one page from its cursor.
  let store: AuditLogView[] = [];
  let storeMore = false;
  if (cur.s !== "end") {
    const { nextToken: _t, ...rest } = q;
    const page = await o.audit.list({ ...rest, limit, ...(cur.s !== null ? { nextToken: cur.s } : {}) } as AuditQuery);
    store = page.auditLogs;
    storeMore = page.nextToken !== undefined;
  }

  // Stream side: statement records held only in the stream (store records there are in the store side already).
  const stream: Array<{ streamSeq: number; record: AuditLogView }> = [];
  let streamMore = false;
  let lastExamined: number | null = null;
  if (cur.j !== "end") {
    let scanned = 0;
    for (const x of o.pipeline.recordsNewestFirst(sinkId, cur.j ?? Infinity, filters.start ? filters.start.getTime() - 60_000 : -Infinity)) {
      if (++scanned > MAX_STREAM_SCAN) {
        streamMore = true;
        break;
      }
      lastExamined = x.streamSeq;
      if (x.record.seq !== null || !matches(x.record, filters)) continue;
      if (stream.length === limit) {
        streamMore = true;
        break;
      }
      stream.push({ streamSeq: x.streamSeq, record: x.record as unknown as AuditLogView });
    }
  }

  // Merge newest first; ties: the store's first.
  const out: AuditLogView[] = [];
  let si = 0;
  let ji = 0;
  while (out.length < limit && (si < store.length || ji < stream.length)) {
    const a = store[si];
    const b = stream[ji];
    if (a && (!b || a.createdAt >= b.record.createdAt)) {
      out.push(a);
      si++;
    } else if (b) {
      out.push(b.record);
      ji++;
    }
  }
  const lastStore = si > 0 ? store[si - 1] : undefined;
  const nextS: Cursor["s"] = si < store.length || storeMore ? (lastStore ? encodeNextToken(lastStore.seq) : cur.s) : "end";
  const lastJ = ji > 0 ? stream[ji - 1] : undefined;
  // Every stream match taken and the scan stopped at its bound: go on below the last line examined.
  const nextJ: Cursor["j"] = ji < stream.length ? (lastJ ? lastJ.streamSeq : cur.j) : streamMore ? (stream.length < limit && lastExamined !== null ? lastExamined : (lastJ?.streamSeq ?? cur.j)) : "end";
  return nextS === "end" && nextJ === "end" ? { auditLogs: out } : { auditLogs: out, nextToken: encode({ s: nextS, j: nextJ }) };
}
