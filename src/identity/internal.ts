import { createHash, randomBytes } from "node:crypto";
import { ParhelionError } from "../lib/errors.js";
import { ORG_ROLES, type OrgRole } from "./types.js";

// Helpers shared by the identity modules. Not re-exported from index.ts.

/** sha256 of a string (UTF-8) or bytes. */
export function sha256(data: string | Buffer): Buffer {
  return createHash("sha256").update(data).digest();
}

/** A fresh 32-byte random token, base64url without padding (43 characters). */
export function randomToken(): string {
  return randomBytes(32).toString("base64url");
}

const TOKEN_RE = /^[A-Za-z0-9_-]{43}$/;

/**
 * Decodes a 43-character base64url token to its 32 bytes, or null when the text is not the canonical
 * encoding of exactly 32 bytes (Node's decoder is lenient, so we re-encode and compare).
 */
export function decodeToken(text: unknown): Buffer | null {
  if (typeof text !== "string" || !TOKEN_RE.test(text)) return null;
  const bytes = Buffer.from(text, "base64url");
  if (bytes.length !== 32 || bytes.toString("base64url") !== text) return null;
  return bytes;
}


import { isUuid } from "../lib/ids.js";
export { isUuid };

/** Throws ERR_VALIDATION unless the value is a UUID. */
export function requireUuid(value: unknown, field: string): string {
  if (!isUuid(value)) throw new ParhelionError("ERR_VALIDATION", `${field} must be a UUID`);
  return value.toLowerCase();
}

export const MAX_PAGE = 1000;

/** Validates a page size: an integer in 1..1000. */
export function pageLimit(limit: number): number {
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) {
    throw new ParhelionError("ERR_VALIDATION", `limit must be an integer between 1 and ${MAX_PAGE}`);
  }
  return limit;
}

/** Throws ERR_VALIDATION unless the role is a built-in organization role. */
export function requireRole(role: unknown): OrgRole {
  if (typeof role !== "string" || !(ORG_ROLES as readonly string[]).includes(role)) {
    throw new ParhelionError("ERR_VALIDATION", `role must be one of ${ORG_ROLES.join(", ")}`);
  }
  return role as OrgRole;
}

/** True if the value is a built-in organization role. */
export function isRole(role: unknown): role is OrgRole {
  return typeof role === "string" && (ORG_ROLES as readonly string[]).includes(role);
}

// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f]/;
const EMAIL_RE = /^[^\s@]+@[^\s@]+$/;

/** Lower-cases and trims an email and checks its basic shape (one @, no blanks, at most 254 chars). */
export function normalizeEmail(email: unknown): string {
  if (typeof email !== "string") throw new ParhelionError("ERR_VALIDATION", "email must be a string");
  const e = email.trim().toLowerCase();
  if (e.length === 0 || e.length > 254 || CONTROL_RE.test(e) || !EMAIL_RE.test(e)) {
    throw new ParhelionError("ERR_VALIDATION", "email is not a valid address");
  }
  return e;
}

/** Checks a short free-text field (a name): a string of at most `max` characters without control characters. */
export function text(value: unknown, field: string, opts: { max: number; allowEmpty: boolean }): string {
  if (typeof value !== "string") throw new ParhelionError("ERR_VALIDATION", `${field} must be a string`);
  const v = value.trim();
  if (!opts.allowEmpty && v.length === 0) throw new ParhelionError("ERR_VALIDATION", `${field} must not be empty`);
  if (v.length > opts.max) throw new ParhelionError("ERR_VALIDATION", `${field} must be at most ${opts.max} characters`);
  if (CONTROL_RE.test(v)) throw new ParhelionError("ERR_VALIDATION", `${field} must not contain control characters`);
  return v;
}

/** Checks a lifetime in seconds: an integer within [min, max]. */
export function ttl(seconds: number, field: string, min: number, max: number): number {
  if (!Number.isInteger(seconds) || seconds < min || seconds > max) {
    throw new ParhelionError("ERR_VALIDATION", `${field} must be an integer between ${min} and ${max}`);
  }
  return seconds;
}

/** ISO-8601 text of a timestamp column value, or null. */
export function iso(value: Date | string | null): string | null {
  if (value === null) return null;
  return (value instanceof Date ? value : new Date(value)).toISOString();
}

/** ISO-8601 text of a non-null timestamp column value. */
export function isoNN(value: Date | string): string {
  return (value instanceof Date ? value : new Date(value)).toISOString();
}

/** A timestamp column value as a Date. */
export function asDate(value: Date | string): Date {
  return value instanceof Date ? value : new Date(value);
}

/** True for a PostgreSQL unique-violation error (SQLSTATE 23505), optionally on a given constraint/index. */
export function isUniqueViolation(err: unknown, constraint?: string): boolean {
  if (typeof err !== "object" || err === null) return false;
  const e = err as { code?: unknown; constraint?: unknown };
  return e.code === "23505" && (constraint === undefined || e.constraint === constraint);
}
