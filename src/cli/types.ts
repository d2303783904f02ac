/** Shapes of the Management API answers the CLI reads (the contract is src/api/routes/*.ts). */

export interface Organization { orgID: string; name: string; createdAt: string }
export interface WhoAmI { kind: "user" | "apiKey"; orgID: string; userID: string | null; email: string | null; apiKeyID: string | null; sessionID: string | null; roles: string[] }
export interface User { userID: string; email: string; firstName: string; lastName: string; createdAt: string }
export interface Invitation {
  invitationID: string; email: string; state: string; teamIDs: string[]; message: string | null; createdAt: string;
  actedAt: string | null; expiresAt: string; expired: boolean; role: string; token?: string;
}
export interface IdentityRole { role: string; resourceType: string; resourceID: string; viaTeamID?: string }
export interface UserInfo { userID: string; email: string; firstName: string; lastName: string }
export interface TeamInfo { teamID: string; name: string; description: string }
export interface Team extends TeamInfo { createdAt: string; memberUsers: UserInfo[]; memberTeams: TeamInfo[] }
export interface ResourceRoleView { role: string; users: UserInfo[]; teams: TeamInfo[] }
export interface RoleDefinition { role: string; resourceType: string; description: string; permissions: string[]; inherits: Array<{ resourceType: string; role: string }>; isCustom: boolean }
export interface ApiKey {
  apiKeyID: string; name: string; prefix: string; role: string; createdBy: string | null; createdAt: string; expiresAt: string;
  lastUsedAt: string | null; revokedAt: string | null; state: "ACTIVE" | "EXPIRED" | "REVOKED"; key?: string;
}
export interface AuditRecord {
  auditID: string; orgID: string | null; createdAt: string; type: string; source: string; result: string; reason: string;
  userID: string | null; userEmail: string | null; userType: string; resourceType: string | null; resourceID: string | null;
  sourceIP: string | null; requestID: string | null; attributes: Record<string, unknown>; seq: string;
}
export interface AuditPage { auditLogs: AuditRecord[]; nextToken?: string }
export interface VerifyResult { ok: boolean; checked: number; headSeq: string | null; headHash: string | null; problems: Array<{ seq: string; kind: string; detail: string }> }
export interface WorkspaceGroup {
  workspaceGroupID: string; name: string; regionID: string; state: string; allowAllTraffic: boolean; firewallRanges: string[];
  createdAt: string; expiresAt?: string; terminatedAt?: string; tlsMinVersion: string; auditLevel: string;
}
export interface Workspace {
  workspaceID: string; workspaceGroupID: string; name: string; endpoint: string; port: number; size: string; state: string;
  stateReason?: string; createdAt: string; lastResumedAt?: string; terminatedAt?: string;
}
