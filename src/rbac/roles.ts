import { ORG_ROLES, type OrgRole } from "../identity/types.js";

/** Every permission a route can require. */
export const PERMISSIONS = [
  "org:read",
  "org:write",
  "roles:read",
  "users:read",
  "users:write",
  "invitations:read",
  "invitations:write",
  "teams:read",
  "teams:write",
  "accessControls:read",
  "accessControls:write",
  "apiKeys:read",
  "apiKeys:write",
  "auditLogs:read",
  /** Audit sinks (read: Auditor too; write: Owner and Admin, with step-up). */
  "auditSinks:read",
  "auditSinks:write",
  "sso:read",
  "sso:write",
  "workspaceGroups:read",
  "workspaceGroups:write",
  "workspaces:read",
  "workspaces:write",
  /** Mint short-lived database credentials for oneself (POST /v1/workspaces/{id}/credentials). */
  "workspaces:connect",
] as const;
export type Permission = (typeof PERMISSIONS)[number];

/** Resource types grants attach to. "Cluster" is Helios's name for a workspace group. */
export const RESOURCE_TYPES = ["Organization", "Cluster", "Team"] as const;
export type ResourceType = (typeof RESOURCE_TYPES)[number];

export interface RoleDefinition {
  role: string;
  resourceType: ResourceType;
  description: string;
  permissions: Permission[];
  inherits: Array<{ resourceType: ResourceType; role: string }>;
  isCustom: false;
}

const READS: Permission[] = PERMISSIONS.filter((p) => p.endsWith(":read"));
const ALL: Permission[] = [...PERMISSIONS];

const ORG_ROLE_DEFS: Record<OrgRole, { description: string; permissions: Permission[] }> = {
  Owner: { description: "Everything, including granting Owner.", permissions: ALL },
  Admin: { description: "Everything except granting or revoking Owner.", permissions: ALL },
  Operator: {
    description: "Creates and runs workspace groups and workspaces; no identity, keys or audit logs.",
    permissions: ["org:read", "roles:read", "workspaceGroups:read", "workspaceGroups:write", "workspaces:read", "workspaces:write", "workspaces:connect"],
  },
  Auditor: { description: "Reads everything, audit logs included; changes nothing (database credentials are read-only).", permissions: [...READS, "workspaces:connect"] },
  Member: { description: "Reads the organization and what it is granted on workspace groups and teams.", permissions: ["org:read", "roles:read"] },
};

const CLUSTER_ROLE_DEFS: Record<string, { description: string; permissions: Permission[] }> = {
  Owner: { description: "Manages the workspace group, its workspaces and its grants.", permissions: ["workspaceGroups:read", "workspaceGroups:write", "workspaces:read", "workspaces:write", "workspaces:connect", "accessControls:read", "accessControls:write"] },
  Writer: { description: "Manages the group's workspaces.", permissions: ["workspaceGroups:read", "workspaces:read", "workspaces:write", "workspaces:connect"] },
  Reader: { description: "Reads the group and its workspaces (database credentials are read-only).", permissions: ["workspaceGroups:read", "workspaces:read", "workspaces:connect"] },
};

const TEAM_ROLE_DEFS: Record<string, { description: string; permissions: Permission[] }> = {
  Owner: { description: "Manages the team's members and grants.", permissions: ["teams:read", "teams:write", "accessControls:read", "accessControls:write"] },
  Reader: { description: "Reads the team.", permissions: ["teams:read"] },
};

const DEFS: Record<ResourceType, Record<string, { description: string; permissions: Permission[] }>> = {
  Organization: ORG_ROLE_DEFS,
  Cluster: CLUSTER_ROLE_DEFS,
  Team: TEAM_ROLE_DEFS,
};

/** Accepts Helios's resource type names and parhelion's aliases. */
export function parseResourceType(s: string): ResourceType | undefined {
  const t = s.toLowerCase();
  if (t === "organization" || t === "organizations") return "Organization";
  if (t === "cluster" || t === "workspacegroup" || t === "workspacegroups" || t === "clustergroup") return "Cluster";
  if (t === "team" || t === "teams") return "Team";
  return undefined;
}

/** Role definitions in Helios's RoleDefinition shape. */
export function roleDefinitions(type: ResourceType): RoleDefinition[] {
  return Object.entries(DEFS[type]).map(([role, d]) => ({
    role,
    resourceType: type,
    description: d.description,
    permissions: [...d.permissions],
    inherits: [],
    isCustom: false,
  }));
}

export function isRole(type: ResourceType, role: string): boolean {
  return Object.hasOwn(DEFS[type], role);
}

export function permissionsOf(type: ResourceType, role: string): readonly Permission[] {
  return DEFS[type][role]?.permissions ?? [];
}

export function isOrgRole(s: string): s is OrgRole {
  return (ORG_ROLES as readonly string[]).includes(s);
}

/** Rank for "may this principal hand out that role": lower is stronger. */
export function orgRoleRank(role: OrgRole): number {
  return ORG_ROLES.indexOf(role);
}
