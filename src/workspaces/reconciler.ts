import { sql } from "kysely";
import type { Db } from "../store/db.js";
import type { Logger } from "../log/logger.js";
import type { AuditLog } from "../audit/index.js";
import type { Clock } from "../identity/types.js";
import type { WorkspaceState } from "../store/schema.js";

/** What the reconciler needs of the engine (src/engine). */
export interface EngineOps {
  ensureRunning(ws: { id: string; size: string; adminVerifier: string }): Promise<void>;
  ensureStopped(id: string): Promise<void>;
  destroy(id: string): Promise<void>;
  listOnDisk(): string[];
  isRunning(id: string): boolean;
}

/** What the reconciler needs of the gateway to decide idleness (autoSuspend). */
export interface ActivitySource {
  activeSessions(workspaceId: string): number;
  lastActivity(workspaceId: string): Date | undefined;
}

export interface ReconcilerOptions {
  db: Db;
  engine: EngineOps;
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
        await this.pass();
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

  /** One pass over every workspace that is not settled as terminated, then the directory sweep. */
  async pass(): Promise<void> {
    await this.expireGroups();
    const rows = (await this.o.db
      .selectFrom("workspaces as w")
      .innerJoin("workspace_groups as g", "g.id", "w.group_id")
      .select(["w.id", "w.org_id", "w.group_id", "w.size", "w.desired_state", "w.state", "w.generation", "w.auto_suspend", "w.created_at", "w.last_resumed_at", "w.last_activity_at", "g.admin_verifier"])
      .where((eb) => eb.or([eb("w.state", "<>", "TERMINATED"), eb("w.desired_state", "<>", "TERMINATED")]))
      .execute()) as Row[];
    const now = this.o.clock().getTime();
    for (const row of rows) {
      if (this.stopped) return;
      const f = this.failures.get(row.id);
      if (f && f.retryAt > now) continue;
      try {
        await this.reconcile(row);
        this.failures.delete(row.id);
      } catch (err) {
        await this.fail(row, err as Error);
      }
    }
    if (!this.stopped) await this.sweep();
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

  private async reconcile(row: Row): Promise<void> {
    const { engine } = this.o;
    switch (row.desired_state) {
      case "ACTIVE": {
        if (engine.isRunning(row.id) && this.applied.get(row.id) === row.generation && row.state === "ACTIVE") {
          await this.maybeAutoSuspend(row);
          return;
        }
        const first = row.state === "PENDING";
        await engine.ensureRunning({ id: row.id, size: row.size, adminVerifier: row.admin_verifier });
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
        await engine.ensureStopped(row.id);
        this.applied.delete(row.id);
        if (row.state !== "SUSPENDED" && (await this.setState(row, "SUSPENDED", { suspended_at: sql`now()` }))) {
          await this.event(row, "WorkspaceSuspended", "workspace server stopped; data kept");
        }
        return;
      }
      case "TERMINATED": {
        this.o.onStopping?.(row.id);
        await engine.destroy(row.id);
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
    this.o.logger.error({ workspaceID: row.id, desired: row.desired_state, err: { message: err.message } }, "workspace reconcile failed; will retry");
    await this.o.db.updateTable("workspaces")
      .set({ state: "FAILED", state_reason: err.message.slice(0, 1000), updated_at: sql`now()` })
      .where("id", "=", row.id).where("desired_state", "=", row.desired_state)
      .execute();
    this.o.onStateChange?.(row.id);
    if (prev === 0) await this.event(row, "WorkspaceFailed", `could not make the workspace ${row.desired_state}: ${err.message.slice(0, 300)}`, "FAILURE");
  }

  /** Removes workspace directories the store does not know, or knows as terminated (an interrupted delete). */
  private async sweep(): Promise<void> {
    const onDisk = this.o.engine.listOnDisk();
    if (onDisk.length === 0) return;
    const live = new Set((await this.o.db.selectFrom("workspaces").select("id").where("id", "in", onDisk).where("state", "<>", "TERMINATED").execute()).map((r) => r.id));
    for (const id of onDisk) {
      if (live.has(id) || this.stopped) continue;
      this.o.logger.warn({ workspaceID: id }, "removing a workspace directory with no live workspace");
      await this.o.engine.destroy(id).catch((err: unknown) => this.o.logger.error({ workspaceID: id, err: { message: (err as Error).message } }, "could not remove a stray workspace directory"));
    }
  }
}
