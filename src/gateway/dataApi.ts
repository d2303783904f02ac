import { createServer, type IncomingMessage, type ServerResponse, type Server } from "node:http";
import type { TLSSocket } from "node:tls";
import { createHash, timingSafeEqual } from "node:crypto";
import pg from "pg";
import { ERROR_CATALOG, ParhelionError, type ErrorCode } from "../lib/errors.js";
import type { AuditEvent, AuditLog } from "../audit/index.js";
import type { Logger } from "../log/logger.js";
import { deriveScramKeys, parseScramVerifier } from "./protocol/scram.js";
import type { GatewayEngine } from "./server.js";
import type { GroupRoute, Router, WorkspaceRoute } from "./routing.js";
import { TokenRejected, type TokenVerifier, type VerifiedToken } from "./tokens.js";

/** Helios's Data API limit on a request body. */
export const DATA_API_MAX_BODY = 1024 * 1024;

/** PostgreSQL type OIDs → the type names the Data API reports (Helios reports SQL type names). */
const TYPE_NAMES: Record<number, string> = {
  16: "BOOLEAN", 17: "BYTEA", 18: "CHAR", 19: "NAME", 20: "BIGINT", 21: "SMALLINT", 23: "INT", 25: "TEXT", 26: "OID", 114: "JSON",
  700: "REAL", 701: "DOUBLE", 1042: "CHAR", 1043: "VARCHAR", 1082: "DATE", 1083: "TIME", 1114: "TIMESTAMP", 1184: "TIMESTAMPTZ",
  1186: "INTERVAL", 1700: "DECIMAL", 2950: "UUID", 3802: "JSONB", 869: "INET", 650: "CIDR",
};

/**
 * Replaces `?` placeholders with $1..$n outside string literals, quoted identifiers, dollar quotes and
 * comments, so `args` bind as parameters (never spliced into the text). Answers the count found.
 */
export function bindPlaceholders(sql: string): { text: string; count: number } {
  let out = "";
  let n = 0;
  let i = 0;
  while (i < sql.length) {
    const c = sql[i]!;
    const next = sql[i + 1];
    if (c === "'" || c === '"') {
      const end = closing(sql, i + 1, c);
      out += sql.slice(i, end);
      i = end;
    } else if (c === "-" && next === "-") {
      const end = sql.indexOf("\n", i);
      const stop = end < 0 ? sql.length : end;
      out += sql.slice(i, stop);
      i = stop;
    } else if (c === "/" && next === "*") {
      const end = sql.indexOf("*/", i + 2);
      const stop = end < 0 ? sql.length : end + 2;
      out += sql.slice(i, stop);
      i = stop;
    } else if (c === "$" && /[A-Za-z_$]/.test(next ?? "") && !/[A-Za-z0-9_]/.test(sql[i - 1] ?? "")) {
      const m = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(sql.slice(i));
      if (m) {
        const tag = m[0];
        const end = sql.indexOf(tag, i + tag.length);
        const stop = end < 0 ? sql.length : end + tag.length;
        out += sql.slice(i, stop);
        i = stop;
      } else {
        out += c;
        i++;
      }
    } else if (c === "?") {
      out += `$${++n}`;
      i++;
    } else {
      out += c;
      i++;
    }
  }
  return { text: out, count: n };
}

function closing(s: string, from: number, q: string): number {
  let i = from;
  while (i < s.length) {
    if (s[i] === q) {
      if (s[i + 1] === q) {
        i += 2;
        continue;
      }
      return i + 1;
    }
    i++;
  }
  return s.length;
}

interface Ctx {
  peer: string | undefined;
  group: GroupRoute | null;
  workspaceId: string | undefined;
  socket: TLSSocket;
}

/**
 * The HTTPS Data API on the gateway's port (Helios's `/api/v2/exec`, `/api/v2/query/rows`,
 * `/api/v2/query/tuples`, `/ping`): a TLS client that negotiates ALPN `http/1.1` gets HTTP instead of the
 * PostgreSQL protocol, after the same firewall and TLS checks. Basic auth with a database user, checked
 * against the workspace's own SCRAM verifier, or Bearer with a token (a group JWT, a platform credential);
 * statements run as that user. `POST /api/v2/jwks_setup` re-reads the group's JWKS.
 */
export class DataApi {
  private readonly http: Server;
  private readonly pools = new Map<string, { pool: pg.Pool; used: number }>();
  private readonly sweep: NodeJS.Timeout;

  constructor(
    private readonly o: { router: Router; engine: GatewayEngine; audit: Pick<AuditLog, "record">; logger: Logger; tokens?: TokenVerifier; statementTimeoutMs?: number },
  ) {
    this.http = createServer({ requestTimeout: 120_000, headersTimeout: 30_000, keepAliveTimeout: 5000 }, (req, res) => {
      void this.handle(req, res).catch((err: unknown) => this.fail(res, err));
    });
    this.sweep = setInterval(() => this.expire(), 10_000);
    this.sweep.unref();
  }

  /** Takes over a TLS connection that asked for HTTP. */
  accept(socket: TLSSocket, ctx: Omit<Ctx, "socket">): void {
    (socket as TLSSocket & { parhelion?: Omit<Ctx, "socket"> }).parhelion = ctx;
    this.http.emit("connection", socket);
  }

  async close(): Promise<void> {
    clearInterval(this.sweep);
    this.http.closeAllConnections();
    await Promise.all([...this.pools.values()].map((p) => p.pool.end().catch(() => undefined)));
    this.pools.clear();
  }

  private ctxOf(req: IncomingMessage): Ctx {
    const socket = req.socket as TLSSocket & { parhelion?: Omit<Ctx, "socket"> };
    return { ...(socket.parhelion ?? { peer: undefined, group: null, workspaceId: undefined }), socket };
  }

  private send(res: ServerResponse, status: number, body: unknown, type = "application/json"): void {
    const text = typeof body === "string" ? body : JSON.stringify(body);
    res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(text), "cache-control": "no-store" });
    res.end(text);
  }

  private fail(res: ServerResponse, err: unknown): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const e = err instanceof ParhelionError ? err : new ParhelionError("ERR_INTERNAL");
    if (!(err instanceof ParhelionError)) this.o.logger.error({ err: { message: (err as Error).message } }, "data API internal error");
    const status = e.code === "ERR_SQL" ? 400 : ERROR_CATALOG[e.code].status;
    if (status === 401) res.setHeader("www-authenticate", 'Basic realm="parhelion", charset="UTF-8"');
    this.send(res, status, { type: "about:blank", title: ERROR_CATALOG[e.code].title, status, code: e.code, message: e.message, ...(e.details ?? {}) }, "application/problem+json");
  }

  private audit(e: Omit<AuditEvent, "source" | "actor">, user: string | undefined): void {
    void this.o.audit.record({ ...e, source: "Gateway", actor: user === undefined ? { type: "anonymous" } : { type: "databaseUser" }, attributes: { api: "data", ...(user ? { databaseUser: user } : {}), ...(e.attributes ?? {}) } }).catch(() => undefined);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "https://gateway");
    if (req.method === "GET" && url.pathname === "/ping") return this.send(res, 200, "pong", "text/plain");
    const ops: Record<string, "exec" | "rows" | "tuples" | "jwks"> = { "/api/v2/exec": "exec", "/api/v2/query/rows": "rows", "/api/v2/query/tuples": "tuples", "/api/v2/jwks_setup": "jwks" };
    const op = req.method === "POST" ? ops[url.pathname] : undefined;
    if (op === undefined) throw new ParhelionError("ERR_ROUTE_NOT_FOUND", `no Data API route ${req.method} ${url.pathname}`);
    const ctx = this.ctxOf(req);
    const ws = await this.workspace(ctx, req);
    const creds = credentialsOf(req.headers.authorization);
    const started = Date.now();
    const base = { orgId: ws.orgId, resource: { type: "Workspace", id: ws.id }, sourceIp: ctx.peer ?? null };
    if (!creds) {
      this.audit({ ...base, type: "DataApiRequest", result: "DENIED", reason: "no credentials" }, undefined);
      throw new ParhelionError("ERR_UNAUTHENTICATED", "send Authorization: Basic with a database user and password, or Bearer with a token");
    }
    const body = op === "jwks" ? { sql: "", database: undefined } : await readJson(req);
    const database = body.database ?? "postgres";
    const login = await this.login(ws, creds, base, database);
    if (op === "jwks") {
      if (!this.o.tokens) throw new ParhelionError("ERR_ROUTE_NOT_FOUND", "token logins are not enabled");
      let r: { keys: number; source: "endpoint" | "inline" };
      try {
        r = await this.o.tokens.refresh(ws.groupId);
      } catch (err) {
        this.audit({ ...base, type: "DataApiJwksSetup", result: "FAILURE", reason: (err as Error).message.slice(0, 300), attributes: { workspaceGroupID: ws.groupId } }, login.user);
        if (err instanceof TokenRejected) throw new ParhelionError(err.reason === "not-configured" ? "ERR_NOT_FOUND" : "ERR_JWKS_UNAVAILABLE", err.message);
        throw err;
      }
      this.audit({ ...base, type: "DataApiJwksSetup", result: "SUCCESS", reason: `re-read the ${r.source} key set: ${r.keys} key(s)`, attributes: { workspaceGroupID: ws.groupId, keys: r.keys, source: r.source } }, login.user);
      return this.send(res, 200, { workspaceGroupID: ws.groupId, source: r.source, keys: r.keys });
    }
    const { text, count } = bindPlaceholders(body.sql);
    const args = body.args ?? [];
    if (count !== args.length) throw new ParhelionError("ERR_VALIDATION", `the statement has ${count} ? placeholder${count === 1 ? "" : "s"} but ${args.length} arg${args.length === 1 ? " was" : "s were"} given`);
    const pool = this.pool(ws.id, database, login.user, login.password);
    let result: pg.QueryResult | pg.QueryResult[];
    try {
      result = (await pool.query({ text, values: args, rowMode: op === "tuples" ? "array" : undefined } as pg.QueryConfig)) as pg.QueryResult | pg.QueryResult[];
    } catch (err) {
      const e = err as { code?: string; message: string; severity?: string };
      this.audit({ ...base, type: "DataApiRequest", result: "FAILURE", reason: `${op}: ${e.code ?? ""} ${e.message}`.slice(0, 300), attributes: { database, sqlstate: e.code ?? null } }, login.user);
      if (e.code === "28P01" || e.code === "28000") throw new ParhelionError("ERR_GW_AUTH_FAILED", e.message);
      if (e.code === undefined) throw new ParhelionError("ERR_WORKSPACE_UNAVAILABLE", `the workspace server is not reachable: ${e.message}`);
      if (e.code === "53300") throw new ParhelionError("ERR_GW_TOO_MANY_CONNECTIONS", e.message);
      throw new ParhelionError("ERR_SQL", e.message, { details: { sqlstate: e.code } });
    }
    const results = Array.isArray(result) ? result : [result];
    this.audit({ ...base, type: "DataApiRequest", result: "SUCCESS", reason: `${op} as ${login.user} on ${database}`, attributes: { database, statements: results.length, rows: results.reduce((n, r) => n + (r.rowCount ?? 0), 0), durationMs: Date.now() - started } }, login.user);
    if (op === "exec") return this.send(res, 200, { lastInsertId: 0, rowsAffected: results.reduce((n, r) => n + (r.rowCount ?? 0), 0) });
    if (op === "rows") return this.send(res, 200, { results: results.map((r) => ({ rows: r.rows })) });
    return this.send(res, 200, {
      results: results.map((r) => ({ columns: r.fields.map((f) => ({ name: f.name, dataType: TYPE_NAMES[f.dataTypeID] ?? `OID ${f.dataTypeID}`, nullable: true })), rows: r.rows })),
    });
  }

  /** The workspace: from SNI, or the X-Workspace-ID header for clients without SNI; firewall and TLS minimum checked. */
  private async workspace(ctx: Ctx, req: IncomingMessage): Promise<WorkspaceRoute> {
    const header = req.headers["x-workspace-id"];
    const id = ctx.workspaceId ?? (typeof header === "string" ? header : undefined);
    const ws = id === undefined ? null : await this.o.router.workspace(id);
    if (!ws || ws.desiredState === "TERMINATED" || ws.state === "TERMINATED") {
      throw new ParhelionError("ERR_GW_UNKNOWN_ENDPOINT", id === undefined ? "no workspace named: use https://<workspaceID>.<groupID>.<domain>:<port> or the X-Workspace-ID header" : `no workspace answers to ${id}`);
    }
    const group = ctx.group?.id === ws.groupId ? ctx.group : await this.o.router.group(ws.groupId);
    if (!group || (ctx.group && ctx.group.id !== ws.groupId)) throw new ParhelionError("ERR_GW_UNKNOWN_ENDPOINT", "the host name names another workspace group than the workspace's");
    if (!group.firewall.allows(ctx.peer)) {
      this.audit({ orgId: ws.orgId, resource: { type: "Workspace", id: ws.id }, sourceIp: ctx.peer ?? null, type: "GatewayFirewallDeny", result: "DENIED", reason: "Data API request outside the workspace group's firewall ranges" }, undefined);
      ctx.socket.destroy();
      throw new ParhelionError("ERR_GW_FIREWALL_DENIED");
    }
    if (group.tlsMinVersion === "1.3" && ctx.socket.getProtocol() !== "TLSv1.3") throw new ParhelionError("ERR_GW_TLS_VERSION", "this workspace group requires TLS 1.3");
    if (ws.state !== "ACTIVE" || ws.desiredState !== "ACTIVE" || !this.o.engine.isRunning(ws.id)) throw new ParhelionError("ERR_WORKSPACE_UNAVAILABLE", `the workspace is ${ws.state.toLowerCase()}`);
    return ws;
  }

  /**
   * Authenticates a request: Basic with a database user's password (checked against its SCRAM verifier), or
   * Bearer with a token (a group JWT or a platform credential) for a role that logs in with tokens. Answers
   * the role and the password its pool uses (none for token roles: pg_hba.conf admits them from the socket).
   */
  private async login(ws: WorkspaceRoute, creds: Credentials, base: { orgId: string; resource: { type: string; id: string }; sourceIp: string | null }, database: string): Promise<{ user: string; password: string | null }> {
    if (creds.kind === "basic") {
      if (!(await this.verify(ws.id, creds.user, creds.password))) {
        this.audit({ ...base, type: "DatabaseLoginFailure", result: "DENIED", reason: "password authentication failed", attributes: { database } }, creds.user);
        throw new ParhelionError("ERR_GW_AUTH_FAILED", `password authentication failed for user "${creds.user}"`);
      }
      return { user: creds.user, password: creds.password };
    }
    let t: VerifiedToken;
    try {
      if (!this.o.tokens) throw new TokenRejected("not-configured", "token logins are not enabled");
      t = await this.o.tokens.verify(creds.token, { groupId: ws.groupId, workspaceId: ws.id, orgId: ws.orgId });
      const info = await this.o.engine.getLoginInfo(ws.id, t.role);
      if (info !== null && (!info.canLogin || (info.validUntil !== null && info.validUntil.getTime() <= Date.now()))) throw new TokenRejected("role", `database user "${t.role}" cannot log in`);
      if (info?.tokenLogin !== true && (await this.o.engine.ensureTokenRole(ws.id, t.role, t.provision)) === null) {
        throw new TokenRejected("role", `database user "${t.role}" does not exist and this workspace group does not create users on first login`);
      }
    } catch (err) {
      if (!(err instanceof TokenRejected)) throw err;
      this.audit({ ...base, type: "DatabaseLoginFailure", result: "DENIED", reason: `token refused: ${err.message}`, attributes: { database, mechanism: "token", tokenFailure: err.reason } }, undefined);
      throw new ParhelionError("ERR_GW_AUTH_FAILED", `token authentication failed: ${err.message}`);
    }
    return { user: t.role, password: null };
  }

  /** Checks a password against the role's SCRAM verifier (the same check the server would make). */
  private async verify(workspaceId: string, user: string, password: string): Promise<boolean> {
    const info = await this.o.engine.getLoginInfo(workspaceId, user);
    const v = info && info.canLogin && (info.validUntil === null || info.validUntil.getTime() > Date.now()) ? parseScramVerifier(info.verifier) : null;
    if (!v) return false;
    const { storedKey } = deriveScramKeys(password, v.salt, v.iterations);
    return timingSafeEqual(storedKey, v.storedKey);
  }

  private pool(workspaceId: string, database: string, user: string, password: string | null): pg.Pool {
    const key = `${workspaceId}\u0000${database}\u0000${user}\u0000${password === null ? "token" : createHash("sha256").update(password).digest("hex")}`;
    let p = this.pools.get(key);
    if (!p) {
      const pool = new pg.Pool({
        host: this.o.engine.socketDir(workspaceId), user, ...(password === null ? {} : { password }), database, max: 4, idleTimeoutMillis: 30_000,
        statement_timeout: this.o.statementTimeoutMs ?? 60_000, application_name: "parhelion-data-api",
      });
      pool.on("error", () => undefined);
      p = { pool, used: Date.now() };
      this.pools.set(key, p);
    }
    p.used = Date.now();
    return p.pool;
  }

  /** Drops pools unused for a minute, and those of a workspace being stopped. */
  drop(workspaceId?: string): void {
    for (const [k, p] of this.pools) {
      if (workspaceId === undefined || k.startsWith(`${workspaceId}\u0000`)) {
        this.pools.delete(k);
        void p.pool.end().catch(() => undefined);
      }
    }
  }

  private expire(): void {
    const cutoff = Date.now() - 60_000;
    for (const [k, p] of this.pools) {
      if (p.used < cutoff) {
        this.pools.delete(k);
        void p.pool.end().catch(() => undefined);
      }
    }
  }
}

type Credentials = { kind: "basic"; user: string; password: string } | { kind: "bearer"; token: string };

function credentialsOf(header: string | undefined): Credentials | null {
  const b = /^Bearer +([A-Za-z0-9_.~+/=-]+)\s*$/i.exec(header ?? "");
  if (b) return { kind: "bearer", token: b[1]! };
  const m = /^Basic +([A-Za-z0-9+/=]+)\s*$/i.exec(header ?? "");
  if (!m) return null;
  const text = Buffer.from(m[1]!, "base64").toString("utf8");
  const i = text.indexOf(":");
  if (i <= 0) return null;
  return { kind: "basic", user: text.slice(0, i), password: text.slice(i + 1) };
}

async function readJson(req: IncomingMessage): Promise<{ sql: string; args?: unknown[]; database?: string }> {
  const type = String(req.headers["content-type"] ?? "");
  if (!/^application\/json\b/i.test(type)) throw new ParhelionError("ERR_UNSUPPORTED_MEDIA_TYPE", "send the request body as application/json");
  const declared = Number(req.headers["content-length"] ?? "0");
  if (declared > DATA_API_MAX_BODY) throw new ParhelionError("ERR_BODY_TOO_LARGE", `the body exceeds ${DATA_API_MAX_BODY} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > DATA_API_MAX_BODY) throw new ParhelionError("ERR_BODY_TOO_LARGE", `the body exceeds ${DATA_API_MAX_BODY} bytes`);
    chunks.push(c);
  }
  let body: unknown;
  try {
    body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw new ParhelionError("ERR_VALIDATION", "the body is not valid JSON");
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) throw new ParhelionError("ERR_VALIDATION", "the body must be a JSON object");
  const b = body as Record<string, unknown>;
  const unknown = Object.keys(b).filter((k) => k !== "sql" && k !== "args" && k !== "database");
  if (unknown.length) throw new ParhelionError("ERR_UNKNOWN_FIELD", `unknown field${unknown.length > 1 ? "s" : ""}: ${unknown.join(", ")}`);
  if (typeof b["sql"] !== "string" || b["sql"].trim() === "") throw new ParhelionError("ERR_VALIDATION", "sql must be a non-empty string");
  if (b["args"] !== undefined && !Array.isArray(b["args"])) throw new ParhelionError("ERR_VALIDATION", "args must be an array");
  if (b["database"] !== undefined && (typeof b["database"] !== "string" || !/^[A-Za-z_][A-Za-z0-9_$]{0,62}$/.test(b["database"]))) throw new ParhelionError("ERR_VALIDATION", "database must be a database name");
  return b as { sql: string; args?: unknown[]; database?: string };
}

export type { ErrorCode };
