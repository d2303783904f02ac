import { Option, type Command } from "commander";
import { ORG_ROLES } from "../../identity/types.js";
import { apiAction, parseDuration } from "../context.js";
import { usageError } from "../errors.js";
import { emit, note, printJson, printTable } from "../output.js";
import type { ApiKey } from "../types.js";

/** expiresAt from --expires-in / --expires-at (default 90 days). */
export function expiryOf(opts: { expiresIn?: string; expiresAt?: string }, now: Date = new Date()): string {
  if (opts.expiresIn !== undefined && opts.expiresAt !== undefined) throw usageError("give --expires-in or --expires-at, not both");
  if (opts.expiresAt !== undefined) {
    const t = Date.parse(opts.expiresAt);
    if (!/^\d{4}-\d{2}-\d{2}/.test(opts.expiresAt) || Number.isNaN(t)) throw usageError(`--expires-at: "${opts.expiresAt}" is not an RFC 3339 time`, "e.g. 2026-01-31T00:00:00Z");
    return new Date(t).toISOString();
  }
  return new Date(now.getTime() + parseDuration(opts.expiresIn ?? "90d", "--expires-in")).toISOString();
}

/** `api-key create|list|revoke`. */
export function registerApiKeys(program: Command): void {
  const apiKey = program.command("api-key").description("API keys");

  apiKey.command("create").description("Create an API key; the key is printed once, on stdout")
    .requiredOption("--name <name>", "what the key is for")
    .addOption(new Option("--role <role>", "role the key acts with (not stronger than yours)").choices(ORG_ROLES).makeOptionMandatory())
    .option("--expires-in <duration>", "lifetime: 30m, 12h, 90d, 4w (default 90d)")
    .option("--expires-at <time>", "expiry as an RFC 3339 time")
    .addHelpText("after", "\nTable output prints only the key on stdout (details go to stderr); JSON output is the API's answer.")
    .action(apiAction(async ({ client, format }, opts: { name: string; role: string; expiresIn?: string; expiresAt?: string }) => {
      const expiresAt = expiryOf(opts);
      const { body: k } = await client.call<ApiKey>("POST", "/v1/apiKeys", { body: { name: opts.name, role: opts.role, expiresAt } });
      if (format === "json") printJson(k);
      else process.stdout.write(`${k.key ?? ""}\n`);
      note(`parhelion: created API key ${k.apiKeyID} (${k.name}, role ${k.role}, prefix ${k.prefix}, expires ${k.expiresAt}).`);
      note("parhelion: warning: the key above will not be shown again; store it in a secret manager now.");
    }));

  apiKey.command("list").description("List API keys (never the keys themselves)")
    .action(apiAction(async ({ client, format }) => {
      const keys = await client.listAll<ApiKey>("/v1/apiKeys");
      emit(format, keys, () => printTable(keys, [
        { header: "API KEY ID", get: (k) => k.apiKeyID }, { header: "NAME", get: (k) => k.name }, { header: "PREFIX", get: (k) => k.prefix },
        { header: "ROLE", get: (k) => k.role }, { header: "STATE", get: (k) => k.state }, { header: "EXPIRES", get: (k) => k.expiresAt },
        { header: "LAST USED", get: (k) => k.lastUsedAt },
      ]));
    }));

  apiKey.command("revoke").description("Revoke an API key; it fails from the next request on")
    .argument("<apiKeyID>")
    .action(apiAction(async ({ client, format }, id: string) => {
      const { body } = await client.call<{ apiKeyID: string }>("DELETE", `/v1/apiKeys/${encodeURIComponent(id)}`);
      emit(format, body, () => process.stdout.write(`revoked API key ${body.apiKeyID}\n`));
    }));
}
