import type { Command } from "commander";
import { apiAction } from "../context.js";
import { CliError, EXIT } from "../errors.js";
import { emit, printRecord, printTable } from "../output.js";
import { resolveGroupId } from "./workspaces.js";

interface GroupKeyWrap { workspaceGroupID: string; keyID: string; provider: string; wrappedBy: string; keyVersion: number; wrappedAt: string }
interface Rekey {
  operationID: string; workspaceGroupID: string; phase: string; state: "RUNNING" | "DONE" | "FAILED"; oldKeyID: string; newKeyID: string | null;
  bytesCopied: number; bytesTotal: number; workspaceIDs: string[]; startedAt: string; updatedAt: string; finishedAt?: string; error?: string;
}
interface GroupKeys {
  workspaceGroupID: string;
  dataKey: GroupKeyWrap | null;
  kmsKey: { provider: string; keyID: string; status: string; statusDetail?: string; checkedAt?: string } | null;
  rekey: Rekey | null;
}

/** "COPYING 12.0 MiB / 40.5 MiB (29%)" */
function progressLine(r: Rekey): string {
  const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;
  const pct = r.bytesTotal > 0 ? ` (${Math.floor((100 * r.bytesCopied) / r.bytesTotal)}%)` : "";
  return `${r.phase} ${mib(r.bytesCopied)} / ${mib(r.bytesTotal)}${pct}`;
}

/** GET /v1/keys/status as the CLI reads it (ids and relations only: the API never answers key material). */
export interface KeyStatus {
  provider: { provider: string; keyId: string; details: Record<string, string> };
  health: { ok: boolean; detail: string };
  keys: Array<{ keyID: string; kind: string; organizationID: string; workspaceGroupID: string | null; wrappedBy: string; provider: string | null; state: string; createdAt: string }>;
}

/** `key status [--group]`, `key rotate --group`, `key rekey --group [--no-wait]`. */
export function registerKeys(program: Command): void {
  const key = program.command("key").description("The key hierarchy: root key provider, organization and data keys");
  key.command("status").description("Show the root key provider, its health and which key wraps which (GET /v1/keys/status); with --group, that group's data key and customer-managed key; never key material")
    .option("--group <group>", "one workspace group (ID or name)")
    .action(apiAction(async ({ client, format }, opts: { group?: string }) => {
      if (opts.group !== undefined) {
        const g = await client.get<GroupKeys>(`/v1/workspaceGroups/${await resolveGroupId(client, opts.group)}/keys`);
        emit(format, g, () => printRecord({
          workspaceGroupID: g.workspaceGroupID, dataKeyID: g.dataKey?.keyID ?? "(none yet)", wrappedBy: g.dataKey ? `${g.dataKey.provider} ${g.dataKey.wrappedBy}` : "",
          keyVersion: g.dataKey?.keyVersion ?? "", wrappedAt: g.dataKey?.wrappedAt ?? "",
          customerKey: g.kmsKey ? `${g.kmsKey.provider} ${g.kmsKey.keyID}` : "none (platform key)",
          ...(g.kmsKey ? { customerKeyStatus: g.kmsKey.status + (g.kmsKey.statusDetail ? ` (${g.kmsKey.statusDetail})` : ""), checkedAt: g.kmsKey.checkedAt ?? "" } : {}),
          ...(g.rekey ? {
            rekey: `${g.rekey.state} ${progressLine(g.rekey)}`, rekeyStartedAt: g.rekey.startedAt, ...(g.rekey.finishedAt ? { rekeyFinishedAt: g.rekey.finishedAt } : {}),
            ...(g.rekey.error ? { rekeyError: g.rekey.error } : {}),
          } : {}),
        }));
        return;
      }
      const s = await client.get<KeyStatus>("/v1/keys/status");
      emit(format, s, () => {
        printRecord({
          provider: s.provider.provider, rootKeyID: s.provider.keyId,
          ...Object.fromEntries(Object.entries(s.provider.details).map(([k, v]) => [k, v])),
          health: s.health.ok ? "ok" : `FAILING: ${s.health.detail}`,
        });
        process.stdout.write("\n");
        printTable(s.keys, [
          { header: "KEY", get: (k) => k.keyID }, { header: "KIND", get: (k) => k.kind }, { header: "GROUP", get: (k) => k.workspaceGroupID },
          { header: "WRAPPED BY", get: (k) => k.wrappedBy }, { header: "STATE", get: (k) => k.state }, { header: "CREATED", get: (k) => k.createdAt },
        ]);
      });
    }));
  key.command("rotate").description("Re-wrap a workspace group's data key under the current version of its wrapping key (no data rewrite, no downtime)")
    .requiredOption("--group <group>", "workspace group (ID or name)")
    .action(apiAction(async ({ client, format }, opts: { group: string }) => {
      const { body: w } = await client.call<GroupKeyWrap>("POST", `/v1/workspaceGroups/${await resolveGroupId(client, opts.group)}/keys/rotate`, { body: {} });
      emit(format, w, () => process.stdout.write(`data key ${w.keyID} of workspace group ${w.workspaceGroupID} re-wrapped by ${w.provider} ${w.wrappedBy}: version ${w.keyVersion} at ${w.wrappedAt}\n`));
    }));
  key.command("rekey").description("Replace a workspace group's data key and rewrite its volume under the new key (its workspaces are offline meanwhile); waits and prints the progress unless --no-wait")
    .requiredOption("--group <group>", "workspace group (ID or name)")
    .option("--no-wait", "answer once the re-key has started (GET .../keys, `key status --group`, shows its progress)")
    .action(apiAction(async ({ client, format }, opts: { group: string; wait: boolean }) => {
      const id = await resolveGroupId(client, opts.group);
      const { body: started } = await client.call<Rekey>("POST", `/v1/workspaceGroups/${id}/keys/rekey`, { body: {} });
      let r = started;
      if (opts.wait) {
        const tty = format === "table" && process.stderr.isTTY;
        let last = "";
        while (r.state === "RUNNING") {
          await new Promise((res) => setTimeout(res, 500));
          const cur = (await client.get<GroupKeys>(`/v1/workspaceGroups/${id}/keys`)).rekey;
          if (!cur || cur.operationID !== started.operationID) break;
          r = cur;
          const line = progressLine(r);
          if (format === "table" && line !== last) process.stderr.write(tty ? `\r${line}   ` : `${line}\n`);
          last = line;
        }
        if (tty) process.stderr.write("\n");
        if (r.state === "FAILED") throw new CliError(EXIT.UNAVAILABLE, "ERR_CLI_REKEY_FAILED", `the re-key of workspace group ${id} was rolled back: ${r.error ?? "see the server log"}`);
      }
      emit(format, r, () => process.stdout.write(r.state === "DONE"
        ? `workspace group ${id} re-keyed: data key ${r.newKeyID} active, ${r.oldKeyID} retired; ${r.bytesCopied} bytes rewritten\n`
        : `re-key ${r.operationID} of workspace group ${id} started (${r.phase}); \`parhelion key status --group ${opts.group}\` shows its progress\n`));
    }));
}
