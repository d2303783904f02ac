import { createServer, type Server, type Socket, type AddressInfo } from "node:net";
import { TLSSocket } from "node:tls";
import { randomBytes, randomInt, randomUUID, timingSafeEqual } from "node:crypto";
import type { Logger } from "../log/logger.js";
import type { AuditEvent, AuditLog } from "../audit/index.js";
import { ERROR_CATALOG, ParhelionError, type ErrorCode } from "../lib/errors.js";
import { canonicalPeer } from "../workspaces/firewall.js";
import { StartupReader, parseStartupPacket, parseOptionsEndpoint, MessageReader, FrontendScanner, FrontendType, parseSASLInitialResponse, parseSASLResponse, parsePasswordMessage, type StartupPacket } from "./protocol/frontend.js";
import { BackendScanner, SSL_YES, SSL_NO, errorResponse, authenticationCleartextPassword, authenticationSASL, authenticationSASLContinue, authenticationSASLFinal, authenticationOk, parameterStatus, backendKeyData, readyForQuery } from "./protocol/backend.js";
import { ScramServer, parseScramVerifier, deriveScramKeysAsync } from "./protocol/scram.js";
import { TokenRejected, looksLikeJwt, type TokenVerifier, type VerifiedToken } from "./tokens.js";
import { BackendSessions, PgauditDemand, SessionStatements, StatementFrontendScanner, type SessionWindow, type StatementRecord } from "./statements.js";
import { recordsStatements, type StatementClassifier } from "../audit/sql/classify.js";
import type { DeferredRecord } from "../audit/stream/pipeline.js";
import { StatementRecordEncoder, statementEvent, type StatementSession } from "./statementRecord.js";
import { decideNested, pgauditClassesFor, type NestedStatement } from "../audit/pgaudit.js";
import { peekClientHello } from "./protocol/clienthello.js";
import { MessagePump } from "./pump.js";
import { BackendPool, UpstreamRefused, cancelBackend, openBackend, type Backend, type UpstreamAuth } from "./upstream.js";
import type { Router, TlsIdentity, WorkspaceRoute, GroupRoute } from "./routing.js";

/** Salt of the PBKDF2 run for a cleartext password of a user without a verifier (timing only). */
const MOCK_SALT = randomBytes(16);

/** What the gateway needs of the engine (src/engine). */
export interface GatewayEngine {
  socketDir(id: string): string;
  isRunning(id: string): boolean;
  getLoginInfo(id: string, role: string): Promise<{ verifier: string | null; canLogin: boolean; validUntil: Date | null; tokenLogin: boolean } | null>;
  ensureTokenRole(id: string, role: string, o: { create: boolean; grants: readonly string[] }): Promise<unknown>;
  /** pgaudit.log's classes in force, and setting them (for statements inside functions and DO blocks); absent: no nested statements. */
  auditClasses?(id: string): readonly string[];
  setAuditClasses?(id: string, classes: readonly string[]): Promise<void>;
  /** The statements pgaudit logs inside functions and DO blocks, as the engine reads them from the servers' logs. */
  onNestedStatement?(listener: (e: NestedStatement) => void): void;
}

export interface GatewayOptions {
  router: Router;
  engine: GatewayEngine;
  audit: Pick<AuditLog, "record">;
  logger: Logger;
  /** The identity for clients that send no SNI naming a group (a certificate for the host and the domain). */
  defaultIdentity: TlsIdentity;
  authTimeoutMs: number;
  idleTimeoutMs: number;
  maxMessageBytes: number;
  /** Client sessions a workspace may have at once (beyond: 53300). */
  connectionLimit: (ws: WorkspaceRoute) => number;
  /** Called when a workspace server is out of connection slots (the Data API drops its idle connections). */
  onServerFull?: (workspaceId: string) => void;
  /** Classifies statements for audit at each group's level; absent: no statement audit. */
  statements?: StatementClassifier;
  /**
   * Where an organization's statement records go without the store (its streams, audit/stream/pipeline.ts), serialized
   * by the gateway itself; absent, or not for that organization: through `audit.record` like every record.
   */
  statementStream?: { streamsStatements(orgId: string): boolean; publishDeferred(r: DeferredRecord): void };
  /**
   * Audit failMode closed: true while a required (failMode closed) audit sink covering the organization or group cannot record. New
   * sessions are refused and a session's next message ends it (ERR_AUDIT_UNAVAILABLE). Absent: never.
   */
  auditBlocked?: (orgId: string, groupId: string) => boolean;
  /** Verifies tokens offered as passwords (group JWTs, platform credentials); absent: SCRAM only. */
  tokens?: TokenVerifier;
  /** Takes over a TLS connection that asked for HTTP (the Data API); null: refuse it. */
  http?: ((socket: TLSSocket, ctx: { peer: string | undefined; group: GroupRoute | null; workspaceId: string | undefined }) => void) | null;
}

/** One client session past authentication. */
interface Session {
  id: string;
  workspaceId: string;
  orgId: string;
  groupId: string;
  user: string;
  database: string;
  peer: string | undefined;
  client: TLSSocket;
  backend: Backend;
  socketDir: string;
  pid: number;
  secret: number;
  started: number;
  lastActivity: number;
  bytesIn: number;
  bytesOut: number;
  scanner: BackendScanner;
  /** The server's ReadyForQuery count when the client last sent bytes: a later one means the server answered. */
  readyAtLastSend: number;
  /** Client bytes read during authentication, past its last SASL message: the relay forwards them first. */
  pending: Buffer;
  /** Header scanner of the client's bytes (message boundaries, sizes, Terminate). */
  frontend: FrontendScanner;
  /** Statement audit (levels that record statements): what was sent, matched to the server's answers. */
  statements: SessionStatements | null;
  /** Its hold on the server session's backend (pgaudit's lines name the backend). */
  window: SessionWindow;
  /** Gives back the pgaudit classes the session's level needed. */
  releaseAudit: () => void;
  ended: boolean;
}

const TLS_RECORD = 0x16;

/**
 * Idle between transactions: the server has answered everything the client sent (a ReadyForQuery came after
 * the client's last bytes, or nothing was sent), outside a transaction, between whole messages. A session
 * running a long query is not idle however quiet the wire is.
 */
function idle(s: Session): boolean {
  return s.scanner.readyForQuery > s.readyAtLastSend && s.scanner.lastReadyStatus === "I" && s.scanner.atBoundary;
}
const PRE_AUTH_AUDIT_WINDOW_MS = 10_000;
/** How a workspace's state reason starts when its group's key is unavailable (src/workspaces/reconciler.ts). */
const KEY_UNAVAILABLE_PREFIX = "ERR_KEY_UNAVAILABLE: ";

/** A session's statement record encoder; null (its records take the general path) if its template cannot be built. */
function statementEncoder(s: StatementSession, logger: Logger): StatementRecordEncoder | null {
  try {
    return new StatementRecordEncoder(s);
  } catch (err) {
    logger.warn({ sessionID: s.sessionId, err: { message: (err as Error).message } }, "statement records of this session take the general path");
    return null;
  }
}

function sendError(socket: Socket | TLSSocket, code: ErrorCode, message?: string, hint?: string): void {
  if (socket.destroyed) return;
  try {
    socket.end(errorResponse({ severity: "FATAL", sqlstate: ERROR_CATALOG[code].sqlstate, message: message ?? ERROR_CATALOG[code].title, ...(hint ? { hint } : {}) }));
  } catch {
    socket.destroy();
  }
  socket.destroySoon?.();
}

/**
 * The PostgreSQL wire-protocol gateway: the only way into a workspace. On every connection, in order:
 * firewall (before any TLS byte), SSLRequest (or direct TLS), TLS at the group's minimum version with the
 * group's certificate, SCRAM-SHA-256(-PLUS) against the workspace's own verifiers, then a relay to a
 * pooled server session. No plaintext path exists.
 */
export class Gateway {
  private server: Server | undefined;
  private readonly sessions = new Map<string, Session>();
  private readonly byPid = new Map<number, Session>();
  private readonly perWorkspace = new Map<string, number>();
  private readonly lastActivityByWs = new Map<string, number>();
  private readonly sockets = new Set<Socket>();
  private readonly pool = new BackendPool({ maxIdlePerKey: 16, idleTimeoutMs: 60_000, resetTimeoutMs: 5000 });
  private readonly preAuthAudit = new Map<string, { at: number; suppressed: number }>();
  private idleTimer: NodeJS.Timeout | undefined;
  /** Which session held which backend when (pgaudit's lines name the backend's pid). */
  private readonly backendSessions = new BackendSessions();
  private readonly pgaudit: PgauditDemand | null;
  /** pgaudit lines no gateway session explains (the Data API's connections, lines read after a restart), since the last warning. */
  private unattributedNested = 0;
  private sweeps = 0;

  constructor(private readonly o: GatewayOptions) {
    const engine = o.engine;
    this.pgaudit = o.statements && engine.auditClasses && engine.setAuditClasses && engine.onNestedStatement
      ? new PgauditDemand({ engine: { auditClasses: (id) => engine.auditClasses!(id), setAuditClasses: (id, c) => engine.setAuditClasses!(id, c) }, logger: o.logger })
      : null;
    if (this.pgaudit) engine.onNestedStatement!((e) => this.auditNested(e));
  }

  async listen(host: string, port: number): Promise<number> {
    const server = createServer({ noDelay: true, pauseOnConnect: false }, (s) => this.accept(s));
    server.on("error", (err) => this.o.logger.error({ err: { message: err.message } }, "gateway listener error"));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host, port }, () => {
        server.off("error", reject);
        resolve();
      });
    });
    this.server = server;
    this.idleTimer = setInterval(() => this.sweepIdle(), 1000);
    this.idleTimer.unref();
    return (server.address() as AddressInfo).port;
  }

  get port(): number {
    return (this.server?.address() as AddressInfo | null)?.port ?? 0;
  }

  /** Client sessions of a workspace now. */
  activeSessions(workspaceId: string): number {
    return this.perWorkspace.get(workspaceId) ?? 0;
  }

  /** When a session of the workspace last moved a byte (or ended). */
  lastActivity(workspaceId: string): Date | undefined {
    let t = this.lastActivityByWs.get(workspaceId);
    for (const s of this.sessions.values()) if (s.workspaceId === workspaceId && (t === undefined || s.lastActivity > t)) t = s.lastActivity;
    return t === undefined ? undefined : new Date(t);
  }

  /** Ends every session of a workspace and drops its pooled server sessions (it is suspended or deleted). */
  disconnectWorkspace(workspaceId: string, reason: ErrorCode = "ERR_WORKSPACE_UNAVAILABLE"): void {
    for (const s of [...this.sessions.values()]) {
      if (s.workspaceId === workspaceId) this.end(s, reason, "the workspace is being stopped");
    }
    this.pool.drop(workspaceId);
  }

  /**
   * Applies a group's current firewall to its open sessions: a session whose address the ranges no longer
   * admit is ended (a narrowed firewall takes effect at once, not at the next connection).
   */
  async recheckGroup(groupId: string): Promise<void> {
    const group = await this.o.router.group(groupId);
    for (const s of [...this.sessions.values()]) {
      if (s.groupId !== groupId) continue;
      if (!group || group.terminated || !group.firewall.allows(s.peer)) {
        this.audit({ type: "GatewayFirewallDeny", result: "DENIED", orgId: s.orgId, resource: { type: "Workspace", id: s.workspaceId }, peer: s.peer, user: s.user, reason: "the workspace group's firewall no longer admits this session's address", attributes: { sessionID: s.id } });
        this.end(s, "ERR_GW_FIREWALL_DENIED", "the workspace group's firewall no longer admits this address");
      }
    }
  }

  async close(): Promise<void> {
    if (this.idleTimer) clearInterval(this.idleTimer);
    const server = this.server;
    this.server = undefined;
    const closed = server ? new Promise<void>((r) => server.close(() => r())) : Promise.resolve();
    for (const s of [...this.sessions.values()]) this.end(s, "ERR_NOT_READY", "parhelion is shutting down");
    this.pool.close();
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  // ---- audit ----

  private audit(e: Omit<AuditEvent, "source" | "actor"> & { user?: string; peer?: string | undefined }): void {
    const { user, peer, ...rest } = e;
    void this.o.audit.record({
      ...rest, source: "Gateway", sourceIp: peer ?? null,
      actor: user === undefined ? { type: "anonymous" } : { type: "databaseUser" },
      attributes: { ...(user === undefined ? {} : { databaseUser: user }), ...(e.attributes ?? {}) },
    }).catch(() => undefined);
  }

  /**
   * A DatabaseStatement record: what the session sent, at its level, with the outcome the server answered. Straight
   * to the organization's streams when they take its statements (serialized by the session's encoder: the hot path
   * at the query levels), else through the audit log.
   */
  private auditStatement(session: StatementSession, encoder: StatementRecordEncoder | null, r: StatementRecord): void {
    const stream = this.o.statementStream;
    if (encoder !== null && stream?.streamsStatements(session.orgId)) stream.publishDeferred(encoder.defer(r));
    else void this.o.audit.record(statementEvent(session, r)).catch(() => undefined);
  }

  /**
   * A statement pgaudit logged inside a function or DO block, joined to the gateway session that held the backend
   * then and recorded at that session's level (its shape below the PLAINTEXT levels). Lines no session explains are
   * counted and reported, not recorded: the platform's own connections (left out by the engine already) and the
   * Data API's have no statement audit.
   */
  private auditNested(e: NestedStatement): void {
    const classifier = this.o.statements;
    if (!classifier) return;
    const w = this.backendSessions.find(e.workspaceId, e.pid, e.at);
    if (!w || w.user !== e.user || w.database !== e.database) {
      this.unattributedNested++;
      return;
    }
    if (!recordsStatements(w.level)) return;
    const { decision, classification } = decideNested(w.level, e, classifier);
    if (!decision.log) return;
    const cls = classification.statements[0]!.class;
    this.audit({
      orgId: w.orgId, resource: { type: "Workspace", id: w.workspaceId }, peer: w.peer, user: w.user,
      type: "DatabaseStatement", result: "SUCCESS", reason: `${cls} ${e.command}: inside a function or DO block`,
      attributes: {
        workspaceGroupID: w.groupId, database: w.database, sessionID: w.sessionId, nested: true,
        statement: decision.text, plaintext: decision.plaintext, statementClasses: [cls], commands: classification.statements.map((x) => x.kind),
        pgauditClass: e.class, pgauditCommand: e.command, statementID: e.statementId, substatementID: e.substatementId,
        ...(e.objectType !== null ? { objectType: e.objectType } : {}), ...(e.objectName !== null ? { objectName: e.objectName } : {}),
        serverTime: new Date(e.at).toISOString(), logLine: e.logLine,
      },
    });
  }

  /**
   * Events before a client is identified (firewall denies, TLS failures, garbage) are recorded once per
   * peer and type per window, with a count of the ones folded in, so a flood cannot flood the audit log.
   */
  private auditPreAuth(type: string, peer: string | undefined, reason: string, extra: Partial<AuditEvent> = {}): void {
    const key = `${type}|${peer}`;
    const now = Date.now();
    const seen = this.preAuthAudit.get(key);
    if (seen && now - seen.at < PRE_AUTH_AUDIT_WINDOW_MS) {
      seen.suppressed++;
      return;
    }
    const suppressed = seen?.suppressed ?? 0;
    this.preAuthAudit.set(key, { at: now, suppressed: 0 });
    if (this.preAuthAudit.size > 10_000) {
      for (const [k, v] of this.preAuthAudit) if (now - v.at >= PRE_AUTH_AUDIT_WINDOW_MS) this.preAuthAudit.delete(k);
    }
    this.audit({ type, result: "DENIED", peer, reason, ...extra, attributes: { ...(extra.attributes ?? {}), ...(suppressed ? { suppressedSinceLast: suppressed } : {}) } });
  }

  // ---- connection ----

  private accept(socket: Socket): void {
    this.sockets.add(socket);
    socket.on("close", () => this.sockets.delete(socket));
    socket.on("error", () => undefined); // reported where it matters; never fatal to the process
    const peer = canonicalPeer(socket.remoteAddress);
    void this.handshake(socket, peer).catch((err: unknown) => {
      this.o.logger.debug({ peer, err: { message: (err as Error).message } }, "gateway connection failed");
      socket.destroy();
    });
  }

  private async handshake(raw: Socket, peer: string | undefined): Promise<void> {
    if (!(await this.o.router.anyGroupAllows(peer))) {
      this.auditPreAuth("GatewayFirewallDeny", peer, "no workspace group's firewall admits this address");
      raw.destroy();
      return;
    }
    const deadline = setTimeout(() => {
      raw.destroy();
    }, this.o.authTimeoutMs);
    deadline.unref();
    raw.once("close", () => clearTimeout(deadline));

    // Pre-TLS: SSLRequest (answered 'S'), GSSENCRequest (answered 'N'), CancelRequest, or a TLS ClientHello
    // straight away (PostgreSQL 17's sslnegotiation=direct). A plaintext StartupMessage is refused.
    const first = await this.readPreTls(raw, peer);
    if (first === null) return;
    const { hello, bytes } = first;
    const sni = this.o.router.parseServerName(hello.serverName);
    let group: GroupRoute | null = null;
    let identity = this.o.defaultIdentity;
    if (sni) {
      group = await this.o.router.group(sni.groupId);
      if (group && !group.terminated) {
        if (!group.firewall.allows(peer)) {
          this.auditPreAuth("GatewayFirewallDeny", peer, "outside the workspace group's firewall ranges", { orgId: group.orgId, resource: { type: "WorkspaceGroup", id: group.id } });
          raw.destroy();
          return;
        }
        identity = await this.o.router.groupIdentity(group.id, group.tlsMinVersion);
      } else {
        group = null;
      }
    }
    const wantsHttp = hello.alpn.length > 0 && !hello.alpn.includes("postgresql") && hello.alpn.includes("http/1.1");
    const tls = await this.startTls(raw, bytes, identity, peer, group);
    if (tls === null) return;
    if (wantsHttp || tls.alpnProtocol === "http/1.1") {
      clearTimeout(deadline);
      if (!this.o.http) {
        tls.destroy();
        return;
      }
      this.o.http(tls, { peer, group, workspaceId: sni?.workspaceId });
      return;
    }
    const session = await this.authenticate(tls, peer, sni, group);
    clearTimeout(deadline);
    if (session) this.relay(session);
  }

  /** Reads until a TLS ClientHello is complete; answers null when the connection was handled (closed). */
  private readPreTls(raw: Socket, peer: string | undefined): Promise<{ hello: { serverName: string | null; alpn: string[] }; bytes: Buffer } | null> {
    return new Promise((resolve) => {
      const startup = new StartupReader();
      let tlsBytes: Buffer[] | null = null;
      let tlsLen = 0;
      let sentSsl = false;
      const done = (v: { hello: { serverName: string | null; alpn: string[] }; bytes: Buffer } | null) => {
        raw.off("data", onData);
        raw.off("close", onClose);
        if (v === null && !raw.destroyed) raw.destroySoon();
        resolve(v);
      };
      const onClose = () => done(null);
      const onData = (chunk: Buffer) => {
        try {
          if (tlsBytes === null && !sentSsl && startup.buffered === 0 && chunk[0] === TLS_RECORD) tlsBytes = [];
          if (tlsBytes !== null) {
            tlsBytes.push(chunk);
            tlsLen += chunk.length;
            const all = tlsBytes.length === 1 ? chunk : Buffer.concat(tlsBytes, tlsLen);
            tlsBytes = [all];
            const h = peekClientHello(all);
            if (h.status === "need-more") return;
            raw.pause();
            if (h.status === "not-tls") {
              this.auditPreAuth("GatewayTlsFailure", peer, "the client sent something other than a TLS ClientHello");
              done(null);
              raw.destroy();
              return;
            }
            done({ hello: { serverName: h.serverName, alpn: h.alpn }, bytes: all });
            return;
          }
          let packet = startup.push(chunk);
          while (packet !== null) {
            const p: StartupPacket = parseStartupPacket(packet);
            if (p.kind === "ssl") {
              // Bytes sent before our answer were not protected by TLS (CVE-2021-23214): refuse them.
              if (startup.buffered > 0) throw new ParhelionError("ERR_GW_PROTOCOL", "received unencrypted data after SSL request");
              sentSsl = true;
              tlsBytes = [];
              raw.write(SSL_YES);
              return;
            }
            if (p.kind === "gssenc") {
              raw.write(SSL_NO);
            } else if (p.kind === "cancel") {
              this.cancel(p.pid, p.secret, peer);
              done(null);
              return;
            } else {
              this.auditPreAuth("GatewayPlaintextRefused", peer, "a client tried to connect without TLS", { attributes: { user: p.params.get("user") ?? null } });
              sendError(raw, "ERR_GW_SSL_REQUIRED", "parhelion accepts only TLS connections", "set sslmode=require (or verify-full with the CA parhelion gives you) in the connection string");
              done(null);
              return;
            }
            packet = startup.push(Buffer.alloc(0));
          }
        } catch (err) {
          const e = err instanceof ParhelionError ? err : new ParhelionError("ERR_GW_PROTOCOL", (err as Error).message);
          this.auditPreAuth("GatewayProtocolError", peer, e.message);
          sendError(raw, e.code, e.message);
          done(null);
        }
      };
      raw.on("data", onData);
      raw.on("close", onClose);
    });
  }

  private startTls(raw: Socket, hello: Buffer, identity: TlsIdentity, peer: string | undefined, group: GroupRoute | null): Promise<TLSSocket | null> {
    raw.unshift(hello);
    const tls = new TLSSocket(raw, { isServer: true, secureContext: identity.context, ALPNProtocols: ["postgresql", "http/1.1"] });
    return new Promise((resolve) => {
      const fail = (err: Error) => {
        tls.off("secure", ok);
        this.auditPreAuth("GatewayTlsFailure", peer, `TLS handshake failed: ${err.message.slice(0, 200)}`, group ? { orgId: group.orgId, resource: { type: "WorkspaceGroup", id: group.id } } : {});
        tls.destroy();
        raw.destroy();
        resolve(null);
      };
      const ok = () => {
        tls.off("error", fail);
        tls.on("error", () => undefined);
        resolve(tls);
      };
      tls.once("secure", ok);
      tls.once("error", fail);
      tls.once("close", () => resolve(null));
      // No raw.resume(): the TLS socket reads the handle itself and takes the unshifted bytes first.
    });
  }

  /** Startup, routing, limits and SCRAM; answers the session ready to relay, or null (the client got an error). */
  private async authenticate(tls: TLSSocket, peer: string | undefined, sni: { workspaceId?: string; groupId: string } | null, sniGroup: GroupRoute | null): Promise<Session | null> {
    const startup = new StartupReader();
    let params: Map<string, string>;
    let leftover: Buffer;
    try {
      const r = await new Promise<{ p: StartupPacket; rest: Buffer } | null>((resolve, reject) => {
        const onData = (chunk: Buffer) => {
          try {
            const packet = startup.push(chunk);
            if (packet === null) return;
            cleanup();
            resolve({ p: parseStartupPacket(packet), rest: startup.takeRest() });
          } catch (err) {
            cleanup();
            reject(err);
          }
        };
        const onClose = () => {
          cleanup();
          resolve(null);
        };
        const cleanup = () => {
          tls.off("data", onData);
          tls.off("close", onClose);
        };
        tls.on("data", onData);
        tls.on("close", onClose);
      });
      if (r === null) return null;
      if (r.p.kind === "cancel") {
        this.cancel(r.p.pid, r.p.secret, peer);
        tls.end();
        return null;
      }
      if (r.p.kind !== "startup") throw new ParhelionError("ERR_GW_PROTOCOL", r.p.kind === "ssl" ? "repeated SSL request inside TLS" : "GSSAPI encryption is not supported inside TLS");
      params = r.p.params;
      leftover = r.rest;
    } catch (err) {
      const e = err instanceof ParhelionError ? err : new ParhelionError("ERR_GW_PROTOCOL", (err as Error).message);
      this.auditPreAuth("GatewayProtocolError", peer, e.message);
      sendError(tls, e.code, e.message);
      return null;
    }

    const user = params.get("user")!;
    const database = params.get("database") ?? user;
    if (params.has("replication") && params.get("replication") !== "false" && params.get("replication") !== "0") {
      sendError(tls, "ERR_GW_PROTOCOL", "replication connections are not available through the gateway");
      return null;
    }
    const opt = parseOptionsEndpoint(params.get("options") ?? "");
    const workspaceId = sni?.workspaceId ?? opt.endpoint;
    if (sni?.workspaceId && opt.endpoint && opt.endpoint !== sni.workspaceId) {
      sendError(tls, "ERR_GW_UNKNOWN_ENDPOINT", "the endpoint option names another workspace than the host name");
      return null;
    }
    const ws = workspaceId === undefined ? null : await this.o.router.workspace(workspaceId);
    if (!ws || ws.state === "TERMINATED" || ws.desiredState === "TERMINATED") {
      this.auditPreAuth("GatewayUnknownEndpoint", peer, `no workspace for endpoint ${workspaceId ?? "(none)"}`, { attributes: { endpoint: workspaceId ?? null } });
      sendError(tls, "ERR_GW_UNKNOWN_ENDPOINT", workspaceId === undefined ? "no workspace named: connect to <workspaceID>.<groupID>.<domain> or pass options=endpoint=<workspaceID>" : `no workspace answers to endpoint ${workspaceId}`);
      return null;
    }
    const group = sniGroup?.id === ws.groupId ? sniGroup : await this.o.router.group(ws.groupId);
    if (!group) {
      sendError(tls, "ERR_GW_UNKNOWN_ENDPOINT");
      return null;
    }
    const resource = { type: "Workspace", id: ws.id };
    const base = { orgId: ws.orgId, resource, peer, user, attributes: { workspaceGroupID: ws.groupId, database } };
    if (sni && sni.groupId !== ws.groupId) {
      sendError(tls, "ERR_GW_UNKNOWN_ENDPOINT", "the host name names another workspace group than the workspace's");
      return null;
    }
    if (!sniGroup && !group.firewall.allows(peer)) {
      // Without SNI the group is known only now, after TLS; the client still learns nothing.
      this.audit({ ...base, type: "GatewayFirewallDeny", result: "DENIED", reason: "outside the workspace group's firewall ranges" });
      sendError(tls, "ERR_GW_FIREWALL_DENIED");
      return null;
    }
    if (this.o.auditBlocked?.(ws.orgId, ws.groupId)) {
      this.audit({ ...base, type: "DatabaseLoginFailure", result: "DENIED", reason: "audit failMode closed: a required audit sink cannot record" });
      sendError(tls, "ERR_AUDIT_UNAVAILABLE");
      return null;
    }
    if (group.tlsMinVersion === "1.3" && tls.getProtocol() !== "TLSv1.3") {
      this.audit({ ...base, type: "GatewayTlsFailure", result: "DENIED", reason: `TLS ${tls.getProtocol()} is below the group's minimum 1.3` });
      sendError(tls, "ERR_GW_TLS_VERSION", "this workspace group requires TLS 1.3");
      return null;
    }
    this.audit({ ...base, type: "DatabaseConnect", result: "SUCCESS", reason: `connection for ${user}@${database}`, attributes: { ...base.attributes, tls: tls.getProtocol(), applicationName: params.get("application_name") ?? null } });
    if (ws.state === "FAILED" && ws.stateReason?.startsWith(KEY_UNAVAILABLE_PREFIX)) {
      // Its group's key (a customer's key disabled or deleted, or its provider unreachable): say so, naming the key.
      this.audit({ ...base, type: "DatabaseLoginFailure", result: "FAILURE", reason: ws.stateReason });
      sendError(tls, "ERR_KEY_UNAVAILABLE", ws.stateReason.slice(KEY_UNAVAILABLE_PREFIX.length));
      return null;
    }
    if (ws.state !== "ACTIVE" || ws.desiredState !== "ACTIVE" || !this.o.engine.isRunning(ws.id)) {
      sendError(tls, "ERR_WORKSPACE_UNAVAILABLE", `the workspace is ${ws.desiredState === "ACTIVE" ? ws.state.toLowerCase() : ws.desiredState.toLowerCase()}`, ws.desiredState === "SUSPENDED" ? "resume it: parhelion workspace resume <id>" : undefined);
      return null;
    }
    if ((this.perWorkspace.get(ws.id) ?? 0) >= this.o.connectionLimit(ws)) {
      this.audit({ ...base, type: "DatabaseLoginFailure", result: "DENIED", reason: "connection limit reached" });
      sendError(tls, "ERR_GW_TOO_MANY_CONNECTIONS", `sorry, too many clients already (the workspace allows ${this.o.connectionLimit(ws)})`);
      return null;
    }

    // The slot is taken before authenticating, so concurrent handshakes cannot all pass the check; it is given
    // back unless a session results.
    this.adjust(ws.id, 1);
    let session: Session | null = null;
    try {
      session = await this.login({ tls, peer, ws, group, sniGroup, user, database, params, opt, leftover, base });
      return session;
    } finally {
      if (session === null) this.adjust(ws.id, -1);
    }
  }

  /**
   * Opens a server session; when the server is out of connection slots, idle pooled sessions of the
   * workspace are closed to make room (a client session outranks a spare) and the open is retried.
   */
  private async openWithRoom(o: Parameters<typeof openBackend>[0]): Promise<Backend> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await openBackend(o);
      } catch (err) {
        const full = err instanceof UpstreamRefused && (err.fields.sqlstate === "53300" || err.fields.sqlstate === "53400");
        if (!full || attempt >= 3 || (attempt === 0 && this.pool.idleCount(o.workspaceId) === 0 && !this.o.onServerFull)) throw err;
        this.pool.drop(o.workspaceId);
        this.o.onServerFull?.(o.workspaceId);
        await new Promise((r) => setTimeout(r, 50 * (attempt + 1))); // the closed backends exit and free their slots
      }
    }
  }

  private adjust(workspaceId: string, delta: number): void {
    const n = (this.perWorkspace.get(workspaceId) ?? 0) + delta;
    if (n <= 0) this.perWorkspace.delete(workspaceId);
    else this.perWorkspace.set(workspaceId, n);
  }

  /** SCRAM (or a password or token in cleartext inside TLS), then a server session; answers the session ready to relay, or null (the client got an error). */
  private async login(a: {
    tls: TLSSocket; peer: string | undefined; ws: WorkspaceRoute; group: GroupRoute; sniGroup: GroupRoute | null; user: string; database: string;
    params: Map<string, string>; opt: { endpoint: string | undefined; rest: string }; leftover: Buffer;
    base: { orgId: string; resource: { type: string; id: string }; peer: string | undefined; user: string; attributes: Record<string, unknown> };
  }): Promise<Session | null> {
    const { tls, peer, ws, group, sniGroup, user, database, params, opt, leftover, base } = a;
    // SCRAM-SHA-256 (-PLUS when the certificate has a tls-server-end-point hash) against the workspace's verifier.
    const identity = sniGroup ? await this.o.router.groupIdentity(group.id, group.tlsMinVersion) : this.o.defaultIdentity;
    const pump = new MessagePump(tls, new MessageReader(), leftover);
    let upstream: UpstreamAuth;
    let saslFinal: Buffer | null = null;
    let token: VerifiedToken | null = null;
    try {
      const info = await this.o.engine.getLoginInfo(ws.id, user);
      const usable = info !== null && info.canLogin && (info.validUntil === null || info.validUntil.getTime() > Date.now());
      const verifier = usable ? parseScramVerifier(info.verifier) : null;
      // A password in cleartext inside TLS, so a token can be one: in groups that accept JWTs, and for roles
      // that log in with tokens. Everyone else: SCRAM, which never shows the gateway the password.
      const cleartext = this.o.tokens !== undefined && (info?.tokenLogin === true || (await this.o.tokens.groupConfig(group.id)) !== null);
      if (cleartext) {
        tls.write(authenticationCleartextPassword());
        const m = await pump.next();
        if (m.type !== FrontendType.Password) throw new ParhelionError("ERR_GW_PROTOCOL", "expected a password message");
        const password = parsePasswordMessage(m.body);
        if (looksLikeJwt(password)) {
          token = await this.o.tokens!.verify(password, { groupId: group.id, workspaceId: ws.id, orgId: ws.orgId });
          if (token.role !== user) throw new TokenRejected("role", `the token is for database user "${token.role}"`);
          if (!usable && info !== null) throw new TokenRejected("role", `database user "${user}" cannot log in`);
          if (info?.tokenLogin !== true) {
            const made = await this.o.engine.ensureTokenRole(ws.id, user, token.provision);
            if (made === null) throw new TokenRejected("role", `database user "${user}" does not exist and this workspace group does not create users on first login`);
          }
          upstream = { trust: true };
        } else {
          // An unknown user costs the same PBKDF2 as a known one: the time taken tells nothing.
          const keys = await deriveScramKeysAsync(password, verifier?.salt ?? MOCK_SALT, verifier?.iterations ?? 4096);
          if (!verifier) throw new ParhelionError("ERR_GW_AUTH_FAILED");
          if (!timingSafeEqual(keys.storedKey, verifier.storedKey)) throw new ParhelionError("ERR_GW_AUTH_FAILED");
          upstream = { clientKey: keys.clientKey, serverKey: verifier.serverKey };
        }
      } else {
        const scram = new ScramServer({ user, verifier, channelBinding: identity.endPoint });
        tls.write(authenticationSASL(scram.mechanisms()));
        const first = await pump.next();
        if (first.type !== FrontendType.Password) throw new ParhelionError("ERR_GW_PROTOCOL", "expected SASL response");
        const init = parseSASLInitialResponse(first.body);
        tls.write(authenticationSASLContinue(scram.clientFirst(init.mechanism, init.data)));
        const fin = await pump.next();
        if (fin.type !== FrontendType.Password) throw new ParhelionError("ERR_GW_PROTOCOL", "expected SASL response");
        const r = scram.clientFinal(parseSASLResponse(fin.body));
        upstream = { clientKey: r.clientKey, serverKey: verifier!.serverKey };
        // Sent together with AuthenticationOk below: one TLS record and one write instead of two.
        saslFinal = authenticationSASLFinal(r.serverFinal);
      }
    } catch (err) {
      pump.detach();
      if (err instanceof TokenRejected) {
        this.audit({ ...base, type: "DatabaseLoginFailure", result: "DENIED", reason: `token refused: ${err.message}`, attributes: { ...base.attributes, mechanism: "token", tokenFailure: err.reason } });
        sendError(tls, "ERR_GW_AUTH_FAILED", `token authentication failed for user "${user}": ${err.message}`);
        return null;
      }
      const e = err instanceof ParhelionError ? err : new ParhelionError("ERR_GW_PROTOCOL", (err as Error).message);
      const authFailed = e.code === "ERR_GW_AUTH_FAILED";
      this.audit({ ...base, type: "DatabaseLoginFailure", result: authFailed ? "DENIED" : "FAILURE", reason: authFailed ? "password authentication failed" : e.message });
      sendError(tls, e.code, authFailed ? `password authentication failed for user "${user}"` : e.message);
      return null;
    }
    const rest = pump.detach();
    // Anything the client sends before its session is ready waits in the socket's buffer (no listener may
    // see it, and none may lose it) until relay() takes over.
    tls.pause();

    // A pooled server session for (workspace, database, role, startup parameters), or a new one.
    const forward: Record<string, string> = { user, database };
    for (const [k, v] of params) {
      if (k === "user" || k === "database" || k === "replication") continue;
      if (k === "options") {
        if (opt.rest.trim() !== "") forward[k] = opt.rest;
        continue;
      }
      forward[k] = v;
    }
    const key = `${ws.id}\u0000${JSON.stringify(Object.entries(forward).sort(([a], [b]) => (a < b ? -1 : 1)))}`;
    const socketDir = this.o.engine.socketDir(ws.id);
    let backend = this.pool.take(key);
    if (!backend) {
      try {
        backend = await this.openWithRoom({ socketDir, workspaceId: ws.id, key, params: forward, auth: upstream, timeoutMs: this.o.authTimeoutMs });
      } catch (err) {
        if (err instanceof UpstreamRefused) {
          this.audit({ ...base, type: "DatabaseLoginFailure", result: "FAILURE", reason: `the server refused the session: ${err.fields.sqlstate} ${err.fields.message}` });
          if (!tls.destroyed) tls.end(err.raw);
          return null;
        }
        const e = err instanceof ParhelionError ? err : new ParhelionError("ERR_WORKSPACE_UNAVAILABLE", (err as Error).message);
        this.audit({ ...base, type: "DatabaseLoginFailure", result: "FAILURE", reason: e.message });
        sendError(tls, e.code === "ERR_GW_AUTH_FAILED" ? "ERR_GW_AUTH_FAILED" : "ERR_WORKSPACE_UNAVAILABLE", e.code === "ERR_GW_AUTH_FAILED" ? `password authentication failed for user "${user}"` : e.message);
        return null;
      }
    }
    // Statement audit at the user's own level or the group's, as the session starts (a later change applies to
    // new sessions). Looked up before the client hears it is signed in, so nothing waits after that.
    const classifier = this.o.statements;
    const level = classifier ? ((await this.o.router.userAuditLevel(ws.id, user).catch(() => null)) ?? group.auditLevel) : group.auditLevel;
    // pgaudit logs the classes this level records before the session's first statement (nested statements).
    const releaseAudit = this.pgaudit ? await this.pgaudit.acquire(ws.id, pgauditClassesFor(level)) : () => undefined;
    if (tls.destroyed) {
      releaseAudit();
      void this.pool.release(backend);
      return null;
    }
    let pid = randomInt(1, 0x7fffffff);
    while (this.byPid.has(pid)) pid = randomInt(1, 0x7fffffff);
    const secret = randomInt(0, 0x7fffffff) | 0;
    const parts: Buffer[] = saslFinal ? [saslFinal, authenticationOk()] : [authenticationOk()];
    for (const [k, v] of backend.params) parts.push(parameterStatus(k, v));
    parts.push(backendKeyData(pid, secret), readyForQuery("I"));
    tls.write(Buffer.concat(parts));
    const now = Date.now();
    const sessionId = randomUUID();
    let statements: SessionStatements | null = null;
    if (classifier && recordsStatements(level)) {
      // The person behind a platform credential, on each of the session's statement records too.
      const session: StatementSession = {
        orgId: ws.orgId, workspaceId: ws.id, groupId: ws.groupId, database, user, peer, sessionId,
        ...(token?.platform ? { extra: { platformPrincipalID: token.platform.principalId, platformEmail: token.platform.email } } : {}),
      };
      const encoder = this.o.statementStream ? statementEncoder(session, this.o.logger) : null;
      statements = new SessionStatements({ level, classifier, record: (r) => this.auditStatement(session, encoder, r) });
    }
    const s: Session = {
      id: sessionId, workspaceId: ws.id, orgId: ws.orgId, groupId: ws.groupId, user, database, peer, client: tls, backend, socketDir, pid, secret,
      started: now, lastActivity: now, bytesIn: 0, bytesOut: 0, scanner: new BackendScanner(statements ? { observer: statements.observer } : {}), readyAtLastSend: -1, pending: rest,
      frontend: statements ? new StatementFrontendScanner({ maxMessageBytes: this.o.maxMessageBytes }, statements) : new FrontendScanner({ maxMessageBytes: this.o.maxMessageBytes }),
      statements, ended: false, releaseAudit,
      window: this.backendSessions.open({ workspaceId: ws.id, pid: backend.pid, sessionId, orgId: ws.orgId, groupId: ws.groupId, user, database, peer, level, start: now }),
    };
    s.scanner.lastReadyStatus = "I";
    this.sessions.set(s.id, s);
    this.byPid.set(pid, s);
    this.audit({ ...base, type: "DatabaseLoginSuccess", result: "SUCCESS", reason: `${user} signed in to ${database}`, attributes: {
      ...base.attributes, sessionID: s.id,
      mechanism: token ? (token.kind === "platform" ? "platform credential" : "JWT") : saslFinal ? (identity.endPoint ? "SCRAM-SHA-256(-PLUS offered)" : "SCRAM-SHA-256") : "password",
      ...(token ? { tokenIssuer: token.issuer, tokenSubject: token.subject, tokenExpiresAt: token.expiresAt.toISOString() } : {}),
      ...(token?.platform ? { platformPrincipalID: token.platform.principalId, platformEmail: token.platform.email } : {}),
    } });
    return s;
  }

  /** Byte relay: no stream layers, client headers checked by a scanner that neither copies nor allocates. */
  private relay(s: Session): void {
    const client = s.client;
    const server = s.backend.socket;
    const frontend = s.frontend;
    const blocked = this.o.auditBlocked;
    const fromClient = (chunk: Buffer) => {
      if (blocked?.(s.orgId, s.groupId)) {
        this.end(s, "ERR_AUDIT_UNAVAILABLE", "audit failMode closed: a required audit sink cannot record");
        return;
      }
      try {
        frontend.scan(chunk);
      } catch (err) {
        this.end(s, "ERR_GW_PROTOCOL", (err as Error).message, true);
        return;
      }
      s.bytesIn += chunk.length;
      s.lastActivity = Date.now();
      if (frontend.sawTerminate && chunk.length === 5) {
        // The client is leaving: its Terminate alone is not forwarded, so the server session can be pooled.
        this.end(s, null, "client terminated");
        return;
      }
      // Anything else (Terminate included, when it came with other messages) goes to the server, which then
      // owes an answer: the session is busy until a ReadyForQuery follows.
      s.readyAtLastSend = s.scanner.readyForQuery;
      if (!server.write(chunk)) client.pause();
    };
    client.on("data", fromClient);
    server.on("drain", () => client.resume());
    server.on("data", (chunk: Buffer) => {
      try {
        s.scanner.scan(chunk);
      } catch (err) {
        this.end(s, "ERR_GW_PROTOCOL", `the workspace server broke the protocol: ${(err as Error).message}`, true);
        return;
      }
      s.bytesOut += chunk.length;
      s.lastActivity = Date.now();
      if (!client.write(chunk)) server.pause();
    });
    client.on("drain", () => server.resume());
    client.on("close", () => this.end(s, null, "client disconnected"));
    client.on("error", () => undefined);
    server.on("close", () => this.end(s, null, "the workspace server closed the session", true));
    server.on("error", () => undefined);
    const pending = s.pending;
    s.pending = Buffer.alloc(0);
    if (pending.length > 0) fromClient(pending);
    client.resume();
  }

  /**
   * Ends a session: the client gets an error when there is one to tell, the server session goes back to
   * the pool when it is idle between whole messages, and the disconnect is audited with bytes and duration.
   */
  private end(s: Session, code: ErrorCode | null, reason: string, brokenServer = false): void {
    if (s.ended) return;
    s.ended = true;
    this.sessions.delete(s.id);
    this.byPid.delete(s.pid);
    this.adjust(s.workspaceId, -1);
    this.lastActivityByWs.set(s.workspaceId, Date.now());
    const client = s.client;
    const server = s.backend.socket;
    client.removeAllListeners("data");
    client.removeAllListeners("drain");
    server.removeAllListeners("data");
    server.removeAllListeners("drain");
    server.removeAllListeners("close");
    server.removeAllListeners("error");
    server.resume();
    s.statements?.close(); // statements still owed an answer: recorded as interrupted
    if (code !== null) sendError(client, code, reason);
    else if (!client.destroyed) client.end();
    const reusable = !brokenServer && idle(s) && s.frontend.atBoundary && !server.destroyed;
    this.backendSessions.close(s.window, reusable);
    s.releaseAudit();
    if (reusable) void this.pool.release(s.backend);
    else this.pool.destroy(s.backend);
    this.audit({
      type: "DatabaseDisconnect", result: code === null ? "SUCCESS" : "FAILURE", orgId: s.orgId, resource: { type: "Workspace", id: s.workspaceId },
      peer: s.peer, user: s.user, reason,
      attributes: { workspaceGroupID: s.groupId, database: s.database, sessionID: s.id, bytesIn: s.bytesIn, bytesOut: s.bytesOut, durationMs: Date.now() - s.started, ...(code ? { code } : {}) },
    });
  }

  /** CancelRequest (§55.2.7): forwarded to the server session behind the gateway's key, if the key matches. */
  private cancel(pid: number, secret: number, peer: string | undefined): void {
    const s = this.byPid.get(pid);
    if (!s) return;
    const a = Buffer.alloc(4);
    const b = Buffer.alloc(4);
    a.writeInt32BE(secret | 0);
    b.writeInt32BE(s.secret | 0);
    if (!timingSafeEqual(a, b)) return;
    void this.o.router.group(s.groupId).then((g) => {
      if (!g || !g.firewall.allows(peer)) return;
      cancelBackend(s.socketDir, s.backend.pid, s.backend.secret);
      this.audit({ type: "DatabaseCancel", result: "SUCCESS", orgId: s.orgId, resource: { type: "Workspace", id: s.workspaceId }, peer, user: s.user, reason: "query cancel request forwarded", attributes: { sessionID: s.id } });
    }).catch(() => undefined);
  }

  private sweepIdle(): void {
    if (++this.sweeps % 10 === 0) {
      this.pgaudit?.sweep();
      this.backendSessions.prune();
      if (this.unattributedNested > 0 && this.sweeps % 60 === 0) {
        this.o.logger.warn({ lines: this.unattributedNested }, "pgaudit lines of nested statements that no gateway session explains were not recorded (Data API connections, or lines read after a restart)");
        this.unattributedNested = 0;
      }
    }
    if (this.o.idleTimeoutMs <= 0) return;
    const cutoff = Date.now() - this.o.idleTimeoutMs;
    for (const s of [...this.sessions.values()]) {
      if (s.lastActivity < cutoff && idle(s)) this.end(s, "ERR_GW_IDLE_TIMEOUT", `terminating connection due to idle-session timeout (${Math.round(this.o.idleTimeoutMs / 1000)} s)`);
    }
  }
}
