import { readFileSync } from "node:fs";
import { Agent, request, type Dispatcher } from "undici";
import { readCredentials, type SessionCredential } from "./credentials.js";
import { CliError, EXIT, exitCodeForStatus } from "./errors.js";

/** Name of the API's console session cookie (src/identity/sessions.ts; not imported: the CLI never loads the server). */
export const SESSION_COOKIE = "parhelion_session";

/** What a request carries: an API key (Authorization: Bearer), a session (cookie + X-CSRF-Token), or nothing (public routes). */
export type Credential = { kind: "apiKey"; apiKey: string } | { kind: "session"; session: SessionCredential };

/** Where requests go and with which credential; `from` says where the credential came from, for error hints. */
export interface Target {
  url: string;
  caFile: string | null;
  credential: Credential | null;
  from: "env" | "credentials" | "login";
}

function notSignedIn(): CliError {
  return new CliError(EXIT.UNAUTHENTICATED, "ERR_CLI_NOT_SIGNED_IN", "not signed in", { hint: "run `parhelion login` (or set PARHELION_API_URL and PARHELION_API_KEY)" });
}

function sameOrigin(a: string, b: string): boolean {
  try {
    return new URL(a).origin === new URL(b).origin;
  } catch {
    return false;
  }
}

/** Whether a saved session is past its expiry (or within a few seconds of it). */
export function sessionExpired(session: SessionCredential, now: number = Date.now()): boolean {
  return Date.parse(session.expiresAt) - 5_000 <= now;
}

/**
 * The saved credentials with PARHELION_API_URL, PARHELION_API_KEY and PARHELION_CA_FILE laid over them.
 * PARHELION_API_KEY wins over a saved session. A saved session is only sent to the server it came from,
 * and an expired one stops here (exit 3) without calling the server. Throws exit 3 when there is no
 * URL and credential.
 */
export function resolveTarget(env: NodeJS.ProcessEnv = process.env, now: number = Date.now()): Target {
  const saved = readCredentials(env);
  const envUrl = env["PARHELION_API_URL"];
  const envKey = env["PARHELION_API_KEY"];
  const caFile = env["PARHELION_CA_FILE"] || (saved ? saved.caFile : null);
  if (!envKey && saved?.session !== undefined) {
    const s = saved.session;
    if (envUrl && !sameOrigin(envUrl, saved.url)) {
      throw new CliError(EXIT.USAGE, "ERR_CLI_USAGE", `PARHELION_API_URL (${envUrl}) is not the server of the saved session (${saved.url})`, {
        hint: "a session is only sent to the server that opened it: unset PARHELION_API_URL, or sign in to that server with `parhelion login --url URL --email EMAIL`",
      });
    }
    if (sessionExpired(s, now)) {
      throw new CliError(EXIT.UNAUTHENTICATED, "ERR_CLI_SESSION_EXPIRED", `session expired: run \`parhelion login --email ${s.email}\` again`, { hint: `the session of ${s.email} ended at ${s.expiresAt}` });
    }
    return { url: saved.url, caFile, credential: { kind: "session", session: s }, from: "credentials" };
  }
  const url = envUrl || saved?.url;
  const apiKey = envKey || saved?.apiKey;
  if (!url || !apiKey) throw notSignedIn();
  return { url, caFile, credential: { kind: "apiKey", apiKey }, from: envKey ? "env" : "credentials" };
}

/**
 * The session token from a login answer's Set-Cookie headers; null when there is none. Only a value
 * made of cookie-safe characters is accepted, so it can go back verbatim in a Cookie header.
 */
export function sessionCookieOf(headers: Record<string, string | string[] | undefined>): string | null {
  const raw = headers["set-cookie"];
  const lines = raw === undefined ? [] : Array.isArray(raw) ? raw : [raw];
  for (const line of lines) {
    const first = line.split(";", 1)[0] ?? "";
    const eq = first.indexOf("=");
    if (eq < 0 || first.slice(0, eq).trim() !== SESSION_COOKIE) continue;
    const value = first.slice(eq + 1).trim();
    if (/^[A-Za-z0-9_\-.~+/=]{16,512}$/.test(value)) return value;
  }
  return null;
}

const MUTATING = new Set<string>(["POST", "PATCH", "PUT", "DELETE"]);

export type Query = Record<string, string | number | undefined>;

export interface ApiResponse<T> {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: T;
}

interface ProblemBody {
  code?: unknown;
  message?: unknown;
  detail?: unknown;
  requestId?: unknown;
  retryAfterSeconds?: unknown;
}

const USER_AGENT = "parhelion-cli";

/** Checks the URL once: HTTPS only (an API key never crosses plaintext), no path, query or credentials. */
export function parseApiUrl(raw: string): URL {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new CliError(EXIT.USAGE, "ERR_CLI_USAGE", `"${raw}" is not a URL`, { hint: "give the API URL `parhelion up` printed, e.g. https://127.0.0.1:9443" });
  }
  if (u.protocol !== "https:") throw new CliError(EXIT.USAGE, "ERR_CLI_USAGE", `the API URL must use https (got ${u.protocol.replace(":", "")})`, { hint: "parhelion's API only speaks HTTPS" });
  if (u.username || u.password) throw new CliError(EXIT.USAGE, "ERR_CLI_USAGE", "the API URL must not carry credentials");
  return u;
}

/**
 * An HTTPS client for the Management API. It trusts exactly the configured CA file (or, without one, the
 * system's CAs); certificate verification is never turned off. Every non-2xx answer becomes a CliError
 * carrying the API's error code and the exit code for its status.
 */
export class ApiClient {
  readonly target: Target;
  readonly #base: URL;
  readonly #agent: Agent;

  constructor(target: Target) {
    this.target = target;
    this.#base = parseApiUrl(target.url);
    let ca: string | undefined;
    if (target.caFile !== null) {
      try {
        ca = readFileSync(target.caFile, "utf8");
      } catch (err) {
        throw new CliError(EXIT.USAGE, "ERR_CLI_CA_FILE", `cannot read the CA file ${target.caFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
          hint: "pass --ca-file to `parhelion login` (or set PARHELION_CA_FILE); `parhelion up` prints its CA file",
        });
      }
    }
    this.#agent = new Agent({ connect: { ...(ca === undefined ? {} : { ca }), rejectUnauthorized: true, timeout: 10_000 }, headersTimeout: 60_000, bodyTimeout: 60_000 });
  }

  /** Sends one request; answers 2xx with the parsed body, throws CliError otherwise. */
  async call<T>(method: Dispatcher.HttpMethod, path: string, opts: { query?: Query; body?: unknown } = {}): Promise<ApiResponse<T>> {
    const url = new URL(path, this.#base);
    for (const [k, v] of Object.entries(opts.query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    const headers: Record<string, string> = { accept: "application/json, application/problem+json", "user-agent": USER_AGENT };
    const cred = this.target.credential;
    if (cred?.kind === "apiKey") headers["authorization"] = `Bearer ${cred.apiKey}`;
    else if (cred?.kind === "session") {
      headers["cookie"] = `${SESSION_COOKIE}=${cred.session.cookie}`;
      if (MUTATING.has(method)) headers["x-csrf-token"] = cred.session.csrfToken;
    }
    let body: string | undefined;
    if (opts.body !== undefined) {
      body = JSON.stringify(opts.body);
      headers["content-type"] = "application/json";
    }
    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, { method, headers, body, dispatcher: this.#agent });
    } catch (err) {
      throw this.#transportError(err);
    }
    const text = await res.body.text();
    let parsed: unknown = undefined;
    if (text.length > 0) {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
    }
    if (res.statusCode >= 200 && res.statusCode < 300) {
      return { status: res.statusCode, headers: res.headers, body: parsed as T };
    }
    throw this.#problemError(res.statusCode, res.headers, parsed);
  }

  /** A GET whose 2xx body is streamed (NDJSON exports): the caller reads it; a problem answer throws CliError. */
  async getStream(path: string, query: Query = {}): Promise<NodeJS.ReadableStream> {
    const url = new URL(path, this.#base);
    for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, String(v));
    const headers: Record<string, string> = { accept: "application/x-ndjson, application/problem+json", "user-agent": USER_AGENT };
    const cred = this.target.credential;
    if (cred?.kind === "apiKey") headers["authorization"] = `Bearer ${cred.apiKey}`;
    else if (cred?.kind === "session") headers["cookie"] = `${SESSION_COOKIE}=${cred.session.cookie}`;
    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, { method: "GET", headers, dispatcher: this.#agent });
    } catch (err) {
      throw this.#transportError(err);
    }
    if (res.statusCode >= 200 && res.statusCode < 300) return res.body;
    const text = await res.body.text();
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    throw this.#problemError(res.statusCode, res.headers, parsed);
  }

  async get<T>(path: string, query?: Query): Promise<T> {
    return (await this.call<T>("GET", path, query ? { query } : {})).body;
  }

  /** Every page of a list route: follows the `x-next-token` header until the last page. */
  async listAll<T>(path: string, query: Query = {}): Promise<T[]> {
    const out: T[] = [];
    let nextToken: string | undefined;
    for (;;) {
      const r = await this.call<T[]>("GET", path, { query: { ...query, nextToken } });
      if (!Array.isArray(r.body)) throw new CliError(EXIT.INTERNAL, "ERR_CLI_PROTOCOL", `GET ${path} did not answer a list`);
      out.push(...r.body);
      const h = r.headers["x-next-token"];
      const token = Array.isArray(h) ? h[0] : h;
      if (!token || r.body.length === 0 || token === nextToken) return out;
      nextToken = token;
    }
  }

  async close(): Promise<void> {
    await this.#agent.close().catch(() => undefined);
  }

  #problemError(status: number, headers: Record<string, string | string[] | undefined>, body: unknown): CliError {
    const p = (body !== null && typeof body === "object" ? body : {}) as ProblemBody;
    const code = typeof p.code === "string" ? p.code : `HTTP_${status}`;
    const message = typeof p.message === "string" ? p.message : typeof p.detail === "string" ? p.detail : `the server answered HTTP ${status}`;
    const requestId = typeof p.requestId === "string" ? p.requestId : undefined;
    const ra = headers["retry-after"];
    const retry = typeof p.retryAfterSeconds === "number" ? p.retryAfterSeconds : typeof ra === "string" && ra.trim() !== "" ? Number(ra) : undefined;
    const retrySeconds = retry !== undefined && Number.isFinite(retry) ? Math.ceil(retry) : undefined;
    const cred = this.target.credential;
    const relogin = cred?.kind === "session" ? `run \`parhelion login --email ${cred.session.email}\` again` : "run `parhelion login`";
    if (code === "ERR_RATE_LIMITED") {
      // A lockout is "request rejected" whatever the status it comes with; the wait goes in the message.
      const msg = retrySeconds === undefined ? message : message.includes(`${retrySeconds} s`) ? message : `${message} (retry after ${retrySeconds} s)`;
      return new CliError(EXIT.REJECTED, code, msg, { status, ...(requestId ? { requestId } : {}), hint: retrySeconds === undefined ? "too many failed attempts: wait and try again" : `too many failed attempts: wait ${retrySeconds} s and try again` });
    }
    const exitCode = exitCodeForStatus(status);
    let hint: string | undefined;
    switch (exitCode) {
      case EXIT.UNAUTHENTICATED:
        if (code === "ERR_INVALID_CREDENTIALS") hint = cred === null ? "check the email and password" : "the password given is wrong: check it and try again";
        else if (code === "ERR_MFA_REQUIRED") hint = "this session waits for its second factor: run `parhelion mfa verify`";
        else if (code === "ERR_STEP_UP_REQUIRED") hint = "this action needs a recently verified second factor: run `parhelion mfa verify`, then retry";
        else if (code === "ERR_MFA_INVALID") hint = "the code is wrong, expired or already used: wait for the next one and try again";
        else if (cred === null) hint = undefined;
        else if (cred.kind === "session") hint = `your session was rejected (expired, signed out, or the password changed?): ${relogin}`;
        else hint = this.target.from === "env"
          ? "the key in PARHELION_API_KEY was rejected (unknown, expired or revoked): set a valid key"
          : this.target.from === "login"
            ? "check the key: it is unknown, expired or revoked"
            : "your saved key was rejected (expired or revoked?): run `parhelion login`";
        break;
      case EXIT.FORBIDDEN:
        hint = code === "ERR_CSRF"
          ? `the session's CSRF token was refused: ${relogin}`
          : code === "ERR_MFA_ENROLLMENT_REQUIRED"
          ? "your organization requires a second factor: run `parhelion mfa enroll-totp` first"
          : "your role does not allow this: ask an Owner or Admin (`parhelion whoami` shows your roles)";
        break;
      case EXIT.NOT_FOUND:
        hint = "check the id or name; the list command of that resource shows what exists";
        break;
      case EXIT.REJECTED:
        if (status === 429) hint = retrySeconds !== undefined ? `too many attempts: wait ${retrySeconds} s and try again` : "too many attempts: wait and try again";
        else if (status === 409) hint = "the resource already exists or its state forbids the change";
        break;
      case EXIT.UNAVAILABLE:
        hint = status === 503 ? "the server is starting, stopping, or its store is down: try again shortly" : "the server failed; the request id identifies the error in its log";
        break;
    }
    return new CliError(exitCode, code, message, { status, ...(requestId ? { requestId } : {}), ...(hint ? { hint } : {}) });
  }

  #transportError(err: unknown): CliError {
    const e = err as NodeJS.ErrnoException;
    const code = e.code ?? "";
    const where = this.#base.origin;
    if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|ERR_SSL/.test(code)) {
      return new CliError(EXIT.UNAVAILABLE, "ERR_CLI_TLS", `the certificate of ${where} is not trusted (${code}: ${e.message})`, {
        cause: err,
        hint: this.target.caFile === null
          ? "pass the CA file `parhelion up` printed: `parhelion login --ca-file FILE` (or set PARHELION_CA_FILE)"
          : `check that ${this.target.caFile} is the CA of this server (--ca-file / PARHELION_CA_FILE) and that --url names it`,
      });
    }
    return new CliError(EXIT.UNAVAILABLE, "ERR_CLI_UNREACHABLE", `cannot reach ${where}${code ? ` (${code})` : ""}: ${e.message}`, {
      cause: err,
      hint: "is `parhelion up` running? check --url (or PARHELION_API_URL)",
    });
  }
}
