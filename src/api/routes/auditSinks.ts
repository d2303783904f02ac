import { z } from "zod";
import { Readable } from "node:stream";
import { defineRoute, StreamBody } from "../route.js";
import { Id } from "../schemas.js";
import { SINK_KINDS } from "../../audit/stream/pipeline.js";
import { streamSettingsSchema } from "../../audit/stream/sinks.js";

const SinkParams = z.object({ auditSinkID: Id }).strict();
const SinkName = z.string().min(1).max(100).regex(/^[^\u0000-\u001f\u007f]+$/, { message: "must not contain control characters" });
const FailMode = z.enum(["open", "closed"]).describe("open (default): service continues while the sink cannot record, and an alert is raised. closed: no new database sessions or statements in the sink's scope while no sink covering it can record.");
const Config = z.record(z.string(), z.unknown()).describe("The sink type's own settings (docs/audit-sinks.md): syslog {host, port, serverName?, caPem?, appName?, hostname?, facility?}; webhook {url, caPem?, headers?}; s3 {bucket, region, endpoint?, prefix?, forcePathStyle?, accessKeyId, caPem?}; file: none.");
const Secrets = z.record(z.string(), z.string().min(1).max(4096)).describe("webhook: {secret} (the HMAC key, at least 32 bytes) and optional credential headers as {\"header:Authorization\": \"Bearer ...\"}; s3: {secretAccessKey}. Stored sealed under the organization's data key; never returned.");

const Status = z.object({
  state: z.enum(["starting", "up", "down", "disabled"]),
  streamHead: z.object({ seq: z.number(), hash: z.string() }).describe("seq and hash of the stream's last line: `parhelion audit verify --sink` checks an export reaches it."),
  deliveredSeq: z.number(), pending: z.number(), diskBytes: z.number(), maxBytes: z.number(), sealedSeq: z.number(),
  lastDeliveryAt: z.string().nullable(), downSince: z.string().nullable(), lastError: z.string().nullable(), dropped: z.number(),
  alerts: z.array(z.string()).describe("spool-high-water (above 80 % of maxBytes), spool-full (records not written to this sink), down, signing-key-unavailable."),
}).nullable();
const Sink = z.object({
  auditSinkID: Id, name: z.string(), type: z.enum(SINK_KINDS), workspaceGroupID: Id.nullable(), failMode: FailMode, enabled: z.boolean(),
  config: z.record(z.string(), z.unknown()), settings: z.object({ checkpointEvery: z.number(), checkpointSeconds: z.number(), maxBytes: z.number(), rotateBytes: z.number(), rotateSeconds: z.number(), retentionDays: z.number() }),
  secretsSet: z.array(z.string()), createdAt: z.string(), updatedAt: z.string(), status: Status,
});
const SinkCreate = z.object({
  name: SinkName, type: z.enum(SINK_KINDS), workspaceGroupID: Id.nullable().optional().describe("Only this workspace group's records; absent: the whole organization's."),
  failMode: FailMode.optional(), enabled: z.boolean().optional(), config: Config.optional(), settings: streamSettingsSchema.optional(), secrets: Secrets.optional(),
}).strict();
const SinkUpdate = z.object({
  name: SinkName.optional(), failMode: FailMode.optional(), enabled: z.boolean().optional(), config: Config.optional(), settings: streamSettingsSchema.optional(), secrets: Secrets.optional(),
}).strict();

/** Audit sinks: where an organization's audit stream goes (docs/audit.md, "Streams and sinks"). Changing them needs step-up. */
export const auditSinkRoutes = [
  defineRoute({
    method: "GET", path: "/v1/auditSinks", operationId: "listAuditSinks", tag: "Audit",
    summary: "The organization's audit sinks with their delivery status.", access: "auditSinks:read",
    response: z.array(Sink),
    handler: async ({ services, principal }) => services.auditSinks.list(principal!.orgId),
  }),
  defineRoute({
    method: "POST", path: "/v1/auditSinks", operationId: "createAuditSink", tag: "Audit", status: 201,
    summary: "Adds a sink (file, syslog over TLS, HTTPS webhook, S3-compatible storage); its stream starts at the current record.", access: "auditSinks:write", stepUp: true,
    body: SinkCreate, response: Sink, auditType: "AuditSinkCreate",
    handler: async ({ services, principal, body, audit }) => {
      audit.attributes = { sinkName: body.name, sinkType: body.type, failMode: body.failMode ?? "open", workspaceGroupID: body.workspaceGroupID ?? null, secretsSet: Object.keys(body.secrets ?? {}) };
      const v = await services.auditSinks.create(principal!.orgId, principal!.userId, body);
      audit.resource = { type: "AuditSink", id: v.auditSinkID };
      return v;
    },
  }),
  defineRoute({
    method: "GET", path: "/v1/auditSinks/{auditSinkID}", operationId: "getAuditSink", tag: "Audit",
    summary: "One sink and its delivery status.", access: "auditSinks:read", params: SinkParams, response: Sink,
    handler: async ({ services, principal, params }) => services.auditSinks.get(principal!.orgId, params.auditSinkID),
  }),
  defineRoute({
    method: "PATCH", path: "/v1/auditSinks/{auditSinkID}", operationId: "updateAuditSink", tag: "Audit",
    summary: "Changes a sink's name, failMode, enabled, config, settings or secrets; its stream goes on where it was.", access: "auditSinks:write", stepUp: true,
    params: SinkParams, body: SinkUpdate, response: Sink, auditType: "AuditSinkUpdate",
    handler: async ({ services, principal, params, body, audit }) => {
      audit.resource = { type: "AuditSink", id: params.auditSinkID };
      // What changed, never a secret's value.
      const { secrets, config, ...rest } = body;
      audit.attributes = { change: rest, ...(config !== undefined ? { configChanged: true } : {}), ...(secrets !== undefined ? { secretsChanged: Object.keys(secrets) } : {}) };
      return services.auditSinks.update(principal!.orgId, params.auditSinkID, body);
    },
  }),
  defineRoute({
    method: "DELETE", path: "/v1/auditSinks/{auditSinkID}", operationId: "deleteAuditSink", tag: "Audit",
    summary: "Stops a sink and deletes its local files (its spool, or a file sink's files); the metadata store keeps every record.", access: "auditSinks:write", stepUp: true,
    params: SinkParams, response: z.object({ auditSinkID: Id }), auditType: "AuditSinkDelete",
    handler: async ({ services, principal, params, audit }) => {
      audit.resource = { type: "AuditSink", id: params.auditSinkID };
      await services.auditSinks.delete(principal!.orgId, params.auditSinkID);
      return { auditSinkID: params.auditSinkID };
    },
  }),
  defineRoute({
    method: "GET", path: "/v1/auditSinks/{auditSinkID}/export", operationId: "exportAuditSink", tag: "Audit",
    summary: "The sink's stream as it is on local disk, decrypted, one JSON line each (a file sink: every file retained; a remote sink: its undelivered spool). Check it with `parhelion audit verify`.",
    access: "auditSinks:read", params: SinkParams, produces: "application/x-ndjson", alwaysAudited: true,
    response: z.object({ v: z.number(), stream: z.string(), seq: z.number(), kind: z.enum(["record", "checkpoint"]), at: z.string(), prev: z.string(), hash: z.string() }).loose(),
    handler: async ({ services, principal, params }) => {
      const lines = await services.auditSinks.lines(principal!.orgId, params.auditSinkID);
      return new StreamBody(Readable.from((function* () {
        for (const l of lines) yield `${l}\n`;
      })()));
    },
  }),
  defineRoute({
    method: "GET", path: "/v1/auditSigningKeys", operationId: "listAuditSigningKeys", tag: "Audit",
    summary: "The Ed25519 public keys that sign the organization's audit stream checkpoints (for `parhelion audit verify`).", access: "auditSinks:read",
    response: z.object({ keys: z.array(z.object({ keyID: z.string(), algorithm: z.literal("Ed25519"), publicKey: z.string() })) }),
    handler: async ({ services, principal }) => ({ keys: await services.auditSinks.signingKeys(principal!.orgId) }),
  }),
];
