import { createReadStream, createWriteStream, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { once } from "node:events";
import type { Command } from "commander";
import { apiAction } from "../context.js";
import { CliError, EXIT, usageError } from "../errors.js";
import type { ApiClient } from "../client.js";
import { verifyStream, type StreamVerifyResult } from "../../audit/stream/format.js";
import { readSecretFile } from "../input.js";
import { emit, printRecord, printTable } from "../output.js";

/** An audit sink as GET /v1/auditSinks answers it. */
export interface AuditSinkView {
  auditSinkID: string;
  name: string;
  type: string;
  workspaceGroupID: string | null;
  failMode: string;
  enabled: boolean;
  config: Record<string, unknown>;
  settings: Record<string, number>;
  secretsSet: string[];
  createdAt: string;
  updatedAt: string;
  status: null | {
    state: string; streamHead: { seq: number; hash: string }; deliveredSeq: number; pending: number; diskBytes: number; maxBytes: number; sealedSeq: number;
    lastDeliveryAt: string | null; downSince: string | null; lastError: string | null; dropped: number; alerts: string[];
  };
}

interface SinkOpts {
  name?: string;
  type?: string;
  group?: string;
  failMode?: string;
  enabled?: string;
  config?: string;
  configFile?: string;
  url?: string;
  host?: string;
  port?: number;
  serverName?: string;
  caFile?: string;
  bucket?: string;
  region?: string;
  endpoint?: string;
  prefix?: string;
  accessKeyId?: string;
  pathStyle?: boolean;
  secretFile?: string;
  secretAccessKeyFile?: string;
  checkpointEvery?: number;
  checkpointSeconds?: number;
  maxBytes?: number;
  rotateBytes?: number;
  rotateSeconds?: number;
  retentionDays?: number;
}

function int(v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw usageError(`"${v}" is not a whole number`);
  return n;
}

function readFile(path: string, what: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw usageError(`cannot read the ${what} file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** The request body's config, settings and secrets from the flags (secrets only from files). */
function body(o: SinkOpts): Record<string, unknown> {
  let config: Record<string, unknown> | undefined;
  if (o.config !== undefined || o.configFile !== undefined) {
    const text = o.config ?? readFile(o.configFile!, "config");
    try {
      config = JSON.parse(text) as Record<string, unknown>;
    } catch {
      throw usageError("--config/--config-file must hold a JSON object");
    }
    if (config === null || typeof config !== "object" || Array.isArray(config)) throw usageError("--config/--config-file must hold a JSON object");
  }
  const flags: Record<string, unknown> = {
    url: o.url, host: o.host, port: o.port, serverName: o.serverName, bucket: o.bucket, region: o.region, endpoint: o.endpoint, prefix: o.prefix,
    accessKeyId: o.accessKeyId, forcePathStyle: o.pathStyle, caPem: o.caFile === undefined ? undefined : readFile(o.caFile, "CA"),
  };
  for (const [k, v] of Object.entries(flags)) if (v !== undefined) (config ??= {})[k] = v;
  const settingsFlags = { checkpointEvery: o.checkpointEvery, checkpointSeconds: o.checkpointSeconds, maxBytes: o.maxBytes, rotateBytes: o.rotateBytes, rotateSeconds: o.rotateSeconds, retentionDays: o.retentionDays };
  const settings = Object.fromEntries(Object.entries(settingsFlags).filter(([, v]) => v !== undefined));
  const secrets: Record<string, string> = {};
  if (o.secretFile !== undefined) secrets["secret"] = readSecretFile(o.secretFile, "webhook secret");
  if (o.secretAccessKeyFile !== undefined) secrets["secretAccessKey"] = readSecretFile(o.secretAccessKeyFile, "secret access key");
  return {
    ...(o.name !== undefined ? { name: o.name } : {}),
    ...(o.failMode !== undefined ? { failMode: o.failMode } : {}),
    ...(o.enabled !== undefined ? { enabled: o.enabled === "true" } : {}),
    ...(config !== undefined ? { config } : {}),
    ...(Object.keys(settings).length > 0 ? { settings } : {}),
    ...(Object.keys(secrets).length > 0 ? { secrets } : {}),
  };
}

function destinationOptions(c: Command): Command {
  return c
    .option("--config <json>", "the type's settings as a JSON object (docs/audit-sinks.md)")
    .option("--config-file <file>", "the same, from a file")
    .option("--url <url>", "webhook: the HTTPS URL")
    .option("--host <host>", "syslog: the receiver's host")
    .option("--port <port>", "syslog: its TLS port", int)
    .option("--server-name <name>", "syslog: the name its certificate must carry (default: --host)")
    .option("--ca-file <file>", "a PEM CA bundle to trust for the destination (besides the system's)")
    .option("--bucket <bucket>", "s3: the bucket")
    .option("--region <region>", "s3: the region")
    .option("--endpoint <url>", "s3: an S3-compatible endpoint")
    .option("--prefix <prefix>", "s3: the key prefix (ends with /)")
    .option("--access-key-id <id>", "s3: the access key id")
    .option("--path-style", "s3: path-style addressing (most S3-compatible servers)")
    .option("--secret-file <file>", "webhook: a file holding the HMAC secret (at least 32 bytes)")
    .option("--secret-access-key-file <file>", "s3: a file holding the secret access key")
    .option("--fail-mode <mode>", "open (service continues, alert raised) or closed (no new sessions or statements while no sink can record)")
    .option("--checkpoint-every <n>", "lines between signed checkpoints", int)
    .option("--checkpoint-seconds <n>", "longest wait of a line for its checkpoint", int)
    .option("--max-bytes <n>", "spool bound (remote sinks) or total size kept (file sinks)", int)
    .option("--rotate-bytes <n>", "file sinks: new file beyond this size", int)
    .option("--rotate-seconds <n>", "file sinks: new file after this long", int)
    .option("--retention-days <n>", "file sinks: remove files older than this", int);
}

function printSink(s: AuditSinkView): void {
  printRecord({
    id: s.auditSinkID, name: s.name, type: s.type, workspaceGroup: s.workspaceGroupID ?? "(whole organization)", failMode: s.failMode, enabled: s.enabled,
    config: JSON.stringify(s.config), secretsSet: s.secretsSet.join(", ") || "-", state: s.status?.state ?? "-",
    streamHead: s.status ? `${s.status.streamHead.seq} ${s.status.streamHead.hash}` : "-", delivered: s.status?.deliveredSeq ?? "-", pending: s.status?.pending ?? "-",
    sealed: s.status?.sealedSeq ?? "-", disk: s.status ? `${s.status.diskBytes} / ${s.status.maxBytes} bytes` : "-", lastError: s.status?.lastError ?? "-",
    dropped: s.status?.dropped ?? 0, alerts: s.status?.alerts.join(", ") || "-",
  });
}

/** Lines of a file (or of stdin for "-"), streamed. */
async function* fileLines(path: string): AsyncGenerator<string> {
  const input = path === "-" ? process.stdin : createReadStream(path);
  const rl = createInterface({ input, crlfDelay: Infinity });
  try {
    for await (const line of rl) yield line;
  } catch (err) {
    throw usageError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/**
 * Verifies a stream export held in a file (a file sink's export, S3 objects concatenated in key order, a
 * webhook receiver's log) with the organization's public keys from the API. Without the live head, records
 * after the last checkpoint are reported as an unsealed tail (`audit sink verify` checks against the head).
 */
export async function verifyStreamFile(client: ApiClient, file: string): Promise<StreamVerifyResult> {
  const { keys } = await client.get<{ keys: Array<{ keyID: string; publicKey: string }> }>("/v1/auditSigningKeys");
  const lines: string[] = [];
  for await (const l of fileLines(file)) lines.push(l);
  return verifyStream(lines, { keys: new Map(keys.map((k) => [k.keyID, k.publicKey])), fromStart: true });
}

export function reportStream(format: string, r: StreamVerifyResult): void {
  if (format === "json") process.stdout.write(JSON.stringify(r, null, 2) + "\n");
  else {
    process.stdout.write(`stream ${r.stream ?? "-"}: ${r.records} records, ${r.checkpoints} checkpoints, seq ${r.firstSeq ?? "-"}..${r.lastSeq ?? "-"}, sealed through ${r.sealedSeq ?? "-"}${r.duplicates ? `, ${r.duplicates} re-delivered duplicates skipped` : ""}\n`);
    for (const p of r.problems) process.stdout.write(`  ${p.kind.padEnd(14)} line ${p.line} seq ${p.seq ?? "-"}: ${p.detail}\n`);
    process.stdout.write(r.ok ? "OK\n" : "PROBLEMS FOUND\n");
  }
  if (!r.ok) throw new CliError(EXIT.AUDIT_VERIFY_FAILED, "ERR_CLI_AUDIT_VERIFY", `the audit stream does not verify: ${r.problems.filter((p) => p.kind !== "unsealed-tail").length} problem(s)`);
}

/** `audit sink create|list|show|update|delete|export|verify`. */
export function registerAuditSinks(audit: Command): void {
  const sink = audit.command("sink").description("Where the audit stream goes: file, syslog (TLS), HTTPS webhook, S3-compatible storage");
  destinationOptions(sink.command("create").description("Add a sink (POST /v1/auditSinks; step-up)")
    .requiredOption("--name <name>", "a name unique in the organization")
    .requiredOption("--type <type>", "file, syslog, webhook or s3")
    .option("--group <workspaceGroupID>", "only this workspace group's records"))
    .action(apiAction(async ({ client, format }, opts: SinkOpts) => {
      const s = (await client.call<AuditSinkView>("POST", "/v1/auditSinks", { body: { ...body(opts), type: opts.type, ...(opts.group ? { workspaceGroupID: opts.group } : {}) } })).body;
      emit(format, s, () => printSink(s));
    }));
  sink.command("list").description("List the sinks and their delivery state")
    .action(apiAction(async ({ client, format }) => {
      const list = await client.get<AuditSinkView[]>("/v1/auditSinks");
      emit(format, list, () => printTable(list, [
        { header: "ID", get: (s) => s.auditSinkID }, { header: "NAME", get: (s) => s.name }, { header: "TYPE", get: (s) => s.type },
        { header: "GROUP", get: (s) => s.workspaceGroupID ?? "-" }, { header: "FAIL MODE", get: (s) => s.failMode }, { header: "STATE", get: (s) => s.status?.state ?? "-" },
        { header: "HEAD", get: (s) => s.status?.streamHead.seq ?? "-" }, { header: "PENDING", get: (s) => s.status?.pending ?? "-" }, { header: "ALERTS", get: (s) => s.status?.alerts.join(",") || "-" },
      ]));
    }));
  sink.command("show <auditSinkID>").description("One sink, its stream head and delivery state")
    .action(apiAction(async ({ client, format }, id: string) => {
      const s = await client.get<AuditSinkView>(`/v1/auditSinks/${encodeURIComponent(id)}`);
      emit(format, s, () => printSink(s));
    }));
  destinationOptions(sink.command("update <auditSinkID>").description("Change a sink (PATCH; step-up); its stream goes on where it was")
    .option("--name <name>", "a new name").option("--enabled <bool>", "true or false"))
    .action(apiAction(async ({ client, format }, id: string, opts: SinkOpts) => {
      const b = body(opts);
      if (Object.keys(b).length === 0) throw usageError("nothing to change", "pass at least one option; see `parhelion audit sink update --help`");
      const s = (await client.call<AuditSinkView>("PATCH", `/v1/auditSinks/${encodeURIComponent(id)}`, { body: b })).body;
      emit(format, s, () => printSink(s));
    }));
  sink.command("export <auditSinkID>").description("Write the sink's local stream (a file sink: every retained file; a remote sink: its spool) as NDJSON")
    .option("--out <file>", "write to this file (mode 0600) instead of stdout")
    .action(apiAction(async ({ client }, id: string, opts: { out?: string }) => {
      const body = await client.getStream(`/v1/auditSinks/${encodeURIComponent(id)}/export`);
      const out = opts.out === undefined ? process.stdout : createWriteStream(opts.out, { mode: 0o600, flags: "w" });
      for await (const chunk of body) if (!out.write(chunk)) await once(out, "drain");
      if (opts.out !== undefined) await new Promise<void>((resolve, reject) => (out as ReturnType<typeof createWriteStream>).end((err?: Error | null) => (err ? reject(err) : resolve())));
    }));
  sink.command("verify <auditSinkID>").description("Export the sink's local stream and verify it: chain, signed checkpoints, and that it reaches the stream head the platform reports")
    .action(apiAction(async ({ client, format }, id: string) => {
      // The head first: the export then reaches at least it, and must hold it with the same hash.
      const sinkView = await client.get<AuditSinkView>(`/v1/auditSinks/${encodeURIComponent(id)}`);
      const head = sinkView.status?.streamHead;
      const { keys } = await client.get<{ keys: Array<{ keyID: string; publicKey: string }> }>("/v1/auditSigningKeys");
      const body = await client.getStream(`/v1/auditSinks/${encodeURIComponent(id)}/export`);
      const chunks: Buffer[] = [];
      for await (const c of body) chunks.push(Buffer.from(c as Buffer));
      const lines = Buffer.concat(chunks).toString("utf8").split("\n");
      // A file sink keeps its stream from seq 1 (until retention removes files); a spool only what is undelivered.
      reportStream(format, verifyStream(lines, { keys: new Map(keys.map((k) => [k.keyID, k.publicKey])), fromStart: sinkView.type === "file", ...(head ? { head } : {}) }));
    }));
  sink.command("delete <auditSinkID>").description("Stop a sink and delete its local files (the metadata store keeps every record)")
    .action(apiAction(async ({ client, format }, id: string) => {
      const r = (await client.call<{ auditSinkID: string }>("DELETE", `/v1/auditSinks/${encodeURIComponent(id)}`)).body;
      emit(format, r, () => process.stdout.write(`deleted audit sink ${r.auditSinkID}\n`));
    }));
}
