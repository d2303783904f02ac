import type { Command } from "commander";
import { apiAction } from "../context.js";
import { emit, printRecord, printTable } from "../output.js";

/** GET /v1/keys/status as the CLI reads it (ids and relations only: the API never answers key material). */
export interface KeyStatus {
  provider: { provider: string; keyId: string; details: Record<string, string> };
  health: { ok: boolean; detail: string };
  keys: Array<{ keyID: string; kind: string; organizationID: string; workspaceGroupID: string | null; wrappedBy: string; provider: string | null; state: string; createdAt: string }>;
}

/** `key status`. */
export function registerKeys(program: Command): void {
  const key = program.command("key").description("The key hierarchy: root key provider, organization and data keys");
  key.command("status").description("Show the root key provider, its health and which key wraps which (GET /v1/keys/status); never key material")
    .action(apiAction(async ({ client, format }) => {
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
}
