import { join } from "node:path";
import type { Config } from "../config/schema.js";
import { ParhelionError } from "../lib/errors.js";
import { LocalKeyProvider } from "./local.js";
import type { KeyProvider } from "./provider.js";

export type { KeyProvider, ProviderDescription, ProviderHealth, ProviderKind, WrapContext } from "./provider.js";
export { Keyring, KEY_CACHE_SECONDS, type KeyInfo, type KeyStatus } from "./keyring.js";
export { attachKeyring, keyringOf, sealColumn, openColumn, encryptLegacySecrets, columnPurpose, type SecretColumn } from "./secrets.js";
export { keyUnavailable, KEY_UNAVAILABLE_MESSAGE } from "./errors.js";
export { LocalKeyProvider } from "./local.js";

/** The local provider's root key file: kmsKeyFile, or <dataDir>/keys/root.key. */
export function localKeyFile(cfg: Pick<Config, "dataDir" | "kmsKeyFile">): string {
  return cfg.kmsKeyFile ?? join(cfg.dataDir, "keys", "root.key");
}

/** Opens the root key provider the configuration names (`kms`). */
export async function createKeyProvider(cfg: Config): Promise<KeyProvider> {
  switch (cfg.kms) {
    case "local":
      return LocalKeyProvider.open(localKeyFile(cfg));
    case "pkcs11": {
      // Loaded only when used: it brings a native addon.
      const { Pkcs11KeyProvider } = await import("./pkcs11.js");
      if (cfg.kmsHsmModule === undefined || cfg.kmsHsmToken === undefined || cfg.kmsHsmPin === undefined) throw new ParhelionError("ERR_CONFIG", "kms pkcs11 needs kmsHsmModule, kmsHsmToken and the PIN");
      return Pkcs11KeyProvider.open({ module: cfg.kmsHsmModule, token: cfg.kmsHsmToken, keyLabel: cfg.kmsHsmKeyLabel, pin: cfg.kmsHsmPin });
    }
    case "aws-kms": {
      const { AwsKmsKeyProvider } = await import("./aws.js");
      if (cfg.kmsAwsKeyId === undefined || cfg.kmsAwsRegion === undefined) throw new ParhelionError("ERR_CONFIG", "kms aws-kms needs kmsAwsKeyId and kmsAwsRegion");
      return AwsKmsKeyProvider.open({ keyId: cfg.kmsAwsKeyId, region: cfg.kmsAwsRegion, endpoint: cfg.kmsAwsEndpoint, caFile: cfg.kmsAwsCaFile });
    }
  }
}
