import type { ColumnType, Kysely } from "kysely";

/** Kysely table types of the metadata store. Column names are snake_case; the API maps them. */
type Timestamp = ColumnType<Date, Date | string, Date | string>;
/** A timestamp the database fills by default. */
type GeneratedTimestamp = ColumnType<Date, Date | string | undefined, Date | string>;

export interface OrganizationsTable {
  id: string;
  name: string;
  created_at: GeneratedTimestamp;
  mfa_required: ColumnType<boolean, boolean | undefined, boolean>;
  /** Minutes a verified second factor counts as fresh for step-up actions (1..1440). */
  mfa_step_up_minutes: ColumnType<number, number | undefined, number>;
}

export interface UsersTable {
  id: string;
  org_id: string;
  email: string; // stored lower-case
  first_name: string;
  last_name: string;
  password_hash: string | null; // argon2id PHC string; null until the user sets one
  password_changed_at: Timestamp | null;
  created_at: GeneratedTimestamp;
  removed_at: Timestamp | null;
}

export interface InvitationsTable {
  id: string;
  org_id: string;
  email: string;
  role: string; // organization role granted on acceptance
  team_ids: string[];
  message: string | null;
  token_hash: Buffer; // sha256 of the single-use token
  state: "Pending" | "Accepted" | "Refused" | "Revoked";
  created_by: string | null;
  created_at: GeneratedTimestamp;
  expires_at: Timestamp;
  acted_at: Timestamp | null;
  user_id: string | null;
}

export interface SessionsTable {
  id: string; // public id (uuid)
  token_hash: Buffer; // sha256 of the cookie token
  csrf_hash: Buffer; // sha256 of the CSRF token handed to the console
  user_id: string;
  org_id: string;
  source_ip: string | null;
  created_at: GeneratedTimestamp;
  expires_at: Timestamp;
  last_seen_at: Timestamp | null;
  revoked_at: Timestamp | null;
  /** When a second factor was last verified in this session (null: never). */
  mfa_verified_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface ApiKeysTable {
  id: string;
  org_id: string;
  name: string;
  prefix: string; // public lookup part, shown in lists
  secret_hash: Buffer; // sha256 of the secret part
  role: string; // organization role the key acts with
  created_by: string | null;
  created_at: GeneratedTimestamp;
  expires_at: Timestamp;
  last_used_at: Timestamp | null;
  revoked_at: Timestamp | null;
}

export interface TeamsTable {
  id: string;
  org_id: string;
  name: string;
  description: string;
  created_at: GeneratedTimestamp;
}

export interface TeamMembersTable {
  team_id: string;
  member_type: "user" | "team";
  member_id: string;
}

export interface AccessControlsTable {
  org_id: string;
  resource_type: string; // Organization | Cluster | Team
  resource_id: string;
  principal_type: "user" | "team";
  principal_id: string;
  role: string;
  granted_by: string | null;
  granted_at: GeneratedTimestamp;
}

export interface AuditLogTable {
  seq: string; // bigint, strictly increasing, no gaps by construction
  id: string;
  org_id: string | null;
  created_at: Timestamp;
  type: string;
  source: string;
  result: "SUCCESS" | "DENIED" | "FAILURE";
  actor_type: string;
  actor_id: string | null;
  actor_email: string | null;
  resource_type: string | null;
  resource_id: string | null;
  source_ip: string | null;
  request_id: string | null;
  reason: string;
  attributes: Record<string, unknown>;
  prev_hash: Buffer;
  hash: Buffer;
}

export interface SettingsTable {
  key: string;
  value: unknown;
  updated_at: GeneratedTimestamp;
}

export interface RegionsTable {
  id: string;
  name: string;
  provider: string;
  created_at: GeneratedTimestamp;
}

export type GroupState = "PENDING" | "ACTIVE" | "FAILED" | "TERMINATED";
export type WorkspaceState = "PENDING" | "ACTIVE" | "SUSPENDED" | "RESUMING" | "FAILED" | "TERMINATED";
export type DesiredWorkspaceState = "ACTIVE" | "SUSPENDED" | "TERMINATED";

export interface WorkspaceGroupsTable {
  id: string;
  org_id: string;
  name: string;
  region_id: string;
  firewall_ranges: string[]; // normalised CIDRs
  allow_all_traffic: boolean;
  admin_verifier: string; // SCRAM-SHA-256 verifier of the admin password; the password itself is never stored
  tls_min_version: "1.2" | "1.3";
  /** Statement audit level (src/audit/sql AUDIT_LEVELS); ADMIN-ONLY by default. */
  audit_level: ColumnType<string, string | undefined, string>;
  update_window: { day: number; hour: number } | null;
  expires_at: Timestamp | null;
  state: GroupState;
  created_at: GeneratedTimestamp;
  updated_at: GeneratedTimestamp;
  terminated_at: Timestamp | null;
}

export interface WorkspacesTable {
  id: string;
  org_id: string;
  group_id: string;
  name: string;
  size: string;
  auto_suspend: { suspendType: "IDLE" | "SCHEDULED"; suspendAfterSeconds: number } | null;
  desired_state: DesiredWorkspaceState;
  state: WorkspaceState;
  state_reason: string | null;
  generation: ColumnType<number, number | undefined, number>;
  created_at: GeneratedTimestamp;
  updated_at: GeneratedTimestamp;
  last_resumed_at: Timestamp | null;
  suspended_at: Timestamp | null;
  terminated_at: Timestamp | null;
  last_activity_at: Timestamp | null;
}

export interface MfaTotpTable {
  id: string;
  user_id: string;
  name: string;
  secret: string | null; // legacy plaintext (RFC 4648 base32): only rows from before 0007_keys, re-encrypted at start
  secret_enc: Buffer | null; // the base32 secret in a src/kms envelope bound to mfa_totp.secret:<id>
  created_at: GeneratedTimestamp;
  enroll_expires_at: Timestamp | null; // set while unconfirmed
  confirmed_at: Timestamp | null;
  last_used_step: string | null; // bigint: the last accepted time step (replay protection)
  last_used_at: Timestamp | null;
}

export interface MfaWebauthnCredentialsTable {
  id: string;
  user_id: string;
  name: string;
  credential_id: string; // base64url
  public_key: Buffer; // COSE_Key
  counter: ColumnType<string, string | number, string | number>; // bigint
  transports: string[];
  aaguid: string;
  device_type: string;
  backed_up: boolean;
  created_at: GeneratedTimestamp;
  last_used_at: Timestamp | null;
}

export interface MfaRecoveryCodesTable {
  id: string;
  user_id: string;
  code_hash: Buffer; // sha256 of the normalized code
  created_at: GeneratedTimestamp;
  used_at: Timestamp | null;
}

export interface MfaChallengesTable {
  id: string;
  session_id: string;
  user_id: string;
  ceremony: "registration" | "authentication";
  challenge: string; // base64url
  created_at: GeneratedTimestamp;
  expires_at: Timestamp;
}

export interface SsoProvidersTable {
  org_id: string;
  issuer: string;
  client_id: string;
  client_secret: string | null; // legacy plaintext: only rows from before 0007_keys, re-encrypted at start
  client_secret_enc: Buffer | null; // a src/kms envelope bound to sso_providers.client_secret:<org id>; never returned by the API
  redirect_uri: string;
  ca_pem: string | null; // extra trust anchors for the IdP's TLS certificate
  scopes: string[];
  email_claim: string;
  groups_claim: string;
  first_name_claim: string;
  last_name_claim: string;
  jit: boolean;
  default_role: string | null;
  team_mappings: ColumnType<Array<{ group: string; teamID: string }>, string, string>;
  role_mappings: ColumnType<Array<{ group: string; role: string }>, string, string>;
  sso_only: boolean;
  break_glass_user_ids: string[];
  created_at: GeneratedTimestamp;
  updated_at: GeneratedTimestamp;
}

export interface SsoLoginTransactionsTable {
  id: string;
  org_id: string;
  state_hash: Buffer; // sha256 of the state parameter
  nonce: string;
  code_verifier: string; // PKCE verifier sent to the IdP's token endpoint
  redirect: string | null; // a console path, or a loopback URL of a CLI
  client_challenge: string | null; // CLI: base64url sha256 of its own verifier
  binding_hash: Buffer | null; // console: sha256 of the browser-binding cookie
  source_ip: string | null;
  created_at: Timestamp;
  expires_at: Timestamp;
  used_at: Timestamp | null;
  handoff_hash: Buffer | null; // CLI: sha256 of the one-time code sent to its loopback listener
  handoff_user_id: string | null;
  handoff_expires_at: Timestamp | null;
  handoff_used_at: Timestamp | null;
}

export interface UserExternalIdentitiesTable {
  org_id: string;
  issuer: string;
  subject: string;
  user_id: string;
  created_at: GeneratedTimestamp;
  last_login_at: Timestamp | null;
}

/** An organization's database-credential signing key (private half sealed by src/kms). */
export interface DbCredentialKeysTable {
  org_id: string;
  kid: string;
  public_key: string;
  private_key_enc: Buffer;
  created_at: GeneratedTimestamp;
}

/** Where an organization's (or one workspace group's) audit stream goes; secrets sealed (src/kms). */
export interface AuditSinksTable {
  id: string;
  org_id: string;
  group_id: string | null;
  name: string;
  kind: "file" | "syslog" | "webhook" | "s3";
  config: ColumnType<Record<string, unknown>, string, string>;
  secrets_enc: Buffer | null;
  file_key_enc: Buffer;
  fail_mode: "open" | "closed";
  enabled: boolean;
  created_by: string | null;
  created_at: GeneratedTimestamp;
  updated_at: GeneratedTimestamp;
  deleted_at: Date | null;
}

/** The Ed25519 key that signs an organization's audit stream checkpoints (private key sealed). */
export interface AuditSigningKeysTable {
  org_id: string;
  kid: string;
  public_key: string;
  private_key_enc: Buffer;
  created_at: GeneratedTimestamp;
}

/** A database user's own statement audit level, overriding its workspace group's. */
export interface DatabaseUserAuditLevelsTable {
  workspace_id: string;
  role_name: string;
  audit_level: string;
  updated_at: GeneratedTimestamp;
}

/** A workspace group's JWT login settings (JSON shaped by src/gateway/tokens.ts JwtAuthConfig). */
export interface WorkspaceGroupJwtAuthTable {
  group_id: string;
  org_id: string;
  config: unknown;
  created_at: GeneratedTimestamp;
  updated_at: GeneratedTimestamp;
}

/** The key hierarchy (src/kms): wrapped keys only, never a plaintext key. */
export interface KmsKeysTable {
  id: string; // kek-<uuid> | dek-<uuid>
  kind: "org-kek" | "org-data" | "group-data";
  org_id: string;
  group_id: string | null;
  wrapped_by: string; // the root key's id (org-kek) or the org KEK's id (data keys)
  provider: string | null; // org-kek: the root key provider that wrapped it
  wrapped: Buffer;
  /** pending: a group data key made by a re-key that has not switched yet (never an active-key lookup's answer). */
  state: ColumnType<"active" | "retired" | "pending", "active" | "retired" | "pending" | undefined, "active" | "retired" | "pending">;
  created_at: GeneratedTimestamp;
  retired_at: Timestamp | null;
  /** What wraps it: the organization's KEK (an envelope), or the group's customer-managed key (wrapped_by is its id). */
  wrap: ColumnType<"kek" | "aws-kms" | "pkcs11", "kek" | "aws-kms" | "pkcs11" | undefined, "kek" | "aws-kms" | "pkcs11">;
  /** Counts re-wraps (rotation, moving to or from a customer key); the key itself never changes. */
  wrap_version: ColumnType<number, number | undefined, number>;
  wrapped_at: GeneratedTimestamp;
}

/** A workspace group's customer-managed key (CMEK): the key that wraps its data key instead of the organization's KEK. */
export interface GroupKmsKeysTable {
  group_id: string;
  org_id: string;
  provider: "aws-kms" | "pkcs11";
  key_ref: string; // as the customer named it (key id, ARN or alias; token/label)
  key_id: string; // resolved: the KMS key ARN, or pkcs11:<token>/<label>#<id>
  settings: Record<string, string>; // non-secret (region, token, keyLabel)
  credential_enc: Buffer | null; // pkcs11: the token PIN sealed under the organization's data key
  status: ColumnType<"ENABLED" | "UNAVAILABLE", "ENABLED" | "UNAVAILABLE" | undefined, "ENABLED" | "UNAVAILABLE">;
  status_detail: string | null;
  checked_at: Timestamp | null;
  created_at: GeneratedTimestamp;
  updated_at: GeneratedTimestamp;
}

export type RekeyPhase = "STOPPING" | "COPYING" | "SWITCHING" | "CLEANUP" | "DONE" | "FAILED";

/** A re-key of a workspace group's data key (src/workspaces/rekey.ts): its phase is recorded before each step. */
export interface GroupRekeysTable {
  id: string;
  group_id: string;
  org_id: string;
  phase: RekeyPhase;
  old_key_id: string;
  new_key_id: string | null;
  /** fscrypt key identifiers (not secret: one-way functions of the volume keys). */
  old_identifier: string | null;
  new_identifier: string | null;
  bytes_total: ColumnType<string, number | string | undefined, number | string>;
  bytes_copied: ColumnType<string, number | string | undefined, number | string>;
  workspace_ids: ColumnType<string[], string | undefined, string>;
  error: string | null;
  requested_by: string;
  started_at: GeneratedTimestamp;
  updated_at: GeneratedTimestamp;
  finished_at: Timestamp | null;
}

export interface Database {
  organizations: OrganizationsTable;
  users: UsersTable;
  invitations: InvitationsTable;
  sessions: SessionsTable;
  api_keys: ApiKeysTable;
  teams: TeamsTable;
  team_members: TeamMembersTable;
  access_controls: AccessControlsTable;
  audit_log: AuditLogTable;
  settings: SettingsTable;
  regions: RegionsTable;
  workspace_groups: WorkspaceGroupsTable;
  workspaces: WorkspacesTable;
  workspace_group_jwt_auth: WorkspaceGroupJwtAuthTable;
  db_credential_keys: DbCredentialKeysTable;
  database_user_audit_levels: DatabaseUserAuditLevelsTable;
  audit_sinks: AuditSinksTable;
  audit_signing_keys: AuditSigningKeysTable;
  sso_providers: SsoProvidersTable;
  sso_login_transactions: SsoLoginTransactionsTable;
  user_external_identities: UserExternalIdentitiesTable;
  mfa_totp: MfaTotpTable;
  mfa_webauthn_credentials: MfaWebauthnCredentialsTable;
  mfa_recovery_codes: MfaRecoveryCodesTable;
  mfa_challenges: MfaChallengesTable;
  kms_keys: KmsKeysTable;
  group_kms_keys: GroupKmsKeysTable;
  group_rekeys: GroupRekeysTable;
}

export type Db = Kysely<Database>;
