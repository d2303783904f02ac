import { CommanderError } from "commander";
import { CliError, EXIT, formatError, type ExitCode } from "./errors.js";
import { buildProgram } from "./program.js";

/** Commander's own outcomes: help and version exit 0; every parse failure is a usage error. */
function commanderExit(err: CommanderError): ExitCode {
  return err.code === "commander.helpDisplayed" || err.code === "commander.version" || err.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
}

/** Runs one command line; answers the exit code (see EXIT_CODES). Errors are written to stderr here only. */
export async function run(argv: readonly string[]): Promise<ExitCode> {
  try {
    const program = await buildProgram(argv);
    await program.parseAsync(argv);
    return EXIT.OK;
  } catch (err) {
    if (err instanceof CommanderError) return commanderExit(err); // commander already printed the message
    if (err instanceof CliError) {
      process.stderr.write(formatError(err));
      return err.exitCode;
    }
    process.stderr.write(`parhelion: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return EXIT.INTERNAL;
  }
}
