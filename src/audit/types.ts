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

/**
 * Filters of `AuditLog.list` and `AuditLog.export` (src/audit/DESIGN.md, "Listing"); every given filter must
 * hold. Dates are ISO 8601, both inclusive. `type`, `source`, `result` and `class` take one value or a
 * comma-separated list (any of them).
 */
export interface AuditQuery {
  orgId: string;
  startDate?: string;
  endDate?: string;
  /** Event types, e.g. "Login" or "DatabaseLoginSuccess,DatabaseLoginFailure". */
  type?: string;
  /** Portal, API, CLI, System, Gateway. */
  source?: string;
  /** SUCCESS, DENIED, FAILURE. */
  result?: string;
  /** A UUID matches the actor's id; anything else an e-mail (any case) or a database user name (exact). */
  user?: string;
  /** Records whose resource is this workspace. */
  workspaceID?: string;
  /** Records about this group: the group itself, its workspaces, its gateway traffic. */
  workspaceGroupID?: string;
  /** Statement classes (READ, WRITE, FUNCTION, ROLE, DDL, MISC): DatabaseStatement records with any of them. */
  class?: string;
  /** list: 1..1000, default 100. export: a cap on the records streamed, 1..10^9, default none. */
  limit?: number;
  /** list only: the previous page's token. */
  nextToken?: string;
}

/** Helios user types, mapped from `actor.type`. */
export type HeliosUserType = "Customer" | "Automation" | "System" | "Unspecified";

/** `actor.type` → Helios `userType`. */
export const HELIOS_USER_TYPES: Record<ActorType, HeliosUserType> = {
  user: "Customer",
  apiKey: "Automation",
  system: "System",
  anonymous: "Unspecified",
  databaseUser: "Customer",
};

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
  /**
   * Every matching record as of the call, oldest first, with `actorType` and its chain hashes (lower-case
   * hex), read a page at a time. Resolves once the query is valid and the first page read (ERR_VALIDATION
   * names a bad parameter).
   */
  export(q: Omit<AuditQuery, "nextToken">): Promise<AsyncIterable<AuditLogView & { actorType: ActorType; prevHash: string; hash: string }>>;
  /** Walks the whole chain and re-computes every hash. */
  verify(): Promise<VerifyResult>;
  /** Flushes what is queued; later `record()` calls resolve false. */
  close(): Promise<void>;
}
