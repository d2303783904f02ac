import { readFileSync } from "node:fs";
import { Command, Option } from "commander";
import { exitCodeHelp } from "./errors.js";
import { registerAccess } from "./commands/access.js";
import { registerApiKeys } from "./commands/apiKeys.js";
import { registerAudit } from "./commands/audit.js";
import { registerAuditSinks } from "./commands/auditSinks.js";
import { registerInvitations } from "./commands/invitations.js";
import { registerKeys } from "./commands/keys.js";
import { registerLogin } from "./commands/login.js";
import { registerMfa } from "./commands/mfa.js";
import { registerOrg } from "./commands/org.js";
import { registerTeams } from "./commands/teams.js";
import { registerUp } from "./commands/up.js";
import { registerUsers } from "./commands/users.js";
import { registerSso } from "./commands/sso.js";
import { registerWorkspaces } from "./commands/workspaces.js";

function version(): string {
  try {
    return (JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version: string }).version;
  } catch {
    return "unknown";
  }
}

/**
 * The whole command tree. Settings made here (exitOverride, output) are inherited by every subcommand
 * created with `.command()`, so commander never exits the process itself: main.ts maps its errors.
 * `argv` only decides whether the `up` command loads its configuration options.
 */
export async function buildProgram(argv: readonly string[]): Promise<Command> {
  const program = new Command("parhelion")
    .description("parhelion: self-hostable, secure-by-default managed PostgreSQL")
    .version(version(), "-V, --version")
    .addOption(new Option("-o, --output <format>", "json or table (default: table on a terminal, json otherwise)").choices(["json", "table"]))
    .exitOverride()
    .showSuggestionAfterError(true)
    .showHelpAfterError("(add --help for usage)")
    .addHelpText("after", `\n${exitCodeHelp()}\n\nEnvironment: PARHELION_API_URL, PARHELION_API_KEY and PARHELION_CA_FILE override the saved credentials;\nPARHELION_HOME moves credentials.json. Docs: docs/cli.md`);
  await registerUp(program, argv.slice(2).includes("up"));
  registerLogin(program);
  registerMfa(program);
  registerInvitations(program);
  registerOrg(program);
  registerUsers(program);
  registerTeams(program);
  registerAccess(program);
  registerApiKeys(program);
  registerAudit(program);
  registerAuditSinks(program.commands.find((c) => c.name() === "audit")!);
  registerWorkspaces(program);
  registerSso(program);
  registerKeys(program);
  return program;
}
