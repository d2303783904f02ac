import { Option, type Command } from "commander";
import type { Config } from "../../config/schema.js";
import { isParhelionError } from "../../lib/errors.js";
import { CliError, EXIT, formatError, type ExitCode } from "../errors.js";

// The configuration schema (zod, yaml) and the platform load only when `up` runs or shows its help:
// every other command starts faster without them.
type ConfigModules = [typeof import("../../config/load.js"), typeof import("../../config/schema.js")];
const loadConfigModules = (): Promise<ConfigModules> => Promise.all([import("../../config/load.js"), import("../../config/schema.js")]);

/** Grace period for a clean stop after SIGINT/SIGTERM. */
export const STOP_TIMEOUT_MS = 10_000;

function showDefault(v: unknown): string {
  return typeof v === "string" ? v : JSON.stringify(v);
}

function die(err: CliError): never {
  process.stderr.write(formatError(err));
  process.exit(err.exitCode);
}

/** One option per configuration key (never for a secret), help text = description, default, env var. */
export async function configOptions(): Promise<Array<{ key: string; option: Option }>> {
  const [{ describeConfig }, { SECRET_KEYS, flagName }] = await loadConfigModules();
  return describeConfig()
    .filter((c) => !SECRET_KEYS.has(c.key))
    .map((c) => {
      const extra = [c.def === undefined ? null : `default: ${showDefault(c.def)}`, `env: ${c.env}`].filter(Boolean).join("; ");
      const option = new Option(`${flagName(c.key)} <value>`, `${c.description} (${extra})`);
      return { key: c.key, option };
    });
}

/**
 * `parhelion up`: parse the configuration once, start the control plane, stop cleanly on a signal.
 * With `full` false only a stub is registered (for the command list); main.ts passes true when argv names `up`.
 */
export async function registerUp(program: Command, full: boolean): Promise<void> {
  const up = program.command("up").description("Start the parhelion control plane in the foreground");
  if (!full) return;
  const [{ loadConfig }, { SECRET_KEYS, envName, flagName }] = await loadConfigModules();
  const { createLogger } = await import("../../log/logger.js");
  const options = await configOptions();
  for (const { option } of options) up.addOption(option);
  up.option("--config <file>", "YAML configuration file (env: PARHELION_CONFIG; default: ./parhelion.yaml when present)");
  const secrets = [...SECRET_KEYS].map((k) => `  ${k}: a secret, never a flag: set ${envName(k)} or ${flagName(k)}-file FILE`).join("\n");
  up.addHelpText("after", `\nPrecedence: flags, then PARHELION_* environment, then the config file, then defaults.\n${secrets}\n`
    + "Stops cleanly on SIGINT/SIGTERM (a second signal exits at once).");

  up.action(async (opts: Record<string, unknown>) => {
    const flags: Record<string, unknown> = {};
    for (const { key, option } of options) flags[key] = opts[option.attributeName()];
    let config: Config;
    try {
      config = loadConfig({ flags, env: process.env, ...(typeof opts["config"] === "string" ? { configFile: opts["config"] } : {}) });
    } catch (err) {
      // A file named by the configuration that cannot be read is a configuration error too.
      const message = isParhelionError(err) ? err.message : `invalid configuration: ${(err as Error).message}`;
      die(new CliError(EXIT.USAGE, "ERR_CONFIG", message, { hint: "see `parhelion up --help` for every key, its flag and its environment variable" }));
    }
    const logger = createLogger({ level: config.logLevel, pretty: config.logFormat === "pretty" || (config.logFormat === "auto" && process.stdout.isTTY === true) });

    let stop: (() => Promise<void>) | null = null;
    let signalled = false;
    const finish = (code: ExitCode) => {
      logger.flush?.();
      process.exit(code);
    };
    const onSignal = (signal: NodeJS.Signals) => {
      if (signalled) {
        process.stderr.write(`parhelion: ${signal} again: exiting now\n`);
        process.exit(EXIT.INTERNAL);
      }
      signalled = true;
      logger.info({ signal }, "stopping");
      setTimeout(() => {
        process.stderr.write(`parhelion: did not stop within ${STOP_TIMEOUT_MS / 1000} s: exiting\n`);
        process.exit(EXIT.INTERNAL);
      }, STOP_TIMEOUT_MS).unref();
      if (stop !== null) stop().then(() => finish(EXIT.OK), (err: unknown) => {
        process.stderr.write(`parhelion: error while stopping: ${(err as Error).message}\n`);
        finish(EXIT.INTERNAL);
      });
      // Otherwise startup is still running: it sees `signalled` when it ends.
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);

    const { startPlatform } = await import("../../platform.js");
    let platform: Awaited<ReturnType<typeof startPlatform>>;
    try {
      platform = await startPlatform({ config, logger });
    } catch (err) {
      logger.flush?.();
      const code = isParhelionError(err) ? err.code : "ERR_CLI_STARTUP";
      die(new CliError(EXIT.INTERNAL, code, `parhelion could not start: ${(err as Error).message}`, {
        hint: code === "ERR_CONFIG" ? "fix the configuration (`parhelion up --help`)" : "the log lines above say which component failed",
      }));
    }
    stop = () => platform.stop();
    if (platform.ownerKeyFile !== null) process.stdout.write(`parhelion: first start: the owner API key is in ${platform.ownerKeyFile} (mode 0600; shown nowhere else)\n`);
    process.stdout.write(`parhelion is up: API ${platform.apiUrl}  CA file ${platform.caFile ?? "(operator certificate; system trust)"}\n`);
    if (signalled) {
      signalled = false;
      onSignal("SIGTERM");
    }
  });
}
