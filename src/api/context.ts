import type { AuditSinks } from "../audit/stream/sinks.js";
import type { PlatformCredentials, TokenVerifier } from "../gateway/tokens.js";
import type { Db } from "../store/db.js";
import type { Logger } from "../log/logger.js";
import type { AuditLog } from "../audit/index.js";
import type { ApiKeyAuthenticator, LoginThrottle, OrganizationDirectory, WebAuthnSettings } from "../identity/index.js";
import type { Clock } from "../identity/types.js";
import type { WorkspaceService } from "../workspaces/service.js";
import type { DatabaseAdmin } from "../workspaces/databases.js";
import type { Keyring } from "../kms/index.js";
import type { GroupRekeys } from "../workspaces/rekey.js";

/** What route handlers may use. Each is an interface from its own context. */
export interface Services {
  db: Db;
  audit: AuditLog;
  apiKeys: ApiKeyAuthenticator;
  throttle: LoginThrottle;
  orgs: Pick<OrganizationDirectory, "get" | "invalidate">;
  workspaces: WorkspaceService;
  /** Databases and users inside workspaces. */
  databases: DatabaseAdmin;
  /** Signs short-lived database credentials (POST /v1/workspaces/{id}/credentials). */
  credentials: PlatformCredentials;
  /** Group JWT settings as the gateway sees them (invalidated on change). */
  tokens: TokenVerifier;
  /** The key hierarchy: status for `parhelion key status` (never key material). */
  keyring: Pick<Keyring, "status">;
  /** Re-keys of workspace groups' data keys (POST /v1/workspaceGroups/{id}/keys/rekey). */
  rekeys: Pick<GroupRekeys, "start" | "latest">;
  /** Audit sinks and the stream pipeline behind them. */
  auditSinks: AuditSinks;
  /** Counts requests in flight so shutdown can wait for their audit records. */
  inflight: InflightTracker;
  clock: Clock;
  logger: Logger;
  settings: {
    sessionTtlSeconds: number;
    invitationTtlSeconds: number;
    bodyLimitBytes: number;
    /** "all": every authenticated read is audited; "failures": only reads that fail or are denied. */
    auditReads: "all" | "failures";
    /** Issuer shown in authenticator apps (TOTP) and the WebAuthn relying party; set once the API port is known. */
    mfa: { issuer: string; webauthn: WebAuthnSettings };
  };
}

/** Requests being handled; `idle()` resolves when none is (or after the timeout). */
export class InflightTracker {
  private count = 0;
  private waiters: Array<() => void> = [];

  enter(): void {
    this.count += 1;
  }

  exit(): void {
    this.count -= 1;
    if (this.count === 0) for (const w of this.waiters.splice(0)) w();
  }

  get size(): number {
    return this.count;
  }

  idle(timeoutMs: number): Promise<void> {
    if (this.count === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(resolve, timeoutMs);
      t.unref();
      this.waiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }
}
