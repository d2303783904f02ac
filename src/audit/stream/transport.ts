/**
 * What a sink's transport implements: it delivers batches of a stream's lines to one destination. The pipeline
 * (src/audit/stream/pipeline.ts) owns ordering, the spool, retries with backoff and failMode; a transport only
 * moves one batch and says whether the receiver took it.
 */

/** One batch of a sink's stream, in order. Each line is one JSON document (a record or a signed checkpoint), without a trailing newline. */
export interface StreamBatch {
  /** The sink's id (a UUID): receivers dedupe on (streamId, seq). */
  streamId: string;
  /** `seq` of the first and last line (consecutive, first ≤ last). */
  firstSeq: number;
  lastSeq: number;
  lines: string[];
  /** Event time (ms since epoch) of the first and last line: for object names and syslog timestamps. */
  firstAt: number;
  lastAt: number;
}

/** Why a delivery failed. `retryable: false` is for errors that retrying the same batch cannot fix (4xx other than 408/429). */
export class DeliveryError extends Error {
  constructor(message: string, readonly retryable = true) {
    super(message);
    this.name = "DeliveryError";
  }
}

export interface SinkTransport {
  /**
   * Delivers the batch; resolves once the receiver acknowledged all of it (HTTP 2xx, syslog bytes written and
   * flushed to the TLS socket, S3 PutObject answered), rejects with a DeliveryError otherwise. Must give up
   * when `signal` aborts (the pipeline's per-attempt timeout) and must never throw synchronously. A receiver
   * that answers garbage is a failure, not a success. The same batch may be delivered again after a failure
   * or a restart (at-least-once): receivers dedupe on (streamId, seq).
   */
  deliver(batch: StreamBatch, signal: AbortSignal): Promise<void>;
  /** Closes connections; idempotent. */
  close(): Promise<void>;
  /** One line for status pages and logs: where it delivers (never a secret). */
  describe(): string;
}
