import { hkdfSync, randomBytes, randomUUID } from "node:crypto";
import { isParhelionError } from "../lib/errors.js";
import { sql, type Transaction } from "kysely";
import type { Db } from "../store/db.js";
import type { Database } from "../store/schema.js";
import { ParhelionError } from "../lib/errors.js";
import { keyUnavailable } from "./errors.js";
import type { CustomerKeys, CustomerKeySpec } from "./cmek.js";
import { envelopeKeyId, open, seal } from "./envelope.js";
import type { KeyProvider, ProviderDescription, ProviderHealth, WrapContext } from "./provider.js";

/** How long an unwrapped key stays in memory before its wrapping key is asked again (below the 60 s promise). */
export const KEY_CACHE_SECONDS = 50;

/** Length of a volume master key (fscrypt v2: FSCRYPT_MAX_KEY_SIZE). */
const VOLUME_KEY_BYTES = 64;

type Kind = "org-kek" | "org-data" | "group-data";

interface KeyRow {
  id: string;
  kind: Kind;
  org_id: string;
  group_id: string | null;
  wrapped_by: string;
  provider: string | null;
  wrapped: Buffer;
  wrap: "kek" | "aws-kms" | "pkcs11";
  wrap_version: number;
}

/** A group data key's wrapping, as rotation answers it. */
export interface GroupKeyWrap {
  workspaceGroupID: string;
  keyID: string;
  /** "platform": the organization's KEK; otherwise the customer key's provider. */
  provider: "platform" | "aws-kms" | "pkcs11";
  /** The key that wraps it now: the KEK's id or the customer key's id (ARN). */
  wrappedBy: string;
  keyVersion: number;
  wrappedAt: string;
}

/** A key as `parhelion key status` shows it: ids and relations only, never key material. */
export interface KeyInfo {
  keyID: string;
  kind: Kind;
  organizationID: string;
  workspaceGroupID: string | null;
  wrappedBy: string;
  provider: string | null;
  state: "active" | "retired" | "pending";
  createdAt: string;
}

export interface KeyStatus {
  provider: ProviderDescription;
  health: ProviderHealth;
  keys: KeyInfo[];
}

export interface KeyringOptions {
  db: Db;
  provider: KeyProvider;
  /** Injectable clock (ms since the epoch) for the cache. */
  now?: () => number;
  cacheSeconds?: number;
}

/** What a KEK's wrapping by the root key is bound to. */
function kekContext(row: Pick<KeyRow, "id" | "org_id">): WrapContext {
  return { purpose: "parhelion-org-kek", keyId: row.id, organizationId: row.org_id };
}

/** What a group data key's wrapping by a customer key is bound to (AWS KMS: the EncryptionContext). */
function customerContext(row: Pick<KeyRow, "id" | "org_id" | "group_id">): WrapContext {
  return { purpose: "parhelion-group-data", keyId: row.id, organizationId: row.org_id, workspaceGroupId: row.group_id ?? "" };
}

/** What a data key's envelope under its KEK is bound to. */
function dataKeyPurpose(row: Pick<KeyRow, "id" | "kind" | "org_id" | "group_id">): string {
  return `kms_keys:${row.id}:${row.kind}:${row.org_id}:${row.group_id ?? ""}`;
}

/**
 * The key hierarchy: root key (the provider) -> one key-encryption key per organization (stored wrapped by
 * the root key) -> data keys (one per organization for metadata secrets, one per workspace group), stored
 * wrapped by the KEK. Keys are made on first use. Unwrapped keys live in this process's memory only, for
 * KEY_CACHE_SECONDS, so a root key the provider stops serving stops decryption within a minute.
 */
export class Keyring {
  private readonly db: Db;
  readonly provider: KeyProvider;
  private readonly now: () => number;
  private readonly ttlMs: number;
  private readonly cache = new Map<string, { key: Buffer; until: number; row: KeyRow }>();
  private readonly inflight = new Map<string, Promise<{ key: Buffer; row: KeyRow }>>();
  private customer: CustomerKeys | undefined;

  constructor(opts: KeyringOptions) {
    this.db = opts.db;
    this.provider = opts.provider;
    this.now = opts.now ?? Date.now;
    this.ttlMs = (opts.cacheSeconds ?? KEY_CACHE_SECONDS) * 1000;
  }

  /** Seals a secret of an organization under its metadata data key; `purpose` names where it is stored. */
  async seal(orgId: string, purpose: string, plaintext: Buffer): Promise<Buffer> {
    const k = await this.activeKey("org-data", orgId, null);
    return seal(k.key, k.id, purpose, plaintext);
  }

  /** Opens an envelope sealed by `seal` (or with a group data key); every failure is ERR_KEY_UNAVAILABLE. */
  async open(purpose: string, envelope: Buffer): Promise<Buffer> {
    const keyId = envelopeKeyId(envelope);
    const k = await this.keyById(keyId);
    if (k.row.kind === "org-kek") throw keyUnavailable(); // a KEK wraps keys, never data
    return open(k.key, purpose, envelope);
  }

  /** The workspace group's active data key (made on first use), for the volume and backup code. */
  async groupDataKey(orgId: string, groupId: string): Promise<{ id: string; key: Buffer }> {
    const k = await this.activeKey("group-data", orgId, groupId);
    return { id: k.id, key: Buffer.from(k.key) };
  }

  /**
   * The 64-byte key of the workspace group's encrypted volume (fscrypt v2 takes a 64-byte master key):
   * HKDF-SHA512 of the group's active data key, bound to the group. Derived on each call, never stored;
   * re-wrapping the data key (rotation under a new KEK or CMEK) leaves it unchanged. The caller zeroes it.
   */
  async groupVolumeKey(orgId: string, groupId: string): Promise<Buffer> {
    const k = await this.activeKey("group-data", orgId, groupId);
    return Buffer.from(hkdfSync("sha512", k.key, Buffer.alloc(0), `parhelion volume v1 ${groupId.toLowerCase()}`, VOLUME_KEY_BYTES));
  }

  /** A data key by id (e.g. the one an encrypted volume names); ERR_KEY_UNAVAILABLE if it cannot be had. */
  async dataKey(keyId: string): Promise<Buffer> {
    const k = await this.keyById(keyId);
    if (k.row.kind === "org-kek") throw keyUnavailable();
    return Buffer.from(k.key);
  }

  /** The provider, its health and the organization's keys (ids and relations, never material). */
  async status(orgId: string): Promise<KeyStatus> {
    const rows = await this.db.selectFrom("kms_keys").select(["id", "kind", "org_id", "group_id", "wrapped_by", "provider", "wrap", "state", "created_at"]).where("org_id", "=", orgId).orderBy("created_at").orderBy("id").execute();
    return {
      provider: this.provider.describe(),
      health: await this.provider.health(),
      keys: rows.map((r) => ({
        keyID: r.id, kind: r.kind, organizationID: r.org_id, workspaceGroupID: r.group_id, wrappedBy: r.wrapped_by, provider: r.wrap === "kek" ? r.provider : r.wrap,
        state: r.state, createdAt: new Date(r.created_at).toISOString(),
      })),
    };
  }

  /** Customer-managed keys: what unwraps group data keys a customer's key wraps. */
  attachCustomerKeys(ck: CustomerKeys): void {
    this.customer = ck;
    ck.attach(this);
  }

  /**
   * Re-wraps the group's data key (made first if it has none) under a customer key (spec), or under the
   * organization's KEK (null), in place: the key and its id stay, so does the volume key. Nothing changes when
   * the customer key cannot be used (ERR_KMS_KEY_UNUSABLE) or the current wrapping cannot be opened.
   */
  async setGroupCustomerKey(orgId: string, groupId: string, spec: CustomerKeySpec | null): Promise<GroupKeyWrap> {
    const ck = this.requireCustomer();
    const opened = spec === null ? null : await ck.openSpec(orgId, groupId, spec);
    try {
      const out = await this.db.transaction().execute(async (trx) => {
        await trx.selectFrom("workspace_groups").select("id").where("id", "=", groupId).forNoKeyUpdate().execute();
        const w = await this.rewrap(orgId, groupId, opened?.provider ?? null, trx);
        if (opened) {
          const { row, credential } = opened;
          const values = { ...row, credential_enc: credential, status: "ENABLED" as const, status_detail: null, checked_at: sql<Date>`now()` };
          await trx.insertInto("group_kms_keys").values(values as never)
            .onConflict((oc) => oc.column("group_id").doUpdateSet({ ...values, updated_at: sql`now()` } as never)).execute();
        } else {
          await trx.deleteFrom("group_kms_keys").where("group_id", "=", groupId).execute();
        }
        return w;
      });
      if (opened) ck.use(groupId, opened.provider);
      else ck.forget(groupId);
      this.evictGroup(groupId);
      return out;
    } catch (err) {
      if (opened) await opened.provider.close();
      throw err;
    }
  }

  /** Re-wraps the group's data key under the current version of what wraps it now (its customer key, or the KEK). */
  async rotateGroupKey(orgId: string, groupId: string): Promise<GroupKeyWrap> {
    const row = await this.groupKeyRow(orgId, groupId);
    const to = row.wrap === "kek" ? null : await this.requireCustomer().providerFor(groupId, row.wrapped_by);
    const out = await this.db.transaction().execute((trx) => this.rewrap(orgId, groupId, to, trx));
    this.evictGroup(groupId);
    return out;
  }

  /** The group data key's wrapping now (null when the group has no data key yet). */
  async groupKeyWrap(orgId: string, groupId: string): Promise<GroupKeyWrap | null> {
    const r = await this.db.selectFrom("kms_keys").select(["id", "wrap", "wrapped_by", "wrap_version", "wrapped_at"])
      .where("kind", "=", "group-data").where("org_id", "=", orgId).where("group_id", "=", groupId).where("state", "=", "active").executeTakeFirst();
    return r ? { workspaceGroupID: groupId, keyID: r.id, provider: r.wrap === "kek" ? "platform" : r.wrap, wrappedBy: r.wrapped_by, keyVersion: r.wrap_version, wrappedAt: new Date(r.wrapped_at).toISOString() } : null;
  }

  /**
   * Unwraps the group's data key afresh through its customer key (never from the cache) and forgets it: the
   * revocation check. ok for a group on the platform key (the root key's health covers it).
   */
  async verifyGroupKey(orgId: string, groupId: string): Promise<{ ok: boolean; keyId?: string }> {
    const row = (await this.db.selectFrom("kms_keys").select(["id", "kind", "org_id", "group_id", "wrapped_by", "provider", "wrapped", "wrap", "wrap_version"])
      .where("kind", "=", "group-data").where("org_id", "=", orgId).where("group_id", "=", groupId).where("state", "=", "active").executeTakeFirst()) as KeyRow | undefined;
    if (!row || row.wrap === "kek") return { ok: true };
    try {
      const p = await this.requireCustomer().providerFor(groupId, row.wrapped_by);
      const key = await p.unwrap(row.wrapped, customerContext(row));
      const ok = key.length === 32;
      key.fill(0);
      return { ok, keyId: row.wrapped_by };
    } catch {
      return { ok: false, keyId: row.wrapped_by };
    }
  }

  /**
   * Re-keying (src/workspaces/rekey.ts): makes a new data key for the group, stored `pending` (no active-key
   * lookup answers it) and wrapped the way the group's active key is wrapped now: by the organization's KEK, or by
   * the group's customer key (same context binding). Inserted through `trx`, with the operation that records it.
   */
  async createPendingGroupKey(orgId: string, groupId: string, trx: Transaction<Database>): Promise<string> {
    const active = await this.groupKeyRow(orgId, groupId);
    const key = randomBytes(32);
    try {
      const id = `dek-${randomUUID()}`;
      const row: KeyRow = { id, kind: "group-data", org_id: orgId, group_id: groupId, wrapped_by: "", provider: null, wrapped: Buffer.alloc(0), wrap: "kek", wrap_version: 1 };
      if (active.wrap === "kek") {
        const kek = await this.activeKey("org-kek", orgId, null);
        row.wrapped_by = kek.id;
        row.wrapped = seal(kek.key, kek.id, dataKeyPurpose(row), key);
      } else {
        const p = await this.requireCustomer().providerFor(groupId, active.wrapped_by);
        const d = p.describe();
        if (d.provider !== active.wrap || d.keyId !== active.wrapped_by) throw keyUnavailable();
        row.wrap = active.wrap;
        row.wrapped_by = d.keyId;
        row.wrapped = await p.wrap(key, customerContext(row));
      }
      await trx.insertInto("kms_keys").values({ ...row, state: "pending" }).execute();
      return id;
    } catch (err) {
      throw isParhelionError(err) ? err : keyUnavailable(err);
    } finally {
      key.fill(0);
    }
  }

  /** The volume key (as groupVolumeKey) derived from one of the group's data keys by id (a pending one during a re-key). The caller zeroes it. */
  async groupVolumeKeyOf(groupId: string, keyId: string): Promise<Buffer> {
    const k = await this.keyById(keyId);
    if (k.row.kind !== "group-data" || k.row.group_id?.toLowerCase() !== groupId.toLowerCase()) throw keyUnavailable();
    return Buffer.from(hkdfSync("sha512", k.key, Buffer.alloc(0), `parhelion volume v1 ${groupId.toLowerCase()}`, VOLUME_KEY_BYTES));
  }

  /** The switch of a re-key, in the caller's transaction: the old data key retired, the pending one active (compare-and-set on both). */
  async activateGroupKey(groupId: string, oldId: string, newId: string, trx: Transaction<Database>): Promise<void> {
    const retired = await trx.updateTable("kms_keys").set({ state: "retired", retired_at: sql`now()` } as never)
      .where("id", "=", oldId).where("group_id", "=", groupId).where("kind", "=", "group-data").where("state", "=", "active").executeTakeFirst();
    const activated = await trx.updateTable("kms_keys").set({ state: "active", wrapped_at: sql`now()` } as never)
      .where("id", "=", newId).where("group_id", "=", groupId).where("kind", "=", "group-data").where("state", "=", "pending").executeTakeFirst();
    if (Number(retired.numUpdatedRows) !== 1 || Number(activated.numUpdatedRows) !== 1) throw new ParhelionError("ERR_CONFLICT", "the workspace group's data keys changed during the re-key");
    this.evictGroup(groupId);
  }

  /** A rolled-back re-key: its pending data key (which never protected any data) is deleted. */
  async discardPendingGroupKeys(groupId: string): Promise<void> {
    await this.db.deleteFrom("kms_keys").where("group_id", "=", groupId).where("kind", "=", "group-data").where("state", "=", "pending").execute();
    this.evictGroup(groupId);
  }

  /** Forgets (zeroing) the unwrapped data keys of a group: after its key was revoked. */
  evictGroup(groupId: string): void {
    for (const [id, e] of this.cache) {
      if (e.row.group_id !== groupId) continue;
      e.key.fill(0);
      this.cache.delete(id);
    }
  }

  private requireCustomer(): CustomerKeys {
    if (!this.customer) throw new ParhelionError("ERR_INTERNAL", "customer-managed keys are not set up");
    return this.customer;
  }

  private async groupKeyRow(orgId: string, groupId: string, db: Db | Transaction<Database> = this.db): Promise<KeyRow> {
    const row = (await db.selectFrom("kms_keys").select(["id", "kind", "org_id", "group_id", "wrapped_by", "provider", "wrapped", "wrap", "wrap_version"])
      .where("kind", "=", "group-data").where("org_id", "=", orgId).where("group_id", "=", groupId).where("state", "=", "active").executeTakeFirst()) as KeyRow | undefined;
    if (!row) throw new ParhelionError("ERR_NOT_FOUND", "the workspace group has no data key yet");
    return row;
  }

  /** Unwraps the group's data key (made first if needed) and stores it wrapped under `to` (null: the KEK), compare-and-set. */
  private async rewrap(orgId: string, groupId: string, to: KeyProvider | null, trx: Transaction<Database>): Promise<GroupKeyWrap> {
    await this.activeKey("group-data", orgId, groupId);
    const row = await this.groupKeyRow(orgId, groupId, trx);
    const key = Buffer.from((await this.load(row.id)).key);
    try {
      let wrapped: Buffer;
      let wrappedBy: string;
      let wrap: KeyRow["wrap"];
      if (to === null) {
        const kek = await this.activeKey("org-kek", orgId, null);
        wrapped = seal(kek.key, kek.id, dataKeyPurpose(row), key);
        wrappedBy = kek.id;
        wrap = "kek";
      } else {
        const d = to.describe();
        if (d.provider !== "aws-kms" && d.provider !== "pkcs11") throw new ParhelionError("ERR_INTERNAL", "a customer key is aws-kms or pkcs11");
        wrapped = await to.wrap(key, customerContext(row));
        wrappedBy = d.keyId;
        wrap = d.provider;
      }
      const r = await trx.updateTable("kms_keys").set({ wrapped, wrapped_by: wrappedBy, wrap, wrap_version: sql`wrap_version + 1`, wrapped_at: sql`now()` } as never)
        .where("id", "=", row.id).where("wrap_version", "=", row.wrap_version).returning(["wrap_version", "wrapped_at"]).executeTakeFirst();
      if (!r) throw new ParhelionError("ERR_CONFLICT", "the workspace group's key changed meanwhile; retry");
      return { workspaceGroupID: groupId, keyID: row.id, provider: wrap === "kek" ? "platform" : wrap, wrappedBy, keyVersion: r.wrap_version, wrappedAt: new Date(r.wrapped_at).toISOString() };
    } finally {
      key.fill(0);
    }
  }

  /** Forgets every unwrapped key (zeroing it). */
  clear(): void {
    for (const e of this.cache.values()) e.key.fill(0);
    this.cache.clear();
  }

  /** The active key of a kind for an organization or group, made (with its KEK) when there is none. */
  private async activeKey(kind: Kind, orgId: string, groupId: string | null): Promise<{ id: string; key: Buffer }> {
    const find = () => {
      let q = this.db.selectFrom("kms_keys").select("id").where("kind", "=", kind).where("org_id", "=", orgId).where("state", "=", "active");
      q = groupId === null ? q : q.where("group_id", "=", groupId);
      return q.executeTakeFirst();
    };
    let row = await find();
    if (!row) {
      await this.create(kind, orgId, groupId);
      row = await find();
      if (!row) throw keyUnavailable();
    }
    const k = await this.keyById(row.id);
    return { id: row.id, key: k.key };
  }

  /** Makes a key; when another process made one at the same time, the unique index keeps theirs. */
  private async create(kind: Kind, orgId: string, groupId: string | null): Promise<void> {
    const key = randomBytes(32);
    try {
      let row: KeyRow;
      if (kind === "org-kek") {
        const d = this.provider.describe();
        const id = `kek-${randomUUID()}`;
        row = { id, kind, org_id: orgId, group_id: null, wrapped_by: d.keyId, provider: d.provider, wrapped: Buffer.alloc(0), wrap: "kek", wrap_version: 1 };
        row.wrapped = await this.provider.wrap(key, kekContext(row));
      } else {
        const kek = await this.activeKey("org-kek", orgId, null);
        const id = `dek-${randomUUID()}`;
        row = { id, kind, org_id: orgId, group_id: groupId, wrapped_by: kek.id, provider: null, wrapped: Buffer.alloc(0), wrap: "kek", wrap_version: 1 };
        row.wrapped = seal(kek.key, kek.id, dataKeyPurpose(row), key);
      }
      await this.db.insertInto("kms_keys").values(row).onConflict((oc) => oc.doNothing()).execute();
    } catch (err) {
      throw isParhelionError(err) && err.code === "ERR_KEY_UNAVAILABLE" ? err : keyUnavailable(err);
    } finally {
      key.fill(0);
    }
  }

  /** Unwraps a key through its chain (data key -> KEK -> root), from the cache while it is fresh. */
  private keyById(id: string): Promise<{ key: Buffer; row: KeyRow }> {
    const hit = this.cache.get(id);
    if (hit && hit.until > this.now()) return Promise.resolve(hit);
    if (hit) {
      hit.key.fill(0);
      this.cache.delete(id);
    }
    let p = this.inflight.get(id);
    if (!p) {
      p = this.load(id).finally(() => this.inflight.delete(id));
      this.inflight.set(id, p);
    }
    return p;
  }

  private async load(id: string): Promise<{ key: Buffer; row: KeyRow }> {
    try {
      return await this.loadChain(id);
    } catch (err) {
      // Whatever failed (the store, the provider, a tag), the caller learns only that the key is unavailable.
      throw isParhelionError(err) && err.code === "ERR_KEY_UNAVAILABLE" ? err : keyUnavailable(err);
    }
  }

  private async loadChain(id: string): Promise<{ key: Buffer; row: KeyRow }> {
    const row = (await this.db.selectFrom("kms_keys").select(["id", "kind", "org_id", "group_id", "wrapped_by", "provider", "wrapped", "wrap", "wrap_version"]).where("id", "=", id).executeTakeFirst()) as KeyRow | undefined;
    if (!row) throw keyUnavailable();
    let key: Buffer;
    if (row.wrap !== "kek") {
      // A group data key wrapped by its customer's key: that key's provider, and nothing else, unwraps it.
      if (row.kind !== "group-data" || row.group_id === null || !this.customer) throw keyUnavailable();
      const p = await this.customer.providerFor(row.group_id, row.wrapped_by);
      const d = p.describe();
      if (d.provider !== row.wrap || d.keyId !== row.wrapped_by) throw keyUnavailable();
      key = await p.unwrap(row.wrapped, customerContext(row));
    } else if (row.kind === "org-kek") {
      const d = this.provider.describe();
      if (row.provider !== d.provider || row.wrapped_by !== d.keyId) throw keyUnavailable();
      key = await this.provider.unwrap(row.wrapped, kekContext(row));
    } else {
      if (envelopeKeyId(row.wrapped) !== row.wrapped_by) throw keyUnavailable();
      const kek = await this.keyById(row.wrapped_by);
      if (kek.row.kind !== "org-kek" || kek.row.org_id !== row.org_id) throw keyUnavailable();
      key = open(kek.key, dataKeyPurpose(row), row.wrapped);
    }
    if (key.length !== 32) throw keyUnavailable();
    const entry = { key, row, until: this.now() + this.ttlMs };
    this.cache.set(id, entry);
    return entry;
  }
}
