import type { Command } from "commander";
import { apiAction } from "../context.js";
import { emit, printRecord, printTable } from "../output.js";
import { resolveGroupId } from "./workspaces.js";

interface GroupKeyWrap { workspaceGroupID: string; keyID: string; provider: string; wrappedBy: string; keyVersion: number; wrappedAt: string }
interface GroupKeys {
  workspaceGroupID: string;
  dataKey: GroupKeyWrap | null;
  kmsKey: { provider: string; keyID: string; status: string; statusDetail?: string; checkedAt?: string } | null;
}

/** GET /v1/keys/status as the CLI reads it (ids and relations only: the API never answers key material). */
export interface KeyStatus {
  provider: { provider: string; keyId: string; details: Record<string, string> };
  health: { ok: boolean; detail: string };
  keys: Array<{ keyID: string; kind: string; organizationID: string; workspaceGroupID: string | null; wrappedBy: string; provider: string | null; state: string; createdAt: string }>;
}

/** `key status [--group]`, `key rotate --group`. */
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
}
