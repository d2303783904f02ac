/**
 * Customer-managed keys (CMEK): a workspace group's data key wrapped by the customer's own key (AWS KMS or a
 * PKCS#11 HSM) instead of the organization's KEK. Moving to or from a customer key, and rotation, re-wrap the
 * data key in place: the key never changes, so neither does the volume key derived from it, and no data is
 * rewritten. A customer key that is disabled or deleted makes the data key impossible to unwrap.
 */
import { sql } from "kysely";
import { ParhelionError, isParhelionError } from "../lib/errors.js";
import type { Db } from "../store/db.js";
import type { Logger } from "../log/logger.js";
import type { KeyProvider, ProviderHealth } from "./provider.js";
import { keyUnavailable } from "./errors.js";

export type CustomerKeyProviderKind = "aws-kms" | "pkcs11";

/** A customer key as the API takes it. aws-kms: a key id, ARN or alias; pkcs11: `<token label>/<key label>` and the token's PIN. */
export type CustomerKeySpec =
  | { provider: "aws-kms"; keyID: string; region?: string | undefined }
  | { provider: "pkcs11"; keyID: string; pin: string };

/** Where customer keys are reached: the operator's settings (an API caller never names an endpoint or a module). */
export interface CmekSettings {
  /** Region of aws-kms keys given without one (an ARN names its own). */
  awsRegion?: string | undefined;
  /** An https:// KMS endpoint instead of AWS's regional one. */
  awsEndpoint?: string | undefined;
  awsCaFile?: string | undefined;
  /** The PKCS#11 module customers' HSM tokens are reached through. */
  hsmModule?: string | undefined;
}

/** A group's customer key as GET /v1/workspaceGroups/{id} shows it. */
export interface GroupKmsKeyView {
  provider: CustomerKeyProviderKind;
  keyID: string;
  /** ENABLED: the key unwrapped the group's data key at the last check; UNAVAILABLE: it did not (disabled, deleted, unreachable). */
  status: "ENABLED" | "UNAVAILABLE";
  statusDetail?: string;
  checkedAt?: string;
}

interface GroupKmsRow {
  group_id: string;
  org_id: string;
  provider: CustomerKeyProviderKind;
  key_ref: string;
  key_id: string;
  settings: Record<string, string>;
  credential_enc: Buffer | null;
}

/** Sealing of a pkcs11 PIN under the organization's data key (the keyring). */
export interface CredentialSealer {
  seal(orgId: string, purpose: string, plaintext: Buffer): Promise<Buffer>;
  open(purpose: string, envelope: Buffer): Promise<Buffer>;
}

export function unusable(keyID: string, reason: string, cause?: unknown): ParhelionError {
  return new ParhelionError("ERR_KMS_KEY_UNUSABLE", `the customer-managed key ${keyID} cannot be used: ${reason}`, cause === undefined ? undefined : { cause });
}

const credentialPurpose = (groupId: string) => `group_kms_keys.credential_enc:${groupId}`;
const AWS_ARN = /^arn:aws[a-z-]*:kms:([a-z0-9-]+):\d{12}:(key|alias)\/.+$/;

/** What Pkcs11KeyProvider.open's refusals mean for a customer's key (its messages speak of a root key). */
const PKCS11_REASONS: ReadonlyArray<readonly [RegExp, string]> = [
  [/no AES key labelled/, "no such key on the token"],
  [/no PKCS#11 token labelled/, "no such token"],
  [/is not an AES-256 key/, "not an AES-256 key"],
  [/is extractable or not sensitive/, "the key is extractable or not sensitive"],
  [/AES keys labelled/, "more than one AES key with that label"],
];

/** The short name of what went wrong (an AWS exception name or a PKCS#11 return code), never a secret. */
function reasonOf(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  // A PKCS#11 return code first: the cause of a PKCS#11 failure is graphene's generic Pkcs11Error.
  const ckr = /CKR_[A-Z_]+/.exec(msg)?.[0];
  if (ckr) return ckr;
  const cause = (err as { cause?: unknown }).cause;
  const name = cause instanceof Error ? cause.name : undefined;
  if (name && name !== "Error" && name !== "ParhelionError" && name !== "Pkcs11Error") return name;
  return /([A-Za-z]+Exception)/.exec(msg)?.[1] ?? PKCS11_REASONS.find(([re]) => re.test(msg))?.[1] ?? "the key could not be reached";
}

/** Opens customer keys (one provider per group, kept while the group's key stays the same). */
export class CustomerKeys {
  private readonly open = new Map<string, { keyId: string; provider: Promise<KeyProvider> }>();
  private sealer: CredentialSealer | undefined;

  constructor(private readonly o: { db: Db; settings: CmekSettings; logger: Logger }) {}

  /** The keyring that seals PINs (set once, after both exist). */
  attach(sealer: CredentialSealer): void {
    this.sealer = sealer;
  }

  /** Opens the key a spec names and proves it works (a wrap and unwrap); ERR_KMS_KEY_UNUSABLE when it does not. */
  async openSpec(orgId: string, groupId: string, spec: CustomerKeySpec): Promise<{ provider: KeyProvider; row: Omit<GroupKmsRow, "credential_enc">; credential: Buffer | null }> {
    let provider: KeyProvider;
    let settings: Record<string, string>;
    let credential: Buffer | null = null;
    if (spec.provider === "aws-kms") {
      const region = AWS_ARN.exec(spec.keyID)?.[1] ?? spec.region ?? this.o.settings.awsRegion;
      if (region === undefined) throw new ParhelionError("ERR_VALIDATION", "kmsKey.region: give the key's AWS region (or its ARN)");
      settings = { region };
      provider = await this.openAws(spec.keyID, region);
    } else {
      const m = /^([^/]{1,32})\/(.{1,128})$/.exec(spec.keyID);
      if (!m) throw new ParhelionError("ERR_VALIDATION", "kmsKey.keyID: a pkcs11 key is <token label>/<key label>");
      settings = { token: m[1]!, keyLabel: m[2]! };
      provider = await this.openPkcs11(spec.keyID, settings, spec.pin);
      if (!this.sealer) throw new ParhelionError("ERR_INTERNAL", "customer keys are not attached to the keyring");
      credential = await this.sealer.seal(orgId, credentialPurpose(groupId), Buffer.from(spec.pin, "utf8"));
    }
    const h = await provider.health();
    if (!h.ok) {
      await provider.close();
      throw unusable(spec.keyID, h.detail);
    }
    const keyId = provider.describe().keyId;
    return { provider, credential, row: { group_id: groupId, org_id: orgId, provider: spec.provider, key_ref: spec.keyID, key_id: keyId, settings } };
  }

  private async openAws(keyID: string, region: string): Promise<KeyProvider> {
    const { AwsKmsKeyProvider } = await import("./aws.js");
    try {
      return await AwsKmsKeyProvider.open({ keyId: keyID, region, endpoint: this.o.settings.awsEndpoint, caFile: this.o.settings.awsCaFile, timeoutSeconds: 10 });
    } catch (err) {
      throw unusable(keyID, reasonOf(err), err);
    }
  }

  private async openPkcs11(keyID: string, settings: Record<string, string>, pin: string): Promise<KeyProvider> {
    const module = this.o.settings.hsmModule;
    if (module === undefined) throw new ParhelionError("ERR_FIELD_NOT_SUPPORTED", "kmsKey.provider pkcs11: this installation has no PKCS#11 module for customer keys (the operator sets cmekHsmModule)");
    const { Pkcs11KeyProvider } = await import("./pkcs11.js");
    try {
      return Pkcs11KeyProvider.open({ module, token: settings["token"]!, keyLabel: settings["keyLabel"]!, pin, create: false });
    } catch (err) {
      throw unusable(keyID, reasonOf(err), err);
    }
  }

  /** The group's customer key provider when its resolved id is `keyId`; ERR_KEY_UNAVAILABLE otherwise. */
  providerFor(groupId: string, keyId: string): Promise<KeyProvider> {
    const hit = this.open.get(groupId);
    if (hit && hit.keyId === keyId) return hit.provider;
    if (hit) this.forget(groupId);
    const p = this.load(groupId, keyId);
    this.open.set(groupId, { keyId, provider: p });
    p.catch(() => {
      if (this.open.get(groupId)?.provider === p) this.open.delete(groupId);
    });
    return p;
  }

  private async load(groupId: string, keyId: string): Promise<KeyProvider> {
    const row = (await this.o.db.selectFrom("group_kms_keys").selectAll().where("group_id", "=", groupId).executeTakeFirst()) as GroupKmsRow | undefined;
    if (!row || row.key_id !== keyId) throw keyUnavailable();
    try {
      if (row.provider === "aws-kms") return await this.openAws(row.key_id, row.settings["region"]!);
      if (!row.credential_enc || !this.sealer) throw keyUnavailable();
      const pin = await this.sealer.open(credentialPurpose(groupId), row.credential_enc);
      try {
        return await this.openPkcs11(row.key_id, row.settings, pin.toString("utf8"));
      } finally {
        pin.fill(0);
      }
    } catch (err) {
      throw isParhelionError(err) && err.code === "ERR_KEY_UNAVAILABLE" ? err : keyUnavailable(err);
    }
  }

  /** Installs a provider opened by openSpec as the group's (after the store says so). */
  use(groupId: string, provider: KeyProvider): void {
    this.forget(groupId);
    this.open.set(groupId, { keyId: provider.describe().keyId, provider: Promise.resolve(provider) });
  }

  /** Closes the group's provider (its key changed, or the group went back to the platform key). */
  forget(groupId: string): void {
    const hit = this.open.get(groupId);
    if (!hit) return;
    this.open.delete(groupId);
    hit.provider.then((p) => p.close()).catch(() => undefined);
  }

  /** The state of the group's customer key now: its provider's health, or why it cannot be opened. */
  async health(groupId: string, keyId: string): Promise<ProviderHealth> {
    try {
      return await (await this.providerFor(groupId, keyId)).health();
    } catch (err) {
      return { ok: false, detail: reasonOf(err) };
    }
  }

  async view(groupId: string): Promise<GroupKmsKeyView | null> {
    const r = await this.o.db.selectFrom("group_kms_keys").select(["provider", "key_id", "status", "status_detail", "checked_at"]).where("group_id", "=", groupId).executeTakeFirst();
    return r ? kmsView(r) : null;
  }

  /** Records a check's outcome; answers the status before it. */
  async record(groupId: string, status: "ENABLED" | "UNAVAILABLE", detail: string | null): Promise<void> {
    await this.o.db.updateTable("group_kms_keys").set({ status, status_detail: detail?.slice(0, 300) ?? null, checked_at: sql`now()` }).where("group_id", "=", groupId).execute();
  }

  async close(): Promise<void> {
    for (const id of [...this.open.keys()]) this.forget(id);
  }
}

/** The view of a group_kms_keys row. */
export function kmsView(r: { provider: CustomerKeyProviderKind; key_id: string; status: "ENABLED" | "UNAVAILABLE"; status_detail: string | null; checked_at: Date | null }): GroupKmsKeyView {
  return {
    provider: r.provider, keyID: r.key_id, status: r.status,
    ...(r.status_detail ? { statusDetail: r.status_detail } : {}),
    ...(r.checked_at ? { checkedAt: new Date(r.checked_at).toISOString() } : {}),
  };
}
