import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { Option, type Command } from "commander";
import { ApiClient, sessionCookieOf, sessionExpired } from "../client.js";
import { formatOf } from "../context.js";
import { credentialsPath, deleteCredentials, readCredentials, saveCredentials, type Credentials, type SessionCredential } from "../credentials.js";
import { CliError, EXIT, usageError } from "../errors.js";
import { promptHidden, readSecretFile, readStdinLines } from "../input.js";
import { emit, note, printRecord } from "../output.js";
import type { WhoAmI } from "../types.js";
import { verifySecondFactor } from "./mfa.js";
import { ssoLogin } from "./sso.js";

/** Where the API is: the options `login` and `invitation accept` share. */
export interface TargetOpts { url?: string; caFile?: string; dataDir: string }
interface LoginOpts extends TargetOpts { apiKeyFile?: string; apiKeyStdin?: boolean; email?: string; passwordStdin?: boolean; totp?: string; totpStdin?: boolean }

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
 * DIR/runtime.json as `startPlatform` writes it ({apiUrl, caFile, pid, version}), read without importing
 * the platform (fastify, pg: ~1 s at start), and checked rather than cast.
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
export function targetOf(opts: TargetOpts): { url: string; caFile: string | null } {
  const caFlag = opts.caFile ?? process.env["PARHELION_CA_FILE"];
  if (opts.url !== undefined) return { url: opts.url, caFile: caFlag ? resolve(caFlag) : null };
  const rt = readRuntimeFile(resolve(opts.dataDir));
  if (rt === null) {
    throw usageError(`no --url, and no runtime.json in ${resolve(opts.dataDir)}`, "is `parhelion up` running? pass --url and --ca-file, or --data-dir of the running server");
  }
  return { url: rt.apiUrl, caFile: caFlag ? resolve(caFlag) : rt.caFile === null ? null : resolve(opts.dataDir, rt.caFile) };
}

/** The password, and the second-factor code when it comes on stdin too (--totp-stdin: the line after the password). */
async function loginPasswordOf(opts: LoginOpts): Promise<{ password: string; code: string | null }> {
  let password: string;
  let code: string | null = opts.totp ?? null;
  if (opts.passwordStdin) {
    const lines = await readStdinLines(opts.totpStdin ? 2 : 1);
    password = lines[0] ?? "";
    if (opts.totpStdin) code = lines[1] ?? "";
  } else if (process.stdin.isTTY) password = await promptHidden("Password: ");
  else throw usageError("stdin is not a terminal: cannot prompt for the password", "use --password-stdin to pipe it in");
  if (password === "") throw usageError("the password is empty");
  if (opts.totpStdin && !opts.passwordStdin) code = (await readStdinLines(1))[0] ?? "";
  return { password, code };
}

interface LoginAnswer { sessionID: string; csrfToken: string; expiresAt: string; userID: string; orgID: string; mfaRequired?: boolean; mfaEnrollmentRequired?: boolean }

/** POST /v1/auth/login, then GET /v1/auth/whoami with the new session. Answers the session and who it is. */
async function openSession(where: { url: string; caFile: string | null }, email: string, password: string, code: string | null): Promise<{ session: SessionCredential; who: WhoAmI; mfaPending: boolean; mfaEnrollmentRequired: boolean }> {
  const anon = new ApiClient({ ...where, credential: null, from: "login" });
  let res: Awaited<ReturnType<ApiClient["call"]>>;
  try {
    res = await anon.call<LoginAnswer>("POST", "/v1/auth/login", { body: { email, password } });
  } finally {
    await anon.close();
  }
  const body = res.body as Partial<LoginAnswer> | undefined;
  const cookie = sessionCookieOf(res.headers);
  if (cookie === null || typeof body?.csrfToken !== "string" || body.csrfToken === "" || typeof body.expiresAt !== "string" || Number.isNaN(Date.parse(body.expiresAt))) {
    throw new CliError(EXIT.INTERNAL, "ERR_CLI_PROTOCOL", "the login answer lacks the session cookie, the CSRF token or the expiry");
  }
  const session: SessionCredential = { cookie, csrfToken: body.csrfToken, expiresAt: body.expiresAt, email };
  const client = new ApiClient({ ...where, credential: { kind: "session", session }, from: "login" });
  try {
    // A user with a second factor: the session can do nothing else until it is verified.
    let mfaPending = body.mfaRequired === true;
    if (mfaPending) {
      let c = code;
      if (c === null && process.stdin.isTTY) c = await promptHidden("TOTP code (or a recovery code): ");
      if (c !== null) {
        try {
          await verifySecondFactor(client, c);
        } catch (err) {
          // A refused code leaves no half-signed-in session behind.
          await client.call("POST", "/v1/auth/logout").catch(() => undefined);
          throw err;
        }
        mfaPending = false;
      }
    }
    const who = await client.get<WhoAmI>("/v1/auth/whoami");
    return { session: { ...session, email: who.email ?? email }, who, mfaPending, mfaEnrollmentRequired: body.mfaEnrollmentRequired === true };
  } finally {
    await client.close();
  }
}

/** Ends a saved session on the server. Never fails: the caller deletes the file whatever happens. Answers a warning, if any. */
async function endSession(creds: Credentials & { session: SessionCredential }): Promise<string | null> {
  if (sessionExpired(creds.session)) return null;
  let client: ApiClient | undefined;
  try {
    client = new ApiClient({ url: creds.url, caFile: creds.caFile, credential: { kind: "session", session: creds.session }, from: "credentials" });
    await client.call("POST", "/v1/auth/logout");
    return null;
  } catch (err) {
    if (err instanceof CliError && err.exitCode === EXIT.UNAUTHENTICATED) return null; // already ended on the server
    const why = err instanceof CliError ? err.message : String(err);
    return `parhelion: warning: the server did not confirm the end of the session (${why}); it stays valid until ${creds.session.expiresAt}`;
  } finally {
    await client?.close();
  }
}

/** `login`, `logout`. */
export function registerLogin(program: Command): void {
  program.command("login").description("Sign in with an API key, or with email and password (a console session), and save it for later commands")
    .option("--url <url>", "API URL (default: from DIR/runtime.json of a running `parhelion up`)")
    .option("--ca-file <file>", "PEM CA that issued the API's certificate (default: from runtime.json; env PARHELION_CA_FILE)")
    .option("--data-dir <dir>", "data directory of `parhelion up`, for runtime.json", process.env["PARHELION_DATA_DIR"] ?? "./.parhelion")
    .addOption(new Option("--api-key-file <file>", "read the API key from this file").conflicts(["apiKeyStdin", "email"]))
    .addOption(new Option("--api-key-stdin", "read the API key from the first line of stdin").conflicts("email"))
    .option("--email <email>", "sign in as this user with a password (opens a session instead of saving a key)")
    .option("--password-stdin", "with --email: read the password from the first line of stdin instead of prompting")
    .option("--totp <code>", "with --email: the 6-digit code of your authenticator app (or a recovery code), if you have a second factor")
    .option("--totp-stdin", "with --email: read that code from stdin (the line after the password with --password-stdin)")
    .addOption(new Option("--sso", "sign in with the organization's identity provider: prints a URL to open in a browser and waits on a loopback listener").conflicts(["email", "apiKeyFile", "apiKeyStdin"]))
    .option("--org <organizationID>", "with --sso: the organization (needed when more than one has single sign-on)")
    .option("--sso-timeout <seconds>", "with --sso: how long to wait for the browser (default 300)")
    .addHelpText("after", "\nThe key or password is never taken from argv. Without a key option: PARHELION_API_KEY, else a prompt on a terminal.\n"
      + "With --email: the password is prompted without echo (or --password-stdin); the session cookie and its CSRF token are saved.\n"
      + "Credentials go to $PARHELION_HOME/credentials.json or ${XDG_CONFIG_HOME:-~/.config}/parhelion/credentials.json (mode 0600);\n"
      + "a new login replaces the saved one, key or session.")
    .action(async (opts: LoginOpts & { sso?: boolean; org?: string; ssoTimeout?: string }, cmd: Command) => {
      if (opts.sso) return ssoLogin(opts, cmd);
      if (opts.org !== undefined || opts.ssoTimeout !== undefined) throw usageError("--org and --sso-timeout need --sso");
      const format = formatOf(cmd);
      if (opts.passwordStdin && opts.email === undefined) throw usageError("--password-stdin needs --email", "an API key comes from --api-key-file or --api-key-stdin");
      if ((opts.totp !== undefined || opts.totpStdin) && opts.email === undefined) throw usageError("--totp and --totp-stdin need --email", "API keys have no second factor");
      const where = targetOf(opts);
      let who: WhoAmI;
      let creds: Credentials;
      if (opts.email !== undefined) {
        if (!opts.email.includes("@")) throw usageError(`--email: "${opts.email}" is not an email address`);
        const { password, code } = await loginPasswordOf(opts);
        const opened = await openSession(where, opts.email, password, code);
        who = opened.who;
        creds = { url: where.url, caFile: where.caFile, session: opened.session };
        if (opened.mfaPending) note("parhelion: this account has a second factor: the session can only verify it; run `parhelion mfa verify` (or sign in again with --totp CODE).");
        if (opened.mfaEnrollmentRequired) note("parhelion: your organization requires a second factor: run `parhelion mfa enroll-totp` before anything else.");
      } else {
        const apiKey = await apiKeyOf(opts);
        const client = new ApiClient({ ...where, credential: { kind: "apiKey", apiKey }, from: "login" });
        try {
          who = await client.get<WhoAmI>("/v1/auth/whoami");
        } finally {
          await client.close();
        }
        creds = { url: client.target.url, caFile: where.caFile, apiKey };
      }
      const path = saveCredentials(creds);
      const shown = creds.session === undefined ? ["kind", "email", "apiKeyID", "orgID", "roles", "url", "caFile"] : ["kind", "email", "userID", "orgID", "roles", "expiresAt", "url", "caFile"];
      emit(format, who, () => printRecord({ ...who, url: where.url, caFile: where.caFile, expiresAt: creds.session?.expiresAt }, shown));
      note(`parhelion: signed in to ${where.url}${creds.session ? ` as ${creds.session.email} until ${creds.session.expiresAt}` : ""}; credentials saved to ${path}`);
    });

  program.command("logout").description("Sign out: end the saved session on the server and delete the saved credentials (an API key stays valid: `parhelion api-key revoke` ends it)")
    .action(async () => {
      let saved: Credentials | null = null;
      try {
        saved = readCredentials();
      } catch {
        saved = null; // a damaged file is deleted all the same
      }
      if (saved?.session !== undefined) {
        const warning = await endSession(saved as Credentials & { session: SessionCredential });
        if (warning) note(warning);
      }
      const path = deleteCredentials();
      note(path ? `parhelion: signed out; deleted ${path}` : `parhelion: not signed in (no ${credentialsPath()})`);
    });
}
