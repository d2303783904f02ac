import type { Readable } from "node:stream";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { z } from "zod";
import { ParhelionError } from "../lib/errors.js";
import type { Principal } from "../identity/types.js";
import { SESSION_COOKIE, authenticateSession, checkCsrf, checkMfaGate, checkStepUp, mfaSessionState, type MfaGateAllowance, type MfaSessionState } from "../identity/index.js";
import { authorize, visibleResources, NO_GRANTS, type EffectiveGrants, type ResourceRef } from "../rbac/policy.js";
import { loadGrants } from "../rbac/grants.js";
import type { Permission, ResourceType } from "../rbac/roles.js";
import type { AuditEvent } from "../audit/index.js";
import type { Services } from "./context.js";
import { sendProblem, toParhelionError } from "./problem.js";

/**
 * "public": no credential; "authenticated": any signed-in principal; "session": a user's console session
 * (API keys are refused with ERR_FORBIDDEN: they have no second factor and no user of their own);
 * otherwise the permission required.
 */
export type Access = "public" | "authenticated" | "session" | Permission;
export type Method = "GET" | "POST" | "PATCH" | "PUT" | "DELETE";

/** What a handler may add to the request's audit record. */
export interface AuditNote {
  type?: string;
  resource?: { type: string; id: string };
  attributes?: Record<string, unknown>;
  actor?: AuditEvent["actor"];
  orgId?: string;
  reason?: string;
}

export interface RouteContext<P, Q, B> {
  params: P;
  query: Q;
  body: B;
  principal: Principal | null;
  grants: EffectiveGrants;
  /** For `listOf` routes: every resource ("all") or the ids the caller may see. */
  visible: "all" | string[];
  services: Services;
  req: FastifyRequest;
  reply: FastifyReply;
  audit: AuditNote;
  /** The console session's MFA state; null for API keys and public routes. */
  mfa: MfaSessionState | null;
}

export interface RouteSpec<P extends z.ZodType = z.ZodType, Q extends z.ZodType = z.ZodType, B extends z.ZodType = z.ZodType> {
  method: Method;
  /** OpenAPI-style path: /v1/teams/{teamID} */
  path: string;
  operationId: string;
  summary: string;
  tag: string;
  access: Access;
  /**
   * The resource a permission is checked against (group- and team-level grants). May look it up: a
   * workspace is checked against its group.
   */
  resource?: (params: z.output<P>, ctx: { services: Services; principal: Principal; rawBody: unknown }) => ResourceRef | Promise<ResourceRef>;
  /**
   * A list of resources of this type: allowed to anyone holding the permission on the organization or on
   * at least one such resource; the handler shows only what `ctx.visible` names.
   */
  listOf?: ResourceType;
  params?: P;
  query?: Q;
  body?: B;
  response: z.ZodType;
  /**
   * Media type of a successful answer that is not one JSON document (e.g. "application/x-ndjson"): the
   * handler answers a `StreamBody`, `response` describes one item of it, and `fields` is not accepted.
   */
  produces?: string;
  status?: number;
  /** Audit type of a mutation; reads are recorded as "ApiRequest". */
  auditType?: string;
  /**
   * Step-up: a console session whose user has a second factor must have verified one within the
   * organization's step-up window (else ERR_STEP_UP_REQUIRED). A function decides from the raw body, for
   * routes where only some changes are sensitive. API keys are machine credentials and are not asked.
   */
  stepUp?: boolean | ((rawBody: unknown) => boolean);
  /**
   * Which sessions short of their second factor may still call this route: "verify" (signed in with the
   * password, second factor pending) and/or "enroll" (the organization requires a factor the user lacks).
   * Every other route refuses them: ERR_MFA_REQUIRED / ERR_MFA_ENROLLMENT_REQUIRED.
   */
  allowBeforeMfa?: MfaGateAllowance;
  /**
   * A sign-in step reached by GET (an identity provider's redirect): audited like a mutation, successes
   * included, whatever `auditReads` says.
   */
  signIn?: boolean;
  /**
   * A read an auditor must always find in the log (an export of the audit log itself): audited on success too,
   * whatever `auditReads` says.
   */
  alwaysAudited?: boolean;
  /** Whether a successful answer must not be cached (all /v1 answers are no-store anyway). */
  handler: (ctx: RouteContext<z.output<P>, z.output<Q>, z.output<B>>) => Promise<unknown>;
}

/** Identity function that keeps the generic parameters of a route definition. */
export function defineRoute<P extends z.ZodType, Q extends z.ZodType, B extends z.ZodType>(spec: RouteSpec<P, Q, B>): RouteSpec {
  return spec as unknown as RouteSpec;
}

const MUTATING = new Set<Method>(["POST", "PATCH", "PUT", "DELETE"]);

/**
 * A handler's answer streamed as its body (with the route's `produces` media type) instead of one JSON
 * document. It is sent after the request's audit record; an error while streaming aborts the connection.
 */
export class StreamBody {
  constructor(readonly body: Readable) {}
}

/** A handler's answer that sends the browser on (303 See Other by default) instead of a JSON body. */
export class Redirect {
  constructor(readonly location: string, readonly status: 302 | 303 = 303) {}
}

function zodMessage(where: string, err: z.ZodError): ParhelionError {
  const unknown = err.issues.find((i) => i.code === "unrecognized_keys");
  if (unknown && unknown.code === "unrecognized_keys") {
    return new ParhelionError("ERR_UNKNOWN_FIELD", `unknown ${where} field${unknown.keys.length > 1 ? "s" : ""}: ${unknown.keys.join(", ")}`, { details: { fields: unknown.keys } });
  }
  const custom = err.issues.find((i) => i.code === "custom" && (i as { params?: { code?: string } }).params?.code === "ERR_FIELD_NOT_SUPPORTED");
  if (custom) return new ParhelionError("ERR_FIELD_NOT_SUPPORTED", `${where} field ${custom.path.join(".")}: ${custom.message}`);
  const msg = err.issues.slice(0, 5).map((i) => `${i.path.length ? i.path.join(".") : where}: ${i.message}`).join("; ");
  return new ParhelionError("ERR_VALIDATION", `invalid ${where}: ${msg}`, { details: { issues: err.issues.slice(0, 20).map((i) => ({ path: i.path.map(String), message: i.message })) } });
}

function parse<T extends z.ZodType | undefined>(schema: T, value: unknown, where: string): unknown {
  if (schema === undefined) {
    if (where === "body" && value !== undefined && value !== null && !(typeof value === "object" && Object.keys(value as object).length === 0)) {
      throw new ParhelionError("ERR_UNKNOWN_FIELD", "this operation takes no request body");
    }
    if (where === "query parameter" && value !== null && typeof value === "object" && Object.keys(value).length > 0) {
      const keys = Object.keys(value);
      throw new ParhelionError("ERR_UNKNOWN_FIELD", `unknown query parameter${keys.length > 1 ? "s" : ""}: ${keys.join(", ")}`, { details: { fields: keys } });
    }
    return undefined;
  }
  const r = schema.safeParse(value);
  if (!r.success) throw zodMessage(where, r.error);
  return r.data;
}

function clientIp(req: FastifyRequest): string {
  return req.socket.remoteAddress ?? req.ip;
}

/**
 * Credentials → principal (and, for a console session, the hash its CSRF token must match). Bad credentials
 * count against the source's lockout.
 */
async function authenticate(req: FastifyRequest, services: Services): Promise<{ principal: Principal; csrfHash: Buffer | null }> {
  const ip = clientIp(req);
  const auth = req.headers.authorization;
  if (auth !== undefined) {
    services.throttle.check({ source: ip });
    const m = /^Bearer +(\S+)\s*$/i.exec(auth);
    try {
      if (!m?.[1]) throw new ParhelionError("ERR_API_KEY_INVALID");
      return { principal: await services.apiKeys.authenticate(m[1]), csrfHash: null };
    } catch (err) {
      if (err instanceof ParhelionError && err.code === "ERR_API_KEY_INVALID") services.throttle.recordFailure({ source: ip });
      throw err;
    }
  }
  const header = req.headers.cookie;
  const cookie = header === undefined ? undefined : req.server.parseCookie(header)[SESSION_COOKIE];
  if (cookie !== undefined) {
    services.throttle.check({ source: ip });
    let s: Awaited<ReturnType<typeof authenticateSession>>;
    try {
      s = await authenticateSession(services.db, cookie, services.clock);
    } catch (err) {
      if (err instanceof ParhelionError && err.code === "ERR_SESSION_INVALID") services.throttle.recordFailure({ source: ip });
      throw err;
    }
    return { principal: s.principal, csrfHash: s.csrfHash };
  }
  throw new ParhelionError("ERR_UNAUTHENTICATED", "no credential: send Authorization: Bearer <API key> or sign in");
}

function project(value: unknown, fields: string[] | undefined): unknown {
  if (fields === undefined || value === null || typeof value !== "object") return value;
  const pick = (o: unknown) => (o !== null && typeof o === "object" ? Object.fromEntries(Object.entries(o).filter(([k]) => fields.includes(k))) : o);
  return Array.isArray(value) ? value.map(pick) : pick(value);
}

function auditResult(status: number): AuditEvent["result"] {
  if (status < 400) return "SUCCESS";
  if (status === 401 || status === 403 || status === 429) return "DENIED";
  return "FAILURE";
}

/** A sign-in route keeps its own type; otherwise a rejected credential is an AuthFailure, a mutation its type, a read an ApiRequest. */
function auditType(spec: RouteSpec, principal: Principal | null, failure: ParhelionError | undefined): string {
  if (spec.access === "public" && spec.auditType) return spec.auditType;
  if (principal === null && failure && (failure.status === 401 || failure.status === 429 || failure.code === "ERR_CSRF")) return "AuthFailure";
  if (MUTATING.has(spec.method)) return spec.auditType ?? spec.operationId;
  return "ApiRequest";
}

/** Registers every route: parse → authenticate → authorize → handle → audit → answer. */
export function registerRoutes(app: FastifyInstance, routes: readonly RouteSpec[], services: Services): void {
  for (const spec of routes) {
    const url = spec.path.replace(/\{(\w+)\}/g, ":$1");
    app.route({
      method: spec.method,
      url,
      handler: async (req, reply) => {
        services.inflight.enter();
        try {
          return await handle(spec, services, req, reply);
        } finally {
          services.inflight.exit();
        }
      },
    });
  }
}

async function handle(spec: RouteSpec, services: Services, req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  const note: AuditNote = {};
  const mutating = MUTATING.has(spec.method);
  let principal: Principal | null = null;
  let status = spec.status ?? 200;
  let result: unknown;
  let failure: ParhelionError | undefined;
  try {
    let fields: string[] | undefined;
    const rawQuery = { ...(req.query as Record<string, unknown>) };
    if (spec.method === "GET" && spec.produces === undefined && typeof rawQuery["fields"] === "string") {
      fields = String(rawQuery["fields"]).split(",").map((s) => s.trim()).filter(Boolean);
      delete rawQuery["fields"];
    }
    let grants: EffectiveGrants = NO_GRANTS;
    let visible: "all" | string[] = "all";
    let mfa: MfaSessionState | null = null;
    if (spec.access !== "public") {
      const auth = await authenticate(req, services);
      principal = auth.principal;
      // After the principal is known, so a forged cross-site request is audited against the session's user.
      if (auth.csrfHash !== null && mutating) {
        const h = req.headers["x-csrf-token"];
        checkCsrf(auth.csrfHash, typeof h === "string" ? h : undefined);
      }
      // MFA gate: a session still short of its second factor reaches only the routes that let it finish.
      if (principal.kind === "user" && principal.sessionId !== null) {
        mfa = await mfaSessionState(services.db, principal.sessionId);
        checkMfaGate(mfa, spec.allowBeforeMfa);
      }
      if (spec.access === "session" && (principal.kind !== "user" || principal.sessionId === null)) {
        throw new ParhelionError("ERR_FORBIDDEN", `${spec.operationId} needs a user's console session (sign in with email and password); API keys have no second factor`);
      }
      grants = await loadGrants(services.db, principal);
      if (spec.access !== "authenticated" && spec.access !== "session") {
        // Params are parsed before the decision only to name the resource: without an organization-wide right,
        // a malformed id answers 403 like any other.
        const params = spec.params ? spec.params.safeParse(req.params) : { success: true as const, data: {} };
        const resource = spec.resource && params?.success ? await spec.resource(params.data, { services, principal, rawBody: req.body }) : undefined;
        const d = authorize(principal, grants, spec.access, resource);
        if (!d.allow) {
          if (spec.listOf !== undefined) visible = visibleResources(principal, grants, spec.access, spec.listOf);
          if (visible === "all" || visible.length === 0) throw new ParhelionError("ERR_FORBIDDEN", `your role does not allow ${spec.operationId} (${d.reason})`);
        }
      }
      // Step-up, after authorization (a caller without the role hears that first), before validation (so
      // the caller verifies a factor and retries the same request).
      if (mfa !== null && spec.stepUp !== undefined && (spec.stepUp === true || (typeof spec.stepUp === "function" && spec.stepUp(req.body)))) {
        try {
          checkStepUp(mfa, services.clock());
        } catch (err) {
          note.attributes = { ...(note.attributes ?? {}), stepUp: "required" };
          throw err;
        }
      }
    }
    const params = parse(spec.params, req.params, "path parameter") as never;
    const query = parse(spec.query, rawQuery, "query parameter") as never;
    const body = parse(spec.body, req.body, "body") as never;
    result = await spec.handler({ params, query, body, principal, grants, visible, services, req, reply, audit: note, mfa });
    if (!(result instanceof StreamBody)) result = project(result, fields);
    if (result instanceof Redirect) status = result.status;
  } catch (err) {
    const { error, internal } = toParhelionError(err);
    if (internal) req.log.error({ err }, "internal error");
    failure = error;
    status = error.status;
  }
  // Every request that presented (or needed) a credential, and every mutation, is recorded — except
  // successful reads when the operator chose auditReads=failures (exports of the audit log are recorded always).
  const quietRead = !mutating && !spec.signIn && !spec.alwaysAudited && failure === undefined && services.settings.auditReads === "failures";
  if ((spec.access !== "public" || mutating || spec.signIn) && !quietRead) {
    const actor: AuditEvent["actor"] = note.actor ?? (principal
      ? { type: principal.kind === "apiKey" ? "apiKey" : "user", id: principal.kind === "apiKey" ? principal.apiKeyId : principal.userId, email: principal.email }
      : { type: "anonymous" });
    await services.audit.record({
      type: note.type ?? auditType(spec, principal, failure),
      source: principal?.sessionId ? "Portal" : "API",
      result: auditResult(status),
      orgId: note.orgId ?? principal?.orgId ?? null,
      actor,
      resource: note.resource ?? null,
      sourceIp: clientIp(req),
      requestId: String(req.id),
      reason: note.reason ?? `${spec.method} ${spec.path} -> ${status}${failure ? ` ${failure.code}` : ""}`,
      attributes: { operation: spec.operationId, status, ...(failure ? { code: failure.code } : {}), ...(note.attributes ?? {}) },
    });
  }
  reply.header("cache-control", "no-store");
  if (failure) return sendProblem(req, reply, failure);
  if (result instanceof Redirect) return reply.code(status).header("location", result.location).send();
  if (result instanceof StreamBody) return reply.code(status).header("content-type", spec.produces ?? "application/octet-stream").send(result.body);
  if (result === undefined) return reply.code(status === 200 ? 204 : status).send();
  return reply.code(status).send(result);
}
