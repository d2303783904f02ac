import { createHmac, timingSafeEqual } from "node:crypto";
import type { Readable } from "node:stream";
import { Agent, request } from "undici";
import { z } from "zod";
import { ParhelionError } from "../../lib/errors.js";
import { DeliveryError, type SinkTransport, type StreamBatch } from "../stream/transport.js";
import { caPemField, httpsUrlField, checkBatch, ndjson, networkFailure, parseSinkConfig, trustedCas } from "./common.js";

/** RFC 9110 §5.6.2 token. */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$/;
/** Visible ASCII and inner spaces/tabs: no CR/LF (header injection), nothing a proxy might re-encode. */
const HEADER_VALUE = /^(?:[\x21-\x7e](?:[\t\x20-\x7e]{0,1022}[\x21-\x7e])?)?$/;
/** Headers the transport sets itself or that framing depends on. */
const RESERVED = new Set(["content-type", "content-length", "content-encoding", "transfer-encoding", "host", "connection", "keep-alive", "te", "trailer", "upgrade", "expect"]);
/** Credentials: these go in the secrets (`headers`), never in the stored-as-plaintext config. */
const CREDENTIAL_HEADERS = new Set(["authorization", "proxy-authorization", "cookie"]);
const MAX_HEADERS = 32;

/** A response body is read up to this many bytes, then the connection is dropped. */
export const WEBHOOK_RESPONSE_CAP = 64 * 1024;
/** Time allowed to read (and discard) the response body once the status is known. */
const DRAIN_MS = 1000;

function headerProblem(name: string, credentialsAllowed: boolean): string | undefined {
  if (!HEADER_NAME.test(name)) return `${name.slice(0, 64)}: not a valid header name`;
  const lower = name.toLowerCase();
  if (lower.startsWith("x-parhelion-") || RESERVED.has(lower)) return `${name}: set by parhelion, cannot be overridden`;
  if (!credentialsAllowed && CREDENTIAL_HEADERS.has(lower)) return `${name}: carries a credential; pass it as a secret header (header:${name}), which is stored encrypted`;
  return undefined;
}

function headersField(credentialsAllowed: boolean) {
  return z.record(z.string(), z.string().regex(HEADER_VALUE, { message: "must be at most 1024 visible ASCII characters (no line breaks)" })).superRefine((h, ctx) => {
    const names = Object.keys(h);
    if (names.length > MAX_HEADERS) ctx.addIssue({ code: "custom", message: `at most ${MAX_HEADERS} headers` });
    const seen = new Set<string>();
    for (const n of names) {
      const problem = headerProblem(n, credentialsAllowed);
      if (problem !== undefined) ctx.addIssue({ code: "custom", path: [n], message: problem });
      if (seen.has(n.toLowerCase())) ctx.addIssue({ code: "custom", path: [n], message: "given twice (header names are case-insensitive)" });
      seen.add(n.toLowerCase());
    }
  });
}

/** A webhook sink's settings. The signing secret and credential headers are not here: see WebhookSecrets. */
export const webhookSinkConfig = z
  .object({
    url: httpsUrlField({ allowQuery: true, credentialsHint: "pass them as the secret header:Authorization" })
      .describe("https:// URL batches are POSTed to. Redirects are not followed."),
    caPem: caPemField.optional(),
    headers: headersField(false).optional().describe("Extra request headers (not credentials: those are secrets)."),
  })
  .strict();

/** The webhook's secrets, stored encrypted by the pipeline and passed in decrypted. */
export const webhookSinkSecrets = z
  .object({
    secret: z
      .string()
      .refine((s) => Buffer.byteLength(s, "utf8") >= 32, { message: "must be at least 32 bytes" })
      .refine((s) => Buffer.byteLength(s, "utf8") <= 1024, { message: "must be at most 1024 bytes" })
      .describe("HMAC-SHA256 key of X-Parhelion-Signature."),
    headers: headersField(true).optional().describe("Headers whose values are credentials, e.g. Authorization."),
  })
  .strict();

export type WebhookSinkConfig = z.output<typeof webhookSinkConfig>;
export type WebhookSecrets = z.input<typeof webhookSinkSecrets>;

/** Hex HMAC-SHA256 over "<t>.<body>" (the v1 scheme of X-Parhelion-Signature). */
export function webhookSignature(secret: string | Buffer, t: number, body: string | Uint8Array): string {
  return createHmac("sha256", secret).update(`${t}.`).update(body).digest("hex");
}

/**
 * Checks an X-Parhelion-Signature header (`t=<unix seconds>,v1=<hex>[,v1=<hex>...]`) against the raw request
 * body: some v1 must equal HMAC-SHA256(secret, "<t>.<body>") (compared in constant time) and t must be within
 * toleranceSec of now. For receivers; false for anything malformed.
 */
export function verifyWebhookSignature(secret: string | Buffer, header: string | undefined | null, body: string | Uint8Array, toleranceSec: number, nowSec: number = Math.floor(Date.now() / 1000)): boolean {
  if (!Number.isFinite(toleranceSec) || toleranceSec < 0) throw new TypeError("verifyWebhookSignature: toleranceSec must be a non-negative number");
  if (typeof header !== "string" || header.length > 4096) return false;
  let t: number | undefined;
  const candidates: Buffer[] = [];
  for (const part of header.split(",")) {
    const eq = part.indexOf("=");
    if (eq < 0) return false;
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (key === "t") {
      if (t !== undefined || !/^\d{1,12}$/.test(value)) return false;
      t = Number(value);
    } else if (key === "v1") {
      if (!/^[0-9a-fA-F]{64}$/.test(value)) return false;
      candidates.push(Buffer.from(value, "hex"));
    }
    // Other schemes (v0, a future v2) are ignored, as a receiver that knows only v1 must.
  }
  if (t === undefined || candidates.length === 0 || candidates.length > 8) return false;
  if (Math.abs(nowSec - t) > toleranceSec) return false;
  const expected = Buffer.from(webhookSignature(secret, t, body), "hex");
  let ok = false;
  for (const c of candidates) ok = timingSafeEqual(expected, c) || ok;
  return ok;
}

/** Reads and discards a response body: at most WEBHOOK_RESPONSE_CAP bytes and DRAIN_MS, then the connection is dropped. */
async function discard(body: Readable): Promise<void> {
  const timer = setTimeout(() => body.destroy(), DRAIN_MS);
  let seen = 0;
  try {
    for await (const chunk of body) {
      seen += (chunk as Buffer).length;
      if (seen > WEBHOOK_RESPONSE_CAP) break;
    }
  } catch {
    // Destroyed on time or cap, or the receiver broke the connection: the status line already answered.
  } finally {
    clearTimeout(timer);
    if (!body.destroyed) body.destroy();
  }
}

/**
 * POSTs each batch as NDJSON over HTTPS, signed with HMAC-SHA256 (X-Parhelion-Signature). 2xx is success;
 * 408, 429 and 5xx are retryable; redirects (not followed) and other 4xx are not.
 */
export class WebhookTransport implements SinkTransport {
  private readonly config: WebhookSinkConfig;
  private readonly url: URL;
  private readonly secret: string;
  private readonly headers: Record<string, string>;
  private readonly agent: Agent;
  private readonly now: () => number;
  private closing: Promise<void> | null = null;

  /** Validates config and secrets (ERR_VALIDATION naming the field, never its value); refuses http: URLs. */
  constructor(config: z.input<typeof webhookSinkConfig>, secrets: WebhookSecrets, opts: { now?: () => number } = {}) {
    this.config = parseSinkConfig(webhookSinkConfig, config, "webhook sink config");
    const s = parseSinkConfig(webhookSinkSecrets, secrets, "webhook sink secrets");
    const clash = Object.keys(s.headers ?? {}).find((n) => Object.keys(this.config.headers ?? {}).some((m) => m.toLowerCase() === n.toLowerCase()));
    if (clash !== undefined) throw new ParhelionError("ERR_VALIDATION", `invalid webhook sink secrets: headers.${clash}: also set in the config headers`);
    this.url = new URL(this.config.url);
    this.secret = s.secret;
    this.headers = { ...this.config.headers, ...s.headers };
    this.now = opts.now ?? Date.now;
    const ca = trustedCas(this.config.caPem);
    this.agent = new Agent({
      // Never configurable: certificate and host name are always verified.
      connect: { ...(ca ? { ca } : {}), rejectUnauthorized: true, minVersion: "TLSv1.2" },
      maxHeaderSize: 16 * 1024,
      keepAliveTimeout: 4000,
    });
  }

  /** The URL without userinfo or query string. */
  describe(): string {
    return `${this.url.origin}${this.url.pathname}`;
  }

  async deliver(batch: StreamBatch, signal: AbortSignal): Promise<void> {
    const where = `webhook ${this.describe()}`;
    try {
      checkBatch(batch);
      if (this.closing) throw new DeliveryError(`${where}: the transport is closed`, true);
      const body = ndjson(batch.lines);
      const t = Math.floor(this.now() / 1000);
      const res = await request(this.url, {
        dispatcher: this.agent,
        method: "POST",
        headers: {
          ...this.headers,
          "content-type": "application/x-ndjson",
          "x-parhelion-stream": batch.streamId,
          "x-parhelion-seq": `${batch.firstSeq}-${batch.lastSeq}`,
          "x-parhelion-signature": `t=${t},v1=${webhookSignature(this.secret, t, body)}`,
        },
        body,
        signal,
      });
      const status = res.statusCode;
      await discard(res.body);
      if (status >= 200 && status <= 299) return;
      if (status >= 300 && status <= 399) throw new DeliveryError(`${where}: answered HTTP ${status}, a redirect; audit batches are never sent on to another URL: configure the final URL`, false);
      if (status === 408 || status === 429 || (status >= 500 && status <= 599)) throw new DeliveryError(`${where}: answered HTTP ${status}`, true);
      if (status >= 400 && status <= 499) throw new DeliveryError(`${where}: answered HTTP ${status}; the receiver refused the batch`, false);
      throw new DeliveryError(`${where}: answered an invalid HTTP status ${status}`, true);
    } catch (err) {
      throw networkFailure(where, err, signal);
    }
  }

  close(): Promise<void> {
    this.closing ??= this.agent.destroy().catch(() => undefined);
    return this.closing;
  }
}
