import { loadModule, parseSync } from "libpg-query";
import { shapeOf, shapeOfAscii } from "./shape.js";

/**
 * Statement classes, pgaudit's: READ (SELECT, COPY TO), WRITE (INSERT, UPDATE, DELETE, MERGE, TRUNCATE,
 * COPY FROM, a SELECT with a data-modifying WITH), FUNCTION (DO, CALL), ROLE (roles and privileges), DDL
 * (everything that defines or drops objects, SELECT INTO included), MISC (transactions, SET, VACUUM, ...).
 */
export const STATEMENT_CLASSES = ["READ", "WRITE", "FUNCTION", "ROLE", "DDL", "MISC"] as const;
export type StatementClass = (typeof STATEMENT_CLASSES)[number];

/** Helios's audit levels. */
export const AUDIT_LEVELS = [
  "OFF", "LOGINS-ONLY", "ADMIN-ONLY", "WRITES-ONLY", "ALL-QUERIES", "ALL-QUERIES-PLAINTEXT", "ALL-RESULTS",
  "ADMIN-ONLY-INCLUDING-PARSE-FAILS", "WRITES-ONLY-INCLUDING-PARSE-FAILS", "ALL-QUERIES-INCLUDING-PARSE-FAILS",
  "ALL-QUERIES-PLAINTEXT-INCLUDING-PARSE-FAILS", "ALL-RESULTS-INCLUDING-PARSE-FAILS",
] as const;
export type AuditLevel = (typeof AUDIT_LEVELS)[number];

export interface ClassifiedStatement {
  /** The parser's node name: SelectStmt, CreateRoleStmt, ... */
  kind: string;
  class: StatementClass;
}

/** What the parser made of one query string (one or more statements); read-only: the classifier hands the same object out for every text of a shape. */
export interface Classification {
  readonly statements: readonly ClassifiedStatement[];
  /** The parser's message when it rejected the text; the statements are then empty. */
  readonly parseError: string | null;
  /** A statement carries a secret (a role's PASSWORD, a user mapping's or subscription's connection options): never logged in clear. */
  readonly secret: boolean;
  /** The text with its constants replaced by $n (see shape.ts): what is logged below the PLAINTEXT levels. */
  readonly shape: string;
}

/** What to record for a query string at a level. */
export interface AuditDecision {
  log: boolean;
  /** The text to record: the shape, or the text itself at the PLAINTEXT levels (never when it holds a secret). */
  text: string;
  plaintext: boolean;
  /** ALL-RESULTS: record row counts and result metadata too. */
  results: boolean;
}

const ROLE = new Set(["CreateRoleStmt", "AlterRoleStmt", "AlterRoleSetStmt", "DropRoleStmt", "GrantStmt", "GrantRoleStmt", "AlterDefaultPrivilegesStmt", "ReassignOwnedStmt", "DropOwnedStmt"]);
const WRITE = new Set(["InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt", "TruncateStmt"]);
const FUNCTION = new Set(["DoStmt", "CallStmt"]);
const READ = new Set(["FetchStmt", "ClosePortalStmt"]);
const DDL_PREFIX = /^(Create|Alter|Drop|Rename|Comment|Define|Index|View|Rule|Composite|Refresh|SecLabel|ImportForeignSchema)/;
const SECRET = new Set(["CreateUserMappingStmt", "AlterUserMappingStmt", "CreateSubscriptionStmt", "AlterSubscriptionStmt"]);

type Node = Record<string, unknown>;

/** The one key of a parse node ({ SelectStmt: {...} }). */
function unwrap(n: unknown): [string, Node] | null {
  if (n === null || typeof n !== "object") return null;
  const k = Object.keys(n)[0];
  return k === undefined ? null : [k, (n as Record<string, Node>)[k] ?? {}];
}

function hasModifyingCte(sel: Node): boolean {
  const ctes = ((sel["withClause"] as Node | undefined)?.["ctes"] as unknown[] | undefined) ?? [];
  for (const c of ctes) {
    const q = unwrap((unwrap(c)?.[1] ?? {})["ctequery"]);
    if (q && (WRITE.has(q[0]) || (q[0] === "SelectStmt" && hasModifyingCte(q[1])))) return true;
  }
  return false;
}

function optionNames(node: Node): string[] {
  return ((node["options"] as unknown[] | undefined) ?? []).map((o) => String((unwrap(o)?.[1] ?? {})["defname"] ?? ""));
}

/** The class of one statement node. */
export function classOf(kind: string, node: Node): StatementClass {
  if (ROLE.has(kind)) return "ROLE";
  if (WRITE.has(kind)) return "WRITE";
  if (FUNCTION.has(kind)) return "FUNCTION";
  if (READ.has(kind)) return "READ";
  switch (kind) {
    case "SelectStmt":
      if (node["intoClause"]) return "DDL";
      return hasModifyingCte(node) ? "WRITE" : "READ";
    case "CopyStmt":
      return node["is_from"] ? "WRITE" : "READ";
    case "ExplainStmt": {
      // EXPLAIN ANALYZE runs the statement: it is what it explains.
      const inner = unwrap(node["query"]);
      return inner && optionNames(node).includes("analyze") ? classOf(inner[0], inner[1]) : "READ";
    }
    case "PrepareStmt":
    case "DeclareCursorStmt": {
      const inner = unwrap(node["query"]);
      return inner ? classOf(inner[0], inner[1]) : "MISC";
    }
    case "CreateTableAsStmt":
      return "DDL";
    default:
      return DDL_PREFIX.test(kind) ? "DDL" : "MISC";
  }
}

function carriesSecret(kind: string, node: Node): boolean {
  if (SECRET.has(kind)) return true;
  if (kind === "CreateRoleStmt" || kind === "AlterRoleStmt") return optionNames(node).includes("password");
  return false;
}

const NEEDED: Record<string, ReadonlySet<StatementClass>> = {
  "ADMIN-ONLY": new Set(["DDL", "ROLE"]),
  "WRITES-ONLY": new Set(["DDL", "ROLE", "WRITE", "FUNCTION"]),
  "ALL-QUERIES": new Set(STATEMENT_CLASSES),
  "ALL-QUERIES-PLAINTEXT": new Set(STATEMENT_CLASSES),
  "ALL-RESULTS": new Set(STATEMENT_CLASSES),
};

/** Whether a level records statements at all (OFF and LOGINS-ONLY do not). */
export function recordsStatements(level: AuditLevel): boolean {
  return level !== "OFF" && level !== "LOGINS-ONLY";
}

/** Whether a level records statements' texts as sent (with their values), not their shapes. */
export function recordsPlaintext(level: AuditLevel): boolean {
  return level.startsWith("ALL-QUERIES-PLAINTEXT") || level.startsWith("ALL-RESULTS");
}

/**
 * What a level records for a classified query string. Below the PLAINTEXT levels the text is the shape (no
 * constant reaches the log); a text holding a secret is always the shape. Parse failures are recorded only at
 * the -INCLUDING-PARSE-FAILS levels, as their shape below PLAINTEXT, and as their shape at every level when
 * they mention PASSWORD, CONNECTION or OPTIONS (a mistyped `CREATE ROLE ... PASSWORD` must not leak either). Texts longer than `maxBytes` are cut with a marker.
 */
export function decide(level: AuditLevel, text: string, c: Classification, maxBytes = 16_384): AuditDecision {
  const parseFails = level.endsWith("-INCLUDING-PARSE-FAILS");
  const base = parseFails ? level.slice(0, -"-INCLUDING-PARSE-FAILS".length) : level;
  const plaintext = recordsPlaintext(level);
  const needed = NEEDED[base];
  let log: boolean;
  if (!needed) log = false;
  else if (c.parseError !== null) log = parseFails;
  else log = c.statements.some((s) => needed.has(s.class));
  // A text the parser rejected might still hold a secret it could not recognise (a mistyped CREATE ROLE):
  // one that mentions a password or connection options is recorded as its shape, at every level.
  const secret = c.secret || (c.parseError !== null && /\b(password|connection|options)\b/i.test(c.shape));
  const clear = plaintext && !secret;
  return { log, text: truncate(clear ? text : c.shape, maxBytes), plaintext: clear, results: base === "ALL-RESULTS" };
}

/** Cuts a text to at most maxBytes of UTF-8 (on a character boundary), marking the cut. */
export function truncate(text: string, maxBytes: number): string {
  const bytes = Buffer.byteLength(text);
  if (bytes <= maxBytes) return text;
  let cut = Buffer.from(text).subarray(0, maxBytes).toString("utf8");
  if (cut.endsWith("\uFFFD")) cut = cut.slice(0, -1);
  return `${cut}…[truncated ${bytes - Buffer.byteLength(cut)} bytes]`;
}

const MAX_CACHED_SHAPE = 16 * 1024;

/**
 * Classifies query strings with PostgreSQL's own parser (libpg-query), caching by shape: texts that differ
 * only in constants parse alike, so a workload of a few statement forms is parsed a few times, not once per
 * execution. Never throws for any input.
 */
export class StatementClassifier {
  /** By shape; a hit is handed out as it is (callers copy a classification to change it). */
  private readonly cache = new Map<string, Classification>();
  private cachedBytes = 0;
  /** Counters for metrics: texts classified from the cache, and parses. */
  readonly stats = { hits: 0, parses: 0 };
  private constructor(
    private readonly maxEntries: number,
    private readonly maxBytes: number,
  ) {}

  /**
   * `maxEntries` shapes (default 10,000) of at most `maxBytes` in all (default 16 MiB); shapes longer than
   * 16 KB are never cached (a huge statement is parsed each time: rare, and never a memory sink).
   */
  static async create(o: { maxEntries?: number; maxBytes?: number } = {}): Promise<StatementClassifier> {
    await loadModule();
    return new StatementClassifier(o.maxEntries ?? 10_000, o.maxBytes ?? 16 * 1024 * 1024);
  }

  /**
   * `classify(bytes.toString("utf8", start, end))`, without decoding the text when it is ASCII with no `$` and its
   * shape is cached (most executions of a workload's statements).
   */
  classifyBytes(bytes: Buffer, start: number, end: number): Classification {
    const shape = shapeOfAscii(bytes, start, end);
    const hit = shape === null ? undefined : this.cache.get(shape);
    if (hit) {
      this.stats.hits++;
      return hit;
    }
    return this.classify(bytes.toString("utf8", start, end));
  }

  classify(text: string): Classification {
    const shape = shapeOf(text).text;
    const hit = this.cache.get(shape);
    if (hit) {
      this.stats.hits++;
      return hit;
    }
    this.stats.parses++;
    const c: Classification = { ...this.parse(text), shape };
    if (shape.length <= MAX_CACHED_SHAPE) {
      if (this.cache.size >= this.maxEntries || this.cachedBytes + shape.length > this.maxBytes) {
        this.cache.clear();
        this.cachedBytes = 0;
      }
      this.cache.set(shape, c);
      this.cachedBytes += shape.length;
    }
    return c;
  }

  private parse(text: string): Omit<Classification, "shape"> {
    let tree: { stmts?: Array<{ stmt?: unknown }> };
    try {
      tree = parseSync(text) as typeof tree;
    } catch (err) {
      return { statements: [], parseError: String((err as Error)?.message ?? err).slice(0, 300), secret: false };
    }
    const statements: ClassifiedStatement[] = [];
    let secret = false;
    for (const s of tree.stmts ?? []) {
      const n = unwrap(s.stmt);
      if (!n) continue;
      statements.push({ kind: n[0], class: classOf(n[0], n[1]) });
      secret ||= carriesSecret(n[0], n[1]);
    }
    return { statements, parseError: null, secret };
  }
}
