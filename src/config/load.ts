import { readFileSync, existsSync } from "node:fs";
import { resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { ParhelionError } from "../lib/errors.js";
import { ConfigSchema, SECRET_KEYS, NON_CONFIG_ENV, envName, type Config } from "./schema.js";

export interface ConfigSources {
  /** Values from command-line flags, already keyed by schema key. */
  flags?: Record<string, unknown>;
  env?: NodeJS.ProcessEnv;
  /** Explicit config file; otherwise PARHELION_CONFIG, otherwise ./parhelion.yaml when present. */
  configFile?: string;
  cwd?: string;
}

const KEYS = Object.keys(ConfigSchema.def.shape ?? {});

function schemaKeys(): string[] {
  // ConfigSchema is a ZodObject wrapped by superRefine (still a ZodObject in zod 4).
  return Object.keys((ConfigSchema as unknown as z.ZodObject).shape);
}

/** Parses the configuration once from flags, environment and file; throws ERR_CONFIG naming the bad key. */
export function loadConfig(src: ConfigSources = {}): Config {
  const env = src.env ?? process.env;
  const cwd = src.cwd ?? process.cwd();
  const keys = KEYS.length > 0 ? KEYS : schemaKeys();
  const merged: Record<string, unknown> = {};

  const file = src.configFile ?? env["PARHELION_CONFIG"] ?? (existsSync(resolve(cwd, "parhelion.yaml")) ? resolve(cwd, "parhelion.yaml") : undefined);
  if (file !== undefined) {
    let doc: unknown;
    try {
      doc = parseYaml(readFileSync(resolve(cwd, file), "utf8"));
    } catch (err) {
      throw new ParhelionError("ERR_CONFIG", `cannot read config file ${file}: ${(err as Error).message}`);
    }
    if (doc !== null && doc !== undefined) {
      if (typeof doc !== "object" || Array.isArray(doc)) throw new ParhelionError("ERR_CONFIG", `config file ${file} must be a mapping of keys to values`);
      for (const [k, v] of Object.entries(doc)) {
        if (!keys.includes(k)) throw new ParhelionError("ERR_CONFIG", `unknown key "${k}" in ${file}`);
        if (SECRET_KEYS.has(k)) throw new ParhelionError("ERR_CONFIG", `"${k}" is a secret: set ${envName(k)} or ${k}File instead of putting it in ${file}`);
        merged[k] = v;
      }
    }
  }

  const byEnv = new Map(keys.map((k) => [envName(k), k]));
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith("PARHELION_") || value === undefined || NON_CONFIG_ENV.has(name)) continue;
    const key = byEnv.get(name);
    if (key === undefined) throw new ParhelionError("ERR_CONFIG", `unknown environment variable ${name}`);
    merged[key] = value;
  }

  for (const [k, v] of Object.entries(src.flags ?? {})) {
    if (v === undefined) continue;
    if (!keys.includes(k)) throw new ParhelionError("ERR_CONFIG", `unknown option ${k}`);
    if (SECRET_KEYS.has(k)) throw new ParhelionError("ERR_CONFIG", `"${k}" is a secret: set ${envName(k)} instead of passing it as a flag`);
    merged[k] = v;
  }

  const parsed = ConfigSchema.safeParse(merged);
  if (!parsed.success) {
    const msg = parsed.error.issues.map((i) => `${i.path.join(".") || "(config)"}: ${i.message}`).join("; ");
    throw new ParhelionError("ERR_CONFIG", `invalid configuration: ${msg}`);
  }
  const cfg = { ...parsed.data };
  if (cfg.databaseUrlFile !== undefined) {
    try {
      cfg.databaseUrl = readFileSync(resolve(cwd, cfg.databaseUrlFile), "utf8").trim();
    } catch (err) {
      throw new ParhelionError("ERR_CONFIG", `databaseUrlFile: cannot read ${cfg.databaseUrlFile}: ${(err as NodeJS.ErrnoException).code ?? "error"}`);
    }
    if (cfg.databaseUrl.length === 0) throw new ParhelionError("ERR_CONFIG", `databaseUrlFile: ${cfg.databaseUrlFile} is empty`);
  }
  if (cfg.kmsHsmPinFile !== undefined) {
    try {
      cfg.kmsHsmPin = readFileSync(resolve(cwd, cfg.kmsHsmPinFile), "utf8").replace(/\r?\n$/, "");
    } catch (err) {
      throw new ParhelionError("ERR_CONFIG", `kmsHsmPinFile: cannot read ${cfg.kmsHsmPinFile}: ${(err as NodeJS.ErrnoException).code ?? "error"}`);
    }
    if (cfg.kmsHsmPin.length === 0) throw new ParhelionError("ERR_CONFIG", `kmsHsmPinFile: ${cfg.kmsHsmPinFile} is empty`);
  }
  cfg.dataDir = resolve(cwd, cfg.dataDir);
  return Object.freeze(cfg);
}

/** Every configuration key with its default and description, for --help and docs. */
export function describeConfig(): Array<{ key: string; env: string; def: unknown; description: string }> {
  const shape = (ConfigSchema as unknown as z.ZodObject).shape as Record<string, z.ZodType>;
  return Object.entries(shape).map(([key, t]) => {
    const def = t instanceof z.ZodDefault ? (t.def.defaultValue as unknown) : undefined;
    return { key, env: envName(key), def, description: t.description ?? "" };
  });
}
