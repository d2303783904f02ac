import { randomUUID } from "node:crypto";
import Fastify, { LogController, type FastifyInstance } from "fastify";
import cookie from "@fastify/cookie";
import { ParhelionError } from "../lib/errors.js";
import type { Logger } from "../log/logger.js";
import { registerRoutes, type RouteSpec } from "./route.js";
import { buildOpenApi } from "./openapi.js";
import { sendProblem, toParhelionError } from "./problem.js";
import type { Services } from "./context.js";
import { ROUTES } from "./routes/index.js";

const SECURITY_HEADERS = {
  "strict-transport-security": "max-age=31536000",
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
  "referrer-policy": "no-referrer",
} as const;

export interface ApiServerOptions {
  services: Services;
  logger: Logger;
  tls: { cert: string; key: string };
  /** Extra facts /healthz reports once ready (e.g. volumeEncryption), never secrets. */
  health?: () => Record<string, unknown>;
  /** Whether the platform is ready (healthz answers 503 until it is). */
  ready: () => boolean;
  version: string;
  routes?: readonly RouteSpec[];
}

/** The Management API: HTTPS only (TLS 1.2+), problem+json errors, every /v1 route through one pipeline. */
export async function buildApiServer(opts: ApiServerOptions): Promise<FastifyInstance> {
  const routes = opts.routes ?? ROUTES;
  const app = Fastify({
    loggerInstance: opts.logger,
    logController: new LogController({ disableRequestLogging: true }),
    https: { cert: opts.tls.cert, key: opts.tls.key, minVersion: "TLSv1.2" },
    bodyLimit: opts.services.settings.bodyLimitBytes,
    genReqId: () => randomUUID(),
    requestIdHeader: false,
    trustProxy: false,
    return503OnClosing: true,
    routerOptions: { maxParamLength: 200 },
  }) as unknown as FastifyInstance;
  await app.register(cookie, { hook: false }); // parsed on demand: only session-authenticated requests need it

  app.addHook("onRequest", async (req, reply) => {
    reply.headers({ "x-request-id": String(req.id), ...SECURITY_HEADERS });
    if (!opts.ready() && req.url !== "/healthz") return sendProblem(req, reply, new ParhelionError("ERR_NOT_READY"));
  });
  const debug = opts.logger.isLevelEnabled("debug");
  app.addHook("onResponse", async (req, reply) => {
    const failed = reply.statusCode >= 500;
    if (!failed && !debug) return;
    const line = { reqId: req.id, method: req.method, url: req.routeOptions.url ?? "(unmatched)", status: reply.statusCode, ms: Math.round(reply.elapsedTime) };
    if (failed) req.log.error(line, "request failed");
    else req.log.debug(line, "request");
  });

  // Errors the route pipeline never saw: the body was too large, not JSON, of the wrong media type. A
  // mutation rejected this early is still audited (its credential was not looked at, so the actor is unknown).
  app.setErrorHandler(async (err, req, reply) => {
    const { error, internal } = toParhelionError(err);
    if (internal) req.log.error({ err }, "internal error");
    if (opts.ready() && req.method !== "GET" && req.method !== "HEAD" && req.url.startsWith("/v1/")) {
      await opts.services.audit.record({
        type: "ApiRequestRejected", source: "API", result: "FAILURE", orgId: null, actor: { type: "anonymous" },
        sourceIp: req.socket.remoteAddress ?? null, requestId: String(req.id),
        reason: `${req.method} ${req.routeOptions.url ?? req.url.split("?")[0]} -> ${error.status} ${error.code} (before authentication)`,
        attributes: { route: req.routeOptions.url ?? null, status: error.status, code: error.code, credentialPresented: req.headers.authorization !== undefined || req.headers.cookie !== undefined },
      });
    }
    return sendProblem(req, reply, error);
  });
  app.setNotFoundHandler((req, reply) => sendProblem(req, reply, new ParhelionError("ERR_ROUTE_NOT_FOUND", `no route ${req.method} ${req.url.split("?")[0]}`)));

  app.get("/healthz", async (_req, reply) => {
    if (!opts.ready()) return reply.code(503).send({ status: "starting" });
    return { status: "ok", ...opts.health?.() };
  });
  const openapi = buildOpenApi(routes, opts.version);
  app.get("/v1/openapi.json", async () => openapi);

  registerRoutes(app, routes, opts.services);
  return app;
}
