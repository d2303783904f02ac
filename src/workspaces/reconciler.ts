import { sql } from "kysely";
import type { Db } from "../store/db.js";
import type { Logger } from "../log/logger.js";
import type { AuditLog } from "../audit/index.js";
import type { Clock } from "../identity/types.js";
import type { GroupState, WorkspaceState } from "../store/schema.js";
import type { GroupStorage } from "../volumes/groups.js";
import { WORKSPACE_SIZES, isWorkspaceSize } from "../engine/sizes.js";
import { isParhelionError } from "../lib/errors.js";

/** What the reconciler needs of the engine (src/engine). `storage`: the directory holding `<id>/pgdata` (a group's volume). */
export interface EngineOps {
  ensureRunning(ws: { id: string; size: string; adminVerifier: string; storage?: string }): Promise<void>;
  ensureStopped(id: string, storage?: string): Promise<void>;
  destroy(id: string, storage?: string): Promise<void>;
  listOnDisk(storage?: string): string[];
  isRunning(id: string): boolean;
  /** Stops making a spare in a storage root (before its volume goes away). */
  releaseStorage(storage: string): Promise<void>;
}

/** What the reconciler needs of the gateway to decide idleness (autoSuspend). */
export interface ActivitySource {
  activeSessions(workspaceId: string): number;
  lastActivity(workspaceId: string): Date | undefined;
}

export interface ReconcilerOptions {
  db: Db;
  engine: EngineOps;
  /** Each group's storage: its encrypted volume (opened with the group's key before any of its workspaces starts). */
  storage: GroupStorage;
  logger: Logger;
  audit: Pick<AuditLog, "record">;
  clock: Clock;
  /** Period of the full pass that also catches crashed servers and idle workspaces. */
  intervalMs?: number;
  activity?: ActivitySource;
  /** Called before a workspace's server is stopped or removed (the gateway ends its sessions). */
  onStopping?: (workspaceId: string) => void;
  /** Called after the reconciler recorded a workspace's new observed state (the gateway's routing cache). */
  onStateChange?: (workspaceId: string) => void;
  /** Called when a group expired (the gateway drops its routing). */
  onGroupExpired?: (groupId: string) => void;
}

interface Row {
  id: string;
  org_id: string;
  group_id: string;
  size: string;
  desired_state: "ACTIVE" | "SUSPENDED" | "TERMINATED";
  state: WorkspaceState;
  generation: number;
  auto_suspend: { suspendType: "IDLE" | "SCHEDULED"; suspendAfterSeconds: number } | null;
  created_at: Date;
  last_resumed_at: Date | null;
  last_activity_at: Date | null;
  admin_verifier: string;
  group_state: GroupState;
}

/** The reason a workspace shows while its group's key cannot be had: the error code first, for people and tools. */
export const KEY_UNAVAILABLE_REASON = "ERR_KEY_UNAVAILABLE: the workspace group's data key is unavailable (disabled, deleted, or its provider cannot be reached); its encrypted volume stays locked and the workspace does not serve until the key is usable again";

/** The reason naming a group's customer-managed key when that key is what cannot be had. */
export function customerKeyReason(k: { provider: string; keyId: string; detail?: string | null | undefined }): string {
  return `ERR_KEY_UNAVAILABLE: the workspace group's customer-managed key (${k.provider} ${k.keyId}) is unavailable${k.detail ? ` (${k.detail})` : ""}: it is disabled, deleted or cannot be reached; the group's encrypted volume stays locked and its workspaces do not serve until the key is enabled again`;
}

/**
 * Drives every workspace from its observed state to its desired state. All it knows lives in the metadata
 * store and on disk, so after a crash (kill -9 at any step) the next start simply runs it again: the engine's
 * operations are idempotent, a server left running is reaped, and a directory nobody owns is removed.
 */
export class Reconciler {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = true;
  /** generation last applied to a running server, per workspace (in memory: a restart re-applies). */
  private readonly applied = new Map<string, number>();
  private readonly failures = new Map<string, { count: number; retryAt: number }>();
  private readonly intervalMs: number;
  /** Passes and exclusive sections (key revocation) run one at a time, in order. */
  private serial: Promise<unknown> = Promise.resolve();
  /** Groups whose workspaces and volume passes leave alone (a re-key is rewriting the volume). */
  private readonly held = new Set<string>();

  constructor(private readonly o: ReconcilerOptions) {
    this.intervalMs = o.intervalMs ?? 5000;
  }

  /** Starts the periodic passes, the first one at once (with the sweep of unknown directories). */
  start(): void {
    this.stopped = false;
    this.kick();
    this.timer = setInterval(() => this.kick(), this.intervalMs);
    this.timer.unref();
  }

  /** Asks for a pass soon; passes never overlap, and a kick during one causes one more. */
  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.loop().finally(() => {
      this.running = undefined;
    });
  }

  /** Runs fn with no pass running (and none starting until it is done): key revocation stops servers under it. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.serial.then(fn);
    this.serial = p.catch(() => undefined);
    return p;
  }

  /**
   * Keeps every pass away from a group (its workspaces are neither started nor stopped, its volume is not swept)
   * until release: a re-key of its data key holds it while the volume is rewritten. Call under exclusive().
   */
  hold(groupId: string): void {
    this.held.add(groupId.toLowerCase());
  }

  /** Ends a hold; the next pass acts on the group's workspaces again. */
  release(groupId: string): void {
    this.held.delete(groupId.toLowerCase());
    this.kick();
  }

  /** Whether a group is held (a re-key is running on it). */
  isHeld(groupId: string): boolean {
    return this.held.has(groupId.toLowerCase());
  }

  /** Forgets the retry backoff of a group's workspaces (its key is usable again) and asks for a pass. */
  retryGroup(workspaceIds: string[]): void {
    for (const id of workspaceIds) this.failures.delete(id);
    this.kick();
  }

  /** Resolves when no pass is running or pending (tests and shutdown). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.idle();
  }

  private async loop(): Promise<void> {
    do {
      this.again = false;
      try {
        await this.exclusive(() => this.pass());
      } catch (err) {
        this.o.logger.error({ err: { message: (err as Error).message } }, "reconciler pass failed");
      }
    } while (this.again && !this.stopped);
  }

  /** Groups past their `expiresAt` are terminated with their workspaces (Helios's expiring groups). */
  private async expireGroups(): Promise<void> {
    const now = this.o.clock();
    const due = await this.o.db.selectFrom("workspace_groups").select(["id", "org_id", "name"]).where("state", "<>", "TERMINATED").where("expires_at", "<=", now).execute();
    for (const g of due) {
      await this.o.db.transaction().execute(async (trx) => {
        await trx.updateTable("workspaces").set({ desired_state: "TERMINATED", generation: sql`generation + 1`, updated_at: sql`now()` }).where("group_id", "=", g.id).where("desired_state", "<>", "TERMINATED").execute();
        await trx.updateTable("workspace_groups").set({ state: "TERMINATED", terminated_at: sql`now()`, updated_at: sql`now()` }).where("id", "=", g.id).where("state", "<>", "TERMINATED").execute();
      });
      await this.o.audit.record({
        type: "WorkspaceGroupExpired", source: "System", result: "SUCCESS", orgId: g.org_id, actor: { type: "system" },
        resource: { type: "WorkspaceGroup", id: g.id }, reason: `workspace group "${g.name}" reached its expiresAt; it and its workspaces are terminated`,
      });
      this.o.onGroupExpired?.(g.id);
    }
  }

  /** One pass over every workspace that is not settled as terminated, then the sweeps of directories and volumes. */
  async pass(): Promise<void> {
    await this.expireGroups();
    const rows = (await this.o.db
      .selectFrom("workspaces as w")
      .innerJoin("workspace_groups as g", "g.id", "w.group_id")
      .select(["w.id", "w.org_id", "w.group_id", "w.size", "w.desired_state", "w.state", "w.generation", "w.auto_suspend", "w.created_at", "w.last_resumed_at", "w.last_activity_at", "g.admin_verifier", "g.state as group_state"])
      .where((eb) => eb.or([eb("w.state", "<>", "TERMINATED"), eb("w.desired_state", "<>", "TERMINATED")]))
      .execute()) as Row[];
    // A group's volume is sized for the workspaces it keeps (each size's storage share).
    const groupBytes = new Map<string, number>();
    for (const r of rows) {
      if (r.desired_state === "TERMINATED") continue;
      const share = isWorkspaceSize(r.size) ? WORKSPACE_SIZES[r.size].storageBytes : WORKSPACE_SIZES["S-00"].storageBytes;
      groupBytes.set(r.group_id, (groupBytes.get(r.group_id) ?? 0) + share);
    }
    const now = this.o.clock().getTime();
    for (const row of rows) {
      if (this.stopped) return;
      if (this.held.has(row.group_id.toLowerCase())) continue;
      const f = this.failures.get(row.id);
      if (f && f.retryAt > now) continue;
      try {
        await this.reconcile(row, groupBytes.get(row.group_id) ?? 0);
        this.failures.delete(row.id);
      } catch (err) {
        await this.fail(row, err as Error);
      }
    }
    if (!this.stopped) await this.sweep();
    if (!this.stopped) await this.sweepVolumes();
  }

  /**
   * Opens the group's storage before any of its workspaces starts: with encryption at rest, the group's key is
   * unwrapped, its volume made or mounted and unlocked, and the key zeroed (GroupStorage.open).
   */
  private async openStorage(row: Row, groupBytes: number): Promise<string | undefined> {
    await this.o.storage.open({ groupId: row.group_id, orgId: row.org_id, sizeBytes: groupBytes });
    return this.o.storage.root(row.group_id);
  }

  private async setState(row: Row, state: WorkspaceState, extra: Record<string, unknown> = {}): Promise<boolean> {
    // Only when the desired state is still the one acted on: an API change meanwhile gets its own pass.
    const r = await this.o.db.updateTable("workspaces")
      .set({ state, state_reason: null, updated_at: sql`now()`, ...extra } as never)
      .where("id", "=", row.id).where("desired_state", "=", row.desired_state)
      .executeTakeFirst();
    const changed = Number(r.numUpdatedRows) > 0;
    if (changed) this.o.onStateChange?.(row.id);
    return changed;
  }

  private async event(row: Row, type: string, reason: string, result: "SUCCESS" | "FAILURE" = "SUCCESS"): Promise<void> {
    await this.o.audit.record({
      type, source: "System", result, orgId: row.org_id, actor: { type: "system" },
      resource: { type: "Workspace", id: row.id }, reason, attributes: { workspaceGroupID: row.group_id, size: row.size },
    });
  }

  private async reconcile(row: Row, groupBytes: number): Promise<void> {
    const { engine } = this.o;
    const storage = this.o.storage.root(row.group_id);
    switch (row.desired_state) {
      case "ACTIVE": {
        if (engine.isRunning(row.id) && this.applied.get(row.id) === row.generation && row.state === "ACTIVE") {
          await this.maybeAutoSuspend(row);
          return;
        }
        const first = row.state === "PENDING";
        const root = await this.openStorage(row, groupBytes);
        await engine.ensureRunning({ id: row.id, size: row.size, adminVerifier: row.admin_verifier, ...(root === undefined ? {} : { storage: root }) });
        this.applied.set(row.id, row.generation);
        if (row.state !== "ACTIVE") {
          const ok = await this.setState(row, "ACTIVE", { last_resumed_at: sql`now()` });
          if (ok) await this.event(row, first ? "WorkspaceProvisioned" : "WorkspaceResumed", first ? "workspace server created and started" : "workspace server started");
        }
        return;
      }
      case "SUSPENDED": {
        if (row.state === "SUSPENDED" && !engine.isRunning(row.id)) return;
        this.o.onStopping?.(row.id);
        await engine.ensureStopped(row.id, storage);
        this.applied.delete(row.id);
        if (row.state !== "SUSPENDED" && (await this.setState(row, "SUSPENDED", { suspended_at: sql`now()` }))) {
          await this.event(row, "WorkspaceSuspended", "workspace server stopped; data kept");
        }
        return;
      }
      case "TERMINATED": {
        this.o.onStopping?.(row.id);
        // Removing the data needs the volume unlocked, unless the whole group goes: then its volume is destroyed.
        const root = row.group_state === "TERMINATED" ? storage : await this.openStorage(row, groupBytes);
        await engine.destroy(row.id, root);
        this.applied.delete(row.id);
        if (await this.setState(row, "TERMINATED", { terminated_at: sql`now()` })) {
          await this.event(row, "WorkspaceTerminated", "workspace server stopped and its data removed");
        }
        return;
      }
    }
  }

  /** autoSuspend IDLE: no session for suspendAfterSeconds since the last activity (or resume). */
  private async maybeAutoSuspend(row: Row): Promise<void> {
    const a = row.auto_suspend;
    if (!a || a.suspendType !== "IDLE" || !this.o.activity) return;
    if (this.o.activity.activeSessions(row.id) > 0) return;
    const last = Math.max(
      this.o.activity.lastActivity(row.id)?.getTime() ?? 0,
      row.last_activity_at ? new Date(row.last_activity_at).getTime() : 0,
      row.last_resumed_at ? new Date(row.last_resumed_at).getTime() : 0,
      new Date(row.created_at).getTime(),
    );
    if (this.o.clock().getTime() - last < a.suspendAfterSeconds * 1000) return;
    const r = await this.o.db.updateTable("workspaces")
      .set({ desired_state: "SUSPENDED", generation: sql`generation + 1`, updated_at: sql`now()` })
      .where("id", "=", row.id).where("desired_state", "=", "ACTIVE").where("generation", "=", row.generation)
      .executeTakeFirst();
    if (Number(r.numUpdatedRows) === 0) return;
    await this.event(row, "WorkspaceAutoSuspend", `idle for ${a.suspendAfterSeconds} s with no session`);
    this.again = true;
  }

  private async fail(row: Row, err: Error): Promise<void> {
    const prev = this.failures.get(row.id)?.count ?? 0;
    const delay = Math.min(60_000, 1000 * 2 ** prev);
    this.failures.set(row.id, { count: prev + 1, retryAt: this.o.clock().getTime() + delay });
    const keyUnavailable = isParhelionError(err) && err.code === "ERR_KEY_UNAVAILABLE";
    let reason = err.message;
    if (keyUnavailable) {
      const cmek = await this.o.db.selectFrom("group_kms_keys").select(["provider", "key_id", "status_detail"]).where("group_id", "=", row.group_id).executeTakeFirst();
      reason = cmek ? customerKeyReason({ provider: cmek.provider, keyId: cmek.key_id, detail: cmek.status_detail }) : KEY_UNAVAILABLE_REASON;
    }
    this.o.logger.error({ workspaceID: row.id, desired: row.desired_state, err: { message: err.message } }, "workspace reconcile failed; will retry");
    await this.o.db.updateTable("workspaces")
      .set({ state: "FAILED", state_reason: reason.slice(0, 1000), updated_at: sql`now()` })
      .where("id", "=", row.id).where("desired_state", "=", row.desired_state)
      .execute();
    this.o.onStateChange?.(row.id);
    if (prev === 0) await this.event(row, "WorkspaceFailed", `could not make the workspace ${row.desired_state}: ${reason.slice(0, 300)}`, "FAILURE");
  }

  /**
   * Removes workspace directories the store does not know, or knows as terminated (an interrupted delete): in
   * the engine's directory, and on each volume this process has open.
   */
  private async sweep(): Promise<void> {
    const onDisk = this.o.engine.listOnDisk();
    const onVolumes: Array<{ id: string; root: string }> = [];
    for (const gid of await this.o.storage.onDisk()) {
      const root = this.o.storage.root(gid);
      if (root === undefined || !this.o.storage.isOpen(gid) || this.held.has(gid)) continue;
      for (const id of this.o.engine.listOnDisk(root)) onVolumes.push({ id, root });
    }
    const ids = [...new Set([...onDisk, ...onVolumes.map((v) => v.id)])];
    if (ids.length === 0) return;
    const rows = await this.o.db.selectFrom("workspaces").select(["id", "group_id", "state"]).where("id", "in", ids).execute();
    const live = new Set(rows.filter((r) => r.state !== "TERMINATED").map((r) => r.id));
    const groupOf = new Map(rows.map((r) => [r.id, r.group_id]));
    const remove = async (id: string, root: string | undefined) => {
      this.o.logger.warn({ workspaceID: id }, "removing a workspace directory with no live workspace");
      await this.o.engine.destroy(id, root).catch((err: unknown) => this.o.logger.error({ workspaceID: id, err: { message: (err as Error).message } }, "could not remove a stray workspace directory"));
    };
    for (const id of onDisk) {
      if (live.has(id) || this.stopped) continue;
      const gid = groupOf.get(id);
      await remove(id, gid === undefined ? undefined : this.o.storage.root(gid));
    }
    for (const v of onVolumes) {
      if (live.has(v.id) || this.stopped) continue;
      await remove(v.id, v.root);
    }
  }

  /** Destroys the volumes of terminated (or unknown) groups once none of their workspaces is left. */
  private async sweepVolumes(): Promise<void> {
    const onDisk = await this.o.storage.onDisk();
    if (onDisk.length === 0) return;
    const groups = new Map((await this.o.db.selectFrom("workspace_groups").select(["id", "state"]).where("id", "in", onDisk).execute()).map((g) => [g.id, g.state]));
    const busy = new Set((await this.o.db.selectFrom("workspaces").select("group_id").where("group_id", "in", onDisk).where("state", "<>", "TERMINATED").execute()).map((r) => r.group_id));
    for (const gid of onDisk) {
      if (this.stopped) return;
      const state = groups.get(gid);
      if ((state !== undefined && state !== "TERMINATED") || busy.has(gid) || this.held.has(gid)) continue;
      try {
        const root = this.o.storage.root(gid);
        if (root !== undefined) await this.o.engine.releaseStorage(root);
        await this.o.storage.destroy(gid);
        this.o.logger.info({ workspaceGroupID: gid }, "encrypted volume of a terminated workspace group destroyed");
      } catch (err) {
        this.o.logger.error({ workspaceGroupID: gid, err: { message: (err as Error).message } }, "could not destroy the volume of a terminated workspace group; will retry");
      }
    }
  }
}
