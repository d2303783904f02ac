import { sql } from "kysely";
import type { Db } from "../store/db.js";
import type { Logger } from "../log/logger.js";
import type { AuditLog } from "../audit/index.js";
import type { Keyring } from "../kms/keyring.js";
import type { CustomerKeys } from "../kms/cmek.js";
import type { GroupStorage } from "../volumes/groups.js";
import { customerKeyReason, type EngineOps, type Reconciler, type ReconcilerOptions } from "./reconciler.js";

/** The reconciler's own hooks (the gateway ends a stopping workspace's sessions and drops its cached route). */
export interface KeyMonitorOptions extends Pick<ReconcilerOptions, "onStopping" | "onStateChange"> {
  db: Db;
  keyring: Pick<Keyring, "verifyGroupKey" | "evictGroup">;
  customer: Pick<CustomerKeys, "health" | "record">;
  engine: Pick<EngineOps, "ensureStopped" | "releaseStorage" | "isRunning">;
  storage: GroupStorage;
  reconciler: Pick<Reconciler, "exclusive" | "retryGroup">;
  audit: Pick<AuditLog, "record">;
  logger: Logger;
  /** Period of the check (kmsCheckSeconds). */
  intervalMs: number;
}

interface CmekGroup {
  group_id: string;
  org_id: string;
  provider: string;
  key_id: string;
  status: "ENABLED" | "UNAVAILABLE";
}

/**
 * Revocation of customer-managed keys: every intervalMs, each group with a customer key has its data key
 * unwrapped afresh through that key. When it cannot be (the customer disabled or deleted the key), the group's
 * servers stop, its volume is locked and unmounted, its data key leaves memory, and its workspaces show
 * FAILED with ERR_KEY_UNAVAILABLE naming the key. When the key works again, the reconciler starts them.
 */
export class KeyMonitor {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = true;

  constructor(private readonly o: KeyMonitorOptions) {}

  start(): void {
    this.stopped = false;
    this.timer = setInterval(() => this.tick(), this.o.intervalMs);
    this.timer.unref();
    this.tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  private tick(): void {
    if (this.stopped || this.running) return;
    this.running = this.checkAll()
      .catch((err: unknown) => this.o.logger.error({ err: { message: (err as Error).message } }, "customer key check failed"))
      .finally(() => {
        this.running = undefined;
      });
  }

  /** One check of every live group with a customer key. */
  async checkAll(): Promise<void> {
    const groups = (await this.o.db.selectFrom("group_kms_keys as k").innerJoin("workspace_groups as g", "g.id", "k.group_id")
      .select(["k.group_id", "k.org_id", "k.provider", "k.key_id", "k.status"]).where("g.state", "<>", "TERMINATED").execute()) as CmekGroup[];
    for (const g of groups) {
      if (this.stopped) return;
      try {
        await this.check(g);
      } catch (err) {
        this.o.logger.error({ workspaceGroupID: g.group_id, err: { message: (err as Error).message } }, "customer key check of a workspace group failed");
      }
    }
  }

  private async check(g: CmekGroup): Promise<void> {
    const v = await this.o.keyring.verifyGroupKey(g.org_id, g.group_id);
    const keyId = v.keyId ?? g.key_id;
    if (v.ok) {
      await this.o.customer.record(g.group_id, "ENABLED", null);
      if (g.status === "UNAVAILABLE") await this.restored(g, keyId);
      return;
    }
    const detail = (await this.o.customer.health(g.group_id, keyId)).detail;
    await this.o.customer.record(g.group_id, "UNAVAILABLE", detail);
    // Revoked once; again only if something of the group came back meanwhile (a start before the key failed).
    const running = await this.liveWorkspaces(g.group_id);
    if (g.status === "ENABLED" || this.o.storage.isOpen(g.group_id) || running.some((w) => this.o.engine.isRunning(w.id))) {
      await this.revoke(g, keyId, detail, running);
    }
  }

  private liveWorkspaces(groupId: string): Promise<Array<{ id: string; desired_state: string }>> {
    return this.o.db.selectFrom("workspaces").select(["id", "desired_state"]).where("group_id", "=", groupId).where("state", "<>", "TERMINATED").where("desired_state", "<>", "TERMINATED").execute();
  }

  /** The hooks of src/volumes/DESIGN.md, in order, with no reconciler pass running meanwhile. */
  private async revoke(g: CmekGroup, keyId: string, detail: string, workspaces: Array<{ id: string; desired_state: string }>): Promise<void> {
    const started = Date.now();
    const reason = customerKeyReason({ provider: g.provider, keyId, detail });
    let locked = true;
    await this.o.reconciler.exclusive(async () => {
      this.o.keyring.evictGroup(g.group_id);
      const root = this.o.storage.root(g.group_id);
      for (const w of workspaces) {
        this.o.onStopping?.(w.id);
        await this.o.engine.ensureStopped(w.id, root);
      }
      if (workspaces.length > 0) {
        await this.o.db.updateTable("workspaces").set({ state: "FAILED", state_reason: reason.slice(0, 1000), updated_at: sql`now()` })
          .where("group_id", "=", g.group_id).where("desired_state", "=", "ACTIVE").where("state", "<>", "TERMINATED").execute();
      }
      for (const w of workspaces) this.o.onStateChange?.(w.id);
      if (root !== undefined) await this.o.engine.releaseStorage(root);
      try {
        await this.o.storage.close(g.group_id);
      } catch (err) {
        locked = false;
        this.o.logger.error({ workspaceGroupID: g.group_id, err: { message: (err as Error).message } }, "could not lock and unmount the volume of a workspace group whose key was revoked; will retry");
        await this.o.storage.lock(g.group_id).catch(() => undefined);
      }
      this.o.keyring.evictGroup(g.group_id);
    });
    this.o.logger.warn({ workspaceGroupID: g.group_id, keyId, detail, ms: Date.now() - started }, "customer-managed key unavailable: the workspace group's servers stopped and its volume locked");
    await this.o.audit.record({
      type: "WorkspaceGroupKeyRevoked", source: "System", result: "SUCCESS", orgId: g.org_id, actor: { type: "system" },
      resource: { type: "WorkspaceGroup", id: g.group_id },
      reason: `customer-managed key ${g.provider} ${keyId} is unavailable (${detail}): ${workspaces.length} workspace${workspaces.length === 1 ? "" : "s"} stopped, volume ${locked ? "locked and unmounted" : "locked (unmount pending)"}, data key dropped from memory`,
      attributes: { provider: g.provider, keyID: keyId, detail, workspaceIDs: workspaces.map((w) => w.id), volumeClosed: locked },
    });
  }

  private async restored(g: CmekGroup, keyId: string): Promise<void> {
    const workspaces = await this.liveWorkspaces(g.group_id);
    await this.o.audit.record({
      type: "WorkspaceGroupKeyRestored", source: "System", result: "SUCCESS", orgId: g.org_id, actor: { type: "system" },
      resource: { type: "WorkspaceGroup", id: g.group_id },
      reason: `customer-managed key ${g.provider} ${keyId} is usable again: the workspace group's workspaces start`,
      attributes: { provider: g.provider, keyID: keyId, workspaceIDs: workspaces.map((w) => w.id) },
    });
    this.o.reconciler.retryGroup(workspaces.map((w) => w.id));
  }
}
