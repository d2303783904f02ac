import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { calculateJwkThumbprint, exportJWK } from "jose";
import type { Db } from "../store/db.js";

/** What OrgSigningKeys needs of the key hierarchy (the Keyring). */
export interface KeySealer {
  seal(orgId: string, purpose: string, plaintext: Buffer): Promise<Buffer>;
  open(purpose: string, envelope: Buffer): Promise<Buffer>;
}

/** Tables holding one Ed25519 key per organization: (org_id, kid, public_key PEM, private_key_enc). */
export type SigningKeyTable = "db_credential_keys" | "audit_signing_keys";

/** How long an opened private key stays in memory: a root key the provider stops serving stops signing within a minute. */
export const SIGNING_KEY_CACHE_MS = 50_000;

/**
 * One Ed25519 signing key per organization, made on first use: the public half in clear in the metadata store
 * (verification needs nothing else), the private half sealed under the organization's data key (src/kms) and
 * opened into memory for at most SIGNING_KEY_CACHE_MS at a time. The key id is the public key's RFC 7638 JWK
 * thumbprint. Used for short-lived database credentials and for audit stream checkpoints.
 */
export class OrgSigningKeys {
  private readonly publicKeys = new Map<string, { kid: string; key: KeyObject; pem: string }>();
  private readonly privateKeys = new Map<string, { kid: string; key: KeyObject; until: number }>();
  private readonly creating = new Map<string, Promise<void>>();

  constructor(private readonly o: { db: Db; keys: KeySealer; table: SigningKeyTable; now?: () => number }) {}

  private purpose(orgId: string): string {
    return `${this.o.table}.private_key:${orgId}`;
  }

  /** The organization's key id and public key; made when missing if `create`. */
  async publicKey(orgId: string, create: boolean): Promise<{ kid: string; key: KeyObject; pem: string } | null> {
    const have = this.publicKeys.get(orgId);
    if (have) return have;
    const read = () => this.o.db.selectFrom(this.o.table).select(["kid", "public_key"]).where("org_id", "=", orgId).executeTakeFirst();
    let row = await read();
    if (!row && create) {
      await this.create(orgId);
      row = await read();
    }
    if (!row) return null;
    const k = { kid: row.kid, key: createPublicKey(row.public_key), pem: row.public_key };
    this.publicKeys.set(orgId, k);
    return k;
  }

  private create(orgId: string): Promise<void> {
    const running = this.creating.get(orgId);
    if (running) return running;
    const p = (async () => {
      const { privateKey, publicKey } = generateKeyPairSync("ed25519");
      const kid = await calculateJwkThumbprint(await exportJWK(publicKey));
      const der = privateKey.export({ type: "pkcs8", format: "der" });
      const sealed = await this.o.keys.seal(orgId, this.purpose(orgId), der);
      der.fill(0);
      // Two processes on one store: the first key wins, the other's is discarded.
      await this.o.db.insertInto(this.o.table).values({ org_id: orgId, kid, public_key: publicKey.export({ type: "spki", format: "pem" }).toString(), private_key_enc: sealed })
        .onConflict((oc) => oc.column("org_id").doNothing()).execute();
    })().finally(() => this.creating.delete(orgId));
    this.creating.set(orgId, p);
    return p;
  }

  /** The organization's private key (made when missing), opened through the key hierarchy; ERR_KEY_UNAVAILABLE when it cannot be. */
  async privateKey(orgId: string): Promise<{ kid: string; key: KeyObject }> {
    const now = (this.o.now ?? Date.now)();
    const have = this.privateKeys.get(orgId);
    if (have && have.until > now) return have;
    this.privateKeys.delete(orgId);
    await this.publicKey(orgId, true);
    const row = await this.o.db.selectFrom(this.o.table).select(["kid", "private_key_enc"]).where("org_id", "=", orgId).executeTakeFirstOrThrow();
    const der = await this.o.keys.open(this.purpose(orgId), row.private_key_enc);
    const key = createPrivateKey({ key: der, format: "der", type: "pkcs8" });
    der.fill(0);
    const k = { kid: row.kid, key, until: now + SIGNING_KEY_CACHE_MS };
    this.privateKeys.set(orgId, k);
    return k;
  }

  /** The private key if it is in memory and fresh, without waiting (null otherwise). */
  cachedPrivateKey(orgId: string): { kid: string; key: KeyObject } | null {
    const have = this.privateKeys.get(orgId);
    return have && have.until > (this.o.now ?? Date.now)() ? have : null;
  }

  /** Forgets every key held in memory. */
  clear(): void {
    this.privateKeys.clear();
    this.publicKeys.clear();
  }
}
