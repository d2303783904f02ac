/** Public types of the audit context. Callers depend on `AuditLog` (or a `Pick<>` of it), never on a class. */

export const AUDIT_SOURCES = ["Portal", "API", "CLI", "System", "Gateway"] as const;
export const AUDIT_RESULTS = ["SUCCESS", "DENIED", "FAILURE"] as const;
export const ACTOR_TYPES = ["user", "apiKey", "anonymous", "system", "databaseUser"] as const;

export type AuditSource = (typeof AUDIT_SOURCES)[number];
export type AuditResult = (typeof AUDIT_RESULTS)[number];
export type ActorType = (typeof ACTOR_TYPES)[number];

/** One thing that happened, as a caller reports it. */
export interface AuditEvent {
  /** e.g. "Login", "ApiKeyCreate", "UserRemove", "ApiRequest", "AuthFailure". */
  type: string;
  source: AuditSource;
  result: AuditResult;
  /** UUID of the organization, when there is one. */
  orgId?: string | null;
  /** `id` is a UUID of a store row (user, API key); put unverified identifiers in `attributes`. */
  actor: { type: ActorType; id?: string | null; email?: string | null };
  resource?: { type: string; id: string } | null;
  sourceIp?: string | null;
  requestId?: string | null;
  /** Human-readable; never a secret. */
  reason: string;
  attributes?: Record<string, unknown>;
}

/** An event once it is part of the chain. Hashes are lower-case hex. */
export interface AuditRecord extends AuditEvent {
  seq: string;
  id: string;
  createdAt: string;
  prevHash: string;
  hash: string;
}

/** Filters of `AuditLog.list`. Dates are ISO 8601; `startDate` is inclusive, `endDate` exclusive. */
export interface AuditQuery {
  orgId: string;
  startDate?: string;
  endDate?: string;
  type?: string;
  source?: string;
  /** 1..1000, default 100. */
  limit?: number;
  nextToken?: string;
}

/** Helios user types, mapped from `actor.type`. */
export type HeliosUserType = "Customer" | "Automation" | "System" | "Unspecified";

/** One audit record in the Helios response shape. */
export interface AuditLogView {
  auditID: string;
  orgID: string | null;
  createdAt: string;
  type: string;
  source: string;
  result: AuditResult;
  reason: string;
  userID: string | null;
  userEmail: string | null;
  userType: HeliosUserType;
  resourceType: string | null;
  resourceID: string | null;
  sourceIP: string | null;
  requestID: string | null;
  attributes: Record<string, unknown>;
  seq: string;
}

export type VerifyProblemKind = "modified" | "inserted" | "deleted" | "broken-link";

export interface VerifyProblem {
  seq: string;
  kind: VerifyProblemKind;
  detail: string;
}

export interface VerifyResult {
  ok: boolean;
  /** Rows read and re-hashed. */
  checked: number;
  headSeq: string | null;
  headHash: string | null;
  /** At most `MAX_VERIFY_PROBLEMS`; `truncated` says more were found. */
  problems: VerifyProblem[];
  truncated: boolean;
}

/** What the rest of the platform depends on. */
export interface AuditLog {
  /** Resolves once durable (true) or after the failure is logged (false); never rejects. */
  record(e: AuditEvent): Promise<boolean>;
  /** Records of one organization, newest first. Throws ERR_VALIDATION naming a bad parameter. */
  list(q: AuditQuery): Promise<{ auditLogs: AuditLogView[]; nextToken?: string }>;
  /** Walks the whole chain and re-computes every hash. */
  verify(): Promise<VerifyResult>;
  /** Flushes what is queued; later `record()` calls resolve false. */
  close(): Promise<void>;
}
