import { createHash } from "node:crypto";
import { Agent as HttpsAgent } from "node:https";
import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { z } from "zod";
import { DeliveryError, type SinkTransport, type StreamBatch } from "../stream/transport.js";
import { caPemField, httpsUrlField, certificateError, checkBatch, errorText, ndjson, networkFailure, parseSinkConfig, trustedCas } from "./common.js";

/** S3 bucket naming rules (general purpose buckets): 3-63 lower-case letters, digits, dots and hyphens. */
const BUCKET = /^(?!\d+\.\d+\.\d+\.\d+$)(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/** An S3 sink's settings. The secret access key is not here: see S3Secrets. */
export const s3SinkConfig = z
  .object({
    endpoint: httpsUrlField({ allowQuery: false, credentialsHint: "the access key is accessKeyId and the secret secretAccessKey" })
      .optional()
      .describe("An https:// endpoint of an S3-compatible store instead of AWS's regional one."),
    region: z.string().regex(/^[a-z0-9-]{1,32}$/, { message: "must be a region name (lower-case letters, digits, '-')" }),
    bucket: z.string().regex(BUCKET, { message: "must be an S3 bucket name (3-63 lower-case letters, digits, '.', '-')" }),
    prefix: z
      .string()
      .max(512)
      .refine((p) => p === "" || p.endsWith("/"), { message: 'must be empty or end with "/"' })
      .refine((p) => !p.startsWith("/"), { message: 'must not start with "/"' })
      .refine((p) => !p.includes(".."), { message: 'must not contain ".."' })
      .refine((p) => !p.includes("//"), { message: 'must not contain "//"' })
      .refine((p) => !/[\u0000-\u001f\u007f\\]/.test(p), { message: "must not contain control characters or backslashes" })
      .default("")
      .describe('Key prefix of every object, e.g. "audit/" (empty: the bucket root).'),
    forcePathStyle: z.boolean().default(false).describe("https://endpoint/bucket/key instead of https://bucket.endpoint/key (most S3-compatible stores need true)."),
    accessKeyId: z.string().regex(/^[\x21-\x2e\x30-\x7e]{1,128}$/, { message: "must be 1 to 128 printable ASCII characters without '/'" }),
    caPem: caPemField.optional(),
  })
  .strict();

/** The S3 sink's secret, stored encrypted by the pipeline and passed in decrypted. */
export const s3SinkSecrets = z
  .object({
    secretAccessKey: z.string().regex(/^[\x21-\x7e]{1,256}$/, { message: "must be 1 to 256 printable ASCII characters" }),
  })
  .strict();

export type S3SinkConfig = z.output<typeof s3SinkConfig>;
export type S3Secrets = z.input<typeof s3SinkSecrets>;

/**
 * S3 error codes that retrying the same batch cannot fix: the credentials, the bucket or its region are
 * wrong. PermanentRedirect and AuthorizationHeaderMalformed are what S3 answers for a bucket in another region.
 */
const PERMANENT = new Set(["AccessDenied", "NoSuchBucket", "InvalidAccessKeyId", "SignatureDoesNotMatch", "PermanentRedirect", "AuthorizationHeaderMalformed"]);

const pad = (n: number): string => String(n).padStart(20, "0");
const two = (n: number): string => String(n).padStart(2, "0");

/** `<prefix><streamId>/<YYYY>/<MM>/<DD>/<firstSeq>-<lastSeq>.jsonl`, the date of firstAt in UTC, seqs zero-padded to 20 digits. */
export function s3ObjectKey(prefix: string, batch: Pick<StreamBatch, "streamId" | "firstSeq" | "lastSeq" | "firstAt">): string {
  const d = new Date(batch.firstAt);
  return `${prefix}${batch.streamId}/${d.getUTCFullYear()}/${two(d.getUTCMonth() + 1)}/${two(d.getUTCDate())}/${pad(batch.firstSeq)}-${pad(batch.lastSeq)}.jsonl`;
}

/** Classifies a failed PutObject: the codes in PERMANENT and an untrusted certificate are not retryable. */
export function s3Failure(where: string, err: unknown, signal: AbortSignal): DeliveryError {
  if (err instanceof DeliveryError || signal.aborted || certificateError(err) !== undefined) return networkFailure(where, err, signal);
  const name = err instanceof Error ? err.name : "";
  const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
  const text = `${name && name !== "Error" ? `${name}: ` : ""}${errorText(err)}${status !== undefined ? ` (HTTP ${status})` : ""}`;
  return new DeliveryError(`${where}: ${text}`, !PERMANENT.has(name));
}

/**
 * Writes each batch as one NDJSON object (s3ObjectKey). Delivering the same batch again overwrites the same
 * key with the same bytes, so retries and restarts are idempotent.
 */
export class S3Transport implements SinkTransport {
  private readonly config: S3SinkConfig;
  private readonly client: S3Client;
  private closed = false;

  /** Validates config and secret (ERR_VALIDATION naming the field, never its value); connects lazily. */
  constructor(config: z.input<typeof s3SinkConfig>, secrets: S3Secrets) {
    this.config = parseSinkConfig(s3SinkConfig, config, "s3 sink config");
    const { secretAccessKey } = parseSinkConfig(s3SinkSecrets, secrets, "s3 sink secrets");
    const ca = trustedCas(this.config.caPem);
    this.client = new S3Client({
      region: this.config.region,
      ...(this.config.endpoint !== undefined ? { endpoint: this.config.endpoint } : {}),
      forcePathStyle: this.config.forcePathStyle,
      credentials: { accessKeyId: this.config.accessKeyId, secretAccessKey },
      // Flexible checksums only where an operation requires them: by default the SDK adds them, and for a
      // streamed body uses aws-chunked framing that some S3-compatible stores keep verbatim in the object.
      // Content-MD5 (below) lets the store check the bytes instead.
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      // The pipeline retries, with its own backoff.
      maxAttempts: 1,
      requestHandler: { httpsAgent: new HttpsAgent({ keepAlive: true, rejectUnauthorized: true, minVersion: "TLSv1.2", ...(ca ? { ca } : {}) }) },
    });
  }

  /** s3://bucket/prefix, and the endpoint's origin when it is not AWS's. */
  describe(): string {
    const e = this.config.endpoint;
    return `s3://${this.config.bucket}/${this.config.prefix}${e !== undefined ? ` at ${new URL(e).origin}` : ""}`;
  }

  async deliver(batch: StreamBatch, signal: AbortSignal): Promise<void> {
    let where = this.describe();
    try {
      checkBatch(batch);
      if (this.closed) throw new DeliveryError(`${where}: the transport is closed`, true);
      const key = s3ObjectKey(this.config.prefix, batch);
      where = `s3://${this.config.bucket}/${key}`;
      const body = ndjson(batch.lines);
      await this.client.send(
        new PutObjectCommand({
          Bucket: this.config.bucket,
          Key: key,
          Body: body,
          ContentLength: body.length,
          ContentType: "application/x-ndjson",
          ContentMD5: createHash("md5").update(body).digest("base64"),
          Metadata: { "parhelion-stream": batch.streamId, "parhelion-seq": `${batch.firstSeq}-${batch.lastSeq}` },
        }),
        { abortSignal: signal },
      );
    } catch (err) {
      throw s3Failure(where, err, signal);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.client.destroy();
  }
}
