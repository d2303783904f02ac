import { sql, type Expression, type ExpressionBuilder, type SqlBool } from "kysely";
import { isUuid } from "../lib/ids.js";
import type { Database, Db } from "../store/db.js";
import { ParhelionError } from "../lib/errors.js";
import { STATEMENT_CLASSES } from "./sql/classify.js";
import { AUDIT_RESULTS, AUDIT_SOURCES, HELIOS_USER_TYPES, type ActorType, type AuditLogView, type AuditQuery, type AuditResult } from "./types.js";

export const DEFAULT_LIMIT = 100;
export const MAX_LIMIT = 1000;
/** Largest `limit` an export accepts (a cap on the records streamed; none by default). */
export const MAX_EXPORT_LIMIT = 1_000_000_000;
/** Rows an export reads per query: memory stays at one page however many rows match. */
export const EXPORT_PAGE = 500;
/** Most values a comma-separated filter (type, source, result, class) may list. */
export const MAX_FILTER_VALUES = 20;
/** Longest event type, user reference (e-mail, database user name) a filter accepts. */
export const MAX_FILTER_TEXT = 256;

/**
 * One record as the export streams it: the list's shape plus what re-computing its hash needs that the
 * Helios shape folds away (`actorType`, which `userType` maps many to one) and the chain fields (hex).
 */
export type AuditExportRecord = AuditLogView & { actorType: ActorType; prevHash: string; hash: string };

// A calendar date (UTC midnight) or a date-time with an explicit zone; no local-time guessing.
const ISO_RE = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2}))?$/;
const SEQ_RE = /^[1-9][0-9]{0,18}$/;
const INT64_MAX = 9223372036854775807n;
// Free-text filter values are bound parameters whatever they hold; control characters are refused
// only because no stored type, e-mail or role name has them (the writer keeps them, but no caller sends them).
const CONTROL_RE = /[\u0000-\u001f\u007f]/;

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

/** What a query selects, validated and normalized. */
export interface Filters {
  orgId: string;
  start?: Date;
  end?: Date;
  types?: string[];
  sources?: string[];
  results?: string[];
  classes?: string[];
  /** An actor id (UUID, lower case) or a name: an e-mail or a database user name. */
  user?: { id: string } | { name: string };
  workspaceId?: string;
  workspaceGroupId?: string;
}

/** A comma-separated list of 1..MAX_FILTER_VALUES values, each checked by `ok`. */
function list(v: unknown, param: string, ok: (s: string) => boolean, what: string): string[] {
  if (typeof v !== "string" || v.length === 0) throw bad(param, `must be ${what}`);
  const values = v.split(",");
  if (values.length > MAX_FILTER_VALUES) throw bad(param, `lists more than ${MAX_FILTER_VALUES} values`);
  for (const s of values) if (!ok(s)) throw bad(param, `must be ${what}`);
  return [...new Set(values)];
}

const oneOf = (allowed: readonly string[]) => (s: string) => allowed.includes(s);
const text = (s: string) => s.length > 0 && s.length <= MAX_FILTER_TEXT && !CONTROL_RE.test(s);

function uuidParam(v: unknown, param: string): string {
  if (!isUuid(v)) throw bad(param, "must be a UUID");
  return v.toLowerCase();
}

export function parseFilters(q: AuditQuery): Filters {
  if (q === null || typeof q !== "object") throw bad("query", "must be an object");
  if (!isUuid(q.orgId)) throw bad("orgId", "must be a UUID");
  const f: Filters = { orgId: q.orgId.toLowerCase() };
  if (q.startDate !== undefined) f.start = parseDateParam(q.startDate, "startDate");
  if (q.endDate !== undefined) f.end = parseDateParam(q.endDate, "endDate");
  if (f.start && f.end && f.start.getTime() > f.end.getTime()) throw bad("startDate", "must not be after endDate");
  if (q.type !== undefined) f.types = list(q.type, "type", text, `an event type or a comma-separated list of them (each 1..${MAX_FILTER_TEXT} characters, no control characters)`);
  if (q.source !== undefined) f.sources = list(q.source, "source", oneOf(AUDIT_SOURCES), `one of ${AUDIT_SOURCES.join(", ")} (or a comma-separated list)`);
  if (q.result !== undefined) f.results = list(q.result, "result", oneOf(AUDIT_RESULTS), `one of ${AUDIT_RESULTS.join(", ")} (or a comma-separated list)`);
  if (q.class !== undefined) f.classes = list(q.class, "class", oneOf(STATEMENT_CLASSES), `one of ${STATEMENT_CLASSES.join(", ")} (or a comma-separated list)`);
  if (q.user !== undefined) {
    if (typeof q.user !== "string" || !text(q.user)) throw bad("user", `must be a user ID, an e-mail or a database user name (1..${MAX_FILTER_TEXT} characters, no control characters)`);
    f.user = isUuid(q.user) ? { id: q.user.toLowerCase() } : { name: q.user };
  }
  if (q.workspaceID !== undefined) f.workspaceId = uuidParam(q.workspaceID, "workspaceID");
  if (q.workspaceGroupID !== undefined) f.workspaceGroupId = uuidParam(q.workspaceGroupID, "workspaceGroupID");
  return f;
}

/**
 * The filters as one condition; every value is a bound parameter. Only the code's own constants (column
 * names, 'Workspace', 'DatabaseStatement', ...) are SQL text.
 */
function condition(eb: ExpressionBuilder<Database, "audit_log">, f: Filters): Expression<SqlBool> {
  const c: Expression<SqlBool>[] = [];
  if (f.start) c.push(eb("created_at", ">=", f.start));
  if (f.end) c.push(eb("created_at", "<=", f.end)); // Helios: endDate is inclusive
  if (f.types) c.push(eb("type", "in", f.types));
  if (f.sources) c.push(eb("source", "in", f.sources));
  if (f.results) c.push(eb("result", "in", f.results as AuditResult[]));
  if (f.classes) {
    // The gateway's statement records: attributes.statementClasses is the array of pgaudit classes.
    c.push(eb("type", "=", "DatabaseStatement"));
    c.push(sql<SqlBool>`(attributes -> 'statementClasses') ?| ${f.classes}::text[]`);
  }
  if (f.user && "id" in f.user) c.push(eb("actor_id", "=", f.user.id));
  if (f.user && "name" in f.user) {
    // A console user's e-mail (any case), or a database user name: the gateway records it as attributes.databaseUser.
    c.push(sql<SqlBool>`(lower(actor_email) = lower(${f.user.name}) or attributes ->> 'databaseUser' = ${f.user.name})`);
  }
  if (f.workspaceId !== undefined) c.push(sql<SqlBool>`(resource_type = 'Workspace' and lower(resource_id) = ${f.workspaceId})`);
  if (f.workspaceGroupId !== undefined) {
    // The group itself, the gateway's records for it (attributes.workspaceGroupID), and its workspaces
    // (workspace rows are kept when terminated, so older records still match).
    const g = f.workspaceGroupId;
    c.push(sql<SqlBool>`((resource_type = 'WorkspaceGroup' and lower(resource_id) = ${g})
      or attributes ->> 'workspaceGroupID' = ${g}
      or (resource_type = 'Workspace' and lower(resource_id) in (select w.id::text from workspaces w where w.group_id = ${g}::uuid)))`);
  }
  return eb.and(c);
}

const VIEW_COLUMNS = ["seq", "id", "org_id", "created_at", "type", "source", "result", "actor_type", "actor_id", "actor_email", "resource_type", "resource_id", "source_ip", "request_id", "reason", "attributes"] as const;

type ViewRow = {
  seq: string; id: string; org_id: string | null; created_at: Date; type: string; source: string; result: string; actor_type: string;
  actor_id: string | null; actor_email: string | null; resource_type: string | null; resource_id: string | null; source_ip: string | null;
  request_id: string | null; reason: string; attributes: Record<string, unknown>;
};

function view(r: ViewRow): AuditLogView {
  return {
    auditID: r.id,
    orgID: r.org_id,
    createdAt: r.created_at.toISOString(),
    type: r.type,
    source: r.source,
    result: r.result as AuditResult,
    reason: r.reason,
    userID: r.actor_id,
    userEmail: r.actor_email,
    userType: HELIOS_USER_TYPES[r.actor_type as ActorType] ?? "Unspecified",
    resourceType: r.resource_type,
    resourceID: r.resource_id,
    sourceIP: r.source_ip,
    requestID: r.request_id,
    attributes: r.attributes,
    seq: String(r.seq),
  };
}

/** Exclusive seq bounds of what is left to read: lo < seq < hi. */
interface Span {
  lo: bigint;
  hi: bigint;
}

/** The first window of a walk, in seq numbers; each window that comes up short is 4x the previous one. */
export const FIRST_WINDOW = 10_000n;

/**
 * The matching rows of one organization (and the install's org-less rows) with lo < seq < hi, in seq order.
 * Records without an organization (anonymous sign-in attempts, platform events) belong to the install and
 * are shown to every organization's auditors. The two sources are separate index-ordered branches merged by
 * a UNION ALL: an `org_id = $1 OR org_id IS NULL` filter makes the planner scan and sort the whole table
 * once its statistics lag behind a fast-growing log.
 */
function matching(db: Db, f: Filters, order: "asc" | "desc", n: number, span: Span, chain: boolean) {
  const branch = (org: string | null) =>
    db
      .selectFrom("audit_log")
      .select(chain ? [...VIEW_COLUMNS, "prev_hash", "hash"] : [...VIEW_COLUMNS])
      .where("org_id", org === null ? "is" : "=", org)
      .where("seq", ">", span.lo.toString())
      .where("seq", "<", span.hi.toString())
      .where((eb) => condition(eb, f))
      .orderBy("seq", order)
      .limit(n);
  return db
    .selectFrom(branch(f.orgId).as("own"))
    .selectAll()
    .unionAll(db.selectFrom(branch(null).as("shared")).selectAll())
    .orderBy("seq", order)
    .limit(n);
}

/** One past the newest seq (the exclusive upper bound of everything written so far); 1 when the log is empty. */
async function headBound(db: Db): Promise<bigint> {
  const head = await db.selectFrom("audit_log").select("seq").orderBy("seq", "desc").limit(1).executeTakeFirst();
  return head ? BigInt(head.seq) + 1n : 1n;
}

/**
 * The exact seq span of every record (of any organization) in the date range, from the (created_at, seq)
 * index alone: it costs one pass over the range's index entries. `seq + 0` keeps PostgreSQL from answering
 * min/max by walking the primary key, which would read every newer record first. Null: the range is empty.
 */
async function dateSpan(db: Db, f: Filters): Promise<Span | null> {
  let q = db.selectFrom("audit_log").select([sql<string | null>`min(seq + 0)`.as("lo"), sql<string | null>`max(seq + 0)`.as("hi")]);
  if (f.start) q = q.where("created_at", ">=", f.start);
  if (f.end) q = q.where("created_at", "<=", f.end);
  const r = await q.executeTakeFirst();
  return r?.lo == null || r.hi == null ? null : { lo: BigInt(r.lo) - 1n, hi: BigInt(r.hi) + 1n };
}

/**
 * A walk through `span` in seq order (from its top for "desc", its bottom for "asc"), one bounded window
 * per query, so that no query reads more than its window whatever plan PostgreSQL picks: a page whose
 * matches are common is one query; rarer matches widen the windows geometrically. With a date range, the
 * walk is narrowed to the range's exact seq span once the first window comes up short.
 */
class Walk {
  private window: bigint;
  private narrowed: boolean;

  constructor(private readonly db: Db, private readonly f: Filters, private readonly order: "asc" | "desc", private span: Span, private readonly chain: boolean, private readonly firstWindow: bigint) {
    this.window = firstWindow;
    this.narrowed = f.start === undefined && f.end === undefined;
  }

  get done(): boolean {
    return this.span.hi - this.span.lo <= 1n;
  }

  /** Up to `want` further matching rows, in order. */
  async next(want: number): Promise<ChainRow[]> {
    const rows: ChainRow[] = [];
    while (rows.length < want && !this.done) {
      const { lo, hi } = this.span;
      const w: Span = this.order === "desc" ? { lo: lo > hi - this.window - 1n ? lo : hi - this.window - 1n, hi } : { lo, hi: hi < lo + this.window + 1n ? hi : lo + this.window + 1n };
      const got = (await matching(this.db, this.f, this.order, want - rows.length, w, this.chain).execute()) as ChainRow[];
      rows.push(...got);
      const last = got[got.length - 1];
      if (rows.length >= want && last) {
        // The page is full: go on after its last row, with a first-size window again.
        this.span = this.order === "desc" ? { lo, hi: BigInt(last.seq) } : { lo: BigInt(last.seq), hi };
        this.window = this.firstWindow;
        break;
      }
      this.span = this.order === "desc" ? { lo, hi: w.lo + 1n } : { lo: w.hi - 1n, hi };
      this.window *= 4n;
      if (!this.narrowed) {
        this.narrowed = true;
        const d = await dateSpan(this.db, this.f);
        this.span = d === null ? { lo: 0n, hi: 1n } : { lo: d.lo > this.span.lo ? d.lo : this.span.lo, hi: d.hi < this.span.hi ? d.hi : this.span.hi };
      }
    }
    return rows;
  }
}

type ChainRow = ViewRow & { prev_hash?: Buffer; hash?: Buffer };

/** How a walk reads: `firstWindow` seq numbers in its first query (default FIRST_WINDOW). */
export interface WalkOptions {
  firstWindow?: bigint;
}

function firstWindowOf(opts: WalkOptions): bigint {
  const w = opts.firstWindow ?? FIRST_WINDOW;
  if (typeof w !== "bigint" || w < 1n) throw new TypeError("firstWindow must be a positive bigint");
  return w;
}

/** Audit records of one organization, newest (highest seq) first, keyset-paged by seq. */
export async function listAuditLogs(db: Db, q: AuditQuery, opts: WalkOptions = {}): Promise<{ auditLogs: AuditLogView[]; nextToken?: string }> {
  const firstWindow = firstWindowOf(opts);
  const f = parseFilters(q);
  const limit = q.limit ?? DEFAULT_LIMIT;
  if (typeof limit !== "number" || !Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT) throw bad("limit", `must be an integer in 1..${MAX_LIMIT}`);
  const below = q.nextToken === undefined ? await headBound(db) : decodeNextToken(q.nextToken);

  // limit + 1 rows: the extra one says whether a next page exists.
  const rows = await new Walk(db, f, "desc", { lo: 0n, hi: below }, false, firstWindow).next(limit + 1);
  const page = rows.slice(0, limit);
  const last = page[page.length - 1];
  const auditLogs = page.map(view);
  return rows.length > limit && last ? { auditLogs, nextToken: encodeNextToken(String(last.seq)) } : { auditLogs };
}

/**
 * Every matching record, oldest (lowest seq) first, as of the call: rows written after it are left out,
 * so an export ends however fast the log grows. Validates the query and reads the first page before it
 * resolves, so a bad parameter or an unreachable store is an error before anything is streamed. The
 * iterable reads one page (`pageSize` rows) per query, keyset-paged by seq; it can be iterated once.
 */
export async function exportAuditLogs(db: Db, q: Omit<AuditQuery, "nextToken">, opts: WalkOptions & { pageSize?: number } = {}): Promise<AsyncIterable<AuditExportRecord>> {
  const firstWindow = firstWindowOf(opts);
  const f = parseFilters(q);
  if ((q as AuditQuery).nextToken !== undefined) throw bad("nextToken", "is not an export parameter (an export streams every match)");
  const cap = q.limit ?? MAX_EXPORT_LIMIT;
  if (typeof cap !== "number" || !Number.isInteger(cap) || cap < 1 || cap > MAX_EXPORT_LIMIT) throw bad("limit", `must be an integer in 1..${MAX_EXPORT_LIMIT}`);
  const pageSize = opts.pageSize ?? EXPORT_PAGE;
  if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > MAX_LIMIT) throw new TypeError(`exportAuditLogs: pageSize must be an integer in 1..${MAX_LIMIT}`);

  const walk = new Walk(db, f, "asc", { lo: 0n, hi: await headBound(db) }, true, firstWindow);
  let rows = await walk.next(Math.min(pageSize, cap));
  return (async function* () {
    let left = cap;
    for (;;) {
      for (const r of rows) yield { ...view(r), actorType: r.actor_type as ActorType, prevHash: r.prev_hash!.toString("hex"), hash: r.hash!.toString("hex") };
      left -= rows.length;
      if (left <= 0 || walk.done || rows.length === 0) return;
      rows = await walk.next(Math.min(pageSize, left));
    }
  })();
}
