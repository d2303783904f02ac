import type { Command } from "commander";
import { ApiClient } from "../client.js";
import { formatOf } from "../context.js";
import { CliError, usageError } from "../errors.js";
import { promptHidden, readStdinLines } from "../input.js";
import { emit, note, printRecord } from "../output.js";
import { targetOf, type TargetOpts } from "./login.js";

interface AcceptOpts extends TargetOpts { tokenStdin?: boolean; passwordStdin?: boolean; firstName?: string; lastName?: string }
interface Accepted { userID: string; orgID: string; email: string }

/**
 * The token and the new password. Stdin gives the token on line 1 and/or the password on the next line;
 * what does not come from stdin is prompted without echo on a terminal (the password twice).
 */
async function secretsOf(opts: AcceptOpts): Promise<{ token: string; password: string }> {
  const fromStdin = (opts.tokenStdin ? 1 : 0) + (opts.passwordStdin ? 1 : 0);
  const lines = fromStdin > 0 ? await readStdinLines(fromStdin) : [];
  let token: string;
  let password: string;
  if (opts.tokenStdin) token = (lines.shift() ?? "").trim();
  else if (process.stdin.isTTY) token = (await promptHidden("Invitation token: ")).trim();
  else throw usageError("stdin is not a terminal: cannot prompt for the invitation token", "pipe it in with --token-stdin (token on line 1, the password on line 2 with --password-stdin)");
  if (token === "") throw usageError("the invitation token is empty");
  if (opts.passwordStdin) password = lines.shift() ?? "";
  else if (process.stdin.isTTY && !opts.tokenStdin) {
    password = await promptHidden("New password: ");
    const again = await promptHidden("Repeat new password: ");
    if (again !== password) throw usageError("the passwords do not match");
  } else throw usageError("cannot prompt for the password: stdin is not a terminal", "add --password-stdin and give the password on the line after the token");
  if (password === "") throw usageError("the password is empty");
  return { token, password };
}

const HINTS: Record<string, string> = {
  ERR_PASSWORD_POLICY: "choose another password and run `parhelion invitation accept` again (the invitation is still valid)",
  ERR_INVITATION_INVALID: "the token is unknown, expired, revoked or already used: ask an Owner or Admin for a new invitation (`parhelion user invite`)",
};

/** `invitation accept`. */
export function registerInvitations(program: Command): void {
  const invitation = program.command("invitation").description("Invitations you received");

  invitation.command("accept").description("Accept an invitation: create your user with a password (POST /v1/auth/invitations/accept, no credential needed)")
    .option("--url <url>", "API URL (default: from DIR/runtime.json of a running `parhelion up`)")
    .option("--ca-file <file>", "PEM CA that issued the API's certificate (default: from runtime.json; env PARHELION_CA_FILE)")
    .option("--data-dir <dir>", "data directory of `parhelion up`, for runtime.json", process.env["PARHELION_DATA_DIR"] ?? "./.parhelion")
    .option("--token-stdin", "read the invitation token from the first line of stdin instead of prompting")
    .option("--password-stdin", "read the new password from stdin (the line after the token with --token-stdin) instead of prompting twice")
    .option("--first-name <name>", "your first name")
    .option("--last-name <name>", "your last name")
    .addHelpText("after", "\nThe token and the password are secrets: never taken from argv, never printed. Without the --*-stdin options they are\n"
      + "prompted without echo on a terminal. Then sign in with `parhelion login --email EMAIL`.")
    .action(async (opts: AcceptOpts, cmd: Command) => {
      const format = formatOf(cmd);
      const where = targetOf(opts);
      const { token, password } = await secretsOf(opts);
      const client = new ApiClient({ ...where, credential: null, from: "login" });
      let accepted: Accepted;
      try {
        accepted = (await client.call<Accepted>("POST", "/v1/auth/invitations/accept", {
          body: { token, password, ...(opts.firstName !== undefined ? { firstName: opts.firstName } : {}), ...(opts.lastName !== undefined ? { lastName: opts.lastName } : {}) },
        })).body;
      } catch (err) {
        const hint = err instanceof CliError ? HINTS[err.code] : undefined;
        if (err instanceof CliError && hint !== undefined) {
          throw new CliError(err.exitCode, err.code, err.message, { hint, ...(err.requestId ? { requestId: err.requestId } : {}), ...(err.status !== undefined ? { status: err.status } : {}) });
        }
        throw err;
      } finally {
        await client.close();
      }
      emit(format, accepted, () => printRecord({ ...accepted }, ["email", "userID", "orgID"]));
      const loginFlags = opts.url !== undefined
        ? ` --url ${opts.url}${opts.caFile !== undefined ? ` --ca-file ${opts.caFile}` : ""}`
        : cmd.getOptionValueSource("dataDir") === "cli" ? ` --data-dir ${opts.dataDir}` : "";
      note(`parhelion: invitation accepted for ${accepted.email} (user ${accepted.userID}); next: parhelion login${loginFlags} --email ${accepted.email}`);
    });
}
