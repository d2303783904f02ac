/**
 * The CLI's exit codes and its one error type. Every failure a command can meet ends as a CliError whose
 * exit code is in EXIT_CODES; main.ts is the only place that turns it into stderr text and a process exit.
 */

/** Exit codes, documented in `--help` and docs/cli.md (a test keeps both in step with this table). */
export const EXIT_CODES = [
  { code: 0, name: "OK", meaning: "success" },
  { code: 1, name: "INTERNAL", meaning: "unexpected or internal error (a bug, or `up` failed to start)" },
  { code: 2, name: "USAGE", meaning: "usage or configuration error (bad flag, bad value, missing input)" },
  { code: 3, name: "UNAUTHENTICATED", meaning: "not signed in, or the credential was rejected (HTTP 401)" },
  { code: 4, name: "FORBIDDEN", meaning: "permission denied (HTTP 403)" },
  { code: 5, name: "NOT_FOUND", meaning: "not found (HTTP 404)" },
  { code: 6, name: "REJECTED", meaning: "request rejected (other 4xx: validation, 409 conflict, 429 rate limit)" },
  { code: 7, name: "UNAVAILABLE", meaning: "server unreachable, TLS verification failed, or HTTP 5xx" },
  { code: 8, name: "AUDIT_VERIFY_FAILED", meaning: "audit verification found problems" },
] as const;

type ExitName = (typeof EXIT_CODES)[number]["name"];
export type ExitCode = (typeof EXIT_CODES)[number]["code"];

/** Exit code by name: EXIT.USAGE === 2. */
export const EXIT = Object.fromEntries(EXIT_CODES.map((e) => [e.name, e.code])) as { readonly [K in ExitName]: Extract<(typeof EXIT_CODES)[number], { name: K }>["code"] };

/** The exit-code table as plain text, for the `--help` epilog. */
export function exitCodeHelp(): string {
  return ["Exit codes:", ...EXIT_CODES.map((e) => `  ${e.code}  ${e.meaning}`)].join("\n");
}

/** Exit code for an HTTP error status. */
export function exitCodeForStatus(status: number): ExitCode {
  if (status === 401) return EXIT.UNAUTHENTICATED;
  if (status === 403) return EXIT.FORBIDDEN;
  if (status === 404) return EXIT.NOT_FOUND;
  if (status >= 400 && status < 500) return EXIT.REJECTED;
  return EXIT.UNAVAILABLE;
}

export interface CliErrorOptions {
  /** What the user should do next; printed after the message. */
  hint?: string;
  /** The API's request id, when the server answered. */
  requestId?: string;
  /** HTTP status, when the server answered. */
  status?: number;
  cause?: unknown;
}

/**
 * A failure the CLI reports and exits on. `code` is the API's stable error code (ERR_NOT_FOUND, ...) when
 * the server answered with a problem, otherwise one of the CLI's own ERR_CLI_* codes.
 */
export class CliError extends Error {
  readonly code: string;
  readonly exitCode: ExitCode;
  readonly hint: string | undefined;
  readonly requestId: string | undefined;
  readonly status: number | undefined;

  constructor(exitCode: ExitCode, code: string, message: string, opts: CliErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "CliError";
    this.code = code;
    this.exitCode = exitCode;
    this.hint = opts.hint;
    this.requestId = opts.requestId;
    this.status = opts.status;
  }
}

/** A usage error: a missing or contradictory option, or an unusable value. Exit code 2. */
export function usageError(message: string, hint?: string): CliError {
  return new CliError(EXIT.USAGE, "ERR_CLI_USAGE", message, hint === undefined ? {} : { hint });
}

/** The stderr text of an error: the message, its code and request id, then the hint. */
export function formatError(err: CliError): string {
  const ref = [err.code.startsWith("ERR_CLI_") ? null : err.code, err.requestId ? `request ${err.requestId}` : null].filter(Boolean).join(", ");
  let out = `parhelion: error: ${err.message}${ref ? ` (${ref})` : ""}\n`;
  if (err.hint) out += `  hint: ${err.hint}\n`;
  return out;
}
