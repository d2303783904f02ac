import { Agent as HttpsAgent } from "node:https";
import { readFileSync } from "node:fs";
import { rootCertificates } from "node:tls";
import { DecryptCommand, DescribeKeyCommand, EncryptCommand, KMSClient } from "@aws-sdk/client-kms";
import { ParhelionError } from "../lib/errors.js";
import { keyUnavailable } from "./errors.js";
import { probe, type KeyProvider, type ProviderDescription, type ProviderHealth, type WrapContext } from "./provider.js";

export interface AwsKmsOptions {
  /** Key id, ARN or alias of a symmetric (SYMMETRIC_DEFAULT) KMS key. */
  keyId: string;
  region: string;
  /** An https:// endpoint instead of AWS's regional one (a VPC endpoint, a KMS-compatible server). */
  endpoint?: string | undefined;
  /** Extra PEM CA certificates trusted for the endpoint, in addition to the system's. */
  caFile?: string | undefined;
  /** Seconds each KMS call may take. */
  timeoutSeconds?: number;
}

const WRAP_VERSION = 1;

/**
 * The root key is a symmetric AWS KMS key: keys are wrapped with KMS Encrypt and unwrapped with Decrypt, the
 * wrap context passed as EncryptionContext (KMS binds it to the ciphertext and records it in CloudTrail).
 * Credentials come from the AWS SDK's usual chain. Disabling the key in KMS makes every KEK unwrap fail, so
 * parhelion stops decrypting within KEY_CACHE_SECONDS.
 */
export class AwsKmsKeyProvider implements KeyProvider {
  private constructor(private readonly client: KMSClient, private readonly opts: AwsKmsOptions, private readonly arn: string) {}

  /** Connects and resolves the key (DescribeKey) to its ARN; ERR_CONFIG when KMS cannot be asked or the key is unusable. */
  static async open(o: AwsKmsOptions): Promise<AwsKmsKeyProvider> {
    let ca: string[] | undefined;
    if (o.caFile !== undefined) {
      try {
        ca = [...rootCertificates, readFileSync(o.caFile, "utf8")];
      } catch (err) {
        throw new ParhelionError("ERR_CONFIG", `kmsAwsCaFile: cannot read ${o.caFile}: ${(err as NodeJS.ErrnoException).code ?? "error"}`, { cause: err });
      }
    }
    const timeout = (o.timeoutSeconds ?? 10) * 1000;
    const client = new KMSClient({
      region: o.region,
      ...(o.endpoint !== undefined ? { endpoint: o.endpoint } : {}),
      maxAttempts: 2,
      requestHandler: { httpsAgent: new HttpsAgent({ keepAlive: true, ...(ca ? { ca } : {}) }), connectionTimeout: timeout, requestTimeout: timeout },
    });
    try {
      const d = await client.send(new DescribeKeyCommand({ KeyId: o.keyId }));
      const m = d.KeyMetadata;
      if (!m?.Arn) throw new Error("DescribeKey answered no key");
      if (m.KeyUsage !== undefined && m.KeyUsage !== "ENCRYPT_DECRYPT") throw new ParhelionError("ERR_CONFIG", `the KMS key ${o.keyId} is not an ENCRYPT_DECRYPT key`);
      if (m.KeySpec !== undefined && m.KeySpec !== "SYMMETRIC_DEFAULT") throw new ParhelionError("ERR_CONFIG", `the KMS key ${o.keyId} is not a SYMMETRIC_DEFAULT key`);
      return new AwsKmsKeyProvider(client, o, m.Arn);
    } catch (err) {
      client.destroy();
      if (err instanceof ParhelionError) throw err;
      const name = (err as Error).name;
      throw new ParhelionError("ERR_CONFIG", `cannot use the KMS key ${o.keyId} in ${o.region}${o.endpoint ? ` at ${o.endpoint}` : ""}: ${name}: ${(err as Error).message}`, { cause: err });
    }
  }

  async wrap(key: Buffer, context: WrapContext): Promise<Buffer> {
    try {
      const out = await this.client.send(new EncryptCommand({ KeyId: this.arn, Plaintext: key, EncryptionContext: { ...context }, EncryptionAlgorithm: "SYMMETRIC_DEFAULT" }));
      if (!out.CiphertextBlob || out.CiphertextBlob.length === 0) throw new Error("Encrypt answered no ciphertext");
      return Buffer.concat([Buffer.from([WRAP_VERSION]), Buffer.from(out.CiphertextBlob)]);
    } catch (err) {
      throw keyUnavailable(err);
    }
  }

  async unwrap(wrapped: Buffer, context: WrapContext): Promise<Buffer> {
    if (!Buffer.isBuffer(wrapped) || wrapped.length < 2 || wrapped[0] !== WRAP_VERSION) throw keyUnavailable();
    try {
      // KeyId makes KMS refuse a ciphertext of another key instead of decrypting with it.
      const out = await this.client.send(new DecryptCommand({ KeyId: this.arn, CiphertextBlob: wrapped.subarray(1), EncryptionContext: { ...context }, EncryptionAlgorithm: "SYMMETRIC_DEFAULT" }));
      if (!out.Plaintext || out.KeyId !== this.arn) throw new Error("Decrypt answered no plaintext or another key");
      return Buffer.from(out.Plaintext);
    } catch (err) {
      throw keyUnavailable(err);
    }
  }

  describe(): ProviderDescription {
    return { provider: "aws-kms", keyId: this.arn, details: { region: this.opts.region, ...(this.opts.endpoint ? { endpoint: this.opts.endpoint } : {}), configuredKeyId: this.opts.keyId } };
  }

  /** A wrap and unwrap through KMS; when that fails, the key's state from DescribeKey (e.g. Disabled). */
  async health(): Promise<ProviderHealth> {
    const h = await probe(this);
    if (h.ok) return h;
    try {
      const d = await this.client.send(new DescribeKeyCommand({ KeyId: this.arn }));
      return { ok: false, detail: `key state ${d.KeyMetadata?.KeyState ?? "unknown"}` };
    } catch (err) {
      return { ok: false, detail: (err as Error).name || h.detail };
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}
