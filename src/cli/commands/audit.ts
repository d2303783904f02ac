import { reportStream, verifyStreamFile } from "./auditSinks.js";
import { InvalidArgumentError, type Command } from "commander";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { chmodSync, createWriteStream, existsSync, readFileSync, renameSync, rmSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { apiAction, formatOf, isUuid, parseInstant, type Ctx } from "../context.js";
import { CliError, EXIT, usageError } from "../errors.js";
import { emit, note, printTable } from "../output.js";
import type { AuditPage, AuditRecord, VerifyResult } from "../types.js";

function intIn(max: number): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || n < 1 || n > max) throw new InvalidArgumentError(`must be an integer from 1 to ${max}`);
    return n;
  };
}

function uuidArg(what: string, list: string): (v: string) => string {
  return (v: string) => {
    if (!isUuid(v)) throw new InvalidArgumentError(`must be a ${what} ID (a UUID; \`parhelion ${list} list\` shows them)`);
    return v;
  };
}

interface FilterOpts { type?: string; source?: string; result?: string; user?: string; workspace?: string; group?: string; class?: string; since?: string; until?: string }
interface ListOpts extends FilterOpts { limit?: number; all?: boolean; nextToken?: string }
interface ExportOpts extends FilterOpts { limit?: number; out?: string }

/** The filters `audit list` and `audit export` share (GET /v1/auditLogs and /v1/auditLogs/export). */
function filterOptions(cmd: Command): Command {
  return cmd
    .option("--type <types>", "only these event types, comma-separated (e.g. ApiKeyCreate or DatabaseLoginSuccess,DatabaseLoginFailure)")
    .option("--source <sources>", "only these sources: Portal, API, CLI, System, Gateway (comma-separated)")
    .option("--result <results>", "only these results: SUCCESS, DENIED, FAILURE (comma-separated)")
    .option("--user <user>", "only this actor: a user or API key ID, an e-mail (any case) or a database user name (exact)")
    .option("--workspace <workspaceID>", "only records about this workspace (its API calls and gateway sessions)", uuidArg("workspace", "workspace"))
    .option("--group <workspaceGroupID>", "only records about this workspace group, its workspaces and its gateway traffic", uuidArg("workspace group", "workspace-group"))
    .option("--class <classes>", "only statements of these classes: READ, WRITE, FUNCTION, ROLE, DDL, MISC (comma-separated)")
    .option("--since <time>", "from this RFC 3339 time, or a duration ago (24h, 7d)")
    .option("--until <time>", "up to this RFC 3339 time, or a duration ago");
}

function filterQuery(opts: FilterOpts): Record<string, string | undefined> {
  return {
    type: opts.type, source: opts.source, result: opts.result, user: opts.user, workspaceID: opts.workspace, workspaceGroupID: opts.group, class: opts.class,
    startDate: opts.since === undefined ? undefined : parseInstant(opts.since, "--since"),
    endDate: opts.until === undefined ? undefined : parseInstant(opts.until, "--until"),
  };
}

/** `audit list`, `audit export`, `audit verify`. */
export function registerAudit(program: Command): void {
  const audit = program.command("audit").description("The tamper-evident audit log");

  filterOptions(audit.command("list").description("List audit records of both planes (API and gateway), newest first"))
    .option("--limit <n>", "records per page, 1-1000 (server default otherwise)", intIn(1000))
    .option("--all", "follow nextToken through every page")
    .option("--next-token <token>", "continue after a previous page (with the same filters)")
    .addHelpText("after", "\nJSON output is the API's answer ({auditLogs, nextToken}); with --all, one object holding every page's records.\nFor many records use `audit export`, which streams them.")
    .action(apiAction(async ({ client, format }, opts: ListOpts) => {
      const query = { ...filterQuery(opts), limit: opts.limit, nextToken: opts.nextToken };
      let page = await client.get<AuditPage>("/v1/auditLogs", query);
      if (opts.all) {
        const all: AuditRecord[] = [...page.auditLogs];
        while (page.nextToken) {
          page = await client.get<AuditPage>("/v1/auditLogs", { ...query, nextToken: page.nextToken });
          all.push(...page.auditLogs);
        }
        page = { auditLogs: all };
      }
      const result = page;
      emit(format, result, () => {
        printTable(result.auditLogs, [
          { header: "SEQ", get: (r) => r.seq }, { header: "TIME", get: (r) => r.createdAt }, { header: "TYPE", get: (r) => r.type },
          { header: "RESULT", get: (r) => r.result }, { header: "SOURCE", get: (r) => r.source },
          { header: "ACTOR", get: (r) => r.userEmail ?? (typeof r.attributes["databaseUser"] === "string" ? `db:${r.attributes["databaseUser"]}` : r.userID ? `${r.userType}:${r.userID}` : r.userType) },
          { header: "RESOURCE", get: (r) => (r.resourceType ? `${r.resourceType}/${r.resourceID ?? ""}` : null) }, { header: "REASON", get: (r) => r.reason },
        ]);
        if (result.nextToken) note(`parhelion: more records: add --all, or --next-token ${result.nextToken}`);
      });
    }));

  filterOptions(audit.command("export").description("Stream every matching audit record as NDJSON, oldest first, to a file or stdout"))
    .option("--out <file>", "write to this file (created with mode 0600; replaced only once the export is complete) instead of stdout")
    .option("--limit <n>", "stop after this many records", intIn(1_000_000_000))
    .addHelpText("after", "\nOne JSON record per line: the fields of `audit list` plus actorType, prevHash and hash, so each record's hash\ncan be re-computed (src/audit/DESIGN.md). The records are written as they arrive, never held in memory.")
    .action(apiAction(async (ctx, opts: ExportOpts) => exportRecords(ctx, opts)));

  audit.command("verify [streamFile]").description("Re-compute the hash chain (or, given a file, an audit stream export: a sink's export, S3 objects concatenated in key order, a webhook receiver's log; - for stdin); exit 8 and list each problem when it does not hold")
    .option("--store <dataDir>", "read the chain straight from the running embedded store of this data dir (needs root or the service user), not through the API")
    .option("--database-url-file <file>", "read the chain straight from an external metadata store whose URL is in this file")
    .addHelpText("after", "\nWith --store or --database-url-file the check does not depend on the API, its credentials or its RBAC:\nan auditor with access to the store re-computes every hash independently.")
    .action(async (streamFile: string | undefined, opts: { store?: string; databaseUrlFile?: string }, cmd: Command) => {
      if (streamFile !== undefined) {
        if (opts.store !== undefined || opts.databaseUrlFile !== undefined) throw new CliError(EXIT.USAGE, "ERR_CLI_USAGE", "a stream file is checked with the organization's keys from the API: drop --store/--database-url-file");
        await apiAction(async ({ client, format }) => reportStream(format, await verifyStreamFile(client, streamFile)))(cmd);
        return;
      }
      if (opts.store === undefined && opts.databaseUrlFile === undefined) {
        await apiAction(async ({ client, format }) => report(format, await client.get<VerifyResult>("/v1/auditLogs/verify")))(cmd);
        return;
      }
      if (opts.store !== undefined && opts.databaseUrlFile !== undefined) throw new CliError(EXIT.USAGE, "ERR_CLI_USAGE", "give --store or --database-url-file, not both");
      report(formatOf(cmd), await verifyDirect(opts));
    });
}

/** Connects to the metadata store itself and walks the chain. */
async function verifyDirect(opts: { store?: string; databaseUrlFile?: string }): Promise<VerifyResult> {
  let connectionString: string;
  if (opts.store !== undefined) {
    const socketDir = join(resolve(opts.store), "store", "run");
    if (!existsSync(join(socketDir, ".s.PGSQL.5432"))) {
      throw new CliError(EXIT.UNAVAILABLE, "ERR_CLI_STORE_UNREACHABLE", `no running metadata store under ${opts.store}`, { hint: "start `parhelion up --data-dir " + opts.store + "` (the store runs while it does), or use --database-url-file" });
    }
    connectionString = `postgresql://parhelion@/parhelion?host=${encodeURIComponent(socketDir)}`;
  } else {
    try {
      connectionString = readFileSync(opts.databaseUrlFile!, "utf8").trim();
    } catch (err) {
      throw new CliError(EXIT.USAGE, "ERR_CLI_USAGE", `cannot read ${opts.databaseUrlFile}: ${(err as NodeJS.ErrnoException).code ?? "error"}`);
    }
  }
  const { openDb } = await import("../../store/db.js");
  const { verifyChain } = await import("../../audit/verify.js");
  const { db } = openDb({ connectionString, max: 1 });
  try {
    return (await verifyChain(db)) as VerifyResult;
  } catch (err) {
    throw new CliError(EXIT.UNAVAILABLE, "ERR_CLI_STORE_UNREACHABLE", `cannot read the audit chain: ${(err as Error).message}`, { hint: "run as root or the store's service user; check the data dir or URL" });
  } finally {
    await db.destroy();
  }
}

function report(format: ReturnType<typeof formatOf>, v: VerifyResult): void {
  emit(format, v, () => {
    if (v.ok) process.stdout.write(`audit chain OK: ${v.checked} records checked, head seq ${v.headSeq ?? "-"}\n`);
    else {
      process.stdout.write(`audit chain BROKEN: ${v.problems.length} problem(s) in ${v.checked} records\n`);
      printTable(v.problems, [{ header: "SEQ", get: (p) => p.seq }, { header: "KIND", get: (p) => p.kind }, { header: "DETAIL", get: (p) => p.detail }]);
    }
  });
  if (!v.ok) {
    const list = v.problems.map((p) => `seq ${p.seq} ${p.kind}`).join(", ");
    throw new CliError(EXIT.AUDIT_VERIFY_FAILED, "ERR_CLI_AUDIT_BROKEN", `audit verification failed: ${list || "no details"}`, {
      hint: "records were changed, inserted or deleted outside parhelion: preserve the database and investigate",
    });
  }
}

/** Streams GET /v1/auditLogs/export to stdout, or to a 0600 temporary file renamed over `--out` when complete. */
async function exportRecords({ client }: Ctx, opts: ExportOpts): Promise<void> {
  const query = { ...filterQuery(opts), limit: opts.limit };
  const body = await client.getStream("/v1/auditLogs/export", query);
  if (opts.out === undefined) {
    for await (const chunk of body) if (!process.stdout.write(chunk)) await once(process.stdout, "drain");
    return;
  }
  const target = resolve(opts.out);
  const tmp = join(dirname(target), `.${basename(target)}.${randomBytes(6).toString("hex")}.partial`);
  let out: ReturnType<typeof createWriteStream>;
  try {
    out = createWriteStream(tmp, { flags: "wx", mode: 0o600 });
    await once(out, "open");
    chmodSync(tmp, 0o600); // whatever the umask
  } catch (err) {
    throw new CliError(EXIT.USAGE, "ERR_CLI_USAGE", `cannot write ${opts.out}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let lines = 0;
  try {
    for await (const chunk of body) {
      const b = chunk as Buffer;
      for (let i = b.indexOf(10); i !== -1; i = b.indexOf(10, i + 1)) lines++;
      if (!out.write(b)) await once(out, "drain");
    }
    await new Promise<void>((ok, fail) => out.end((err?: Error | null) => (err ? fail(err) : ok())));
  } catch (err) {
    out.on("error", () => undefined).destroy(); // what it still buffers is dropped with the file
    rmSync(tmp, { force: true });
    throw new CliError(EXIT.UNAVAILABLE, "ERR_CLI_EXPORT_INCOMPLETE", `the export stopped before its end (${(err as Error).message}); ${opts.out} was not written`, { cause: err, hint: "run it again; narrow it with --since/--until or other filters if it keeps failing" });
  }
  try {
    renameSync(tmp, target);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw new CliError(EXIT.USAGE, "ERR_CLI_USAGE", `cannot write ${opts.out}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  note(`parhelion: wrote ${lines} audit records to ${opts.out}`);
}
