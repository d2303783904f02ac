import pg from "pg";
import type { Logger } from "../log/logger.js";
import type { LoginInfo } from "./sql.js";

/** The channel parhelion_guard notifies, at commit, after CREATE/ALTER/DROP ROLE, GRANT/REVOKE of roles and renaming a role. */
export const ROLES_CHANNEL = "parhelion_roles";

export interface LoginInfoCacheOptions {
  /** Connects the listening session (parhelion's system role, over the workspace's socket). */
  connect: () => pg.Client;
  logger: Logger;
  /** Longest time an entry is used, notification or not (default 60 s). */
  ttlMs?: number;
  /** The listening session is closed after this long without a login, and the cache with it (default 60 s). */
  idleMs?: number;
  /** Most roles remembered (default 1000). */
  maxEntries?: number;
}

/**
 * Login information of one workspace's roles, so a gateway login need not query the server: starting a
 * query costs a round trip to another process, which on these VMs is most of a new session's CPU.
 *
 * Correctness rests on parhelion_guard, which makes every statement that can change a login's outcome send
 * NOTIFY parhelion_roles when it commits. The cache holds a listening session on that channel and answers
 * from memory only while that session is up; an entry is kept only when the session was already listening
 * before the query that produced it began and no notification (or loss of the session) came meanwhile — a
 * generation counter tells. Any notification empties the whole cache (role changes are rare). Entries also
 * expire after `ttlMs`, and an idle cache closes its session after `idleMs`, so an idle workspace keeps no
 * extra backend.
 */
export class LoginInfoCache {
  private readonly ttlMs: number;
  private readonly idleMs: number;
  private readonly maxEntries: number;
  private readonly entries = new Map<string, { info: LoginInfo | null; at: number }>();
  private listener: pg.Client | null = null;
  private listening = false;
  private generation = 0;
  private idleTimer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(private readonly o: LoginInfoCacheOptions) {
    this.ttlMs = o.ttlMs ?? 60_000;
    this.idleMs = o.idleMs ?? 60_000;
    this.maxEntries = o.maxEntries ?? 1000;
  }

  /** Whether answers may currently come from memory (for tests and metrics). */
  get active(): boolean {
    return this.listening;
  }

  /** The login information of `role`: from memory when it is known to be current, else from `fetch`. */
  async get(role: string, fetch: () => Promise<LoginInfo | null>): Promise<LoginInfo | null> {
    if (this.closed) return fetch();
    this.touch();
    const now = Date.now();
    if (this.listening) {
      const hit = this.entries.get(role);
      if (hit && now - hit.at < this.ttlMs) return hit.info;
    } else {
      this.listen();
    }
    const listeningBefore = this.listening;
    const generation = this.generation;
    const info = await fetch();
    if (listeningBefore && this.listening && generation === this.generation && !this.closed) {
      if (this.entries.size >= this.maxEntries) this.entries.clear();
      this.entries.set(role, { info, at: now });
    }
    return info;
  }

  /** Forgets everything and closes the listening session. */
  close(): Promise<void> {
    this.closed = true;
    return this.stop();
  }

  private forget(): void {
    this.generation++;
    this.entries.clear();
  }

  private touch(): void {
    if (this.idleTimer) this.idleTimer.refresh();
    else {
      this.idleTimer = setTimeout(() => void this.stop(), this.idleMs);
      this.idleTimer.unref();
    }
  }

  private async stop(): Promise<void> {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    this.listening = false;
    this.forget();
    const c = this.listener;
    this.listener = null;
    if (c) await c.end().catch(() => undefined);
  }

  /** Starts the listening session unless one is starting or up. */
  private listen(): void {
    if (this.listener || this.closed) return;
    const c = this.o.connect();
    this.listener = c;
    const lost = (why: string) => {
      if (this.listener !== c) return;
      this.listener = null;
      this.listening = false;
      this.forget();
      this.o.logger.debug({ why }, "login cache: listening session lost");
      void c.end().catch(() => undefined);
    };
    c.on("notification", (n) => {
      if (n.channel === ROLES_CHANNEL) this.forget();
    });
    c.on("error", (err) => lost(err.message));
    c.on("end", () => lost("ended"));
    void (async () => {
      try {
        await c.connect();
        await c.query(`LISTEN ${ROLES_CHANNEL}`);
        if (this.listener !== c) return;
        this.forget();
        this.listening = true;
      } catch (err) {
        lost((err as Error).message);
      }
    })();
  }
}
