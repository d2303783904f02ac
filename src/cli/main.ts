#!/usr/bin/env node
/** Entry point of the `parhelion` CLI: runs the command tree and turns every failure into an exit code. */
import { CommanderError } from "commander";
import { CliError, EXIT, formatError, type ExitCode } from "./errors.js";
import { buildProgram } from "./program.js";

/** Commander's own outcomes: help and version exit 0; every parse failure is a usage error. */
function commanderExit(err: CommanderError): ExitCode {
  return err.code === "commander.helpDisplayed" || err.code === "commander.version" || err.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
}

export async function main(argv: readonly string[]): Promise<ExitCode> {
  try {
    await buildProgram().parseAsync(argv);
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

process.exitCode = await main(process.argv);
