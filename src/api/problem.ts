import type { FastifyError, FastifyReply, FastifyRequest } from "fastify";
import { ERROR_CATALOG, ParhelionError, type ErrorCode } from "../lib/errors.js";

/** RFC 9457 problem details with parhelion's stable code and the request id. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: ErrorCode;
  message: string;
  requestId: string;
  [extra: string]: unknown;
}

/** Converts anything thrown into a ParhelionError; internal errors are masked. */
export function toParhelionError(err: unknown): { error: ParhelionError; internal: boolean } {
  if (err instanceof ParhelionError) return { error: err, internal: false };
  const fe = err as Partial<FastifyError> & { code?: string; statusCode?: number };
  switch (fe.code) {
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return { error: new ParhelionError("ERR_BODY_TOO_LARGE"), internal: false };
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
    case "FST_ERR_CTP_INVALID_CONTENT_LENGTH":
      return { error: new ParhelionError("ERR_UNSUPPORTED_MEDIA_TYPE"), internal: false };
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return { error: new ParhelionError("ERR_VALIDATION", "the request body is empty but its content-type is application/json"), internal: false };
    case "FST_ERR_CTP_INVALID_JSON_BODY":
      return { error: new ParhelionError("ERR_VALIDATION", "the request body is not valid JSON"), internal: false };
  }
  if (err instanceof SyntaxError && fe.statusCode === 400) return { error: new ParhelionError("ERR_VALIDATION", "the request body is not valid JSON"), internal: false };
  if (typeof fe.statusCode === "number" && fe.statusCode >= 400 && fe.statusCode < 500) {
    return { error: new ParhelionError("ERR_VALIDATION", "the request is malformed"), internal: false };
  }
  return { error: new ParhelionError("ERR_INTERNAL", undefined, { cause: err }), internal: true };
}

export function problemOf(error: ParhelionError, requestId: string): Problem {
  const c = ERROR_CATALOG[error.code];
  return {
    type: `urn:parhelion:error:${error.code}`,
    title: c.title,
    status: c.status,
    detail: error.message,
    code: error.code,
    message: error.message,
    requestId,
    ...(error.details ?? {}),
  };
}

/** Sends a problem+json answer (with Retry-After for rate limits). */
export function sendProblem(req: FastifyRequest, reply: FastifyReply, error: ParhelionError): FastifyReply {
  const p = problemOf(error, String(req.id));
  const retry = error.details?.["retryAfterSeconds"];
  if (typeof retry === "number") reply.header("retry-after", String(Math.ceil(retry)));
  return reply.code(p.status).type("application/problem+json").send(p);
}
