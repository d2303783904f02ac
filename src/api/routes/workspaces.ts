import { z } from "zod";
import { defineRoute } from "../route.js";
import { Id, Name, heliosUnsupported } from "../schemas.js";
import { listAccessControls, updateAccessControls } from "../../rbac/accessControls.js";
import { AccessControlAction, GroupParams, NO_GROUP, ResourceRoleView, WorkspaceParams, groupResource, workspaceResource } from "./shared.js";
import { WORKSPACE_SIZE_NAMES } from "../../workspaces/sizes.js";
import { AUDIT_LEVELS } from "../../audit/sql/classify.js";
import type { CustomerKeySpec } from "../../kms/cmek.js";

const QueryBool = z.enum(["true", "false"]).transform((v) => v === "true");
const Cidr = z.string().min(1).max(64);
const FirewallRanges = z.array(Cidr).max(1000);
const UpdateWindow = z.object({ day: z.number().int().min(0).max(6), hour: z.number().int().min(0).max(23) }).strict();
const IsoDate = z.iso.datetime({ offset: true, message: "must be an ISO 8601 date-time" });
const TlsMinVersion = z.enum(["1.2", "1.3"]);
const AuditLevelSchema = z.enum(AUDIT_LEVELS);
const Password = z.string().min(1).max(256);
/** Workspace names become part of nothing security-relevant, but stay DNS- and shell-friendly like Helios's. */
const WorkspaceName = z.string().regex(/^[a-z][a-z0-9-]{0,31}$/, { message: "must be 1-32 lower-case letters, digits and dashes, starting with a letter" });
const Size = z.enum(WORKSPACE_SIZE_NAMES as unknown as [string, ...string[]]);
const AutoSuspend = z.object({ suspendType: z.enum(["IDLE", "SCHEDULED"]), suspendAfterSeconds: z.number().int().min(60).max(30 * 86400) }).strict()
  .refine((a) => a.suspendType === "IDLE", { message: "only suspendType IDLE is supported", params: { code: "ERR_FIELD_NOT_SUPPORTED" } });
/** PostgreSQL identifiers as parhelion accepts them for databases and users (the engine checks reserved names). */
const Identifier = z.string().regex(/^[A-Za-z_][A-Za-z0-9_$]{0,62}$/, { message: "must be an identifier: a letter or underscore, then letters, digits, _ or $ (63 at most)" });

/** A customer-managed key: parhelion's kmsKey object. The endpoint or PKCS#11 module is the operator's setting, never the caller's. */
const KmsKeyID = z.string().min(1).max(2048).regex(/^[A-Za-z0-9:/_.+=@-]+$/, { message: "must be a key id, ARN or alias (letters, digits and :/_.+=@-)" });
export const KmsKey = z.discriminatedUnion("provider", [
  z.object({
    provider: z.literal("aws-kms"), keyID: KmsKeyID.describe("The AWS KMS key: id, ARN or alias/... of a symmetric ENCRYPT_DECRYPT key."),
    region: z.string().regex(/^[a-z0-9-]{1,32}$/, { message: "must be an AWS region name" }).optional().describe("The key's region when keyID is not an ARN (default: the operator's cmekAwsRegion)."),
  }).strict(),
  z.object({
    provider: z.literal("pkcs11"), keyID: z.string().min(3).max(161).regex(/^[^/\u0000-\u001f]{1,32}\/[^\u0000-\u001f]{1,128}$/, { message: "must be <token label>/<key label>" }).describe("<token label>/<key label> of an AES-256 key on the HSM the operator connected (cmekHsmModule)."),
    pin: z.string().min(1).max(256).describe("The token's user PIN: stored sealed under the organization's data key, never shown again."),
  }).strict(),
]);
const KmsKeyView = z.object({
  provider: z.enum(["aws-kms", "pkcs11"]), keyID: z.string().describe("The resolved key: the KMS key ARN, or pkcs11:<token>/<label>#<id>."),
  status: z.enum(["ENABLED", "UNAVAILABLE"]).describe("UNAVAILABLE: the last check could not unwrap the group's data key with it (disabled, deleted, unreachable); the group's workspaces are stopped."),
  statusDetail: z.string().optional(), checkedAt: z.string().optional(),
});

const Group = z.object({
  workspaceGroupID: Id, name: z.string(), regionID: Id, state: z.enum(["PENDING", "ACTIVE", "FAILED", "TERMINATED"]), allowAllTraffic: z.boolean(),
  firewallRanges: z.array(z.string()), updateWindow: UpdateWindow.optional(), createdAt: z.string(), expiresAt: z.string().optional(),
  terminatedAt: z.string().optional(), tlsMinVersion: TlsMinVersion, auditLevel: AuditLevelSchema,
  kmsKey: KmsKeyView.nullable().describe("The customer-managed key wrapping the group's data key; null: the platform's key."),
});
const Workspace = z.object({
  workspaceID: Id, workspaceGroupID: Id, name: z.string(), endpoint: z.string().describe("Host name to connect to (TLS SNI picks the workspace)."),
  port: z.number().int().describe("The gateway port (parhelion)."), size: z.string(),
  state: z.enum(["PENDING", "ACTIVE", "SUSPENDED", "RESUMING", "FAILED", "TERMINATED"]), stateReason: z.string().optional(), createdAt: z.string(),
  lastResumedAt: z.string().optional(), terminatedAt: z.string().optional(), autoSuspend: z.object({ suspendType: z.string(), suspendAfterSeconds: z.number() }).optional(),
});


const GroupCreate = z.object({
  name: Name, regionID: Id, firewallRanges: FirewallRanges.optional().describe("IPv4/IPv6 CIDRs allowed to connect; default: this host only (127.0.0.1/32, ::1/128)."),
  adminPassword: Password.optional().describe("Password of the workspaces' admin user; generated and returned once when absent."),
  allowAllTraffic: z.boolean().optional(), expiresAt: IsoDate.optional(), updateWindow: UpdateWindow.optional(), tlsMinVersion: TlsMinVersion.optional(),
  auditLevel: AuditLevelSchema.optional().describe("Statement audit (Helios's levels); default ADMIN-ONLY: DDL, role and privilege changes, logins."),
  kmsKey: KmsKey.optional().describe("Customer-managed key (CMEK) wrapping the group's data key from the start (step-up). The key is opened and probed (a wrap and unwrap) first: an unusable key answers ERR_KMS_KEY_UNUSABLE and no group is created. Default: the platform's key."),
  dataBucketKMSKeyID: KmsKeyID.optional().describe("Helios's field: an AWS KMS key id or ARN, the same as kmsKey {provider: aws-kms, keyID} (step-up; probed first, ERR_KMS_KEY_UNUSABLE and no group when unusable)."),
  backupBucketKMSKeyID: heliosUnsupported("backupBucketKMSKeyID"),
  smartDR: heliosUnsupported("smartDR"), highAvailabilityTwoZones: heliosUnsupported("highAvailabilityTwoZones"),
}).strict().superRefine((b, ctx) => {
  if (b.kmsKey !== undefined && b.dataBucketKMSKeyID !== undefined) ctx.addIssue({ code: "custom", path: ["kmsKey"], message: "give kmsKey or dataBucketKMSKeyID, not both" });
});

/** The customer key a create or update names (kmsKey, or Helios's dataBucketKMSKeyID as an aws-kms key). */
function kmsSpec(b: { kmsKey?: z.infer<typeof KmsKey> | null | undefined; dataBucketKMSKeyID?: string | null | undefined }): CustomerKeySpec | null | undefined {
  if (b.kmsKey !== undefined) return b.kmsKey;
  if (b.dataBucketKMSKeyID === undefined) return undefined;
  return b.dataBucketKMSKeyID === null ? null : { provider: "aws-kms", keyID: b.dataBucketKMSKeyID };
}

/** A customer key as audited: never its PIN. */
function kmsAudit(spec: CustomerKeySpec | null): Record<string, string> | null {
  return spec === null ? null : { provider: spec.provider, keyID: spec.keyID, ...("region" in spec && spec.region ? { region: spec.region } : {}), ...("pin" in spec ? { pin: "(set)" } : {}) };
}

/** Step-up for the group's security settings (network, TLS, audit level, customer key), not for a rename. */
const GROUP_STEP_UP_FIELDS = ["firewallRanges", "allowAllTraffic", "tlsMinVersion", "auditLevel", "kmsKey", "dataBucketKMSKeyID"];
const GroupUpdate = z.object({
  name: Name.optional(), adminPassword: Password.optional(), firewallRanges: FirewallRanges.optional(), expiresAt: IsoDate.optional(),
  allowAllTraffic: z.boolean().optional(), updateWindow: UpdateWindow.optional(), tlsMinVersion: TlsMinVersion.optional(),
  auditLevel: AuditLevelSchema.optional().describe("Statement audit level for sessions that start after the change (step-up)."),
  kmsKey: KmsKey.nullable().optional().describe("Customer-managed key (CMEK): re-wraps the group's data key under it online (no data rewrite); null moves back to the platform key. Changed on its own, in a request with no other field."),
  dataBucketKMSKeyID: KmsKeyID.nullable().optional().describe("Helios's field: an AWS KMS key id or ARN, the same as kmsKey {provider: aws-kms, keyID}; null: the platform key."),
}).strict().superRefine((b, ctx) => {
  const kms = [b.kmsKey, b.dataBucketKMSKeyID].filter((v) => v !== undefined).length;
  if (kms > 1) ctx.addIssue({ code: "custom", path: ["kmsKey"], message: "give kmsKey or dataBucketKMSKeyID, not both" });
  else if (kms === 1 && Object.entries(b).some(([k, v]) => v !== undefined && k !== "kmsKey" && k !== "dataBucketKMSKeyID")) {
    ctx.addIssue({ code: "custom", path: ["kmsKey"], message: "the group's key is changed on its own: send the other fields in another request" });
  }
});

const WorkspaceCreate = z.object({
  workspaceGroupID: Id, name: WorkspaceName, size: Size.default("S-00"), autoSuspend: AutoSuspend.optional(),
  enableKai: heliosUnsupported("enableKai"), cacheConfig: heliosUnsupported("cacheConfig"), scaleFactor: heliosUnsupported("scaleFactor"),
}).strict();
const WorkspaceUpdate = z.object({
  name: WorkspaceName.optional(), size: Size.optional(), autoSuspend: AutoSuspend.nullable().optional(),
  enableKai: heliosUnsupported("enableKai"), cacheConfig: heliosUnsupported("cacheConfig"), scaleFactor: heliosUnsupported("scaleFactor"),
  deploymentType: heliosUnsupported("deploymentType"),
}).strict();

export const workspaceRoutes = [
  defineRoute({
    method: "GET", path: "/v1/regions", operationId: "listRegions", tag: "Regions",
    summary: "Where this install can place workspaces (today: this host).", access: "workspaceGroups:read", listOf: "Cluster",
    response: z.array(z.object({ regionID: Id, region: z.string(), provider: z.string() })),
    handler: async ({ services }) => services.workspaces.listRegions(),
  }),
  defineRoute({
    method: "POST", path: "/v1/workspaceGroups", operationId: "createWorkspaceGroup", tag: "Workspace groups", auditType: "WorkspaceGroupCreate",
    // Step-up only when the group starts with a customer-managed key (the settings PATCH asks it for).
    stepUp: (b) => b !== null && typeof b === "object" && ["kmsKey", "dataBucketKMSKeyID"].some((k) => Object.hasOwn(b, k)),
    summary: "Creates a workspace group: a security boundary with its own firewall, certificate and admin password, and optionally a customer-managed key.", access: "workspaceGroups:write",
    body: GroupCreate, response: z.object({ workspaceGroupID: Id, adminPassword: z.string().optional() }),
    handler: async ({ body, principal, services, audit }) => {
      const { kmsKey: _k, dataBucketKMSKeyID: _a, backupBucketKMSKeyID: _b, smartDR: _c, highAvailabilityTwoZones: _d, ...input } = body;
      const spec = kmsSpec(body) ?? undefined;
      audit.attributes = {
        name: body.name, firewallRanges: body.firewallRanges ?? "default", allowAllTraffic: body.allowAllTraffic ?? false, tlsMinVersion: body.tlsMinVersion ?? "1.2", auditLevel: body.auditLevel ?? "ADMIN-ONLY",
        kmsKey: spec === undefined ? null : kmsAudit(spec),
      };
      const { dataKey, ...r } = await services.workspaces.createGroup(principal!.orgId, { ...input, kmsKey: spec });
      audit.resource = { type: "WorkspaceGroup", id: r.workspaceGroupID };
      audit.attributes = { ...audit.attributes, adminPasswordGenerated: r.adminPassword !== undefined, ...(dataKey ? { dataKeyID: dataKey.keyID, wrappedBy: dataKey.wrappedBy, keyVersion: dataKey.keyVersion } : {}) };
      return r;
    },
  }),
  defineRoute({
    method: "GET", path: "/v1/workspaceGroups", operationId: "listWorkspaceGroups", tag: "Workspace groups",
    summary: "Workspace groups of the organization (a Member sees those it holds a role on).", access: "workspaceGroups:read", listOf: "Cluster",
    query: z.object({ includeTerminated: QueryBool.default(false) }).strict(), response: z.array(Group),
    handler: async ({ query, principal, services, visible }) => services.workspaces.listGroups(principal!.orgId, { includeTerminated: query.includeTerminated, only: visible === "all" ? undefined : visible }),
  }),
  defineRoute({
    method: "GET", path: "/v1/workspaceGroups/{workspaceGroupID}", operationId: "getWorkspaceGroup", tag: "Workspace groups",
    summary: "One workspace group.", access: "workspaceGroups:read", resource: groupResource, params: GroupParams, response: Group,
    handler: async ({ params, principal, services }) => services.workspaces.getGroup(principal!.orgId, params.workspaceGroupID),
  }),
  defineRoute({
    method: "PATCH", path: "/v1/workspaceGroups/{workspaceGroupID}", operationId: "updateWorkspaceGroup", tag: "Workspace groups", auditType: "WorkspaceGroupUpdate",
    // Step-up only for the network and TLS settings (a rename is not sensitive).
    stepUp: (b) => b !== null && typeof b === "object" && GROUP_STEP_UP_FIELDS.some((k) => Object.hasOwn(b, k)),
    summary: "Changes a group's name, firewall, TLS minimum, admin password, expiry, update window or customer-managed key.", access: "workspaceGroups:write", resource: groupResource,
    params: GroupParams, body: GroupUpdate, response: z.object({ workspaceGroupID: Id }),
    handler: async ({ params, body, principal, services, audit }) => {
      audit.resource = { type: "WorkspaceGroup", id: params.workspaceGroupID };
      const spec = kmsSpec(body);
      if (spec !== undefined) {
        audit.attributes = { change: { kmsKey: kmsAudit(spec) } };
        const w = await services.workspaces.setGroupKmsKey(principal!.orgId, params.workspaceGroupID, spec);
        audit.attributes = { ...audit.attributes, dataKeyID: w.keyID, wrappedBy: w.wrappedBy, keyVersion: w.keyVersion };
        return { workspaceGroupID: params.workspaceGroupID };
      }
      const { adminPassword, kmsKey: _k, dataBucketKMSKeyID: _d, ...rest } = body;
      audit.attributes = { change: { ...rest, ...(adminPassword !== undefined ? { adminPassword: "(changed)" } : {}) } };
      return services.workspaces.updateGroup(principal!.orgId, params.workspaceGroupID, body);
    },
  }),
  defineRoute({
    method: "DELETE", path: "/v1/workspaceGroups/{workspaceGroupID}", operationId: "deleteWorkspaceGroup", tag: "Workspace groups", auditType: "WorkspaceGroupDelete",
    summary: "Terminates a group (with force=true, its workspaces too).", access: "workspaceGroups:write", resource: groupResource,
    params: GroupParams, query: z.object({ force: QueryBool.default(false) }).strict(), response: z.object({ workspaceGroupID: Id }),
    handler: async ({ params, query, principal, services, audit }) => {
      audit.resource = { type: "WorkspaceGroup", id: params.workspaceGroupID };
      audit.attributes = { force: query.force };
      return services.workspaces.deleteGroup(principal!.orgId, params.workspaceGroupID, query.force);
    },
  }),
  defineRoute({
    method: "GET", path: "/v1/workspaceGroups/{workspaceGroupID}/accessControls", operationId: "getWorkspaceGroupAccessControls", tag: "Access control",
    summary: "Roles on a workspace group and who holds them.", access: "accessControls:read", resource: groupResource, params: GroupParams, response: z.array(ResourceRoleView),
    handler: async ({ params, principal, services }) => {
      await services.workspaces.groupRow(principal!.orgId, params.workspaceGroupID);
      return listAccessControls(services.db, principal!.orgId, "Cluster", params.workspaceGroupID);
    },
  }),
  defineRoute({
    method: "PATCH", path: "/v1/workspaceGroups/{workspaceGroupID}/accessControls", operationId: "updateWorkspaceGroupAccessControls", tag: "Access control", auditType: "WorkspaceGroupAccessControlsUpdate", stepUp: true,
    summary: "Grant and revoke roles (Owner, Writer, Reader) on a workspace group.", access: "accessControls:write", resource: groupResource, params: GroupParams,
    body: AccessControlAction, response: z.object({ resourceID: Id }),
    handler: async ({ params, body, principal, grants, services, audit }) => {
      audit.resource = { type: "WorkspaceGroup", id: params.workspaceGroupID };
      audit.attributes = { grants: body.grants ?? [], revokes: body.revokes ?? [] };
      await services.workspaces.groupRow(principal!.orgId, params.workspaceGroupID);
      return updateAccessControls(services.db, principal!.orgId, "Cluster", params.workspaceGroupID, body, { userId: principal!.userId, orgRoles: grants.orgRoles });
    },
  }),
  defineRoute({
    method: "POST", path: "/v1/workspaces", operationId: "createWorkspace", tag: "Workspaces", auditType: "WorkspaceCreate",
    summary: "Creates a workspace (a PostgreSQL server) in a group; it is PENDING until its server runs.", access: "workspaces:write",
    // A group Writer may create workspaces in its group: the group named in the (not yet validated) body decides.
    resource: (_p, { rawBody }) => {
      const g = (rawBody as { workspaceGroupID?: unknown } | null)?.workspaceGroupID;
      return { type: "Cluster" as const, id: typeof g === "string" ? g : NO_GROUP };
    },
    body: WorkspaceCreate, response: z.object({ workspaceID: Id }),
    handler: async ({ body, principal, services, audit }) => {
      const { enableKai: _k, cacheConfig: _c, scaleFactor: _s, ...input } = body;
      const r = await services.workspaces.createWorkspace(principal!.orgId, input);
      audit.resource = { type: "Workspace", id: r.workspaceID };
      audit.attributes = { workspaceGroupID: body.workspaceGroupID, name: body.name, size: body.size };
      return r;
    },
  }),
  defineRoute({
    method: "GET", path: "/v1/workspaces", operationId: "listWorkspaces", tag: "Workspaces",
    summary: "Workspaces, optionally of one group (a Member sees those of groups it holds a role on).", access: "workspaces:read", listOf: "Cluster",
    query: z.object({ workspaceGroupID: Id.optional(), includeTerminated: QueryBool.default(false) }).strict(), response: z.array(Workspace),
    handler: async ({ query, principal, services, visible }) => services.workspaces.listWorkspaces(principal!.orgId, { workspaceGroupID: query.workspaceGroupID, includeTerminated: query.includeTerminated, onlyGroups: visible === "all" ? undefined : visible }),
  }),
  defineRoute({
    method: "GET", path: "/v1/workspaces/{workspaceID}", operationId: "getWorkspace", tag: "Workspaces",
    summary: "One workspace with its endpoint and state.", access: "workspaces:read", resource: workspaceResource, params: WorkspaceParams, response: Workspace,
    handler: async ({ params, principal, services }) => services.workspaces.getWorkspace(principal!.orgId, params.workspaceID),
  }),
  defineRoute({
    method: "PATCH", path: "/v1/workspaces/{workspaceID}", operationId: "updateWorkspace", tag: "Workspaces", auditType: "WorkspaceUpdate",
    summary: "Renames, resizes (the server restarts with the new limits) or changes autoSuspend.", access: "workspaces:write", resource: workspaceResource,
    params: WorkspaceParams, body: WorkspaceUpdate, response: z.object({ workspaceID: Id }),
    handler: async ({ params, body, principal, services, audit }) => {
      audit.resource = { type: "Workspace", id: params.workspaceID };
      audit.attributes = { change: body };
      return services.workspaces.updateWorkspace(principal!.orgId, params.workspaceID, { name: body.name, size: body.size, autoSuspend: body.autoSuspend });
    },
  }),
  defineRoute({
    method: "DELETE", path: "/v1/workspaces/{workspaceID}", operationId: "deleteWorkspace", tag: "Workspaces", auditType: "WorkspaceDelete",
    summary: "Terminates a workspace: its server stops and its data is removed.", access: "workspaces:write", resource: workspaceResource,
    params: WorkspaceParams, response: z.object({ workspaceID: Id }),
    handler: async ({ params, principal, services, audit }) => {
      audit.resource = { type: "Workspace", id: params.workspaceID };
      return services.workspaces.delete(principal!.orgId, params.workspaceID);
    },
  }),
  defineRoute({
    method: "POST", path: "/v1/workspaces/{workspaceID}/suspend", operationId: "suspendWorkspace", tag: "Workspaces", auditType: "WorkspaceSuspend",
    summary: "Stops the workspace's server and frees its memory; data is kept.", access: "workspaces:write", resource: workspaceResource,
    params: WorkspaceParams, response: z.object({ workspaceID: Id }),
    handler: async ({ params, principal, services, audit }) => {
      audit.resource = { type: "Workspace", id: params.workspaceID };
      return services.workspaces.suspend(principal!.orgId, params.workspaceID);
    },
  }),
  defineRoute({
    method: "POST", path: "/v1/workspaces/{workspaceID}/resume", operationId: "resumeWorkspace", tag: "Workspaces", auditType: "WorkspaceResume",
    summary: "Starts a suspended workspace's server again.", access: "workspaces:write", resource: workspaceResource,
    params: WorkspaceParams, response: z.object({ workspaceID: Id }),
    handler: async ({ params, principal, services, audit }) => {
      audit.resource = { type: "Workspace", id: params.workspaceID };
      return services.workspaces.resume(principal!.orgId, params.workspaceID);
    },
  }),
  defineRoute({
    method: "GET", path: "/v1/workspaces/{workspaceID}/databases", operationId: "listWorkspaceDatabases", tag: "Databases",
    summary: "Databases in a workspace.", access: "workspaces:read", resource: workspaceResource, params: WorkspaceParams,
    response: z.array(z.object({ name: z.string(), owner: z.string() })),
    handler: async ({ params, principal, services }) => services.databases.listDatabases(principal!.orgId, params.workspaceID),
  }),
  defineRoute({
    method: "POST", path: "/v1/workspaces/{workspaceID}/databases", operationId: "createWorkspaceDatabase", tag: "Databases", auditType: "DatabaseCreate",
    summary: "Creates a database in a workspace.", access: "workspaces:write", resource: workspaceResource, params: WorkspaceParams,
    body: z.object({ name: Identifier, owner: Identifier.optional() }).strict(), response: z.object({ name: z.string() }),
    handler: async ({ params, body, principal, services, audit }) => {
      audit.resource = { type: "Workspace", id: params.workspaceID };
      audit.attributes = { database: body.name, owner: body.owner ?? "admin" };
      return services.databases.createDatabase(principal!.orgId, params.workspaceID, body);
    },
  }),
  defineRoute({
    method: "DELETE", path: "/v1/workspaces/{workspaceID}/databases/{databaseName}", operationId: "dropWorkspaceDatabase", tag: "Databases", auditType: "DatabaseDrop",
    summary: "Drops a database (sessions on it are ended).", access: "workspaces:write", resource: workspaceResource,
    params: z.object({ workspaceID: Id, databaseName: Identifier }).strict(), response: z.object({ name: z.string() }),
    handler: async ({ params, principal, services, audit }) => {
      audit.resource = { type: "Workspace", id: params.workspaceID };
      audit.attributes = { database: params.databaseName };
      return services.databases.dropDatabase(principal!.orgId, params.workspaceID, params.databaseName);
    },
  }),
  defineRoute({
    method: "GET", path: "/v1/workspaces/{workspaceID}/users", operationId: "listWorkspaceUsers", tag: "Databases",
    summary: "Database users (roles) in a workspace.", access: "workspaces:read", resource: workspaceResource, params: WorkspaceParams,
    response: z.array(z.object({ userName: z.string(), canLogin: z.boolean(), createdb: z.boolean(), createrole: z.boolean(), memberOf: z.array(z.string()), auditLevel: AuditLevelSchema.nullable().describe("The user's own statement audit level; null: the workspace group's.") })),
    handler: async ({ params, principal, services }) => services.databases.listUsers(principal!.orgId, params.workspaceID),
  }),
  defineRoute({
    method: "POST", path: "/v1/workspaces/{workspaceID}/users", operationId: "createWorkspaceUser", tag: "Databases", auditType: "DatabaseUserCreate",
    summary: "Creates a database user with a SCRAM password (generated and returned once when absent).", access: "workspaces:write", resource: workspaceResource, params: WorkspaceParams,
    body: z.object({ userName: Identifier, password: Password.optional(), createdb: z.boolean().optional(), createrole: z.boolean().optional(), grantRoles: z.array(Identifier).max(64).optional() }).strict(),
    response: z.object({ userName: z.string(), password: z.string().optional() }),
    handler: async ({ params, body, principal, services, audit }) => {
      audit.resource = { type: "Workspace", id: params.workspaceID };
      audit.attributes = { userName: body.userName, createdb: body.createdb ?? false, createrole: body.createrole ?? false, grantRoles: body.grantRoles ?? [], passwordGenerated: body.password === undefined };
      return services.databases.createUser(principal!.orgId, params.workspaceID, body);
    },
  }),
  defineRoute({
    method: "PATCH", path: "/v1/workspaces/{workspaceID}/users/{userName}", operationId: "updateWorkspaceUser", tag: "Databases", auditType: "DatabaseUserUpdate",
    // Step-up for audit settings (a password change is not one).
    stepUp: (b) => b !== null && typeof b === "object" && Object.hasOwn(b, "auditLevel"),
    summary: "Sets a database user's password and/or its own statement audit level (null: back to the group's; applies to sessions that start afterwards).", access: "workspaces:write", resource: workspaceResource,
    params: z.object({ workspaceID: Id, userName: Identifier }).strict(),
    body: z.object({ password: Password.optional(), auditLevel: AuditLevelSchema.nullable().optional() }).strict().refine((b) => b.password !== undefined || b.auditLevel !== undefined, { message: "give password or auditLevel" }),
    response: z.object({ userName: z.string() }),
    handler: async ({ params, body, principal, services, audit }) => {
      audit.resource = { type: "Workspace", id: params.workspaceID };
      audit.attributes = { userName: params.userName, ...(body.password !== undefined ? { password: "(changed)" } : {}), ...(body.auditLevel !== undefined ? { auditLevel: body.auditLevel } : {}) };
      if (body.auditLevel !== undefined) await services.workspaces.setUserAuditLevel(principal!.orgId, params.workspaceID, params.userName, body.auditLevel);
      if (body.password !== undefined) await services.databases.setPassword(principal!.orgId, params.workspaceID, params.userName, body.password);
      return { userName: params.userName };
    },
  }),
  defineRoute({
    method: "DELETE", path: "/v1/workspaces/{workspaceID}/users/{userName}", operationId: "dropWorkspaceUser", tag: "Databases", auditType: "DatabaseUserDrop",
    summary: "Drops a database user.", access: "workspaces:write", resource: workspaceResource,
    params: z.object({ workspaceID: Id, userName: Identifier }).strict(), response: z.object({ userName: z.string() }),
    handler: async ({ params, principal, services, audit }) => {
      audit.resource = { type: "Workspace", id: params.workspaceID };
      audit.attributes = { userName: params.userName };
      return services.databases.dropUser(principal!.orgId, params.workspaceID, params.userName);
    },
  }),
];
