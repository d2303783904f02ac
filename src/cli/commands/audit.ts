import { InvalidArgumentError, type Command } from "commander";
import { apiAction, parseInstant } from "../context.js";
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
    .action(apiAction(async ({ client, format }) => {
      const v = await client.get<VerifyResult>("/v1/auditLogs/verify");
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
    }));
}
