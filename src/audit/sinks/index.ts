/**
 * Remote sink transports of the audit stream: syslog over TLS (RFC 5424/5425), signed HTTPS webhooks and S3
 * objects. The pipeline (src/audit/stream) depends on `SinkTransport` and `createTransport`, not on the classes.
 */
import { ParhelionError } from "../../lib/errors.js";
import type { SinkTransport } from "../stream/transport.js";
import { S3Transport } from "./s3.js";
import { SyslogTransport } from "./syslog.js";
import { WebhookTransport } from "./webhook.js";

export { SyslogTransport, syslogSinkConfig, escapeSdParam, SYSLOG_SD_ID, type SyslogSinkConfig } from "./syslog.js";
export { WebhookTransport, webhookSinkConfig, webhookSinkSecrets, verifyWebhookSignature, webhookSignature, WEBHOOK_RESPONSE_CAP, type WebhookSinkConfig, type WebhookSecrets } from "./webhook.js";
export { S3Transport, s3SinkConfig, s3SinkSecrets, s3ObjectKey, type S3SinkConfig, type S3Secrets } from "./s3.js";

export const SINK_KINDS = ["syslog", "webhook", "s3"] as const;
export type SinkKind = (typeof SINK_KINDS)[number];

/**
 * The secret fields of each kind, which the pipeline stores encrypted: webhook `secret` and `header:<Name>`
 * (a credential header such as header:Authorization), s3 `secretAccessKey`; syslog has none.
 */
export const SINK_SECRET_FIELDS: Readonly<Record<SinkKind, readonly string[]>> = { syslog: [], webhook: ["secret", "header:<Name>"], s3: ["secretAccessKey"] };

function secretsOf(kind: SinkKind, secrets: Record<string, string>): Record<string, string> {
  if (secrets === null || typeof secrets !== "object") throw new ParhelionError("ERR_VALIDATION", `invalid ${kind} sink secrets: must be an object`);
  return secrets;
}

/**
 * Validates the sink's config and secrets and returns its transport; ERR_VALIDATION naming the bad field
 * (never a secret's value) otherwise. Nothing connects until the first delivery.
 */
export function createTransport(kind: SinkKind, config: unknown, secrets: Record<string, string>): SinkTransport {
  switch (kind) {
    case "syslog": {
      const extra = Object.keys(secretsOf(kind, secrets));
      if (extra.length > 0) throw new ParhelionError("ERR_VALIDATION", `invalid syslog sink secrets: ${extra.join(", ")}: unknown field (a syslog sink has no secrets)`);
      return new SyslogTransport(config as never);
    }
    case "webhook": {
      const { secret, ...rest } = secretsOf(kind, secrets);
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(rest)) {
        if (!k.startsWith("header:")) throw new ParhelionError("ERR_VALIDATION", `invalid webhook sink secrets: ${k}: unknown field (secret or header:<Name>)`);
        headers[k.slice("header:".length)] = v;
      }
      return new WebhookTransport(config as never, { secret: secret as string, ...(Object.keys(headers).length > 0 ? { headers } : {}) });
    }
    case "s3":
      return new S3Transport(config as never, secretsOf(kind, secrets) as never);
    default:
      throw new ParhelionError("ERR_VALIDATION", `unknown sink kind ${JSON.stringify(String(kind)).slice(0, 40)}: one of ${SINK_KINDS.join(", ")}`);
  }
}
