import type { Db } from "../store/db.js";
import type { Logger } from "../log/logger.js";
import type { AuditLog } from "../audit/index.js";
import type { ApiKeyAuthenticator, LoginThrottle } from "../identity/index.js";
import type { Clock } from "../identity/types.js";

/** What route handlers may use. Each is an interface from its own context. */
export interface Services {
  db: Db;
  audit: AuditLog;
  apiKeys: ApiKeyAuthenticator;
  throttle: LoginThrottle;
  clock: Clock;
  logger: Logger;
  settings: {
    sessionTtlSeconds: number;
    invitationTtlSeconds: number;
    bodyLimitBytes: number;
  };
}
