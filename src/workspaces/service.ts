import type { AuditLevel } from "../audit/sql/classify.js";
import { EventEmitter } from "node:events";
import { randomInt, randomUUID } from "node:crypto";
import { sql } from "kysely";
import type { Db } from "../store/db.js";
import type { WorkspaceGroupsTable, WorkspacesTable, WorkspaceState, DesiredWorkspaceState } from "../store/schema.js";
import type { Selectable } from "kysely";
import { ParhelionError } from "../lib/errors.js";
import type { Clock } from "../identity/types.js";
import { makeScramVerifier } from "../gateway/protocol/scram.js";
import { LOOPBACK_RANGES, normalizeRanges } from "./firewall.js";
import type { Keyring, GroupKeyWrap } from "../kms/keyring.js";
import { kmsView, type CustomerKeySpec, type GroupKmsKeyView } from "../kms/cmek.js";

export type GroupRow = Selectable<WorkspaceGroupsTable>;
export type WorkspaceRow = Selectable<WorkspacesTable>;

export interface AutoSuspend {
  suspendType: "IDLE" | "SCHEDULED";
  suspendAfterSeconds: number;
}

/** A workspace group in Helios's shape, plus parhelion's tlsMinVersion. */
export interface GroupView {
  workspaceGroupID: string;
  name: string;
  regionID: string;
  state: GroupRow["state"];
  allowAllTraffic: boolean;
  firewallRanges: string[];
  updateWindow?: { day: number; hour: number };
  createdAt: string;
  expiresAt?: string;
  terminatedAt?: string;
  tlsMinVersion: "1.2" | "1.3";
  auditLevel: AuditLevel;
  /** The customer-managed key wrapping the group's data key; null: the platform's key hierarchy. */
  kmsKey: GroupKmsKeyView | null;
}

/** A workspace in Helios's shape, plus parhelion's port and stateReason. */
export interface WorkspaceView {
  workspaceID: string;
  workspaceGroupID: string;
  name: string;
  endpoint: string;
  port: number;
  size: string;
  state: WorkspaceState;
  stateReason?: string;
  createdAt: string;
  lastResumedAt?: string;
  terminatedAt?: string;
  autoSuspend?: AutoSuspend;
}

export interface CreateGroupInput {
  name: string;
  regionID: string;
  firewallRanges?: string[] | undefined;
  allowAllTraffic?: boolean | undefined;
  adminPassword?: string | undefined;
  expiresAt?: string | undefined;
  updateWindow?: { day: number; hour: number } | undefined;
  tlsMinVersion?: "1.2" | "1.3" | undefined;
  auditLevel?: AuditLevel | undefined;
  /** A customer-managed key wrapping the group's data key from the start (the group is PENDING until it does; an unusable key leaves no group). */
  kmsKey?: CustomerKeySpec | undefined;
}

export type UpdateGroupInput = Partial<Omit<CreateGroupInput, "regionID" | "kmsKey">>;

export interface CreateWorkspaceInput {
  workspaceGroupID: string;
  name: string;
  size: string;
  autoSuspend?: AutoSuspend | null | undefined;
}

export interface UpdateWorkspaceInput {
  name?: string | undefined;
  size?: string | undefined;
  autoSuspend?: AutoSuspend | null | undefined;
}

/** What changed, for the reconciler and the gateway's routing cache. */
export interface ChangeEvent {
  workspaceID?: string;
  workspaceGroupID?: string;
}

export const ADMIN_PASSWORD_MIN_LENGTH = 12;
const PASSWORD_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";

/** A random 24-character admin password (about 140 bits). */
export function generateAdminPassword(): string {
  let s = "";
  for (let i = 0; i < 24; i++) s += PASSWORD_ALPHABET[randomInt(PASSWORD_ALPHABET.length)];
  return s;
}

function checkAdminPassword(pw: string): void {
  if (pw.length < ADMIN_PASSWORD_MIN_LENGTH || pw.length > 256) {
    throw new ParhelionError("ERR_PASSWORD_POLICY", `adminPassword must be ${ADMIN_PASSWORD_MIN_LENGTH} to 256 characters`);
  }
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(pw)) throw new ParhelionError("ERR_PASSWORD_POLICY", "adminPassword must not contain control characters");
}

const iso = (d: Date | null | undefined): string | undefined => (d ? new Date(d).toISOString() : undefined);

function isUniqueViolation(err: unknown): boolean {
  return (err as { code?: string }).code === "23505";
}

/** Groups and workspaces of an organization: the desired state the reconciler and gateway act on. */
export class WorkspaceService extends EventEmitter<{ change: [ChangeEvent] }> {
  constructor(
    private readonly db: Db,
    private readonly opts: {
      clock: Clock; domain: string; gatewayPort: () => number; sizes: readonly string[];
      /** The key hierarchy: customer-managed keys and rotation of the groups' data keys. */
      keys?: Pick<Keyring, "setGroupCustomerKey" | "rotateGroupKey" | "groupKeyWrap" | "evictGroup"> | undefined;
    },
  ) {
    super();
  }

  /** The host name a workspace answers to at the gateway (TLS SNI). */
  endpointOf(workspaceId: string, groupId: string): string {
    return `${workspaceId}.${groupId}.${this.opts.domain}`;
  }

  /** The names a group's certificate covers. */
  groupHostNames(groupId: string): string[] {
    return [`*.${groupId}.${this.opts.domain}`, `${groupId}.${this.opts.domain}`];
  }

  groupView(g: GroupRow, kms: GroupKmsKeyView | null = null): GroupView {
    return {
      workspaceGroupID: g.id,
      name: g.name,
      regionID: g.region_id,
      state: g.state,
      allowAllTraffic: g.allow_all_traffic,
      firewallRanges: g.firewall_ranges,
      ...(g.update_window ? { updateWindow: g.update_window } : {}),
      createdAt: new Date(g.created_at).toISOString(),
      ...(g.expires_at ? { expiresAt: iso(g.expires_at)! } : {}),
      ...(g.terminated_at ? { terminatedAt: iso(g.terminated_at)! } : {}),
      tlsMinVersion: g.tls_min_version,
      auditLevel: g.audit_level as AuditLevel,
      kmsKey: kms,
    };
  }

  /** The customer keys of some groups (absent: the platform's key). */
  private async kmsKeys(ids: string[]): Promise<Map<string, GroupKmsKeyView>> {
    if (ids.length === 0) return new Map();
    const rows = await this.db.selectFrom("group_kms_keys").select(["group_id", "provider", "key_id", "status", "status_detail", "checked_at"]).where("group_id", "in", ids).execute();
    return new Map(rows.map((r) => [r.group_id, kmsView(r)]));
  }

  private keys(): NonNullable<typeof this.opts.keys> {
    if (!this.opts.keys) throw new ParhelionError("ERR_INTERNAL", "the key hierarchy is not wired to the workspace service");
    return this.opts.keys;
  }

  /**
   * Wraps the group's data key under the customer's key (or, with null, the platform's KEK again), online: the
   * data key and the volume key derived from it stay, no data is rewritten, the workspaces keep serving.
   */
  async setGroupKmsKey(orgId: string, id: string, spec: CustomerKeySpec | null): Promise<GroupKeyWrap> {
    const g = await this.groupRow(orgId, id);
    if (g.state === "TERMINATED") throw new ParhelionError("ERR_CONFLICT", "the workspace group is terminated");
    const out = await this.keys().setGroupCustomerKey(orgId, id, spec);
    this.changed({ workspaceGroupID: id });
    return out;
  }

  /** Re-wraps the group's data key under the current version of its wrapping key; no data rewrite, no downtime. */
  async rotateGroupKey(orgId: string, id: string): Promise<GroupKeyWrap> {
    const g = await this.groupRow(orgId, id);
    if (g.state === "TERMINATED") throw new ParhelionError("ERR_CONFLICT", "the workspace group is terminated");
    return this.keys().rotateGroupKey(orgId, id);
  }

  /** The group's data key, what wraps it and its customer key's status. */
  async groupKeyStatus(orgId: string, id: string): Promise<{ workspaceGroupID: string; dataKey: GroupKeyWrap | null; kmsKey: GroupKmsKeyView | null }> {
    await this.groupRow(orgId, id);
    return { workspaceGroupID: id, dataKey: await this.keys().groupKeyWrap(orgId, id), kmsKey: (await this.kmsKeys([id])).get(id) ?? null };
  }

  workspaceView(w: WorkspaceRow): WorkspaceView {
    return {
      workspaceID: w.id,
      workspaceGroupID: w.group_id,
      name: w.name,
      endpoint: this.endpointOf(w.id, w.group_id),
      port: this.opts.gatewayPort(),
      size: w.size,
      state: w.state,
      ...(w.state_reason && (w.state === "FAILED" || w.state !== w.desired_state) ? { stateReason: w.state_reason } : {}),
      createdAt: new Date(w.created_at).toISOString(),
      ...(w.last_resumed_at ? { lastResumedAt: iso(w.last_resumed_at)! } : {}),
      ...(w.terminated_at ? { terminatedAt: iso(w.terminated_at)! } : {}),
      ...(w.auto_suspend ? { autoSuspend: w.auto_suspend } : {}),
    };
  }

  private changed(e: ChangeEvent): void {
    this.emit("change", e);
  }

  /** The region of this host, made on first use. */
  async ensureRegion(name: string): Promise<{ regionID: string; region: string; provider: string }> {
    await this.db.insertInto("regions").values({ id: randomUUID(), name, provider: "Local" }).onConflict((oc) => oc.column("name").doNothing()).execute();
    const r = await this.db.selectFrom("regions").selectAll().where("name", "=", name).executeTakeFirstOrThrow();
    return { regionID: r.id, region: r.name, provider: r.provider };
  }

  async listRegions(): Promise<Array<{ regionID: string; region: string; provider: string }>> {
    const rows = await this.db.selectFrom("regions").selectAll().orderBy("name").execute();
    return rows.map((r) => ({ regionID: r.id, region: r.name, provider: r.provider }));
  }

  private checkSize(size: string): void {
    if (!this.opts.sizes.includes(size)) throw new ParhelionError("ERR_VALIDATION", `size: "${size.slice(0, 32)}" is not a workspace size; one of ${this.opts.sizes.join(", ")}`);
  }

  private checkExpiry(expiresAt: string | undefined): Date | null {
    if (expiresAt === undefined) return null;
    const d = new Date(expiresAt);
    if (d.getTime() <= this.opts.clock().getTime()) throw new ParhelionError("ERR_VALIDATION", "expiresAt must be in the future");
    return d;
  }

  /**
   * Creates a group. With a customer key, the group is PENDING (no workspace can be created in it) until its data
   * key is made and wrapped under that key (Keyring.setGroupCustomerKey, which opens and probes the key before it
   * writes anything); when the key cannot be used the group is removed again and the error answered, so no group
   * is left behind (its id was never answered).
   */
  async createGroup(orgId: string, input: CreateGroupInput): Promise<{ workspaceGroupID: string; adminPassword?: string; dataKey?: GroupKeyWrap }> {
    const region = await this.db.selectFrom("regions").select("id").where("id", "=", input.regionID).executeTakeFirst();
    if (!region) throw new ParhelionError("ERR_VALIDATION", `regionID: no region ${input.regionID}; GET /v1/regions lists them`);
    const generated = input.adminPassword === undefined ? generateAdminPassword() : undefined;
    const password = input.adminPassword ?? generated!;
    checkAdminPassword(password);
    const ranges = normalizeRanges(input.firewallRanges ?? LOOPBACK_RANGES);
    const id = randomUUID();
    try {
      await this.db.insertInto("workspace_groups").values({
        id, org_id: orgId, name: input.name, region_id: input.regionID, firewall_ranges: ranges,
        allow_all_traffic: input.allowAllTraffic ?? false, admin_verifier: makeScramVerifier(password),
        tls_min_version: input.tlsMinVersion ?? "1.2", update_window: input.updateWindow ?? null, audit_level: input.auditLevel ?? "ADMIN-ONLY",
        expires_at: this.checkExpiry(input.expiresAt), state: input.kmsKey ? "PENDING" : "ACTIVE",
      }).execute();
    } catch (err) {
      if (isUniqueViolation(err)) throw new ParhelionError("ERR_CONFLICT", `a workspace group named "${input.name}" already exists`);
      throw err;
    }
    let dataKey: GroupKeyWrap | undefined;
    if (input.kmsKey) {
      try {
        dataKey = await this.keys().setGroupCustomerKey(orgId, id, input.kmsKey);
        await this.db.updateTable("workspace_groups").set({ state: "ACTIVE", updated_at: sql`now()` }).where("id", "=", id).where("state", "=", "PENDING").execute();
      } catch (err) {
        await this.discardPendingGroup(id);
        throw err;
      }
    }
    this.changed({ workspaceGroupID: id });
    return { workspaceGroupID: id, ...(generated !== undefined ? { adminPassword: generated } : {}), ...(dataKey ? { dataKey } : {}) };
  }

  /** Removes a group whose creation failed (its customer key could not be used): its key rows, then the group. */
  private async discardPendingGroup(id: string): Promise<void> {
    this.opts.keys?.evictGroup(id);
    await this.db.transaction().execute(async (trx) => {
      await trx.deleteFrom("group_kms_keys").where("group_id", "=", id).execute();
      await trx.deleteFrom("kms_keys").where("group_id", "=", id).execute();
      await trx.deleteFrom("workspace_groups").where("id", "=", id).where("state", "=", "PENDING").execute();
    });
  }

  async listGroups(orgId: string, opts: { includeTerminated: boolean; only?: string[] | undefined }): Promise<GroupView[]> {
    if (opts.only !== undefined && opts.only.length === 0) return [];
    let q = this.db.selectFrom("workspace_groups").selectAll().where("org_id", "=", orgId);
    if (!opts.includeTerminated) q = q.where("state", "<>", "TERMINATED");
    if (opts.only !== undefined) q = q.where("id", "in", opts.only);
    const rows = await q.orderBy("created_at").orderBy("id").execute();
    const kms = await this.kmsKeys(rows.map((g) => g.id));
    return rows.map((g) => this.groupView(g, kms.get(g.id) ?? null));
  }

  async groupRow(orgId: string, id: string): Promise<GroupRow> {
    const g = await this.db.selectFrom("workspace_groups").selectAll().where("org_id", "=", orgId).where("id", "=", id).executeTakeFirst();
    if (!g) throw new ParhelionError("ERR_NOT_FOUND", "workspace group not found");
    return g;
  }

  async getGroup(orgId: string, id: string): Promise<GroupView> {
    const g = await this.groupRow(orgId, id);
    return this.groupView(g, (await this.kmsKeys([id])).get(id) ?? null);
  }

  async updateGroup(orgId: string, id: string, patch: UpdateGroupInput): Promise<{ workspaceGroupID: string }> {
    const g = await this.groupRow(orgId, id);
    if (g.state === "TERMINATED") throw new ParhelionError("ERR_CONFLICT", "the workspace group is terminated");
    const set: Partial<Record<keyof WorkspaceGroupsTable, unknown>> = {};
    if (patch.name !== undefined) set.name = patch.name;
    if (patch.firewallRanges !== undefined) set.firewall_ranges = normalizeRanges(patch.firewallRanges);
    if (patch.allowAllTraffic !== undefined) set.allow_all_traffic = patch.allowAllTraffic;
    if (patch.tlsMinVersion !== undefined) set.tls_min_version = patch.tlsMinVersion;
    if (patch.auditLevel !== undefined) set.audit_level = patch.auditLevel;
    if (patch.updateWindow !== undefined) set.update_window = patch.updateWindow;
    if (patch.expiresAt !== undefined) set.expires_at = this.checkExpiry(patch.expiresAt);
    if (patch.adminPassword !== undefined) {
      checkAdminPassword(patch.adminPassword);
      set.admin_verifier = makeScramVerifier(patch.adminPassword);
    }
    if (Object.keys(set).length === 0) return { workspaceGroupID: id };
    try {
      await this.db.transaction().execute(async (trx) => {
        await trx.updateTable("workspace_groups").set({ ...set, updated_at: sql`now()` } as never).where("id", "=", id).execute();
        // A new admin password reaches every live workspace: the reconciler applies it to running servers
        // and a suspended one receives it when it resumes.
        if (set.admin_verifier !== undefined) {
          await trx.updateTable("workspaces").set({ generation: sql`generation + 1`, updated_at: sql`now()` }).where("group_id", "=", id).where("state", "<>", "TERMINATED").execute();
        }
      });
    } catch (err) {
      if (isUniqueViolation(err)) throw new ParhelionError("ERR_CONFLICT", `a workspace group named "${patch.name}" already exists`);
      throw err;
    }
    this.changed({ workspaceGroupID: id });
    return { workspaceGroupID: id };
  }

  /** Terminates a group; with live workspaces only when `force`, which terminates them too. */
  async deleteGroup(orgId: string, id: string, force: boolean): Promise<{ workspaceGroupID: string }> {
    const g = await this.groupRow(orgId, id);
    if (g.state === "TERMINATED") return { workspaceGroupID: id };
    const ids = await this.db.transaction().execute(async (trx) => {
      const live = await trx.selectFrom("workspaces").select("id").where("group_id", "=", id).where("desired_state", "<>", "TERMINATED").forUpdate().execute();
      if (live.length > 0 && !force) {
        throw new ParhelionError("ERR_CONFLICT", `the workspace group still has ${live.length} workspace${live.length > 1 ? "s" : ""}; delete them first or pass force=true`);
      }
      await trx.updateTable("workspaces").set({ desired_state: "TERMINATED", generation: sql`generation + 1`, updated_at: sql`now()` }).where("group_id", "=", id).where("desired_state", "<>", "TERMINATED").execute();
      await trx.updateTable("workspace_groups").set({ state: "TERMINATED", terminated_at: sql`now()`, updated_at: sql`now()` }).where("id", "=", id).execute();
      return live.map((l) => l.id);
    });
    for (const w of ids) this.changed({ workspaceID: w, workspaceGroupID: id });
    this.changed({ workspaceGroupID: id });
    return { workspaceGroupID: id };
  }

  async createWorkspace(orgId: string, input: CreateWorkspaceInput): Promise<{ workspaceID: string }> {
    this.checkSize(input.size);
    const g = await this.groupRow(orgId, input.workspaceGroupID).catch((err: unknown) => {
      if (err instanceof ParhelionError && err.code === "ERR_NOT_FOUND") throw new ParhelionError("ERR_VALIDATION", `workspaceGroupID: no workspace group ${input.workspaceGroupID}`);
      throw err;
    });
    if (g.state === "TERMINATED") throw new ParhelionError("ERR_CONFLICT", "the workspace group is terminated");
    if (g.state === "PENDING") throw new ParhelionError("ERR_CONFLICT", "the workspace group is still being created");
    const id = randomUUID();
    try {
      await this.db.insertInto("workspaces").values({
        id, org_id: orgId, group_id: g.id, name: input.name, size: input.size, auto_suspend: input.autoSuspend ?? null,
        desired_state: "ACTIVE", state: "PENDING",
      }).execute();
    } catch (err) {
      if (isUniqueViolation(err)) throw new ParhelionError("ERR_CONFLICT", `the workspace group already has a workspace named "${input.name}"`);
      throw err;
    }
    this.changed({ workspaceID: id, workspaceGroupID: g.id });
    return { workspaceID: id };
  }

  async listWorkspaces(orgId: string, opts: { workspaceGroupID?: string | undefined; includeTerminated: boolean; onlyGroups?: string[] | undefined }): Promise<WorkspaceView[]> {
    if (opts.onlyGroups !== undefined && opts.onlyGroups.length === 0) return [];
    let q = this.db.selectFrom("workspaces").selectAll().where("org_id", "=", orgId);
    if (opts.workspaceGroupID !== undefined) q = q.where("group_id", "=", opts.workspaceGroupID);
    if (opts.onlyGroups !== undefined) q = q.where("group_id", "in", opts.onlyGroups);
    if (!opts.includeTerminated) q = q.where("state", "<>", "TERMINATED");
    const rows = await q.orderBy("created_at").orderBy("id").execute();
    return rows.map((w) => this.workspaceView(w));
  }

  async workspaceRow(orgId: string, id: string): Promise<WorkspaceRow> {
    const w = await this.db.selectFrom("workspaces").selectAll().where("org_id", "=", orgId).where("id", "=", id).executeTakeFirst();
    if (!w) throw new ParhelionError("ERR_NOT_FOUND", "workspace not found");
    return w;
  }

  async getWorkspace(orgId: string, id: string): Promise<WorkspaceView> {
    return this.workspaceView(await this.workspaceRow(orgId, id));
  }

  /** Sets (or with null, removes) a database user's own audit level in a workspace. */
  async setUserAuditLevel(orgId: string, workspaceId: string, role: string, level: AuditLevel | null): Promise<void> {
    const w = await this.workspaceRow(orgId, workspaceId);
    if (level === null) {
      await this.db.deleteFrom("database_user_audit_levels").where("workspace_id", "=", w.id).where("role_name", "=", role).execute();
      return;
    }
    await this.db.insertInto("database_user_audit_levels").values({ workspace_id: w.id, role_name: role, audit_level: level })
      .onConflict((oc) => oc.columns(["workspace_id", "role_name"]).doUpdateSet({ audit_level: level, updated_at: new Date() })).execute();
  }

  /** The database users of a workspace with an audit level of their own. */
  async userAuditLevels(workspaceId: string): Promise<Map<string, AuditLevel>> {
    const rows = await this.db.selectFrom("database_user_audit_levels").select(["role_name", "audit_level"]).where("workspace_id", "=", workspaceId).execute();
    return new Map(rows.map((r) => [r.role_name, r.audit_level as AuditLevel]));
  }

  /** The group a workspace belongs to (for authorization), or undefined when there is no such workspace. */
  async groupOfWorkspace(orgId: string, id: string): Promise<string | undefined> {
    const w = await this.db.selectFrom("workspaces").select("group_id").where("org_id", "=", orgId).where("id", "=", id).executeTakeFirst();
    return w?.group_id;
  }

  async updateWorkspace(orgId: string, id: string, patch: UpdateWorkspaceInput): Promise<{ workspaceID: string }> {
    const w = await this.workspaceRow(orgId, id);
    if (w.desired_state === "TERMINATED") throw new ParhelionError("ERR_CONFLICT", "the workspace is terminated");
    if (patch.size !== undefined) this.checkSize(patch.size);
    const set: Partial<Record<keyof WorkspacesTable, unknown>> = {};
    if (patch.name !== undefined) set.name = patch.name;
    if (patch.size !== undefined && patch.size !== w.size) set.size = patch.size;
    if (patch.autoSuspend !== undefined) set.auto_suspend = patch.autoSuspend;
    if (Object.keys(set).length === 0) return { workspaceID: id };
    try {
      await this.db.updateTable("workspaces").set({ ...set, generation: sql`generation + 1`, updated_at: sql`now()` } as never).where("id", "=", id).execute();
    } catch (err) {
      if (isUniqueViolation(err)) throw new ParhelionError("ERR_CONFLICT", `the workspace group already has a workspace named "${patch.name}"`);
      throw err;
    }
    this.changed({ workspaceID: id, workspaceGroupID: w.group_id });
    return { workspaceID: id };
  }

  /** Sets the desired state; `from` lists the desired states the change is allowed from. */
  private async transition(orgId: string, id: string, to: DesiredWorkspaceState, from: DesiredWorkspaceState[], verb: string, observed?: WorkspaceState): Promise<{ workspaceID: string }> {
    const w = await this.workspaceRow(orgId, id);
    if (w.desired_state === to) return { workspaceID: id };
    if (!from.includes(w.desired_state)) {
      throw new ParhelionError("ERR_CONFLICT", `cannot ${verb} a workspace that is ${w.desired_state === "TERMINATED" ? "terminated" : w.state.toLowerCase()}`);
    }
    const r = await this.db.updateTable("workspaces")
      .set({ desired_state: to, generation: sql`generation + 1`, updated_at: sql`now()`, ...(observed && w.state === "SUSPENDED" ? { state: observed } : {}) })
      .where("id", "=", id).where("desired_state", "=", w.desired_state).executeTakeFirst();
    if (Number(r.numUpdatedRows) === 0) throw new ParhelionError("ERR_CONFLICT", "the workspace changed meanwhile; retry");
    this.changed({ workspaceID: id, workspaceGroupID: w.group_id });
    return { workspaceID: id };
  }

  suspend(orgId: string, id: string): Promise<{ workspaceID: string }> {
    return this.transition(orgId, id, "SUSPENDED", ["ACTIVE"], "suspend");
  }

  resume(orgId: string, id: string): Promise<{ workspaceID: string }> {
    return this.transition(orgId, id, "ACTIVE", ["SUSPENDED"], "resume", "RESUMING");
  }

  delete(orgId: string, id: string): Promise<{ workspaceID: string }> {
    return this.transition(orgId, id, "TERMINATED", ["ACTIVE", "SUSPENDED"], "delete");
  }
}
