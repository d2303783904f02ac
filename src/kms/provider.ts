/**
 * A root-key provider: the one place the top of the key hierarchy lives (a local key file, an HSM over
 * PKCS#11, or AWS KMS). It wraps and unwraps the organizations' key-encryption keys and nothing else; the
 * root key itself never leaves it (the local provider's file is the exception, by design: see DESIGN.md).
 */
import { randomBytes, timingSafeEqual } from "node:crypto";

export type ProviderKind = "local" | "pkcs11" | "aws-kms";

/**
 * What a wrapped key is bound to. Providers authenticate it with the ciphertext (AES-GCM additional data,
 * or AWS KMS's EncryptionContext), so a wrapped key copied into another row does not unwrap.
 */
export type WrapContext = Readonly<Record<string, string>>;

/** A provider's public description: never key material. */
export interface ProviderDescription {
  provider: ProviderKind;
  /** The root key's id: a fingerprint (local), token/label (pkcs11) or the KMS key id or ARN (aws-kms). */
  keyId: string;
  /** Non-secret settings an operator recognizes (file path, module, token label, region, endpoint). */
  details: Record<string, string>;
}

export interface ProviderHealth {
  ok: boolean;
  /** A short reason when not ok (never a secret, never a key). */
  detail: string;
}

export interface KeyProvider {
  /** Wraps a key (32 bytes) under the root key, bound to `context`. */
  wrap(key: Buffer, context: WrapContext): Promise<Buffer>;
  /** Unwraps what wrap made with the same context; every failure is ERR_KEY_UNAVAILABLE, saying nothing more. */
  unwrap(wrapped: Buffer, context: WrapContext): Promise<Buffer>;
  describe(): ProviderDescription;
  /** Whether the root key can be used now (a wrap and unwrap of a throwaway key). */
  health(): Promise<ProviderHealth>;
  /** Releases sessions and connections. */
  close(): Promise<void>;
}

/** The additional data a context stands for: its entries sorted by name, as JSON. */
export function contextBytes(context: WrapContext): Buffer {
  const entries = Object.keys(context).sort().map((k) => [k, context[k]]);
  return Buffer.from(JSON.stringify(entries), "utf8");
}

/** Runs a health probe: a wrap and unwrap of a random key through the provider. */
export async function probe(p: Pick<KeyProvider, "wrap" | "unwrap">): Promise<ProviderHealth> {
  const key = randomBytes(32);
  const ctx = { purpose: "parhelion-health" };
  try {
    const back = await p.unwrap(await p.wrap(key, ctx), ctx);
    return back.length === 32 && timingSafeEqual(back, key) ? { ok: true, detail: "ok" } : { ok: false, detail: "round trip gave a different key" };
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    return { ok: false, detail: typeof code === "string" ? code : "the root key cannot be used" };
  } finally {
    key.fill(0);
  }
}
