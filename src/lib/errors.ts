/**
 * One error base class with a stable `code`, and one catalog mapping every code to an HTTP status,
 * a PostgreSQL SQLSTATE and a one-line description (docs/errors.md is generated from the catalog and
 * a test keeps both in step).
 */
export const ERROR_CATALOG = {
  ERR_VALIDATION: { status: 400, sqlstate: "22023", title: "The request is malformed or a field has the wrong type or value." },
  ERR_UNKNOWN_FIELD: { status: 400, sqlstate: "22023", title: "The request carries a field parhelion does not know." },
  ERR_FIELD_NOT_SUPPORTED: { status: 400, sqlstate: "0A000", title: "A Helios field parhelion lacks was given a non-neutral value." },
  ERR_BODY_TOO_LARGE: { status: 413, sqlstate: "54000", title: "The request body exceeds the size limit." },
  ERR_UNSUPPORTED_MEDIA_TYPE: { status: 415, sqlstate: "22023", title: "The request body must be application/json." },
  ERR_UNAUTHENTICATED: { status: 401, sqlstate: "28000", title: "No valid credential was presented." },
  ERR_INVALID_CREDENTIALS: { status: 401, sqlstate: "28P01", title: "The email or password is wrong." },
  ERR_API_KEY_INVALID: { status: 401, sqlstate: "28000", title: "The API key is malformed, unknown, expired or revoked." },
  ERR_SESSION_INVALID: { status: 401, sqlstate: "28000", title: "The session cookie is malformed, unknown, expired or revoked." },
  ERR_CSRF: { status: 403, sqlstate: "42501", title: "The CSRF token is missing or does not match the session." },
  ERR_RATE_LIMITED: { status: 429, sqlstate: "53400", title: "Too many failed attempts; try again after the lockout expires." },
  ERR_FORBIDDEN: { status: 403, sqlstate: "42501", title: "The caller's role does not allow this action." },
  ERR_NOT_FOUND: { status: 404, sqlstate: "42704", title: "The resource does not exist or is not visible to the caller." },
  ERR_ROUTE_NOT_FOUND: { status: 404, sqlstate: "42704", title: "No such API route." },
  ERR_CONFLICT: { status: 409, sqlstate: "23505", title: "The resource already exists or its state forbids the change." },
  ERR_PASSWORD_POLICY: { status: 400, sqlstate: "28P01", title: "The password does not meet the password policy." },
  ERR_INVITATION_INVALID: { status: 400, sqlstate: "28000", title: "The invitation is unknown, expired, revoked or already used." },
  ERR_LAST_OWNER: { status: 409, sqlstate: "42501", title: "The organization must keep at least one Owner." },
  ERR_MFA_REQUIRED: { status: 401, sqlstate: "28000", title: "The session is waiting for its second factor; verify a TOTP code, a security key or a recovery code." },
  ERR_MFA_ENROLLMENT_REQUIRED: { status: 403, sqlstate: "28000", title: "The organization requires a second factor; enroll one before doing anything else." },
  ERR_STEP_UP_REQUIRED: { status: 401, sqlstate: "28000", title: "This action needs a second factor verified within the organization's step-up window; verify one and retry." },
  ERR_MFA_INVALID: { status: 401, sqlstate: "28P01", title: "The second factor is wrong, expired, already used or unknown." },
  ERR_SSO_FAILED: { status: 401, sqlstate: "28000", title: "Single sign-on failed; details.reason says which check (state, issuer, audience, expiry, nonce, PKCE, mapping) refused it." },
  ERR_SSO_NOT_CONFIGURED: { status: 404, sqlstate: "42704", title: "The organization has no single sign-on identity provider configured." },
  ERR_SSO_REQUIRED: { status: 403, sqlstate: "28000", title: "The organization signs in with single sign-on only; passwords work only for its break-glass owners." },
  ERR_SSO_IDP_UNAVAILABLE: { status: 502, sqlstate: "08001", title: "The identity provider could not be reached or answered something that is not OpenID Connect." },
  ERR_GW_FIREWALL_DENIED: { status: 403, sqlstate: "28000", title: "The client address is outside the workspace group's firewall ranges." },
  ERR_GW_SSL_REQUIRED: { status: 403, sqlstate: "28000", title: "The gateway accepts only TLS connections; set sslmode=require or stricter." },
  ERR_GW_TLS_VERSION: { status: 403, sqlstate: "28000", title: "The TLS version is below the workspace group's minimum." },
  ERR_GW_PROTOCOL: { status: 400, sqlstate: "08P01", title: "The client broke the PostgreSQL protocol (malformed, unexpected or oversized message)." },
  ERR_GW_AUTH_FAILED: { status: 401, sqlstate: "28P01", title: "Database authentication failed." },
  ERR_JWKS_UNAVAILABLE: { status: 502, sqlstate: "08001", title: "The workspace group's JSON Web Key Set could not be fetched or is not a key set." },
  ERR_GW_AUTH_TIMEOUT: { status: 408, sqlstate: "08006", title: "The client did not finish TLS and authentication in time." },
  ERR_GW_IDLE_TIMEOUT: { status: 408, sqlstate: "57P05", title: "The session was idle longer than the gateway allows." },
  ERR_GW_TOO_MANY_CONNECTIONS: { status: 429, sqlstate: "53300", title: "The workspace has reached its connection limit." },
  ERR_GW_UNKNOWN_ENDPOINT: { status: 404, sqlstate: "08004", title: "No workspace answers to this endpoint; use the host name or options=endpoint=<workspaceID> parhelion gave you." },
  ERR_WORKSPACE_UNAVAILABLE: { status: 503, sqlstate: "57P03", title: "The workspace is not serving (pending, suspended, resuming, failed or terminated)." },
  ERR_ENGINE: { status: 500, sqlstate: "58000", title: "The workspace engine failed an operation; the logs say why." },
  ERR_VOLUME: { status: 500, sqlstate: "58030", title: "An encrypted volume operation (image, filesystem, mount or encryption key) failed; the logs say why." },
  ERR_VOLUME_KEY_MISMATCH: { status: 500, sqlstate: "58030", title: "The key given does not unlock the workspace group's encrypted volume." },
  ERR_VOLUME_BUSY: { status: 409, sqlstate: "55006", title: "Files on the encrypted volume are still in use; stop the workspace servers using it and retry." },
  ERR_REKEY_REFUSED: { status: 409, sqlstate: "55000", title: "The workspace group's data key cannot be re-keyed now: a re-key is running, its key is unavailable, it has no data key yet, or workspace data is not on encrypted volumes (the problem's reason says which)." },
  ERR_SQL: { status: 400, sqlstate: "42000", title: "The database rejected the statement; the message and SQLSTATE are PostgreSQL's." },
  ERR_KMS_KEY_UNUSABLE: { status: 400, sqlstate: "22023", title: "The customer-managed key cannot be used: it does not exist, is disabled, is not a symmetric encryption key, or parhelion may not use it." },
  ERR_KEY_UNAVAILABLE: { status: 503, sqlstate: "58000", title: "Encrypted data could not be decrypted: its key is unavailable or disabled, or the data was altered." },
  ERR_AUDIT_UNAVAILABLE: { status: 503, sqlstate: "57P03", title: "An audit sink with failMode closed cannot record: no new sessions or statements in its scope until it can." },
  ERR_NOT_READY: { status: 503, sqlstate: "57P03", title: "parhelion is starting or stopping." },
  ERR_STORE_UNAVAILABLE: { status: 503, sqlstate: "08006", title: "The metadata store cannot be reached." },
  ERR_CONFIG: { status: 500, sqlstate: "F0000", title: "The configuration is invalid." },
  ERR_INTERNAL: { status: 500, sqlstate: "XX000", title: "An internal error occurred; the request id identifies it in the logs." },
} as const satisfies Record<string, { status: number; sqlstate: string; title: string }>;

export type ErrorCode = keyof typeof ERROR_CATALOG;

/** Base class of every error parhelion raises on purpose. */
export class ParhelionError extends Error {
  readonly code: ErrorCode;
  /** Extra machine-readable detail safe to show the caller (never secrets). */
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message?: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(message ?? ERROR_CATALOG[code].title, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "ParhelionError";
    this.code = code;
    this.details = options?.details;
  }

  get status(): number {
    return ERROR_CATALOG[this.code].status;
  }
}

export function isParhelionError(err: unknown): err is ParhelionError {
  return err instanceof ParhelionError;
}

/** Throws ERR_NOT_FOUND unless the value is present. */
export function found<T>(value: T | undefined | null, what: string): T {
  if (value === undefined || value === null) throw new ParhelionError("ERR_NOT_FOUND", `${what} not found`);
  return value;
}
