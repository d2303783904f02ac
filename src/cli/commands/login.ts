import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { Option, type Command } from "commander";
import { ApiClient } from "../client.js";
import { formatOf } from "../context.js";
import { credentialsPath, deleteCredentials, saveCredentials } from "../credentials.js";
import { usageError } from "../errors.js";
import { promptHidden, readSecretFile, readStdinLines } from "../input.js";
import { emit, note, printRecord } from "../output.js";
import type { WhoAmI } from "../types.js";

interface LoginOpts { url?: string; caFile?: string; dataDir: string; apiKeyFile?: string; apiKeyStdin?: boolean }

async function apiKeyOf(opts: LoginOpts): Promise<string> {
  if (opts.apiKeyFile !== undefined) return readSecretFile(opts.apiKeyFile, "API key");
  if (opts.apiKeyStdin) {
    const key = (await readStdinLines(1))[0]?.trim() ?? "";
    if (!key) throw usageError("no API key on stdin");
    return key;
  }
  const env = process.env["PARHELION_API_KEY"];
  if (env) return env.trim();
  if (process.stdin.isTTY) {
    const key = (await promptHidden("API key: ")).trim();
    if (key) return key;
  }
  throw usageError("no API key given", "use --api-key-file FILE, --api-key-stdin or PARHELION_API_KEY (a first start writes DIR/bootstrap/owner-api-key)");
}

/**
 * DIR/runtime.json as `startPlatform` writes it ({apiUrl, caFile, pid, version}). Same format as
 * platform.ts's readRuntime, read here without importing the platform (fastify, pg: ~1 s at start),
 * and checked rather than cast.
 */
export function readRuntimeFile(dataDir: string): { apiUrl: string; caFile: string | null } | null {
  const path = join(dataDir, "runtime.json");
  if (!existsSync(path)) return null;
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw usageError(`cannot read ${path}: ${(err as Error).message}`);
  }
  const rt = doc as { apiUrl?: unknown; caFile?: unknown } | null;
  if (rt === null || typeof rt !== "object" || typeof rt.apiUrl !== "string" || (rt.caFile !== null && typeof rt.caFile !== "string")) {
    throw usageError(`${path} is not a parhelion runtime file`);
  }
  return { apiUrl: rt.apiUrl, caFile: rt.caFile };
}

/** Where the API is: --url (+ --ca-file), else DIR/runtime.json written by a running `parhelion up`. */
function targetOf(opts: LoginOpts): { url: string; caFile: string | null } {
  const caFlag = opts.caFile ?? process.env["PARHELION_CA_FILE"];
  if (opts.url !== undefined) return { url: opts.url, caFile: caFlag ? resolve(caFlag) : null };
  const rt = readRuntimeFile(resolve(opts.dataDir));
  if (rt === null) {
    throw usageError(`no --url, and no runtime.json in ${resolve(opts.dataDir)}`, "is `parhelion up` running? pass --url and --ca-file, or --data-dir of the running server");
  }
  return { url: rt.apiUrl, caFile: caFlag ? resolve(caFlag) : rt.caFile === null ? null : resolve(opts.dataDir, rt.caFile) };
}

/** `login`, `logout`. */
export function registerLogin(program: Command): void {
  program.command("login").description("Check an API key against the API and save it for later commands")
    .option("--url <url>", "API URL (default: from DIR/runtime.json of a running `parhelion up`)")
    .option("--ca-file <file>", "PEM CA that issued the API's certificate (default: from runtime.json; env PARHELION_CA_FILE)")
    .option("--data-dir <dir>", "data directory of `parhelion up`, for runtime.json", process.env["PARHELION_DATA_DIR"] ?? "./.parhelion")
    .addOption(new Option("--api-key-file <file>", "read the API key from this file").conflicts("apiKeyStdin"))
    .option("--api-key-stdin", "read the API key from the first line of stdin")
    .addHelpText("after", "\nThe key is never taken from argv. Without a key option: PARHELION_API_KEY, else a prompt on a terminal.\n"
      + "Credentials go to $PARHELION_HOME/credentials.json or ${XDG_CONFIG_HOME:-~/.config}/parhelion/credentials.json (mode 0600).")
    .action(async (opts: LoginOpts, cmd: Command) => {
      const format = formatOf(cmd);
      const where = targetOf(opts);
      const apiKey = await apiKeyOf(opts);
      const client = new ApiClient({ ...where, apiKey, keyFrom: "login" });
      let who: WhoAmI;
      try {
        who = await client.get<WhoAmI>("/v1/auth/whoami");
      } finally {
        await client.close();
      }
      const path = saveCredentials({ url: client.target.url, caFile: where.caFile, apiKey });
      emit(format, who, () => printRecord({ ...who, url: where.url, caFile: where.caFile }, ["kind", "email", "apiKeyID", "orgID", "roles", "url", "caFile"]));
      note(`parhelion: signed in to ${where.url}; credentials saved to ${path}`);
    });

  program.command("logout").description("Delete the saved credentials (the key itself stays valid: `parhelion api-key revoke` ends it)")
    .action(() => {
      const path = deleteCredentials();
      note(path ? `parhelion: signed out; deleted ${path}` : `parhelion: not signed in (no ${credentialsPath()})`);
    });
}
