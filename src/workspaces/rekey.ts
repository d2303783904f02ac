/**
 * Re-keying a workspace group's data key (issue 4): a new data key, a new volume key derived from it, and every
 * workspace's data copied from the volume's encrypted directory into a new one under the new key, offline.
 *
 * Phases, each recorded in `group_rekeys` before it starts (src/workspaces/DESIGN.md):
 *   STOPPING   the group held away from the reconciler, its sessions ended, its servers stopped
 *   COPYING    a new data key (kms_keys state pending, recorded with the phase in one transaction); the new volume key
 *              added to the filesystem; `.data.rekey` made with its policy; everything copied and fsynced
 *   SWITCHING  in one transaction with the phase: the old data key retired, the new one active; then `data` ->
 *              `.data.old`, `.data.rekey` -> `data` (renames in the unencrypted mount root), fsync
 *   CLEANUP    the old key out of the kernel, `.data.old` removed
 *   DONE       the hold released: the reconciler starts the workspaces again
 * A failure or a restart before SWITCHING rolls back (the old directory was never touched: the new directory and
 * the pending key are deleted, FAILED). From SWITCHING on, the copy is whole and the store already names the new
 * key: a restart finishes the switch and the cleanup. A workspace never starts on a half-copied directory: the
 * reconciler does not touch a held group, and after a restart the volume refuses to unlock while `data` is missing
 * beside a re-key's directories (src/volumes/volume.ts).
 */
import { EventEmitter } from "node:events";
import { randomUUID } from "node:crypto";
import { sql } from "kysely";
import type { Db } from "../store/db.js";
import type { RekeyPhase } from "../store/schema.js";
import type { Logger } from "../log/logger.js";
import type { AuditLog } from "../audit/index.js";
import type { Keyring } from "../kms/keyring.js";
import type { GroupStorage } from "../volumes/groups.js";
import { ParhelionError, isParhelionError } from "../lib/errors.js";
import type { EngineOps, Reconciler, ReconcilerOptions } from "./reconciler.js";

/** Why a re-key was refused (ERR_REKEY_REFUSED's `reason`). */
export type RekeyRefusal = "IN_PROGRESS" | "KEY_UNAVAILABLE" | "NO_VOLUME_ENCRYPTION" | "NO_DATA_KEY";

/** The reason a workspace shows while its group is re-keyed. */
export const REKEY_REASON = "REKEYING: the workspace group's data key is being replaced and its encrypted volume rewritten; the workspace is offline until that finishes (GET /v1/workspaceGroups/{id}/keys shows the progress)";

/** Room left on the volume beyond the bytes to copy (directories, ext4's own metadata). */
const SPACE_MARGIN_BYTES = 16 * 1024 * 1024;

/** A re-key as GET /v1/workspaceGroups/{id}/keys shows it. */
export interface RekeyView {
  operationID: string;
  workspaceGroupID: string;
  phase: RekeyPhase;
  /** RUNNING until DONE; FAILED: rolled back, the group keeps its old key and nothing was lost (`error` says why). */
  state: "RUNNING" | "DONE" | "FAILED";
  oldKeyID: string;
  newKeyID: string | null;
  bytesCopied: number;
  bytesTotal: number;
  workspaceIDs: string[];
  startedAt: string;
  updatedAt: string;
  finishedAt?: string;
  error?: string;
}

export interface RekeyProgress {
  operationID: string;
  workspaceGroupID: string;
  phase: RekeyPhase;
  bytesCopied: number;
  bytesTotal: number;
}

export interface GroupRekeysOptions extends Pick<ReconcilerOptions, "onStopping" | "onStateChange"> {
  db: Db;
  keyring: Pick<Keyring, "createPendingGroupKey" | "groupVolumeKeyOf" | "activateGroupKey" | "discardPendingGroupKeys" | "verifyGroupKey" | "dataKey">;
  engine: Pick<EngineOps, "ensureStopped" | "releaseStorage">;
  storage: GroupStorage;
  reconciler: Pick<Reconciler, "exclusive" | "hold" | "release" | "retryGroup">;
  audit: Pick<AuditLog, "record">;
  logger: Logger;
  /** Least time between two progress writes to the store (default 250 ms). */
  progressIntervalMs?: number;
}

type OpRow = {
  id: string; group_id: string; org_id: string; phase: RekeyPhase; old_key_id: string; new_key_id: string | null;
  old_identifier: string | null; new_identifier: string | null; bytes_total: string; bytes_copied: string;
  workspace_ids: string[]; error: string | null; requested_by: string; started_at: Date; updated_at: Date; finished_at: Date | null;
};

function refused(reason: RekeyRefusal, message: string, cause?: unknown): ParhelionError {
  return new ParhelionError("ERR_REKEY_REFUSED", message, { details: { reason }, ...(cause === undefined ? {} : { cause }) });
}

function view(r: OpRow): RekeyView {
  return {
    operationID: r.id, workspaceGroupID: r.group_id, phase: r.phase,
    state: r.phase === "DONE" ? "DONE" : r.phase === "FAILED" ? "FAILED" : "RUNNING",
    oldKeyID: r.old_key_id, newKeyID: r.new_key_id, bytesCopied: Number(r.bytes_copied), bytesTotal: Number(r.bytes_total),
    workspaceIDs: r.workspace_ids, startedAt: new Date(r.started_at).toISOString(), updatedAt: new Date(r.updated_at).toISOString(),
    ...(r.finished_at ? { finishedAt: new Date(r.finished_at).toISOString() } : {}),
    ...(r.error ? { error: r.error } : {}),
  };
}

const PRE_SWITCH: readonly RekeyPhase[] = ["STOPPING", "COPYING"];

/** Re-keys of workspace groups' data keys: one at a time per group, run in the background, crash-safe. */
export class GroupRekeys extends EventEmitter<{ progress: [RekeyProgress] }> {
  private readonly running = new Map<string, { abort: AbortController; done: Promise<void> }>();
  private readonly progressMs: number;

  constructor(private readonly o: GroupRekeysOptions) {
    super();
    this.progressMs = o.progressIntervalMs ?? 250;
  }

  /**
   * Starts re-keying the group's data key and answers the operation (RUNNING, phase STOPPING). Refused with
   * ERR_REKEY_REFUSED (409) when one is running, the group's key cannot be unwrapped, the group has no data key
   * yet, or workspace data is not on encrypted volumes.
   */
  async start(orgId: string, groupId: string, requestedBy: string): Promise<RekeyView> {
    const g = await this.o.db.selectFrom("workspace_groups").select(["id", "state"]).where("id", "=", groupId).where("org_id", "=", orgId).executeTakeFirst();
    if (!g) throw new ParhelionError("ERR_NOT_FOUND", "workspace group not found");
    if (g.state === "TERMINATED") throw new ParhelionError("ERR_CONFLICT", "the workspace group is terminated");
    const gid = g.id;
    if (this.o.storage.encryption === "none" || !this.o.storage.rekeyVolume(gid)) {
      throw refused("NO_VOLUME_ENCRYPTION", "volumeEncryption is none: workspace data is not on encrypted volumes, so there is no volume to re-key");
    }
    if (this.running.has(gid)) throw refused("IN_PROGRESS", "a re-key of this workspace group is already running");
    const key = await this.o.db.selectFrom("kms_keys").select(["id"]).where("kind", "=", "group-data").where("org_id", "=", orgId).where("group_id", "=", gid).where("state", "=", "active").executeTakeFirst();
    if (!key) throw refused("NO_DATA_KEY", "the workspace group has no data key yet (none of its workspaces has started): there is nothing to re-key");
    const cmek = await this.o.db.selectFrom("group_kms_keys").select(["status"]).where("group_id", "=", gid).executeTakeFirst();
    try {
      const v = await this.o.keyring.verifyGroupKey(orgId, gid);
      if (!v.ok || cmek?.status === "UNAVAILABLE") throw new ParhelionError("ERR_KEY_UNAVAILABLE");
      (await this.o.keyring.dataKey(key.id)).fill(0);
    } catch (err) {
      throw refused("KEY_UNAVAILABLE", "the workspace group's data key cannot be unwrapped (its customer-managed key is disabled, deleted or unreachable, or the platform key is unavailable): nothing changed", err);
    }
    let row: OpRow;
    try {
      row = (await this.o.db.insertInto("group_rekeys")
        .values({ id: randomUUID(), group_id: gid, org_id: orgId, phase: "STOPPING", old_key_id: key.id, requested_by: requestedBy.slice(0, 300) })
        .returningAll().executeTakeFirstOrThrow()) as OpRow;
    } catch (err) {
      if ((err as { code?: string }).code === "23505") throw refused("IN_PROGRESS", "a re-key of this workspace group is already running");
      throw err;
    }
    this.launch(row);
    return view(row);
  }

  /** The group's latest re-key (null when it never had one). */
  async latest(orgId: string, groupId: string): Promise<RekeyView | null> {
    const r = await this.o.db.selectFrom("group_rekeys").selectAll().where("group_id", "=", groupId).where("org_id", "=", orgId).orderBy("started_at", "desc").orderBy("id").limit(1).executeTakeFirst();
    return r ? view(r as OpRow) : null;
  }

  /** Resolves when the group's re-key running in this process (if any) has ended. */
  async wait(groupId: string): Promise<void> {
    await this.running.get(groupId.toLowerCase())?.done;
  }

  /**
   * At start, before the reconciler: every re-key a stop or crash interrupted is rolled back (before its switch)
   * or finished (from the switch on). One that cannot be is logged and left for the next start.
   */
  async recover(): Promise<void> {
    const ops = (await this.o.db.selectFrom("group_rekeys").selectAll().where("phase", "not in", ["DONE", "FAILED"]).execute()) as OpRow[];
    for (const op of ops) {
      const log = this.o.logger.child({ workspaceGroupID: op.group_id, operationID: op.id, phase: op.phase });
      try {
        if (PRE_SWITCH.includes(op.phase)) {
          log.warn("re-key interrupted before its switch: rolling back to the old key");
          await this.rollBack(op, "parhelion stopped before the switch: rolled back, the group keeps its old key and nothing was lost; re-key again");
        } else {
          log.warn("re-key interrupted after its switch: finishing it");
          await this.finish(op);
        }
      } catch (err) {
        log.error({ err: { message: (err as Error).message } }, "could not recover an interrupted re-key; will retry at the next start");
      }
    }
  }

  /** Stops the running copies (platform stop): what they leave is what a crash leaves, and recover() handles it. */
  async stop(): Promise<void> {
    for (const r of this.running.values()) r.abort.abort(new Error("parhelion is stopping"));
    await Promise.all([...this.running.values()].map((r) => r.done));
  }

  private launch(op: OpRow): void {
    const abort = new AbortController();
    const done = this.run(op, abort.signal).finally(() => this.running.delete(op.group_id));
    this.running.set(op.group_id, { abort, done });
  }

  private async update(op: OpRow, set: Partial<Omit<OpRow, "id">>): Promise<void> {
    Object.assign(op, set);
    const { workspace_ids, ...rest } = set;
    await this.o.db.updateTable("group_rekeys")
      .set({ ...rest, ...(workspace_ids ? { workspace_ids: JSON.stringify(workspace_ids) } : {}), updated_at: sql`now()` } as never)
      .where("id", "=", op.id).execute();
  }

  private volume(groupId: string) {
    const v = this.o.storage.rekeyVolume(groupId);
    if (!v) throw new ParhelionError("ERR_INTERNAL", "re-keying needs encrypted volumes");
    return v;
  }

  private async run(op: OpRow, signal: AbortSignal): Promise<void> {
    const gid = op.group_id;
    const log = this.o.logger.child({ workspaceGroupID: gid, operationID: op.id });
    const started = Date.now();
    let switched = false;
    let held = false;
    let keepHeld = false;
    try {
      // STOPPING: no pass touches the group from here on; its sessions end and its servers stop.
      const root = this.o.storage.root(gid);
      const ids = await this.o.reconciler.exclusive(async () => {
        this.o.reconciler.hold(gid);
        held = true;
        const live = await this.o.db.selectFrom("workspaces").select(["id"]).where("group_id", "=", gid).where("state", "<>", "TERMINATED").where("desired_state", "<>", "TERMINATED").execute();
        for (const w of live) {
          this.o.onStopping?.(w.id);
          await this.o.engine.ensureStopped(w.id, root);
        }
        await this.o.db.updateTable("workspaces").set({ state: "RESUMING", state_reason: REKEY_REASON, updated_at: sql`now()` })
          .where("group_id", "=", gid).where("desired_state", "=", "ACTIVE").where("state", "<>", "TERMINATED").execute();
        for (const w of live) this.o.onStateChange?.(w.id);
        if (root !== undefined) await this.o.engine.releaseStorage(root);
        return live.map((w) => w.id);
      });
      await this.update(op, { workspace_ids: ids });
      log.info({ workspaces: ids.length }, "re-key: the group's workspaces are stopped");
      // The volume unlocked with the current key: the copy reads the old directory.
      await this.o.storage.open({ groupId: gid, orgId: op.org_id, sizeBytes: 0 });
      const vol = this.volume(gid);

      // COPYING: the new data key and the phase in one transaction, so a restart always knows which key to drop.
      const newKeyId = await this.o.db.transaction().execute(async (trx) => {
        const id = await this.o.keyring.createPendingGroupKey(op.org_id, gid, trx);
        await trx.updateTable("group_rekeys").set({ phase: "COPYING", new_key_id: id, updated_at: sql`now()` }).where("id", "=", op.id).execute();
        return id;
      });
      Object.assign(op, { phase: "COPYING", new_key_id: newKeyId });
      const volumeKey = await this.o.keyring.groupVolumeKeyOf(gid, newKeyId);
      let begun: Awaited<ReturnType<typeof vol.beginRekey>>;
      try {
        begun = await vol.beginRekey(volumeKey);
      } finally {
        volumeKey.fill(0);
      }
      await this.update(op, { old_identifier: begun.oldIdentifier, new_identifier: begun.newIdentifier, bytes_total: String(begun.size.bytes), bytes_copied: "0" });
      if (begun.freeBytes < begun.size.bytes + SPACE_MARGIN_BYTES) {
        throw new ParhelionError("ERR_VOLUME", `the volume has ${begun.freeBytes} bytes free and the copy needs ${begun.size.bytes + SPACE_MARGIN_BYTES}: re-keying needs room for a second copy of the data`);
      }
      let lastWrite = 0;
      let writing: Promise<void> = Promise.resolve();
      const copied = await vol.copyRekey({
        signal,
        progress: (bytes) => {
          this.emit("progress", { operationID: op.id, workspaceGroupID: gid, phase: "COPYING", bytesCopied: bytes, bytesTotal: begun.size.bytes });
          const now = Date.now();
          if (now - lastWrite < this.progressMs) return;
          lastWrite = now;
          writing = writing.then(() => this.update(op, { bytes_copied: String(bytes) })).catch(() => undefined);
        },
      });
      await writing;
      await this.update(op, { bytes_copied: String(copied), bytes_total: String(Math.max(copied, begun.size.bytes)) });
      log.info({ bytes: copied, ms: Date.now() - started }, "re-key: data copied under the new key");

      // SWITCHING and CLEANUP, with no reconciler pass or key revocation in between.
      await this.o.reconciler.exclusive(async () => {
        if (signal.aborted) throw new ParhelionError("ERR_VOLUME", "the re-key was stopped", { cause: signal.reason });
        await this.o.db.transaction().execute(async (trx) => {
          await trx.updateTable("group_rekeys").set({ phase: "SWITCHING", updated_at: sql`now()` }).where("id", "=", op.id).where("phase", "=", "COPYING").execute();
          await this.o.keyring.activateGroupKey(gid, op.old_key_id, newKeyId, trx);
        });
        op.phase = "SWITCHING";
        switched = true;
        await this.finish(op);
      });
      log.info({ ms: Date.now() - started }, "re-key done");
    } catch (err) {
      if (signal.aborted) {
        log.warn({ phase: op.phase }, "re-key stopped with parhelion; the next start rolls it back or finishes it");
        return;
      }
      log.error({ phase: op.phase, err: { message: (err as Error).message } }, "re-key failed");
      const message = isParhelionError(err) && err.code !== "ERR_INTERNAL" ? err.message : "an internal error occurred; the server log says why";
      if (!switched) {
        await this.rollBack(op, `${message}: rolled back, the group keeps its old key and nothing was lost`).catch((e: unknown) => {
          log.error({ err: { message: (e as Error).message } }, "could not roll the re-key back; the next start retries");
        });
      } else {
        // The store names the new key but the directories may be mid-switch: the group stays held (offline) until
        // a restart finishes it, so no server starts on a missing or half-renamed directory.
        keepHeld = true;
        await this.update(op, { error: `${message}: the switch to the new key is recorded; the workspaces stay offline until parhelion restarts and finishes it` }).catch(() => undefined);
      }
    } finally {
      if (held && !signal.aborted && !keepHeld) {
        this.o.reconciler.release(gid);
        this.o.reconciler.retryGroup(op.workspace_ids);
      }
    }
  }

  /** From SWITCHING: the renames (idempotent), then CLEANUP (old key out of the kernel, old directory removed), DONE. */
  private async finish(op: OpRow): Promise<void> {
    const vol = this.volume(op.group_id);
    await vol.mountOnly();
    if (op.phase === "SWITCHING") {
      await vol.switchRekey();
      await this.update(op, { phase: "CLEANUP" });
    }
    await vol.finishRekey(op.old_identifier);
    await this.update(op, { phase: "DONE", error: null, finished_at: new Date() });
    await this.o.audit.record({
      type: "WorkspaceGroupRekey", source: "System", result: "SUCCESS", orgId: op.org_id, actor: { type: "system" },
      resource: { type: "WorkspaceGroup", id: op.group_id },
      reason: `data key re-keyed: ${op.old_key_id} retired, ${op.new_key_id} active; ${Number(op.bytes_copied)} bytes copied under the new volume key; the workspaces start again`,
      attributes: { operationID: op.id, phase: "DONE", oldKeyID: op.old_key_id, newKeyID: op.new_key_id, bytesCopied: Number(op.bytes_copied), workspaceIDs: op.workspace_ids },
    });
  }

  /** Before SWITCHING: the new directory and the new key go, the old key and directory stay; FAILED. */
  private async rollBack(op: OpRow, error: string): Promise<void> {
    const vol = this.volume(op.group_id);
    if ((await vol.imageBytes()) !== undefined) {
      await vol.mountOnly();
      await vol.abortRekey(op.new_identifier);
    }
    await this.o.keyring.discardPendingGroupKeys(op.group_id);
    await this.update(op, { phase: "FAILED", error: error.slice(0, 1000), finished_at: new Date() });
    await this.o.audit.record({
      type: "WorkspaceGroupRekey", source: "System", result: "FAILURE", orgId: op.org_id, actor: { type: "system" },
      resource: { type: "WorkspaceGroup", id: op.group_id },
      reason: `re-key of data key ${op.old_key_id} rolled back: ${error.slice(0, 300)}`,
      attributes: { operationID: op.id, phase: "FAILED", oldKeyID: op.old_key_id, discardedKeyID: op.new_key_id, workspaceIDs: op.workspace_ids },
    });
  }
}
