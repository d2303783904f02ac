import type { Command } from "commander";
import { ApiClient, resolveTarget } from "./client.js";
import { CliError, EXIT, usageError } from "./errors.js";
import { resolveFormat, type OutputFormat } from "./output.js";

/** What an API command's action gets: the output format and a client for the signed-in target. */
export interface Ctx {
  format: OutputFormat;
  client: ApiClient;
}

/** The output format of a command, from the global --output option. */
export function formatOf(cmd: Command): OutputFormat {
  return resolveFormat((cmd.optsWithGlobals() as { output?: string }).output);
}

/**
 * Wraps an action that talks to the API: commander passes (...arguments, options, command); the wrapped
 * function receives (ctx, ...arguments, options). The client is closed however the action ends.
 */
export function apiAction<A extends unknown[]>(fn: (ctx: Ctx, ...args: A) => Promise<void>): (...args: unknown[]) => Promise<void> {
  return async (...args: unknown[]) => {
    const cmd = args.at(-1) as Command;
    const format = formatOf(cmd);
    const client = new ApiClient(resolveTarget(process.env));
    try {
      await fn({ format, client }, ...(args.slice(0, -1) as A));
    } finally {
      await client.close();
    }
  };
}

import { isUuid } from "../lib/ids.js";
export { isUuid };

/** A user reference: a user ID as is, or an email looked up with GET /v1/users?email=. */
export async function resolveUserId(client: ApiClient, ref: string): Promise<string> {
  if (isUuid(ref)) return ref;
  if (!ref.includes("@")) throw usageError(`"${ref}" is neither a user ID nor an email`, "`parhelion user list` shows both");
  const users = await client.get<Array<{ userID: string }>>("/v1/users", { email: ref });
  const u = users[0];
  if (!u) throw new CliError(EXIT.NOT_FOUND, "ERR_NOT_FOUND", `no user with email ${ref}`, { hint: "`parhelion user list` shows the organization's users" });
  return u.userID;
}

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 };

/** "90d" -> milliseconds. Units: s, m (minutes), h, d, w. */
export function parseDuration(s: string, what: string): number {
  const m = /^(\d{1,6})([smhdw])$/.exec(s.trim());
  if (!m) throw usageError(`${what}: "${s}" is not a duration`, "write a number and a unit: 30m, 12h, 90d, 4w");
  const n = Number(m[1]) * UNIT_MS[m[2]!]!;
  if (n <= 0) throw usageError(`${what}: the duration must be positive`);
  return n;
}

/** An RFC 3339 timestamp, or a duration meaning that long before `now` ("24h" = a day ago). */
export function parseInstant(s: string, what: string, now: Date = new Date()): string {
  if (/^\d+[smhdw]$/.test(s.trim())) return new Date(now.getTime() - parseDuration(s, what)).toISOString();
  if (!/^\d{4}-\d{2}-\d{2}/.test(s) || Number.isNaN(Date.parse(s))) throw usageError(`${what}: "${s}" is neither an RFC 3339 time nor a duration`, "e.g. 2025-06-01T00:00:00Z or 24h");
  return new Date(s).toISOString();
}
