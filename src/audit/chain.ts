import { createHash } from "node:crypto";
import type { Selectable } from "kysely";
import type { AuditLogTable } from "../store/schema.js";

/**
 * The audit hash chain. DESIGN.md specifies the encoding byte for byte; keep both in step (a test pins
 * a known vector).
 *
 *   hash_n = SHA-256(prev_hash_n || UTF-8(canonicalJson(chainObject(record_n))))
 *   prev_hash_1 = 32 zero bytes; prev_hash_n = hash_(n-1)
 */

/** prev_hash of the first record. */
export const GENESIS_HASH: Buffer = Buffer.alloc(32);

/** Version of the hashed object's layout; part of every hash. */
export const CHAIN_FORMAT_VERSION = 1;

/** The fields covered by a record's hash, as stored. */
export interface ChainFields {
  seq: string;
  id: string;
  orgId: string | null;
  /** ISO 8601 UTC with milliseconds, as `Date.prototype.toISOString` writes it. */
  createdAt: string;
  type: string;
  source: string;
  result: string;
  actorType: string;
  actorId: string | null;
  actorEmail: string | null;
  resourceType: string | null;
  resourceId: string | null;
  sourceIp: string | null;
  requestId: string | null;
  reason: string;
  attributes: Record<string, unknown>;
}

/**
 * RFC 8785 (JSON Canonicalization Scheme) for the JSON values parhelion stores: object members sorted by
 * their names' UTF-16 code units, no whitespace, strings and numbers as ECMAScript `JSON.stringify`
 * writes them. Throws on values JSON cannot carry (undefined, functions, bigint, non-finite numbers).
 */
export function canonicalJson(value: unknown): string {
  if (value === null) return "null";
  switch (typeof value) {
    case "boolean":
      return value ? "true" : "false";
    case "number":
      if (!Number.isFinite(value)) throw new TypeError("canonicalJson: non-finite number");
      return JSON.stringify(value);
    case "string":
      return JSON.stringify(value);
    case "object": {
      if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v)).join(",")}]`;
      const obj = value as Record<string, unknown>;
      const keys = Object.keys(obj).sort();
      const parts: string[] = [];
      for (const k of keys) {
        const v = obj[k];
        if (v === undefined) throw new TypeError(`canonicalJson: undefined member ${JSON.stringify(k)}`);
        parts.push(`${JSON.stringify(k)}:${canonicalJson(v)}`);
      }
      return `{${parts.join(",")}}`;
    }
    default:
      throw new TypeError(`canonicalJson: cannot encode a ${typeof value}`);
  }
}

/** The object whose canonical JSON is hashed (flat, one member per column, plus the format version). */
export function chainObject(f: ChainFields): Record<string, unknown> {
  return {
    v: CHAIN_FORMAT_VERSION,
    seq: f.seq,
    id: f.id,
    orgId: f.orgId,
    createdAt: f.createdAt,
    type: f.type,
    source: f.source,
    result: f.result,
    actorType: f.actorType,
    actorId: f.actorId,
    actorEmail: f.actorEmail,
    resourceType: f.resourceType,
    resourceId: f.resourceId,
    sourceIp: f.sourceIp,
    requestId: f.requestId,
    reason: f.reason,
    attributes: f.attributes,
  };
}

const str = (s: string | null): string => (s === null ? "null" : JSON.stringify(s));

/**
 * `canonicalJson(chainObject(f))` with the top-level members written in their (fixed) sorted order
 * instead of sorting them per record; a property test keeps the two identical.
 */
export function canonicalRecord(f: ChainFields): string {
  return (
    `{"actorEmail":${str(f.actorEmail)},"actorId":${str(f.actorId)},"actorType":${str(f.actorType)},` +
    `"attributes":${canonicalJson(f.attributes)},"createdAt":${str(f.createdAt)},"id":${str(f.id)},` +
    `"orgId":${str(f.orgId)},"reason":${str(f.reason)},"requestId":${str(f.requestId)},` +
    `"resourceId":${str(f.resourceId)},"resourceType":${str(f.resourceType)},"result":${str(f.result)},` +
    `"seq":${str(f.seq)},"source":${str(f.source)},"sourceIp":${str(f.sourceIp)},"type":${str(f.type)},` +
    `"v":${CHAIN_FORMAT_VERSION}}`
  );
}

/** hash_n = SHA-256(prev_hash_n || canonical JSON of the record's fields). */
export function chainHash(prevHash: Buffer, f: ChainFields): Buffer {
  if (prevHash.length !== 32) throw new TypeError("chainHash: prev_hash must be 32 bytes");
  return createHash("sha256").update(prevHash).update(canonicalRecord(f), "utf8").digest();
}

/** The columns of an `audit_log` row that the chain covers, as Kysely returns them. */
export type ChainRow = Omit<Selectable<AuditLogTable>, "prev_hash" | "hash">;

/** Maps a stored row to the hashed fields. */
export function fieldsFromRow(r: ChainRow): ChainFields {
  return {
    seq: String(r.seq),
    id: r.id,
    orgId: r.org_id,
    createdAt: r.created_at.toISOString(),
    type: r.type,
    source: r.source,
    result: r.result,
    actorType: r.actor_type,
    actorId: r.actor_id,
    actorEmail: r.actor_email,
    resourceType: r.resource_type,
    resourceId: r.resource_id,
    sourceIp: r.source_ip,
    requestId: r.request_id,
    reason: r.reason,
    attributes: r.attributes,
  };
}
