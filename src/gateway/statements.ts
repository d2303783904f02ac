import { createHash } from "node:crypto";
import { performance } from "node:perf_hooks";
import { decide, recordsPlaintext, truncate, type AuditDecision, type AuditLevel, type Classification, type StatementClassifier } from "../audit/sql/classify.js";
import { FrontendScanner, FrontendType } from "./protocol/frontend.js";
import type { Logger } from "../log/logger.js";
import { BackendType, parseCommandComplete, parseErrorFields, parseRowDescription, type BackendObserver, type ResultColumn } from "./protocol/backend.js";

/**
 * How a recorded statement ended: `completed`; `failed` (an ErrorResponse: `sqlstate`); `suspended` (an
 * Execute's row limit was reached: the portal may be executed again); `not-executed` (the server skipped it
 * after an earlier error, until the next Sync); `interrupted` (the session ended before the server answered:
 * it may or may not have run); `untracked` (the session had too many statements awaiting answers: recorded
 * when sent, its outcome not followed).
 */
export type StatementOutcome = "completed" | "failed" | "suspended" | "not-executed" | "interrupted" | "untracked";

/** The outcome of one statement of a query string (one entry per statement the server ran, in order). */
export interface StatementResult {
  /** The command of its CommandComplete tag (INSERT, SELECT, CREATE TABLE, ...); null for an empty query or an error. */
  command: string | null;
  /** Rows the tag reports (inserted, updated, deleted, returned, copied, fetched); for a suspended Execute, the rows sent so far. */
  rows: number | null;
  /** Set when this statement failed. */
  sqlstate?: string;
  /** ALL-RESULTS: the result's columns, names and type OIDs (never a value). */
  columns?: ResultColumn[];
}

/** One statement the session's audit level records, with its outcome. */
export interface StatementRecord {
  protocol: "simple" | "extended";
  classification: Classification;
  decision: AuditDecision;
  outcome: StatementOutcome;
  /** Per statement the server ran, in order (at most MAX_RESULTS; `moreResults` counts the rest). */
  results: StatementResult[];
  moreResults: number;
  /** Total of the rows the results report; null when none reports a count. */
  rows: number | null;
  /** The SQLSTATE of the error that ended it. */
  sqlstate: string | null;
  /** The error's primary message, at the PLAINTEXT levels only (it can quote values); never its detail. */
  errorMessage: string | null;
  /** From the gateway forwarding it to the server's completing answer (monotonic clock); null when there was none. */
  durationMs: number | null;
  /** Statements of a query string the parser found that never ran because an earlier one failed. */
  notExecuted: number;
}

const FORGOTTEN = "(a statement this session prepared among more than 256 others: its text is no longer held)";
/** Its class is not known, so it is recorded at every level that records statements (filed as DDL, which all of them record). */
const UNKNOWN: Classification = { statements: [{ kind: "Unknown", class: "DDL" }], parseError: null, secret: false, shape: FORGOTTEN };

/** A statement or portal name as a map key: long names by their hash, so memory stays bounded and none escapes. */
function nameKey(name: string): string {
  return name.length <= 128 ? name : `#${createHash("sha256").update(name).digest("base64")}`;
}

function cstring(body: Buffer, at: number): [string, number] | null {
  const end = body.indexOf(0, at);
  return end < 0 ? null : [body.toString("utf8", at, end), end + 1];
}

// What the server owes the client, one queue entry per frontend message it answers, in order (§53.2):
/** Messages answered by exactly one terminal message each (Parse, Bind, Close, Describe, an unrecorded Execute); `n` of them. */
const RUN = 0;
/** Sync: answered by ReadyForQuery; `n` in a row. */
const SYNC = 1;
/** A simple Query: a result per statement, ended by ReadyForQuery. */
const QUERY = 2;
/** A recorded Execute: answered by CommandComplete, EmptyQueryResponse, PortalSuspended or ErrorResponse. */
const EXEC = 3;
/** A Describe followed at ALL-RESULTS (its RowDescription describes the next Execute's result). */
const DESCRIBE = 4;
/** CopyDone or CopyFail: answered by nothing; ends a COPY FROM STDIN. */
const COPY_END = 5;
/** FunctionCall: FunctionCallResponse or ErrorResponse, then ReadyForQuery. */
const CALL = 6;

interface Pending {
  protocol: "simple" | "extended";
  c: Classification;
  decision: AuditDecision;
  sentAt: number;
  results: StatementResult[];
  moreResults: number;
  rows: number | null;
  sqlstate: string | null;
  message: string | null;
  failed: boolean;
  /** The latest RowDescription of a simple query's current statement (ALL-RESULTS). */
  columns: ResultColumn[] | undefined;
  dataRows: number;
  /** Describe keys (`P<portal>`, `S<statement>`) whose RowDescription describes this Execute's result. */
  portalKey: string;
  stmtKey: string;
  bytes: number;
  /** Its queue entry while it is queued (counted against the pending limits). */
  item: Item | null;
  done: boolean;
}

interface Item {
  kind: number;
  n: number;
  p: Pending | null;
  key: string;
}

const MAX_RESULTS = 100;
const MAX_COLUMNS = 100;
const MAX_MESSAGE = 1024;

/**
 * Follows one client session's statements for audit: simple Query messages, and the extended protocol's
 * Parse (named and unnamed statements), Bind (portals), Execute and Close, then the server's answers to them.
 * A statement the session's level records is recorded when it completes, with its outcome: the server
 * answers every message in order, so each answer is matched to the oldest message still owed one (an error
 * in the extended protocol makes the server skip everything up to the next Sync; Syncs sent during COPY FROM
 * STDIN are ignored by the server). Statements still owed an answer when the session ends are recorded as
 * `interrupted`. Memory is bounded: past MAX_PENDING_MESSAGES messages or MAX_PENDING_RECORDS records
 * awaiting answers, new statements are recorded at once as `untracked` until the server has caught up.
 * Malformed messages are the protocol checks' business: nothing here throws.
 */
export class SessionStatements {
  /** Named statements a session may have open before the oldest are forgotten (drivers keep far fewer). */
  static readonly MAX_STATEMENTS = 256;
  /** Frontend messages awaiting answers that are followed (runs of unrecorded ones count once). */
  static readonly MAX_PENDING_MESSAGES = 8192;
  /** Recorded statements awaiting answers, and the bytes of their texts. */
  static readonly MAX_PENDING_RECORDS = 4096;
  static readonly MAX_PENDING_TEXT_BYTES = 4 * 1024 * 1024;

  private readonly parsed = new Map<string, { text: string; c: Classification }>();
  private readonly portals = new Map<string, string>();
  /** Statement names forgotten for the limit: an Execute of one is still recorded, as unknown. */
  private readonly forgotten = new Set<string>();
  private readonly maxText: number;
  private readonly now: () => number;
  /** ALL-RESULTS: result metadata (RowDescription) is recorded. */
  readonly describes: boolean;
  /** The level records texts as sent; below it a decision depends only on the classification (and is kept with it). */
  private readonly plaintext: boolean;
  private readonly decisions = new WeakMap<Classification, AuditDecision>();

  private q: Item[] = [];
  private h = 0;
  /** Recorded statements awaiting an answer, oldest first (some may be done: skipped lazily). */
  private recs: Pending[] = [];
  private rh = 0;
  private pendingRecords = 0;
  private pendingBytes = 0;
  /** The server skips every message until the next Sync (an extended-protocol error with no Sync queued yet). */
  private skipTillSync = false;
  /** The server is in COPY FROM STDIN and the client has not yet sent CopyDone or CopyFail: Syncs are ignored. */
  private copyIgnoresSync = false;
  /** Too much was pending: messages are counted, not followed, until the server has answered them all. */
  private overflow = false;
  private unfollowedSyncs = 0;
  /** The RowDescription of the latest Describe (ALL-RESULTS). */
  private described: { key: string; columns: ResultColumn[] } | null = null;
  private closed = false;

  constructor(private readonly o: { level: AuditLevel; classifier: StatementClassifier; record: (r: StatementRecord) => void; maxTextBytes?: number; now?: () => number }) {
    this.maxText = o.maxTextBytes ?? 16_384;
    this.now = o.now ?? (() => performance.now());
    this.describes = o.level.startsWith("ALL-RESULTS");
    this.plaintext = recordsPlaintext(o.level);
  }

  // ---- client → server ----

  /** Whole bodies of Query, Parse, Bind, Execute and Close (and Describe at ALL-RESULTS), in stream order. */
  readonly onMessage = (type: number, body: Buffer): void => {
    try {
      this.handle(type, body);
    } catch {
      // a message the server will refuse anyway; the session's protocol checks deal with it
    }
  };

  /** Every client message header, in stream order (the bodies above follow their headers). */
  onHeader(type: number): void {
    switch (type) {
      case FrontendType.Sync:
        return this.enqueue(SYNC, null);
      case FrontendType.FunctionCall:
        return this.enqueue(CALL, null);
      case FrontendType.CopyDone:
      case FrontendType.CopyFail:
        return this.enqueue(COPY_END, null);
      case FrontendType.Describe:
        if (!this.describes) this.enqueue(RUN, null);
        return;
      default:
        return;
    }
  }

  private handle(type: number, body: Buffer): void {
    switch (type) {
      case FrontendType.Query: {
        const end = body.indexOf(0);
        if (end < 0) return this.enqueue(QUERY, null);
        // Below the PLAINTEXT levels the text is not needed: a cached shape is classified from the bytes.
        const c = this.o.classifier.classifyBytes(body, 0, end);
        return this.enqueue(QUERY, this.pending("simple", this.plaintext ? body.toString("utf8", 0, end) : c.shape, c, "", ""));
      }
      case FrontendType.Parse: {
        this.enqueue(RUN, null);
        const name = cstring(body, 0);
        const q = name && cstring(body, name[1]);
        if (!name || !q) return;
        const key = nameKey(name[0]);
        const c = this.o.classifier.classify(q[0]);
        // Kept cut to what a record can hold: a session's statements cost the gateway bounded memory.
        this.parsed.delete(key);
        this.parsed.set(key, { text: truncate(q[0], this.maxText), c: { ...c, shape: truncate(c.shape, this.maxText) } });
        this.forgotten.delete(key);
        if (this.parsed.size > SessionStatements.MAX_STATEMENTS) {
          const oldest = this.parsed.keys().next().value!;
          this.parsed.delete(oldest);
          if (this.forgotten.size < 10_000) this.forgotten.add(oldest);
        }
        return;
      }
      case FrontendType.Bind: {
        this.enqueue(RUN, null);
        const portal = cstring(body, 0);
        const stmt = portal && cstring(body, portal[1]);
        if (!portal || !stmt) return;
        const key = nameKey(portal[0]);
        this.portals.delete(key);
        this.portals.set(key, nameKey(stmt[0]));
        if (this.portals.size > SessionStatements.MAX_STATEMENTS) this.portals.delete(this.portals.keys().next().value!);
        return;
      }
      case FrontendType.Execute: {
        const portal = cstring(body, 0);
        const pkey = portal ? nameKey(portal[0]) : "";
        const stmt = portal ? this.portals.get(pkey) : undefined;
        const parsed = stmt === undefined ? undefined : this.parsed.get(stmt);
        let p: Pending | null = null;
        if (parsed) p = this.pending("extended", parsed.text, parsed.c, `P${pkey}`, `S${stmt}`);
        else if (stmt !== undefined && this.forgotten.has(stmt)) p = this.pending("extended", FORGOTTEN, UNKNOWN, `P${pkey}`, `S${stmt}`);
        return this.enqueue(p ? EXEC : RUN, p);
      }
      case FrontendType.Describe: {
        const name = cstring(body, 1);
        const key = name ? `${body[0] === 0x53 ? "S" : "P"}${nameKey(name[0])}` : "";
        this.enqueue(DESCRIBE, null, key);
        return;
      }
      case FrontendType.Close: {
        this.enqueue(RUN, null);
        const which = body[0];
        const name = cstring(body, 1);
        if (!name) return;
        const key = nameKey(name[0]);
        if (which === 0x53) {
          this.parsed.delete(key);
          this.forgotten.delete(key);
        } else if (which === 0x50) this.portals.delete(key);
        return;
      }
      default:
        return;
    }
  }

  /** A record in the making when the level records the statement; null otherwise. For the extended protocol the text is the statement as parsed: its $n parameters, never the values bound. */
  private pending(protocol: "simple" | "extended", text: string, c: Classification, portalKey: string, stmtKey: string): Pending | null {
    let decision = this.plaintext ? undefined : this.decisions.get(c);
    if (decision === undefined) {
      decision = decide(this.o.level, text, c, this.maxText);
      if (!this.plaintext) this.decisions.set(c, decision);
    }
    if (!decision.log) return null;
    return {
      protocol, c, decision, sentAt: this.now(), results: [], moreResults: 0, rows: null, sqlstate: null, message: null, failed: false,
      columns: undefined, dataRows: 0, portalKey, stmtKey, bytes: decision.text.length, item: null, done: false,
    };
  }

  private get size(): number {
    return this.q.length - this.h;
  }

  private enqueue(kind: number, p: Pending | null, key = ""): void {
    if (this.closed) return;
    if (this.overflow) {
      if (p) this.finish(p, "untracked", false);
      if (kind === SYNC || kind === QUERY || kind === CALL) this.unfollowedSyncs++;
      return;
    }
    if (kind === COPY_END && this.copyIgnoresSync) {
      this.copyIgnoresSync = false; // the COPY is over for the server once it reads this
      return;
    }
    if (kind === SYNC) {
      if (this.copyIgnoresSync) return; // ignored by the server during COPY FROM STDIN
      this.skipTillSync = false;
    } else if (this.skipTillSync && kind !== COPY_END) {
      // The server discards everything up to the next Sync after an extended-protocol error.
      if (p) this.finish(p, "not-executed", false);
      return;
    }
    const tail = this.size > 0 ? this.q[this.q.length - 1]! : undefined;
    if ((kind === RUN || kind === SYNC) && tail?.kind === kind) {
      tail.n++;
      return;
    }
    if (this.size >= SessionStatements.MAX_PENDING_MESSAGES) {
      this.overflow = true;
      this.unfollowedSyncs = kind === SYNC || kind === QUERY || kind === CALL ? 1 : 0;
      if (p) this.finish(p, "untracked", false);
      return;
    }
    const item: Item = { kind, n: 1, p, key };
    this.q.push(item);
    if (p) {
      p.item = item;
      this.oldestPending(); // drops the finished ones from the front: the list stays as long as what is pending
      this.recs.push(p);
      this.pendingRecords++;
      this.pendingBytes += p.bytes;
      while (this.pendingRecords > SessionStatements.MAX_PENDING_RECORDS || this.pendingBytes > SessionStatements.MAX_PENDING_TEXT_BYTES) {
        const oldest = this.oldestPending();
        if (!oldest) break;
        this.finish(oldest, "untracked", false); // its queue entry stays, so the answers still line up
      }
    }
  }

  private oldestPending(): Pending | undefined {
    const recs = this.recs;
    while (this.rh < recs.length && recs[this.rh]!.done) recs[this.rh++] = undefined as unknown as Pending;
    // Compacted now and then, not emptied each time it runs dry: a new array per statement was a third of the
    // tracker's garbage.
    if (this.rh > 64 && this.rh * 2 > recs.length) {
      this.recs = recs.slice(this.rh);
      this.rh = 0;
    }
    return this.recs[this.rh];
  }

  // ---- server → client ----

  /** The BackendScanner's observer: matches the server's answers to what the client sent. */
  readonly observer: BackendObserver = {
    header: (type) => {
      try {
        return this.serverHeader(type);
      } catch {
        return false;
      }
    },
    body: (type, body) => {
      try {
        this.serverBody(type, body);
      } catch {
        // a body the client will see as it is; nothing to record from it
      }
    },
  };

  /** The entry the next answer belongs to (CopyDone/CopyFail entries the server consumed without answering are dropped). */
  private head(): Item | undefined {
    while (this.size > 0) {
      const it = this.q[this.h]!;
      if (it.kind !== COPY_END) return it;
      this.shift();
    }
    return undefined;
  }

  private shift(): void {
    this.q[this.h] = undefined as unknown as Item;
    this.h++;
    // Compacted now and then (emptied alike), not each time the server catches up: see oldestPending.
    if (this.h > 1024 && this.h * 2 > this.q.length) {
      this.q = this.q.slice(this.h);
      this.h = 0;
    }
  }

  private serverHeader(type: number): boolean {
    if (this.overflow && this.size === 0) {
      // Catching up: the answers to messages that were not followed.
      if (type === BackendType.ReadyForQuery && --this.unfollowedSyncs <= 0) {
        this.overflow = false;
        this.skipTillSync = false;
        this.copyIgnoresSync = false;
      }
      return false;
    }
    switch (type) {
      case BackendType.ReadyForQuery:
        this.ready();
        return false;
      case BackendType.DataRow: {
        const it = this.head();
        if (it?.p) it.p.dataRows++;
        return false;
      }
      case BackendType.CommandComplete: {
        const it = this.head();
        if (!it) return false;
        if (it.p && !it.p.done) return true;
        if (it.kind !== QUERY && it.kind !== CALL) this.answered(it);
        return false;
      }
      case BackendType.EmptyQueryResponse:
      case BackendType.PortalSuspended: {
        const it = this.head();
        if (!it) return false;
        if (it.p && !it.p.done) {
          if (type === BackendType.PortalSuspended) this.result(it, { command: null, rows: it.p.dataRows }, "suspended");
          else this.result(it, { command: null, rows: null }, null);
        } else if (it.kind !== QUERY && it.kind !== CALL) this.answered(it);
        return false;
      }
      case BackendType.ErrorResponse: {
        const it = this.head();
        if (!it) return false;
        if (this.pendingRecords > 0) return true; // its SQLSTATE may be a recorded statement's
        this.error(it, null);
        return false;
      }
      case BackendType.RowDescription: {
        const it = this.head();
        if (!it) return false;
        if (it.kind === QUERY) return this.describes && it.p !== null && !it.p.done;
        if (it.kind === DESCRIBE) return true;
        this.answered(it);
        return false;
      }
      case BackendType.NoData: {
        const it = this.head();
        if (!it) return false;
        if (it.kind === DESCRIBE) this.described = { key: it.key, columns: [] };
        this.answered(it);
        return false;
      }
      case BackendType.ParseComplete:
      case BackendType.BindComplete:
      case BackendType.CloseComplete: {
        const it = this.head();
        if (it) this.answered(it);
        return false;
      }
      case BackendType.CopyInResponse:
      case BackendType.CopyBothResponse:
        this.copyIn();
        return false;
      default:
        // ParameterDescription (before a Describe's RowDescription or NoData), DataRow, COPY OUT data,
        // FunctionCallResponse (its ReadyForQuery follows), and the asynchronous NoticeResponse,
        // ParameterStatus and NotificationResponse: nothing is owed by them.
        return false;
    }
  }

  private serverBody(type: number, body: Buffer): void {
    const it = this.head();
    if (!it) return;
    switch (type) {
      case BackendType.CommandComplete: {
        const t = parseCommandComplete(body);
        this.result(it, { command: t.command, rows: t.rows }, null);
        return;
      }
      case BackendType.ErrorResponse: {
        let f: Record<string, string> = {};
        try {
          f = parseErrorFields(body);
        } catch {
          // malformed: recorded without its SQLSTATE
        }
        this.error(it, f);
        return;
      }
      case BackendType.RowDescription: {
        let columns: ResultColumn[] = [];
        try {
          columns = parseRowDescription(body, MAX_COLUMNS);
        } catch {
          // malformed: no metadata
        }
        if (it.kind === DESCRIBE) {
          this.described = { key: it.key, columns };
          this.answered(it);
        } else if (it.p) it.p.columns = columns;
        return;
      }
      default:
        return;
    }
  }

  /** One terminal answer for the head entry. */
  private answered(it: Item): void {
    if (--it.n <= 0) this.shift();
  }

  /** A statement's result for the head entry: a Query collects one per statement; an Execute is done. */
  private result(it: Item, r: StatementResult, outcome: "suspended" | null): void {
    const p = it.p!;
    if (it.kind === QUERY) {
      if (p.columns !== undefined && r.command !== null) r.columns = p.columns;
      p.columns = undefined;
      this.addResult(p, r);
      return;
    }
    if (this.describes) {
      const d = this.described;
      if (d !== null && (d.key === p.portalKey || d.key === p.stmtKey)) r.columns = d.columns;
    }
    this.addResult(p, r);
    this.shift();
    this.finish(p, outcome ?? "completed", true);
  }

  private addResult(p: Pending, r: StatementResult): void {
    if (r.rows !== null) p.rows = (p.rows ?? 0) + r.rows;
    if (p.results.length < MAX_RESULTS) p.results.push(r);
    else p.moreResults++;
  }

  /**
   * An ErrorResponse; `f` its fields when they were read (the head entry holds a record), null otherwise. In the
   * extended protocol the server then skips everything up to the next Sync (§53.2.3): the error is the failure
   * of the first recorded Execute from the failing message on (a Parse, Bind or Describe failing is its
   * statement failing to run), and the Executes after it are not executed.
   */
  private error(it: Item, f: Record<string, string> | null): void {
    this.copyIgnoresSync = false;
    if (it.kind === SYNC) return; // the implicit COMMIT at Sync failed; ReadyForQuery follows
    if (it.kind === QUERY || it.kind === CALL) {
      // The rest of the query string is not run; ReadyForQuery follows.
      if (it.p && !it.p.done) this.fail(it.p, f);
      return;
    }
    let blamed = false;
    for (let next: Item | undefined = it; next !== undefined && next.kind !== SYNC; next = this.head()) {
      this.shift();
      const p = next.p;
      if (!p || p.done) continue;
      if (blamed || next.kind !== EXEC) this.finish(p, "not-executed", false);
      else {
        blamed = true;
        this.fail(p, f);
        this.finish(p, "failed", true);
      }
    }
    if (this.size === 0) this.skipTillSync = true;
  }

  private fail(p: Pending, f: Record<string, string> | null): void {
    p.failed = true;
    if (f) {
      p.sqlstate = f["C"] ?? null;
      if (p.decision.plaintext && f["M"] !== undefined) p.message = f["M"].slice(0, MAX_MESSAGE);
    }
    this.addResult(p, { command: null, rows: null, ...(p.sqlstate !== null ? { sqlstate: p.sqlstate } : {}) });
  }

  /** ReadyForQuery: answers the oldest Sync, Query or FunctionCall; whatever precedes it was skipped. */
  private ready(): void {
    for (;;) {
      const it = this.head();
      if (!it) return;
      if (it.kind === SYNC) {
        this.answered(it);
        return;
      }
      this.shift();
      if (it.kind === QUERY || it.kind === CALL) {
        if (it.p && !it.p.done) this.finish(it.p, it.p.failed ? "failed" : "completed", true);
        return;
      }
      if (it.p && !it.p.done) this.finish(it.p, "not-executed", false);
    }
  }

  /**
   * CopyInResponse: until the client's CopyDone or CopyFail the server reads only COPY data and ignores Sync
   * (libpq sends one after the Execute of an extended-protocol COPY, before knowing it is one).
   */
  private copyIn(): void {
    for (let i = this.h + 1; i < this.q.length; i++) {
      const it = this.q[i]!;
      if (it.kind === SYNC) {
        this.q.splice(i, 1);
        i--;
      } else if (it.kind === COPY_END) {
        this.q.splice(i, 1);
        return;
      }
    }
    this.copyIgnoresSync = true;
  }

  private finish(p: Pending, outcome: StatementOutcome, answered: boolean): void {
    if (p.done) return;
    p.done = true;
    if (p.item !== null) {
      // Its entry stays until answered (so the answers still line up) but no longer holds the record.
      p.item.p = null;
      p.item = null;
      this.pendingRecords--;
      this.pendingBytes -= p.bytes;
    }
    const c = p.c;
    const ran = p.results.length + p.moreResults;
    this.o.record({
      protocol: p.protocol, classification: c, decision: p.decision, outcome,
      results: p.results, moreResults: p.moreResults, rows: p.rows, sqlstate: p.sqlstate, errorMessage: p.message,
      durationMs: answered ? Math.round((this.now() - p.sentAt) * 1000) / 1000 : null,
      notExecuted: outcome === "failed" && p.protocol === "simple" ? Math.max(0, c.statements.length - ran) : 0,
    });
  }

  /** The session ended: statements still owed an answer are recorded as interrupted. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (let i = this.rh; i < this.recs.length; i++) {
      const p = this.recs[i]!;
      if (!p.done) this.finish(p, "interrupted", false);
    }
    this.q = [];
    this.h = 0;
    this.recs = [];
    this.rh = 0;
  }
}

/**
 * The client-side scanner of a session whose level records statements: FrontendScanner, also telling the
 * tracker the headers of Sync, Describe, FunctionCall, CopyDone and CopyFail (and the Describe bodies at
 * ALL-RESULTS), so the server's answers line up with what was sent.
 */
export class StatementFrontendScanner extends FrontendScanner {
  private readonly tracker: SessionStatements;

  constructor(opts: { maxMessageBytes?: number }, tracker: SessionStatements) {
    super({ ...opts, onStatement: tracker.onMessage });
    this.tracker = tracker;
  }

  protected override onHeader(type: number): boolean {
    const r = super.onHeader(type);
    this.tracker.onHeader(type);
    return r;
  }

  protected override captures(type: number): boolean {
    return super.captures(type) || (type === FrontendType.Describe && this.tracker.describes);
  }
}

/** A client session's hold on a pooled server session: who ran what on backend `pid` from `start` to `end`. */
export interface SessionWindow {
  workspaceId: string;
  pid: number;
  sessionId: string;
  orgId: string;
  groupId: string;
  user: string;
  database: string;
  peer: string | undefined;
  level: AuditLevel;
  /** When the session got the server session (ms since the epoch). */
  start: number;
  /** When it gave it back to the pool; Infinity when the server session was closed with it (it may still be finishing a statement). */
  end: number;
  /** When the client session ended (0 while it runs). */
  closedAt: number;
}

/**
 * Which client session held which server process when: pgaudit's lines name the backend's pid and the time,
 * and a pooled backend serves one client session after another. A line belongs to the latest session that got
 * the backend at or before the line's time, unless that session had already given it back. Windows are kept
 * `retainMs` after their session ended (lines arrive a little after the statements), at most 16 per backend.
 */
export class BackendSessions {
  private readonly byBackend = new Map<string, SessionWindow[]>();

  constructor(private readonly retainMs = 5 * 60_000) {}

  open(w: Omit<SessionWindow, "end" | "closedAt">): SessionWindow {
    const window: SessionWindow = { ...w, end: Infinity, closedAt: 0 };
    const key = `${w.workspaceId}\u0000${w.pid}`;
    const list = this.byBackend.get(key) ?? [];
    list.push(window);
    if (list.length > 16) list.shift();
    this.byBackend.set(key, list);
    return window;
  }

  /** The session ended: `released` when its server session went back to the pool (a later line is not its). */
  close(w: SessionWindow, released: boolean, now = Date.now()): void {
    w.closedAt = now;
    if (released) w.end = now;
  }

  /** The session that ran a line logged at `at` (ms, the log's precision) by backend `pid`, or null. */
  find(workspaceId: string, pid: number, at: number): SessionWindow | null {
    const list = this.byBackend.get(`${workspaceId}\u0000${pid}`);
    if (!list) return null;
    for (let i = list.length - 1; i >= 0; i--) {
      const w = list[i]!;
      // Both clocks are the host's wall clock in whole milliseconds: a 1 ms allowance for the truncation.
      if (w.start <= at + 1) return at <= w.end + 1 ? w : null;
    }
    return null;
  }

  /** Forgets windows whose session ended more than retainMs ago. */
  prune(now = Date.now()): void {
    for (const [key, list] of this.byBackend) {
      const keep = list.filter((w) => w.closedAt === 0 || now - w.closedAt < this.retainMs);
      if (keep.length === 0) this.byBackend.delete(key);
      else if (keep.length !== list.length) this.byBackend.set(key, keep);
    }
  }

  /** Windows held (for tests and metrics). */
  get size(): number {
    let n = 0;
    for (const list of this.byBackend.values()) n += list.length;
    return n;
  }
}

/** What the gateway needs of the engine to set pgaudit.log. */
export interface PgauditControl {
  auditClasses(workspaceId: string): readonly string[];
  setAuditClasses(workspaceId: string, classes: readonly string[]): Promise<void>;
}

/**
 * The pgaudit classes each workspace's server must log for the gateway's sessions (pgaudit.log is one setting per
 * server, and only a superuser may change it): grown, and applied, before a session that needs more gets its
 * ReadyForQuery; shrunk `shrinkAfterMs` after the last session needing a class ended. Sessions at lower levels
 * meanwhile have their lines dropped by the gateway (it filters every line by its session's level).
 */
export class PgauditDemand {
  private readonly refs = new Map<string, Map<string, number>>();
  private readonly excessSince = new Map<string, number>();
  private readonly chains = new Map<string, Promise<void>>();
  /** Workspaces whose classes this gateway raised (swept until they are back to none). */
  private readonly touched = new Set<string>();

  constructor(private readonly o: { engine: PgauditControl; logger: Pick<Logger, "error" | "warn">; shrinkAfterMs?: number; now?: () => number }) {}

  /**
   * A session needing `classes` starts: resolves (never rejects) once the server logs them, and answers the
   * release to call when the session ends.
   */
  async acquire(workspaceId: string, classes: readonly string[]): Promise<() => void> {
    if (classes.length === 0) return () => undefined;
    this.touched.add(workspaceId);
    const counts = this.refs.get(workspaceId) ?? new Map<string, number>();
    this.refs.set(workspaceId, counts);
    for (const c of classes) counts.set(c, (counts.get(c) ?? 0) + 1);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      for (const c of classes) {
        const n = (counts.get(c) ?? 1) - 1;
        if (n <= 0) counts.delete(c);
        else counts.set(c, n);
      }
      if (counts.size === 0 && this.refs.get(workspaceId) === counts) this.refs.delete(workspaceId);
    };
    const applied = this.applied(workspaceId);
    if (!classes.every((c) => applied.has(c))) await this.apply(workspaceId, false);
    return release;
  }

  private applied(workspaceId: string): Set<string> {
    try {
      return new Set(this.o.engine.auditClasses(workspaceId));
    } catch {
      return new Set();
    }
  }

  private wanted(workspaceId: string): Set<string> {
    return new Set(this.refs.get(workspaceId)?.keys() ?? []);
  }

  /** Sets the classes wanted now (with those in force, unless shrinking), one change at a time per workspace. */
  private apply(workspaceId: string, shrink: boolean): Promise<void> {
    const prev = this.chains.get(workspaceId) ?? Promise.resolve();
    const next = prev.then(async () => {
      const target = this.wanted(workspaceId);
      const applied = this.applied(workspaceId);
      if (!shrink) for (const c of applied) target.add(c);
      if (target.size === applied.size && [...target].every((c) => applied.has(c))) return;
      try {
        await this.o.engine.setAuditClasses(workspaceId, [...target]);
      } catch (err) {
        this.o.logger.error({ workspace: workspaceId, err: { message: (err as Error).message } }, "could not set pgaudit.log: statements inside functions may go unrecorded");
      }
    });
    this.chains.set(workspaceId, next);
    void next.then(() => {
      if (this.chains.get(workspaceId) === next) this.chains.delete(workspaceId);
    });
    return next;
  }

  /** Periodic: lowers a server's classes once nothing has needed the extra ones for shrinkAfterMs. */
  sweep(): void {
    const now = (this.o.now ?? Date.now)();
    for (const ws of [...this.touched]) {
      const applied = this.applied(ws);
      const wanted = this.wanted(ws);
      if ([...applied].every((c) => wanted.has(c))) {
        this.excessSince.delete(ws);
        if (applied.size === 0 && wanted.size === 0) this.touched.delete(ws);
        continue;
      }
      const since = this.excessSince.get(ws) ?? now;
      this.excessSince.set(ws, since);
      if (now - since >= (this.o.shrinkAfterMs ?? 60_000)) {
        this.excessSince.delete(ws);
        void this.apply(ws, true);
      }
    }
  }
}
