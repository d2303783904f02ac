/** What the three remote transports share: config parsing, batch checks, the NDJSON body, TLS trust and error classification. */
import { X509Certificate } from "node:crypto";
import { rootCertificates } from "node:tls";
import { z } from "zod";
import { ParhelionError } from "../../lib/errors.js";
import { DeliveryError, type StreamBatch } from "../stream/transport.js";

/** Parses a sink's config or secrets; ERR_VALIDATION naming the first bad fields (never their values). */
export function parseSinkConfig<S extends z.ZodType>(schema: S, value: unknown, where: string): z.output<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const msg = r.error.issues
    .slice(0, 5)
    .map((i) => {
      if (i.code === "unrecognized_keys") return `${i.keys.join(", ")}: unknown field${i.keys.length > 1 ? "s" : ""}`;
      return `${i.path.length > 0 ? i.path.map(String).join(".") : where}: ${i.message}`;
    })
    .join("; ");
  throw new ParhelionError("ERR_VALIDATION", `invalid ${where}: ${msg}`, {
    details: { issues: r.error.issues.slice(0, 20).map((i) => ({ path: i.path.map(String), message: i.message })) },
  });
}

/** One or more PEM certificates, each of which node:crypto parses; trusted in addition to the system's CAs. */
/**
 * An absolute https:// URL (audit records never travel in plaintext) without user:password@ (credentials are
 * secrets, `credentialsHint` says where they go) or a #fragment; a query string only where `allowQuery`.
 */
export function httpsUrlField(o: { allowQuery: boolean; credentialsHint: string }) {
  return z
    .string()
    .max(2048)
    .superRefine((s, ctx) => {
      let u: URL;
      try {
        u = new URL(s);
      } catch {
        ctx.addIssue({ code: "custom", message: "must be an absolute https:// URL" });
        return;
      }
      if (u.protocol !== "https:") ctx.addIssue({ code: "custom", message: `must be an https:// URL, not ${u.protocol}// (audit records are never sent in plaintext)` });
      if (u.username !== "" || u.password !== "") ctx.addIssue({ code: "custom", message: `must not carry credentials (user:password@); ${o.credentialsHint}` });
      if (!o.allowQuery && u.search !== "") ctx.addIssue({ code: "custom", message: "must not have a query string" });
      if (u.hash !== "") ctx.addIssue({ code: "custom", message: "must not have a #fragment" });
    });
}

export const caPemField = z
  .string()
  .max(256 * 1024)
  .refine((pem) => {
    const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
    if (!blocks || blocks.length > 100) return false;
    try {
      for (const b of blocks) new X509Certificate(b);
      return true;
    } catch {
      return false;
    }
  }, { message: "must be one or more PEM certificates (-----BEGIN CERTIFICATE-----)" })
  .describe("Extra PEM CA certificates trusted for the receiver, in addition to the system's.");

/** The CAs a TLS client trusts: the system's, plus the sink's own when it has one (undefined: node's default store). */
export function trustedCas(caPem: string | undefined): string[] | undefined {
  return caPem === undefined ? undefined : [...rootCertificates, caPem];
}

const STREAM_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/**
 * Checks the batch is what transport.ts promises (a safe stream id, consecutive seqs, one line per seq, no line
 * breaks inside a line); a batch that breaks it is a bug upstream that no retry fixes: DeliveryError(retryable=false).
 */
export function checkBatch(batch: StreamBatch): void {
  const bad = (what: string): never => {
    throw new DeliveryError(`invalid batch: ${what}`, false);
  };
  if (typeof batch !== "object" || batch === null) bad("not an object");
  if (typeof batch.streamId !== "string" || !STREAM_ID.test(batch.streamId)) bad("streamId must be 1 to 128 letters, digits, '.', '_' or '-'");
  if (!Number.isSafeInteger(batch.firstSeq) || !Number.isSafeInteger(batch.lastSeq) || batch.firstSeq < 0 || batch.lastSeq < batch.firstSeq) bad("firstSeq and lastSeq must be integers with 0 <= firstSeq <= lastSeq");
  if (!Array.isArray(batch.lines) || batch.lines.length !== batch.lastSeq - batch.firstSeq + 1) bad("lines must hold exactly one line per seq from firstSeq to lastSeq");
  if (Number.isNaN(new Date(batch.firstAt).getTime()) || Number.isNaN(new Date(batch.lastAt).getTime())) bad("firstAt and lastAt must be times in ms since the epoch");
  for (let i = 0; i < batch.lines.length; i++) {
    const line = batch.lines[i];
    if (typeof line !== "string") bad(`line ${i} is not a string`);
    else if (line.includes("\n") || line.includes("\r")) bad(`line ${i} contains a line break`);
  }
}

/** The batch as NDJSON: the lines joined by "\n", with a trailing "\n". */
export function ndjson(lines: readonly string[]): Buffer {
  return Buffer.from(lines.length === 0 ? "" : `${lines.join("\n")}\n`, "utf8");
}

/** OpenSSL verification failures and node's host name check: the receiver's certificate is not trusted. */
const CERTIFICATE_ERRORS = new Set([
  "UNABLE_TO_GET_ISSUER_CERT", "UNABLE_TO_GET_CRL", "UNABLE_TO_DECRYPT_CERT_SIGNATURE", "UNABLE_TO_DECRYPT_CRL_SIGNATURE",
  "UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY", "CERT_SIGNATURE_FAILURE", "CRL_SIGNATURE_FAILURE", "CERT_NOT_YET_VALID", "CERT_HAS_EXPIRED",
  "CRL_NOT_YET_VALID", "CRL_HAS_EXPIRED", "ERROR_IN_CERT_NOT_BEFORE_FIELD", "ERROR_IN_CERT_NOT_AFTER_FIELD", "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN", "UNABLE_TO_GET_ISSUER_CERT_LOCALLY", "UNABLE_TO_VERIFY_LEAF_SIGNATURE", "CERT_CHAIN_TOO_LONG", "CERT_REVOKED",
  "INVALID_CA", "PATH_LENGTH_EXCEEDED", "INVALID_PURPOSE", "CERT_UNTRUSTED", "CERT_REJECTED", "HOSTNAME_MISMATCH", "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/** The error code of err or of one of its causes when it is a certificate verification failure. */
export function certificateError(err: unknown): string | undefined {
  for (let e = err, depth = 0; e !== null && typeof e === "object" && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && CERTIFICATE_ERRORS.has(code)) return code;
  }
  return undefined;
}

/** A short, single-line description of an error from a library: its code and message, control characters removed. */
export function errorText(err: unknown): string {
  if (!(err instanceof Error)) return String(err).slice(0, 200);
  const code = (err as { code?: unknown }).code;
  const text = `${typeof code === "string" ? `${code}: ` : ""}${err.message}`;
  return text.replace(/[\u0000-\u001f\u007f]+/g, " ").slice(0, 300);
}

/** Why the signal aborted, for a DeliveryError message. */
export function abortText(signal: AbortSignal): string {
  const r: unknown = signal.reason;
  if (r instanceof Error) return r.name === "TimeoutError" ? "timed out" : `aborted (${r.message.slice(0, 100)})`;
  return "aborted";
}

/**
 * The classification every transport applies to a failure that is not an answer from the receiver: an
 * aborted attempt and a network error are retryable; an untrusted certificate is not (retrying the same batch
 * cannot fix it; the operator must fix the receiver's certificate or caPem).
 */
export function networkFailure(where: string, err: unknown, signal: AbortSignal): DeliveryError {
  if (err instanceof DeliveryError) return err;
  if (signal.aborted) return new DeliveryError(`${where}: ${abortText(signal)}`, true);
  const cert = certificateError(err);
  if (cert !== undefined) return new DeliveryError(`${where}: the receiver's TLS certificate is not trusted (${cert})`, false);
  return new DeliveryError(`${where}: ${errorText(err)}`, true);
}

/** Resolves when `p` does, rejects when the signal aborts first. */
export function untilAborted<T>(p: Promise<T>, signal: AbortSignal, where: string): Promise<T> {
  if (signal.aborted) return Promise.reject(new DeliveryError(`${where}: ${abortText(signal)}`, true));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(new DeliveryError(`${where}: ${abortText(signal)}`, true));
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(err);
      },
    );
  });
}
