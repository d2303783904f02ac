/** The audit context: callers depend on `AuditLog`; `createAuditLog` builds the store-backed one. */
import { StoreAuditLog, type StoreAuditLogOptions } from "./writer.js";
import type { AuditLog } from "./types.js";

export type { AuditEvent, AuditRecord, AuditLog, AuditQuery, AuditLogView, VerifyResult, VerifyProblem, VerifyProblemKind, AuditSource, AuditResult, ActorType, HeliosUserType } from "./types.js";
export { AUDIT_SOURCES, AUDIT_RESULTS, ACTOR_TYPES } from "./types.js";
export { StoreAuditLog, AUDIT_CHAIN_LOCK_KEY, MAX_BATCH, type StoreAuditLogOptions } from "./writer.js";
export { GENESIS_HASH, CHAIN_FORMAT_VERSION, canonicalJson, chainHash, type ChainFields } from "./chain.js";
export { MAX_VERIFY_PROBLEMS } from "./verify.js";

/** The audit log on the metadata store. */
export function createAuditLog(opts: StoreAuditLogOptions): AuditLog {
  return new StoreAuditLog(opts);
}
