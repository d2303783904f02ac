import { z } from "zod";
import { ERROR_CATALOG } from "../lib/errors.js";
import type { RouteSpec } from "./route.js";

type Json = Record<string, unknown>;

function schemaOf(t: z.ZodType, io: "input" | "output"): Json {
  const s = z.toJSONSchema(t, { io, unrepresentable: "any", target: "draft-2020-12" }) as Json;
  delete s["$schema"];
  return s;
}

function parametersOf(obj: z.ZodType | undefined, where: "path" | "query"): Json[] {
  if (obj === undefined) return [];
  const js = schemaOf(obj, "input");
  const props = (js["properties"] ?? {}) as Record<string, Json>;
  const required = new Set((js["required"] ?? []) as string[]);
  return Object.entries(props).map(([name, schema]) => ({
    name, in: where, required: where === "path" || required.has(name),
    ...(typeof schema["description"] === "string" ? { description: schema["description"] } : {}),
    schema,
  }));
}

/** The OpenAPI 3.1 document, generated from the same zod schemas that validate requests. */
export function buildOpenApi(routes: readonly RouteSpec[], version: string): Json {
  const paths: Record<string, Record<string, Json>> = {};
  for (const r of routes) {
    const op: Json = {
      operationId: r.operationId,
      summary: r.summary,
      tags: [r.tag],
      "x-parhelion-permission": r.access,
      ...(r.listOf ? { "x-parhelion-list-of": r.listOf } : {}),
      ...(r.stepUp !== undefined ? { "x-parhelion-step-up": r.stepUp === true ? "always" : typeof r.stepUp === "function" ? "some changes" : "never" } : {}),
      parameters: [...parametersOf(r.params, "path"), ...parametersOf(r.query, "query")],
      responses: {
        [String(r.status ?? 200)]: { description: "Success", content: { [r.produces ?? "application/json"]: { schema: schemaOf(r.response, "output") } } },
        "4XX": { description: "Client error", content: { "application/problem+json": { schema: { $ref: "#/components/schemas/Problem" } } } },
        "5XX": { description: "Server error", content: { "application/problem+json": { schema: { $ref: "#/components/schemas/Problem" } } } },
      },
      security: r.access === "public" ? [] : r.access === "session" ? [{ sessionCookie: [] }] : [{ bearerAuth: [] }, { sessionCookie: [] }],
    };
    if (r.body) op["requestBody"] = { required: true, content: { "application/json": { schema: schemaOf(r.body, "input") } } };
    if (r.method === "GET" && r.path.startsWith("/v1/") && r.produces === undefined) (op["parameters"] as Json[]).push({ name: "fields", in: "query", required: false, description: "Comma-separated fields to return (Helios).", schema: { type: "string" } });
    (paths[r.path] ??= {})[r.method.toLowerCase()] = op;
  }
  return {
    openapi: "3.1.0",
    info: { title: "parhelion Management API", version, description: "Helios-compatible Management API v1 of parhelion, plus parhelion's extensions (API keys, auth, audit verification)." },
    servers: [{ url: "/" }],
    paths,
    components: {
      securitySchemes: {
        bearerAuth: { type: "http", scheme: "bearer", description: "An API key: phk_<prefix>_<secret>." },
        sessionCookie: { type: "apiKey", in: "cookie", name: "parhelion_session", description: "Console session; mutating calls also need the X-CSRF-Token header." },
      },
      schemas: {
        Problem: {
          type: "object",
          required: ["type", "title", "status", "code", "message", "requestId"],
          properties: {
            type: { type: "string" }, title: { type: "string" }, status: { type: "integer" }, detail: { type: "string" },
            code: { type: "string", enum: Object.keys(ERROR_CATALOG) }, message: { type: "string" }, requestId: { type: "string" },
          },
        },
      },
    },
  };
}
