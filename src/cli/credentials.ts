import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { CliError, EXIT } from "./errors.js";

/** A console session opened by `parhelion login --email`: the cookie's value, its CSRF token, when it ends, and whose it is. */
export interface SessionCredential {
  /** Value of the `parhelion_session` cookie. */
  cookie: string;
  /** Sent as X-CSRF-Token on every mutating call. */
  csrfToken: string;
  /** RFC 3339; past it the CLI stops without calling the server. */
  expiresAt: string;
  email: string;
}

/**
 * What `parhelion login` saves: where the API is, which CA to trust, and exactly one credential: an API
 * key (`login --api-key-*`) or a session (`login --email`). A new login replaces the old file whole.
 */
export type Credentials = {
  url: string;
  /** PEM file of the CA that issued the API's certificate; null trusts the system's CAs. */
  caFile: string | null;
} & ({ apiKey: string; session?: undefined } | { session: SessionCredential; apiKey?: undefined });

function isSession(v: unknown): v is SessionCredential {
  const s = v as Partial<SessionCredential> | null;
  return s !== null && typeof s === "object" && typeof s.cookie === "string" && s.cookie !== "" && typeof s.csrfToken === "string" && s.csrfToken !== ""
    && typeof s.expiresAt === "string" && !Number.isNaN(Date.parse(s.expiresAt)) && typeof s.email === "string";
}

/** `$PARHELION_HOME/credentials.json`, else `${XDG_CONFIG_HOME:-~/.config}/parhelion/credentials.json`. */
export function credentialsPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env["PARHELION_HOME"]) return join(env["PARHELION_HOME"], "credentials.json");
  const config = env["XDG_CONFIG_HOME"] || join(homedir(), ".config");
  return join(config, "parhelion", "credentials.json");
}

function invalid(path: string, why: string): CliError {
  return new CliError(EXIT.UNAUTHENTICATED, "ERR_CLI_CREDENTIALS", `cannot use ${path}: ${why}`, { hint: "run `parhelion login` again" });
}

/** The saved credentials, or null when nobody signed in. A malformed file is an error, never ignored. */
export function readCredentials(env: NodeJS.ProcessEnv = process.env): Credentials | null {
  const path = credentialsPath(env);
  if (!existsSync(path)) return null;
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw invalid(path, (err as Error).message);
  }
  const c = doc as { url?: unknown; caFile?: unknown; apiKey?: unknown; session?: unknown } | null;
  if (c === null || typeof c !== "object" || typeof c.url !== "string" || (c.caFile !== null && typeof c.caFile !== "string")) {
    throw invalid(path, "it is not a parhelion credentials file");
  }
  const hasKey = typeof c.apiKey === "string";
  const hasSession = c.session !== undefined;
  if (hasKey === hasSession || (hasSession && !isSession(c.session))) throw invalid(path, "it is not a parhelion credentials file");
  if ((statSync(path).mode & 0o077) !== 0) {
    process.stderr.write(`parhelion: warning: ${path} is readable by other users; run \`chmod 600 ${path}\`\n`);
  }
  const base = { url: c.url, caFile: (c.caFile as string | null | undefined) ?? null };
  if (hasKey) return { ...base, apiKey: c.apiKey as string };
  const sess = c.session as SessionCredential;
  return { ...base, session: { cookie: sess.cookie, csrfToken: sess.csrfToken, expiresAt: sess.expiresAt, email: sess.email } };
}

/** Saves the credentials atomically: directory 0700, file 0600 (whatever the umask). Returns the path. */
export function saveCredentials(creds: Credentials, env: NodeJS.ProcessEnv = process.env): string {
  const path = credentialsPath(env);
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, JSON.stringify(creds, null, 2) + "\n", { mode: 0o600, flag: "wx" });
    chmodSync(tmp, 0o600);
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  return path;
}

/** Deletes the saved credentials; returns the path when a file was there. */
export function deleteCredentials(env: NodeJS.ProcessEnv = process.env): string | null {
  const path = credentialsPath(env);
  if (!existsSync(path)) return null;
  rmSync(path);
  return path;
}
