import { isIP } from "node:net";
import { hostname as osHostname } from "node:os";
import { connect, type TLSSocket } from "node:tls";
import { z } from "zod";
import { DeliveryError, type SinkTransport, type StreamBatch } from "../stream/transport.js";
import { abortText, caPemField, checkBatch, networkFailure, parseSinkConfig, trustedCas, untilAborted } from "./common.js";

const DNS_NAME = /^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;
/** RFC 5424 §6: HOSTNAME, APP-NAME are PRINTUSASCII (%d33-126). */
const PRINTUSASCII = (max: number): RegExp => new RegExp(`^[\\x21-\\x7e]{1,${max}}$`);

/** A syslog sink's settings (no secrets: the receiver is authenticated by its certificate). */
export const syslogSinkConfig = z
  .object({
    host: z.string().refine((h) => DNS_NAME.test(h) || isIP(h) !== 0, { message: "must be a DNS name or an IP address" }).describe("The receiver's host name or IP address."),
    port: z.number().int().min(1).max(65535).default(6514).describe("TCP port (6514 is syslog over TLS, RFC 5425)."),
    serverName: z.string().regex(DNS_NAME, { message: "must be a DNS name" }).optional().describe("Name sent as SNI and checked against the receiver's certificate. Default: host."),
    caPem: caPemField.optional(),
    minVersion: z.enum(["TLSv1.2", "TLSv1.3"]).default("TLSv1.2").describe("Lowest TLS version accepted."),
    appName: z.string().regex(PRINTUSASCII(48), { message: "must be 1 to 48 printable ASCII characters without spaces (RFC 5424 APP-NAME)" }).default("parhelion"),
    hostname: z.string().regex(PRINTUSASCII(255), { message: "must be 1 to 255 printable ASCII characters without spaces (RFC 5424 HOSTNAME)" }).optional().describe("HOSTNAME of every message. Default: this host's name."),
    facility: z.number().int().min(0).max(23).default(13).describe("Syslog facility (RFC 5424 §6.2.1); 13 is log audit."),
    utf8Bom: z.boolean().default(true).describe("Start MSG with the UTF-8 BOM, as RFC 5424 §6.4 asks for UTF-8 MSG; false for receivers that hand MSG straight to a JSON parser."),
  })
  .strict();

export type SyslogSinkConfig = z.output<typeof syslogSinkConfig>;

/** RFC 5424 §6.3.1: the structured data ID (enterprise number 32473 is the one RFC 5612 reserves for documentation and examples). */
export const SYSLOG_SD_ID = "parhelion@32473";
/** MSGID when a line carries no recognisable "kind". */
const MSGID = "audit";
const SEVERITY_INFO = 6;
const SEVERITY_WARNING = 4;
const BOM = Buffer.from([0xef, 0xbb, 0xbf]);
const CREATED_AT = '"createdAt":"';
const AT = '"at":"';
const KIND = '"kind":"';
/** The stream format (src/audit/stream/format.ts) puts v, stream, seq, kind and at first: look for them only there. */
const PREFIX_CHARS = 200;
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})"/;

/** RFC 5424 §6.3.3: inside a PARAM-VALUE, '"', '\' and ']' are escaped with a backslash. */
export function escapeSdParam(value: string): string {
  return value.replace(/["\\\]]/g, (c) => `\\${c}`);
}

/** RFC 5424 TIMESTAMP (RFC 3339, UTC, milliseconds), or the NILVALUE for a time it cannot express. */
function timestamp(ms: number): string {
  const d = new Date(ms);
  const y = d.getUTCFullYear();
  return Number.isNaN(d.getTime()) || y < 0 || y > 9999 ? "-" : d.toISOString();
}

function rfc3339At(line: string, key: string, from: number, to: number): number {
  const at = line.indexOf(key, from);
  if (at < 0 || at > to) return NaN;
  const m = RFC3339.exec(line.slice(at + key.length, at + key.length + 40));
  return m ? Date.parse(m[0].slice(0, -1)) : NaN;
}

/**
 * The time of a line: the first `"createdAt":"<RFC 3339>"` in it (a record's event time), else the line's own
 * `"at"` (when the stream wrote it: a checkpoint's time), else `fallback`. JSON escapes every '"' inside a
 * string, so these patterns only ever match real keys.
 */
function lineTime(line: string, fallback: number): number {
  const created = rfc3339At(line, CREATED_AT, 0, line.length);
  if (Number.isFinite(created)) return created;
  const at = rfc3339At(line, AT, 0, PREFIX_CHARS);
  return Number.isFinite(at) ? at : fallback;
}

/** MSGID: the line's "kind" ("record", "checkpoint"), read from the line's prefix; "audit" when there is none. */
function msgId(line: string): string {
  const at = line.indexOf(KIND);
  if (at < 0 || at > PREFIX_CHARS) return MSGID;
  const m = /^([a-z][a-z0-9_-]{0,31})"/.exec(line.slice(at + KIND.length, at + KIND.length + 34));
  return m ? m[1]! : MSGID;
}

/** A denied or failed action is a warning, everything else informational: a substring test, no JSON parse. */
function severity(line: string): number {
  return line.includes('"result":"DENIED"') || line.includes('"result":"FAILURE"') ? SEVERITY_WARNING : SEVERITY_INFO;
}

export interface SyslogHeader {
  facility: number;
  hostname: string;
  appName: string;
  procId: string;
  utf8Bom: boolean;
}

/** One RFC 5424 message for one line of the stream: HEADER SP STRUCTURED-DATA SP [BOM] JSON. */
export function syslogMessage(h: SyslogHeader, streamId: string, seq: number, line: string, time: number): Buffer {
  const pri = h.facility * 8 + severity(line);
  const sd = `[${SYSLOG_SD_ID} stream="${escapeSdParam(streamId)}" seq="${escapeSdParam(String(seq))}"]`;
  const head = Buffer.from(`<${pri}>1 ${timestamp(time)} ${h.hostname} ${h.appName} ${h.procId} ${msgId(line)} ${sd} `, "utf8");
  return Buffer.concat(h.utf8Bom ? [head, BOM, Buffer.from(line, "utf8")] : [head, Buffer.from(line, "utf8")]);
}

/** RFC 5425 §4.3 octet-counting: MSG-LEN SP SYSLOG-MSG, MSG-LEN the message's length in octets. */
export function octetFrame(msg: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${msg.length} `, "ascii"), msg]);
}

/** This host's name as an RFC 5424 HOSTNAME: printable ASCII only, at most 255 characters. */
function localHostname(): string {
  const h = osHostname().replace(/[^\x21-\x7e]/g, "").slice(0, 255);
  return h.length > 0 ? h : "-";
}

/**
 * Delivers batches as RFC 5424 messages over one persistent TLS connection (RFC 5425, octet-counting framing).
 * A batch is written with one socket write; `deliver` resolves once that write completed on a socket that is
 * still open. TCP syslog has no acknowledgement: bytes the kernel accepted just before the receiver dropped
 * the connection are lost without an error (RFC 6587 §5); receivers dedupe on (stream, seq).
 */
export class SyslogTransport implements SinkTransport {
  private readonly config: SyslogSinkConfig;
  private readonly header: SyslogHeader;
  private readonly ca: string[] | undefined;
  private socket: TLSSocket | null = null;
  /** Deliveries run one at a time, in call order, so batches never interleave on the socket. */
  private turn: Promise<void> = Promise.resolve();
  private closed = false;

  /** Validates the config (ERR_VALIDATION naming the field); connects lazily on the first delivery. */
  constructor(config: z.input<typeof syslogSinkConfig>) {
    this.config = parseSinkConfig(syslogSinkConfig, config, "syslog sink config");
    this.header = { facility: this.config.facility, hostname: this.config.hostname ?? localHostname(), appName: this.config.appName, procId: String(process.pid), utf8Bom: this.config.utf8Bom };
    this.ca = trustedCas(this.config.caPem);
  }

  describe(): string {
    const host = isIP(this.config.host) === 6 ? `[${this.config.host}]` : this.config.host;
    return `syslog+tls://${host}:${this.config.port}`;
  }

  deliver(batch: StreamBatch, signal: AbortSignal): Promise<void> {
    const previous = this.turn;
    let release!: () => void;
    this.turn = new Promise<void>((r) => (release = r));
    const run = (async () => {
      try {
        checkBatch(batch);
        const frames = this.frames(batch);
        await untilAborted(previous, signal, this.describe());
        if (this.closed) throw new DeliveryError(`${this.describe()}: the transport is closed`, true);
        const socket = await this.connection(signal);
        await this.write(socket, frames, signal);
      } catch (err) {
        throw networkFailure(this.describe(), err, signal);
      }
    })();
    // The next delivery waits for this one, or for the one before it when this one gave up while queued.
    void run.then(release, () => previous.then(release));
    return run;
  }

  async close(): Promise<void> {
    this.closed = true;
    const s = this.socket;
    this.socket = null;
    if (!s || s.destroyed) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => s.destroy(), 2000);
      s.once("close", () => {
        clearTimeout(timer);
        resolve();
      });
      s.end();
    });
  }

  private frames(batch: StreamBatch): Buffer {
    const last = batch.lines.length - 1;
    return Buffer.concat(
      batch.lines.map((line, i) => {
        const fallback = i === last ? batch.lastAt : batch.firstAt;
        return octetFrame(syslogMessage(this.header, batch.streamId, batch.firstSeq + i, line, lineTime(line, fallback)));
      }),
    );
  }

  /** The open connection, or a new one (TLS handshake and certificate check done). */
  private connection(signal: AbortSignal): Promise<TLSSocket> {
    const current = this.socket;
    if (current && !current.destroyed && current.writable && !current.readableEnded) return Promise.resolve(current);
    current?.destroy();
    this.socket = null;
    if (signal.aborted) return Promise.reject(new DeliveryError(`${this.describe()}: ${abortText(signal)}`, true));
    const c = this.config;
    const servername = c.serverName ?? (isIP(c.host) === 0 ? c.host : undefined);
    return new Promise<TLSSocket>((resolve, reject) => {
      const s = connect({
        host: c.host,
        port: c.port,
        ...(servername !== undefined ? { servername } : {}),
        ...(this.ca ? { ca: this.ca } : {}),
        minVersion: c.minVersion,
        // Never configurable: an unverified receiver is no receiver.
        rejectUnauthorized: true,
      });
      const done = (): void => {
        signal.removeEventListener("abort", onAbort);
        s.off("secureConnect", onSecure);
        s.off("error", onError);
        s.off("close", onClose);
      };
      const onAbort = (): void => {
        done();
        s.destroy();
        reject(new DeliveryError(`${this.describe()}: ${abortText(signal)} while connecting`, true));
      };
      const onError = (err: Error): void => {
        done();
        s.destroy();
        reject(err);
      };
      const onClose = (): void => {
        done();
        reject(new DeliveryError(`${this.describe()}: the connection closed during the TLS handshake`, true));
      };
      const onSecure = (): void => {
        done();
        if (!s.authorized) {
          s.destroy();
          reject(new DeliveryError(`${this.describe()}: the receiver's TLS certificate is not trusted`, false));
          return;
        }
        this.adopt(s);
        resolve(s);
      };
      s.once("secureConnect", onSecure);
      s.once("error", onError);
      s.once("close", onClose);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  private adopt(s: TLSSocket): void {
    s.setNoDelay(true);
    s.setKeepAlive(true, 30_000);
    // Errors are reported by the write in progress; an idle socket's error only means the next delivery reconnects.
    s.on("error", () => s.destroy());
    s.on("end", () => s.destroy());
    s.on("close", () => {
      if (this.socket === s) this.socket = null;
    });
    // A syslog receiver sends nothing; reading (and discarding) anyway is what lets us see it close the connection.
    s.resume();
    if (this.closed) s.destroy();
    else this.socket = s;
  }

  /** Writes the whole batch; resolves when the write completed and the socket is still open. */
  private write(s: TLSSocket, data: Buffer, signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.reject(new DeliveryError(`${this.describe()}: ${abortText(signal)}`, true));
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const finish = (err?: unknown): void => {
        if (settled) return;
        settled = true;
        signal.removeEventListener("abort", onAbort);
        s.off("close", onClose);
        s.off("error", onError);
        if (err === undefined) resolve();
        else {
          // A partly written frame would corrupt the framing of whatever follows: never reuse this socket.
          s.destroy();
          reject(err);
        }
      };
      const onClose = (): void => finish(new DeliveryError(`${this.describe()}: the connection closed before the batch was written`, true));
      const onError = (err: Error): void => finish(err);
      const onAbort = (): void => finish(new DeliveryError(`${this.describe()}: ${abortText(signal)} while writing`, true));
      s.once("close", onClose);
      s.once("error", onError);
      signal.addEventListener("abort", onAbort, { once: true });
      s.write(data, (err) => {
        if (err) finish(err);
        else if (s.destroyed || !s.writable) onClose();
        else finish();
      });
    });
  }
}
