import { InvalidArgumentError, type Command } from "commander";
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { apiAction, formatOf, parseInstant } from "../context.js";
import { CliError, EXIT } from "../errors.js";
import { emit, note, printTable } from "../output.js";
import type { AuditPage, AuditRecord, VerifyResult } from "../types.js";

function positiveInt(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || n > 1000) throw new InvalidArgumentError("must be an integer from 1 to 1000");
  return n;
}

interface ListOpts { type?: string; source?: string; since?: string; until?: string; limit?: number; all?: boolean; nextToken?: string }

/** `audit list`, `audit verify`. */
export function registerAudit(program: Command): void {
  const audit = program.command("audit").description("The tamper-evident audit log");

  audit.command("list").description("List audit records, newest first")
    .option("--type <type>", "only this event type (e.g. ApiKeyCreate)")
    .option("--source <source>", "only this source (API, Portal, System)")
    .option("--since <time>", "from this RFC 3339 time, or a duration ago (24h, 7d)")
    .option("--until <time>", "up to this RFC 3339 time, or a duration ago")
    .option("--limit <n>", "records per page, 1-1000 (server default otherwise)", positiveInt)
    .option("--all", "follow nextToken through every page")
    .option("--next-token <token>", "continue after a previous page")
    .addHelpText("after", "\nJSON output is the API's answer ({auditLogs, nextToken}); with --all, one object holding every page's records.")
    .action(apiAction(async ({ client, format }, opts: ListOpts) => {
      const query = {
        type: opts.type, source: opts.source, limit: opts.limit, nextToken: opts.nextToken,
        startDate: opts.since === undefined ? undefined : parseInstant(opts.since, "--since"),
        endDate: opts.until === undefined ? undefined : parseInstant(opts.until, "--until"),
      };
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
          { header: "ACTOR", get: (r) => r.userEmail ?? (r.userID ? `${r.userType}:${r.userID}` : r.userType) },
          { header: "RESOURCE", get: (r) => (r.resourceType ? `${r.resourceType}/${r.resourceID ?? ""}` : null) }, { header: "REASON", get: (r) => r.reason },
        ]);
        if (result.nextToken) note(`parhelion: more records: add --all, or --next-token ${result.nextToken}`);
      });
    }));

  audit.command("verify").description("Re-compute the hash chain; exit 8 and list each problem when it does not hold")
    .option("--store <dataDir>", "read the chain straight from the running embedded store of this data dir (needs root or the service user), not through the API")
    .option("--database-url-file <file>", "read the chain straight from an external metadata store whose URL is in this file")
    .addHelpText("after", "\nWith --store or --database-url-file the check does not depend on the API, its credentials or its RBAC:\nan auditor with access to the store re-computes every hash independently.")
    .action(async (opts: { store?: string; databaseUrlFile?: string }, cmd: Command) => {
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
