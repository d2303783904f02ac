import type { Db } from "../store/db.js";
import { ParhelionError } from "../lib/errors.js";
import { systemClock, type Clock } from "./types.js";

export interface OrganizationView {
  orgID: string;
  name: string;
  createdAt: string;
  /** Users must have a second factor; one without can only enroll. */
  mfaRequired: boolean;
  /** Minutes a verified second factor counts for step-up actions. */
  mfaStepUpMinutes: number;
}

/**
 * Reads organizations with a short-lived in-process cache: the organization is read on every request of
 * `GET /v1/organizations/current`, and changes to it (none through the API yet) call `invalidate`.
 */
export class OrganizationDirectory {
  private readonly cache = new Map<string, { view: OrganizationView; at: number }>();

  constructor(
    private readonly db: Db,
    private readonly clock: Clock = systemClock,
    private readonly ttlMs = 5_000,
  ) {}

  /** The organization, or ERR_NOT_FOUND. */
  async get(orgId: string): Promise<OrganizationView> {
    const now = this.clock().getTime();
    const hit = this.cache.get(orgId);
    if (hit && now - hit.at < this.ttlMs) return hit.view;
    const row = await this.db.selectFrom("organizations").select(["id", "name", "created_at", "mfa_required", "mfa_step_up_minutes"]).where("id", "=", orgId).executeTakeFirst();
    if (!row) {
      this.cache.delete(orgId);
      throw new ParhelionError("ERR_NOT_FOUND", "organization not found");
    }
    const view = { orgID: row.id, name: row.name, createdAt: new Date(row.created_at).toISOString(), mfaRequired: row.mfa_required, mfaStepUpMinutes: row.mfa_step_up_minutes };
    if (this.cache.size > 1000) this.cache.clear();
    this.cache.set(orgId, { view, at: now });
    return view;
  }

  invalidate(orgId: string): void {
    this.cache.delete(orgId);
  }
}
