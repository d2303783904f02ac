/**
 * pgaudit's records as a workspace server writes them to its csvlog (PostgreSQL docs §20.8.4 "Using CSV-Format
 * Log Output"; pgaudit's README "Format"), and what a statement audit level makes of them. Pure: no I/O.
 *
 * A csvlog line is one CSV record (fields quoted with doubled quotes; a quoted field may span lines). pgaudit's
 * own line is the `message` field: `AUDIT: <AUDIT_TYPE>,<STATEMENT_ID>,<SUBSTATEMENT_ID>,<CLASS>,<COMMAND>,
 * <OBJECT_TYPE>,<OBJECT_NAME>,<STATEMENT>,<PARAMETER>`, CSV again (pgaudit quotes the fields that need it).
 * Anyone who can run SQL can put `AUDIT: ...` in a message (RAISE LOG), so a line counts as pgaudit's only
 * when its `location` (log_error_verbosity = verbose) is pgaudit's logging function: C source locations come
 * from the server, never from SQL.
 */
import { decide, type AuditDecision, type AuditLevel, type Classification, type StatementClass, type StatementClassifier } from "./sql/classify.js";

/** One statement pgaudit logged inside a function, DO block, procedure or trigger, from a workspace server's log. */
export interface NestedStatement {
  workspaceId: string;
  /** The server's log time, ms since the epoch (millisecond precision, the host's clock). */
  at: number;
  /** The server process (backend) that ran it. */
  pid: number;
  /** The session user (the role the session logged in as, whatever SET ROLE did). */
  user: string;
  database: string;
  /** `<session_id>:<session_line_num>`: unique per line of a server's log (a duplicate-free key). */
  logLine: string;
  statementId: number;
  substatementId: number;
  /** pgaudit's class: READ, WRITE, FUNCTION, ROLE, DDL, MISC, MISC_SET. */
  class: string;
  /** pgaudit's command: INSERT, CREATE TABLE, EXECUTE (a function call), ... */
  command: string;
  objectType: string | null;
  objectName: string | null;
  /** The statement's text as the server ran it (a function body's statement, a dynamic EXECUTE's string). */
  statement: string;
}

/**
 * Splits CSV text into records as it arrives in chunks of any size (a record or a field may span chunks and
 * lines). Never throws; keeps at most `maxRecordChars` of one record (a longer one is dropped whole and counted).
 */
export class CsvRecords {
  private fields: string[] = [];
  private field = "";
  private inQuotes = false;
  private quoteAtEnd = false;
  private chars = 0;
  private oversized = false;
  /** Records dropped for their size. */
  dropped = 0;
  /** UTF-8 bytes pushed since the end of the last whole record (what a reader resuming at a record boundary reads again). */
  tailBytes = 0;

  constructor(private readonly maxRecordChars = 64 * 1024 * 1024) {}

  /** Feeds text; answers the records it completed. */
  push(text: string): string[][] {
    const out: string[][] = [];
    const n = text.length;
    let i = 0;
    let lastEnd = -1;
    if (this.quoteAtEnd && n > 0) {
      this.quoteAtEnd = false;
      if (text.charCodeAt(0) === 34) {
        this.add('"');
        i = 1;
      } else this.inQuotes = false;
    }
    while (i < n) {
      if (this.inQuotes) {
        const q = text.indexOf('"', i);
        if (q < 0) {
          this.add(text.slice(i));
          break;
        }
        this.add(text.slice(i, q));
        if (q + 1 === n) {
          this.quoteAtEnd = true; // a doubled quote or the closing one: the next chunk tells
          break;
        }
        if (text.charCodeAt(q + 1) === 34) {
          this.add('"');
          i = q + 2;
        } else {
          this.inQuotes = false;
          i = q + 1;
        }
        continue;
      }
      const c = text.charCodeAt(i);
      if (c === 34) {
        this.inQuotes = true;
        i++;
      } else if (c === 44) {
        this.fields.push(this.field);
        this.field = "";
        i++;
      } else if (c === 10) {
        this.fields.push(this.field);
        if (!this.oversized) out.push(this.fields);
        this.fields = [];
        this.field = "";
        this.chars = 0;
        this.oversized = false;
        i++;
        lastEnd = i;
      } else {
        let j = i + 1;
        for (; j < n; j++) {
          const d = text.charCodeAt(j);
          if (d === 34 || d === 44 || d === 10) break;
        }
        this.add(text.slice(i, j));
        i = j;
      }
    }
    this.tailBytes = lastEnd < 0 ? this.tailBytes + Buffer.byteLength(text) : Buffer.byteLength(lastEnd === 0 ? text : text.slice(lastEnd));
    return out;
  }

  private add(s: string): void {
    if (this.oversized) return;
    this.chars += s.length;
    if (this.chars > this.maxRecordChars) {
      this.oversized = true;
      this.dropped++;
      this.field = "";
      this.fields = [];
      return;
    }
    this.field += s;
  }

}

// PostgreSQL 15's csvlog columns (§20.8.4).
const LOG_TIME = 0;
const USER_NAME = 1;
const DATABASE_NAME = 2;
const PROCESS_ID = 3;
const SESSION_ID = 5;
const SESSION_LINE = 6;
const SEVERITY = 11;
const MESSAGE = 13;
const LOCATION = 21;
const BACKEND_TYPE = 23;
const COLUMNS = 26;

/** The location of every line pgaudit writes (its log_audit_event function), as log_error_verbosity = verbose shows it. */
const PGAUDIT_LOCATION = "log_audit_event, pgaudit.c:";

/** `2024-05-01 12:00:00.123 UTC` (log_timezone = UTC) → ms since the epoch; NaN otherwise. */
export function parseLogTime(s: string): number {
  if (s.length !== 27 || !s.endsWith(" UTC")) return Number.NaN;
  return Date.parse(`${s.slice(0, 10)}T${s.slice(11, 23)}Z`);
}

/** pgaudit's fields of its message, or null when the message is not pgaudit's format. */
export function parsePgauditMessage(message: string): Omit<NestedStatement, "workspaceId" | "at" | "pid" | "user" | "database" | "logLine"> | null {
  if (!message.startsWith("AUDIT: ")) return null;
  const csv = new CsvRecords();
  const [f] = csv.push(`${message.slice(7)}\n`);
  if (!f || f.length < 9 || (f[0] !== "SESSION" && f[0] !== "OBJECT")) return null;
  const statementId = Number(f[1]);
  const substatementId = Number(f[2]);
  if (!Number.isInteger(statementId) || !Number.isInteger(substatementId)) return null;
  return {
    statementId, substatementId, class: f[3]!, command: f[4]!,
    objectType: f[5] === "" ? null : f[5]!, objectName: f[6] === "" ? null : f[6]!,
    // With log_parameter off the last field is <not logged> or <none>; a statement with commas is quoted.
    statement: f[7]!,
  };
}

/**
 * A csvlog record → the nested statement pgaudit logged, or null: not pgaudit's line (other messages, and
 * `AUDIT:` text any session can RAISE), or not a client backend's. Every pgaudit line that reaches the log is a
 * nested statement's: parhelion_guard keeps pgaudit from building, or drops, the lines of top-level statements
 * (the gateway records those itself, with their outcome). The SUBSTATEMENT_ID says nothing here: with a top-level
 * statement's line never built, pgaudit numbers the first nested line 1 (the EXECUTE of a function a top-level
 * SELECT calls, the first statement of a trigger a top-level INSERT fires).
 */
export function nestedStatementOf(workspaceId: string, f: string[]): NestedStatement | null {
  if (f.length < COLUMNS || f[SEVERITY] !== "LOG" || !f[LOCATION]!.startsWith(PGAUDIT_LOCATION) || f[BACKEND_TYPE] !== "client backend") return null;
  const m = parsePgauditMessage(f[MESSAGE]!);
  if (!m) return null;
  const at = parseLogTime(f[LOG_TIME]!);
  const pid = Number(f[PROCESS_ID]);
  if (!Number.isFinite(at) || !Number.isInteger(pid)) return null;
  return { workspaceId, at, pid, user: f[USER_NAME]!, database: f[DATABASE_NAME]!, logLine: `${f[SESSION_ID]}:${f[SESSION_LINE]}`, ...m };
}

/** pgaudit.log classes a level needs (none for OFF and LOGINS-ONLY). */
export function pgauditClassesFor(level: AuditLevel): string[] {
  const base = level.replace(/-INCLUDING-PARSE-FAILS$/, "");
  switch (base) {
    case "ADMIN-ONLY":
      return ["ddl", "role"];
    case "WRITES-ONLY":
      return ["ddl", "function", "role", "write"];
    case "ALL-QUERIES":
    case "ALL-QUERIES-PLAINTEXT":
    case "ALL-RESULTS":
      return ["ddl", "function", "misc", "misc_set", "read", "role", "write"];
    default:
      return [];
  }
}

/** The pgaudit.log value for a set of classes ('none' for none), in a stable order. */
export function pgauditLogSetting(classes: Iterable<string>): string {
  const list = [...new Set(classes)].sort();
  return list.length === 0 ? "none" : list.join(",");
}

const CLASS_OF: Record<string, StatementClass> = { READ: "READ", WRITE: "WRITE", FUNCTION: "FUNCTION", ROLE: "ROLE", DDL: "DDL", MISC: "MISC", MISC_SET: "MISC" };

/**
 * What a session's level records of a nested statement: the level's classes decide by pgaudit's class; the
 * text is as the gateway's own records have it (its shape below the PLAINTEXT levels, always its shape when it
 * carries a secret such as a role's PASSWORD, cut past `maxBytes`).
 */
export function decideNested(level: AuditLevel, e: NestedStatement, classifier: StatementClassifier, maxBytes = 16_384): { decision: AuditDecision; classification: Classification } {
  const c = classifier.classify(e.statement);
  const secret = c.secret || (c.parseError !== null && /\b(password|connection|options)\b/i.test(c.shape));
  const cls = CLASS_OF[e.class] ?? "MISC";
  const classification: Classification = { statements: [{ kind: c.statements[0]?.kind ?? e.command, class: cls }], parseError: null, secret, shape: c.shape };
  return { decision: decide(level, e.statement, classification, maxBytes), classification };
}
