import { createHash } from "node:crypto";
import { decide, truncate, type AuditDecision, type AuditLevel, type Classification, type StatementClassifier } from "../audit/sql/classify.js";
import { FrontendType } from "./protocol/frontend.js";

/** One statement the session's audit level records. */
export interface StatementRecord {
  protocol: "simple" | "extended";
  classification: Classification;
  decision: AuditDecision;
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

/**
 * Follows one client session's statements for audit: simple Query messages, and the extended protocol's
 * Parse (named and unnamed statements), Bind (portals), Execute and Close. A statement is recorded when it
 * is sent for execution — a Query, or an Execute of a portal bound to a parsed statement — if the session's
 * level records its class. Malformed messages are the protocol checks' business: nothing here throws.
 */
export class SessionStatements {
  /** Named statements a session may have open before the oldest are forgotten (drivers keep far fewer). */
  static readonly MAX_STATEMENTS = 256;
  private readonly parsed = new Map<string, { text: string; c: Classification }>();
  private readonly portals = new Map<string, string>();
  /** Statement names forgotten for the limit: an Execute of one is still recorded, as unknown. */
  private readonly forgotten = new Set<string>();

  private readonly maxText: number;

  constructor(private readonly o: { level: AuditLevel; classifier: StatementClassifier; record: (r: StatementRecord) => void; maxTextBytes?: number }) {
    this.maxText = o.maxTextBytes ?? 16_384;
  }

  readonly onMessage = (type: number, body: Buffer): void => {
    try {
      this.handle(type, body);
    } catch {
      // a message the server will refuse anyway; the session's protocol checks deal with it
    }
  };

  private handle(type: number, body: Buffer): void {
    switch (type) {
      case FrontendType.Query: {
        const q = cstring(body, 0);
        if (q) this.maybeRecord("simple", q[0], this.o.classifier.classify(q[0]));
        return;
      }
      case FrontendType.Parse: {
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
        const stmt = portal ? this.portals.get(nameKey(portal[0])) : undefined;
        const p = stmt === undefined ? undefined : this.parsed.get(stmt);
        if (p) this.maybeRecord("extended", p.text, p.c);
        else if (stmt !== undefined && this.forgotten.has(stmt)) this.maybeRecord("extended", FORGOTTEN, UNKNOWN);
        return;
      }
      case FrontendType.Close: {
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

  /** For the extended protocol the text is the statement as parsed: its $n parameters, never the values bound. */
  private maybeRecord(protocol: "simple" | "extended", text: string, c: Classification): void {
    const decision = decide(this.o.level, text, c, this.maxText);
    if (decision.log) this.o.record({ protocol, classification: c, decision });
  }
}
