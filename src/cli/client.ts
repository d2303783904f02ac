import { readFileSync } from "node:fs";
import { Agent, request, type Dispatcher } from "undici";
import { readCredentials, type Credentials } from "./credentials.js";
import { CliError, EXIT, exitCodeForStatus } from "./errors.js";

/** Where requests go and with which key; `keyFrom` says where the key came from, for error hints. */
export interface Target extends Credentials {
  keyFrom: "env" | "credentials" | "login";
}

/**
 * The saved credentials with PARHELION_API_URL, PARHELION_API_KEY and PARHELION_CA_FILE laid over them.
 * Throws exit 3 when neither gives a URL and a key.
 */
export function resolveTarget(env: NodeJS.ProcessEnv = process.env): Target {
  const saved = readCredentials(env);
  const url = env["PARHELION_API_URL"] || saved?.url;
  const apiKey = env["PARHELION_API_KEY"] || saved?.apiKey;
  if (!url || !apiKey) {
    throw new CliError(EXIT.UNAUTHENTICATED, "ERR_CLI_NOT_SIGNED_IN", "not signed in", { hint: "run `parhelion login` (or set PARHELION_API_URL and PARHELION_API_KEY)" });
  }
  const caFile = env["PARHELION_CA_FILE"] || (saved ? saved.caFile : null);
  return { url, apiKey, caFile, keyFrom: env["PARHELION_API_KEY"] ? "env" : "credentials" };
}

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
    const headers: Record<string, string> = { authorization: `Bearer ${this.target.apiKey}`, accept: "application/json, application/problem+json", "user-agent": USER_AGENT };
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
    const exitCode = exitCodeForStatus(status);
    let hint: string | undefined;
    switch (exitCode) {
      case EXIT.UNAUTHENTICATED:
        hint = this.target.keyFrom === "env"
          ? "the key in PARHELION_API_KEY was rejected (unknown, expired or revoked): set a valid key"
          : this.target.keyFrom === "login"
            ? "check the key: it is unknown, expired or revoked"
            : "your saved key was rejected (expired or revoked?): run `parhelion login`";
        break;
      case EXIT.FORBIDDEN:
        hint = "your role does not allow this: ask an Owner or Admin (`parhelion whoami` shows your roles)";
        break;
      case EXIT.NOT_FOUND:
        hint = "check the id or name; the list command of that resource shows what exists";
        break;
      case EXIT.REJECTED: {
        const ra = headers["retry-after"];
        const retry = typeof p.retryAfterSeconds === "number" ? p.retryAfterSeconds : typeof ra === "string" ? Number(ra) : undefined;
        if (status === 429) hint = retry !== undefined && Number.isFinite(retry) ? `too many attempts: wait ${Math.ceil(retry)} s and try again` : "too many attempts: wait and try again";
        else if (status === 409) hint = "the resource already exists or its state forbids the change";
        break;
      }
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
