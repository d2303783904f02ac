import { z } from "zod";
import { ParhelionError } from "../lib/errors.js";

/** A UUID path or body id; anything else (path traversal, SQL, ...) is a validation error. */
export const Id = z.uuid({ message: "must be a UUID" });
export const Email = z.string().trim().max(254).pipe(z.email({ message: "must be an email address" }));
export const Name = z.string().trim().min(1).max(256).regex(/^[^\u0000-\u001f\u007f]*$/, { message: "must not contain control characters" });

/** Paging for list routes that answer a bare JSON array (Helios shape); the next page's token is in `X-Next-Token`. */
export const PageQuery = {
  limit: z.coerce.number().int().min(1).max(1000).default(1000).describe("Page size (1-1000)."),
  nextToken: z.string().max(512).optional().describe("The X-Next-Token header of the previous page."),
};

export function encodeToken(cursor: unknown): string {
  return Buffer.from(JSON.stringify(cursor)).toString("base64url");
}

export function decodeToken<T>(token: string | undefined, schema: z.ZodType<T>): T | undefined {
  if (token === undefined) return undefined;
  try {
    return schema.parse(JSON.parse(Buffer.from(token, "base64url").toString("utf8")));
  } catch {
    throw new ParhelionError("ERR_VALIDATION", "nextToken is not a token this API issued");
  }
}

/**
 * A Helios field parhelion does not have: accepted only at its neutral value (absent, null, false, "",
 * empty list or object); any other value answers ERR_FIELD_NOT_SUPPORTED.
 */
export function heliosUnsupported(field: string) {
  return z.unknown().superRefine((v, ctx) => {
    const neutral = v === undefined || v === null || v === false || v === "" || (Array.isArray(v) && v.length === 0) || (typeof v === "object" && v !== null && Object.keys(v).length === 0);
    if (!neutral) ctx.addIssue({ code: "custom", message: `${field} is not supported by parhelion; omit it or send its neutral value`, params: { code: "ERR_FIELD_NOT_SUPPORTED" } });
  }).optional();
}

/**
 * Runs a keyset-paged list: decodes `nextToken` into the cursor the store expects (the previous page's last
 * key), and sets `X-Next-Token` when the page is full.
 */
export async function pagedList<T>(
  query: { limit: number; nextToken?: string | undefined },
  reply: { header(name: string, value: string): unknown },
  fetch: (page: { limit: number; after: string | undefined }) => Promise<T[]>,
  keyOf: (row: T) => string,
): Promise<T[]> {
  const rows = await fetch({ limit: query.limit, after: decodeToken(query.nextToken, z.string()) });
  const last = rows.at(-1);
  if (rows.length === query.limit && last !== undefined) reply.header("x-next-token", encodeToken(keyOf(last)));
  return rows;
}
