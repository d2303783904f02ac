import { isUuid } from "../lib/ids.js";
import type { ChainFields } from "./chain.js";
import { ParhelionError } from "../lib/errors.js";
import { ACTOR_TYPES, AUDIT_RESULTS, AUDIT_SOURCES, type AuditEvent } from "./types.js";

/**
 * Turns a caller's event into exactly what the store will hold, so the hash computed before the insert
 * is the hash of what a later read returns. Text that PostgreSQL cannot store (NUL, lone surrogates) is
 * replaced rather than rejected: that text is often attacker-supplied (an e-mail typed at login), and an
 * attacker must not be able to suppress an audit record by sending it.
 */

/** Longest text field kept, in UTF-16 code units; longer values are cut. */
export const MAX_TEXT = 4096;
/** Largest `attributes` kept, as compact JSON in bytes; larger ones are replaced by a marker. */
export const MAX_ATTRIBUTES_BYTES = 64 * 1024;
/** Deepest `attributes` nesting kept. */
export const MAX_ATTRIBUTES_DEPTH = 32;

// NUL (PostgreSQL text and jsonb refuse it) and unpaired surrogates (UTF-8 cannot carry them).
const UNSTORABLE_RE = /\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/** An event ready for the chain: every hashed field as stored, before it has a place (`seq`) in the chain. */
export type NormalizedEvent = Omit<ChainFields, "seq" | "createdAt"> & { createdAt: Date };

/** Makes a string storable: replaces NUL and lone surrogates with U+FFFD and cuts it to `max`. */
export function cleanText(s: string, max = MAX_TEXT): string {
  let out = s.replace(UNSTORABLE_RE, "\uFFFD");
  if (out.length > max) out = out.slice(0, max).replace(UNSTORABLE_RE, "\uFFFD");
  return out;
}

function invalid(field: string, why: string): ParhelionError {
  return new ParhelionError("ERR_VALIDATION", `audit event: ${field} ${why}`, { details: { field } });
}

function optText(v: unknown, field: string): string | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== "string") throw invalid(field, "must be a string");
  return cleanText(v);
}

function reqText(v: unknown, field: string): string {
  if (typeof v !== "string") throw invalid(field, "must be a string");
  return cleanText(v);
}

function optUuid(v: unknown, field: string): string | null {
  if (v === undefined || v === null) return null;
  if (!isUuid(v)) throw invalid(field, "must be a UUID");
  return v.toLowerCase();
}

function oneOf<T extends string>(v: unknown, allowed: readonly T[], field: string): T {
  if (typeof v !== "string" || !(allowed as readonly string[]).includes(v)) throw invalid(field, `must be one of ${allowed.join(", ")}`);
  return v as T;
}

function cleanJson(v: unknown, depth: number): unknown {
  if (depth > MAX_ATTRIBUTES_DEPTH) throw new RangeError("too deep");
  if (typeof v === "string") return cleanText(v, Number.MAX_SAFE_INTEGER);
  if (Array.isArray(v)) return v.map((x) => cleanJson(x, depth + 1));
  if (v !== null && typeof v === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[cleanText(k, Number.MAX_SAFE_INTEGER)] = cleanJson(x, depth + 1);
    return out;
  }
  return v; // number (finite after the JSON round trip), boolean, null
}

/**
 * Attributes as stored: the JSON round trip (toJSON, undefined dropped, NaN to null), then cleaned text.
 * Attributes that cannot be stored are replaced by `{ "attributesDropped": <why> }` so the record still
 * lands; `warning` says why.
 */
export function normalizeAttributes(a: unknown): { value: Record<string, unknown>; warning?: string } {
  if (a === undefined || a === null) return { value: {} };
  let parsed: unknown;
  try {
    const json = JSON.stringify(a);
    if (json === undefined) return dropped("not serialisable");
    parsed = JSON.parse(json);
  } catch {
    return dropped("not serialisable");
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) return dropped("not an object");
  let value: Record<string, unknown>;
  try {
    value = cleanJson(parsed, 0) as Record<string, unknown>;
  } catch {
    return dropped("nested too deeply");
  }
  const bytes = Buffer.byteLength(JSON.stringify(value), "utf8");
  if (bytes > MAX_ATTRIBUTES_BYTES) return dropped(`too large (${bytes} bytes)`);
  return { value };
}

function dropped(why: string): { value: Record<string, unknown>; warning: string } {
  return { value: { attributesDropped: why }, warning: `attributes ${why}` };
}

/**
 * Validates the caller's contract (enums, UUIDs, required strings) and normalizes the rest. Throws
 * ERR_VALIDATION naming the field when the caller broke the contract (a programming error).
 */
export function normalizeEvent(e: AuditEvent, id: string, createdAt: Date): { event: NormalizedEvent; warning?: string } {
  if (e === null || typeof e !== "object") throw invalid("event", "must be an object");
  if (Number.isNaN(createdAt.getTime())) throw invalid("createdAt", "is not a valid time (clock)");
  const type = reqText(e.type, "type");
  if (type.length === 0) throw invalid("type", "must not be empty");
  const actor = e.actor as AuditEvent["actor"] | undefined;
  if (actor === null || typeof actor !== "object") throw invalid("actor", "must be an object");
  let resourceType: string | null = null;
  let resourceId: string | null = null;
  if (e.resource !== undefined && e.resource !== null) {
    if (typeof e.resource !== "object") throw invalid("resource", "must be an object");
    resourceType = reqText(e.resource.type, "resource.type");
    resourceId = reqText(e.resource.id, "resource.id");
  }
  const attrs = normalizeAttributes(e.attributes);
  const event: NormalizedEvent = {
    id,
    createdAt,
    orgId: optUuid(e.orgId, "orgId"),
    type,
    source: oneOf(e.source, AUDIT_SOURCES, "source"),
    result: oneOf(e.result, AUDIT_RESULTS, "result"),
    actorType: oneOf(actor.type, ACTOR_TYPES, "actor.type"),
    actorId: optUuid(actor.id, "actor.id"),
    actorEmail: optText(actor.email, "actor.email"),
    resourceType,
    resourceId,
    sourceIp: optText(e.sourceIp, "sourceIp"),
    requestId: optText(e.requestId, "requestId"),
    reason: reqText(e.reason, "reason"),
    attributes: attrs.value,
  };
  return attrs.warning === undefined ? { event } : { event, warning: attrs.warning };
}
