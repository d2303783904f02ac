import { randomUUID } from "node:crypto";
import { createLogger, type Logger } from "../../src/log/logger.js";
import type { AuditEvent } from "../../src/audit/index.js";

export const ORG_A = "11111111-1111-4111-8111-111111111111";
export const ORG_B = "22222222-2222-4222-8222-222222222222";

/** A valid event; override any field. */
export function ev(over: Partial<AuditEvent> = {}): AuditEvent {
  return {
    type: "Login",
    source: "Portal",
    result: "SUCCESS",
    orgId: ORG_A,
    actor: { type: "user", id: randomUUID(), email: "ada@example.com" },
    resource: { type: "Organization", id: ORG_A },
    sourceIp: "192.0.2.7",
    requestId: randomUUID(),
    reason: "signed in",
    attributes: { mfa: false, n: 1 },
    ...over,
  };
}

/** A logger that keeps every line, to assert what was (and was not) logged. */
export function captureLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const destination = { write: (s: string): void => void lines.push(s) };
  return { logger: createLogger({ level: "debug", destination }), lines };
}

export const silentLogger = (): Logger => createLogger({ level: "silent" });
