import { pino, type Logger, type DestinationStream } from "pino";

export type { Logger };

/** Paths pino blanks in every record: credentials must never reach a log line. */
export const REDACT_PATHS = [
  "password", "*.password", "newPassword", "*.newPassword", "currentPassword", "*.currentPassword",
  "adminPassword", "*.adminPassword", "token", "*.token", "key", "*.key", "apiKey", "*.apiKey",
  "secret", "*.secret", "req.headers.authorization", "req.headers.cookie", "req.headers[\"x-csrf-token\"]",
  "res.headers[\"set-cookie\"]", "headers.authorization", "headers.cookie",
];

export interface LoggerOptions {
  level?: string;
  /** Pretty output for humans on a terminal; JSON otherwise. */
  pretty?: boolean;
  destination?: DestinationStream;
}

/** The process logger: structured JSON (pino), pretty on a TTY, with credentials redacted. */
export function createLogger(opts: LoggerOptions = {}): Logger {
  const base = {
    level: opts.level ?? "info",
    redact: { paths: REDACT_PATHS, censor: "[redacted]" },
    base: { svc: "parhelion" },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (opts.destination) return pino(base, opts.destination);
  if (opts.pretty) {
    return pino({ ...base, transport: { target: "pino-pretty", options: { colorize: true, translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname,svc" } } });
  }
  return pino(base);
}
