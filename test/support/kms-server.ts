import { createServer, type Server } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { randomBytes, randomUUID } from "node:crypto";
import * as graphene from "graphene-pk11";
import { createCA, issueServerCert } from "../../src/tls/pki.js";
import { SOFTHSM_MODULE, type TestToken } from "./softhsm.js";

/**
 * A small AWS KMS for tests: the real JSON 1.1 protocol (`POST /`, `X-Amz-Target: TrentService.<Op>`,
 * `Content-Type: application/x-amz-json-1.1`, base64 blobs, `{"__type", "message"}` errors) over HTTPS with
 * its own CA, so @aws-sdk/client-kms talks to it unmodified. Key material is AES-256 keys on a SoftHSM2
 * token (non-extractable, used through PKCS#11 AES-GCM); DisableKey/EnableKey are honoured, which no
 * installable emulator here does. SigV4 signatures are parsed (credential scope) but not verified.
 */
export interface TestKms {
  endpoint: string;
  caPem: string;
  region: string;
  accountId: string;
  /** Requests as received: operation, headers and parsed body (for protocol assertions). */
  requests: Array<{ target: string; headers: IncomingMessage["headers"]; body: Record<string, unknown> }>;
  /** Makes a key (as CreateKey would) and answers its ARN. */
  createKey(description?: string): string;
  close(): Promise<void>;
}

interface KmsKey {
  id: string;
  arn: string;
  enabled: boolean;
  created: Date;
  description: string;
  handle: graphene.SecretKey;
}

class KmsError extends Error {
  constructor(readonly type: string, message: string, readonly status = 400) {
    super(message);
  }
}

const IV = 12;

/** Canonical encryption context: sorted entries. KMS treats it as additional authenticated data. */
function aad(ctx: unknown): Buffer {
  if (ctx === undefined || ctx === null) return Buffer.alloc(0);
  if (typeof ctx !== "object" || Array.isArray(ctx)) throw new KmsError("ValidationException", "EncryptionContext must be a map of strings");
  const entries = Object.entries(ctx as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  for (const [, v] of entries) if (typeof v !== "string") throw new KmsError("ValidationException", "EncryptionContext values must be strings");
  return Buffer.from(JSON.stringify(entries));
}

function blob(v: unknown, field: string): Buffer {
  if (typeof v !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(v)) throw new KmsError("ValidationException", `${field} must be a base64 blob`);
  return Buffer.from(v, "base64");
}

export async function startTestKms(token: TestToken, opts: { region?: string } = {}): Promise<TestKms> {
  const region = opts.region ?? "eu-west-1";
  const accountId = "111122223333";
  const mod = graphene.Module.load(SOFTHSM_MODULE, "test-kms");
  mod.initialize();
  const slot = mod.getSlots(true).items(0);
  const session = slot.open(graphene.SessionFlag.SERIAL_SESSION | graphene.SessionFlag.RW_SESSION);
  try {
    session.login(token.pin, graphene.UserType.USER);
  } catch (err) {
    if (!/ALREADY_LOGGED_IN/.test((err as Error).message)) throw err;
  }
  const keys = new Map<string, KmsKey>();
  const aliases = new Map<string, string>();
  const requests: TestKms["requests"] = [];

  function createKey(description = ""): string {
    const id = randomUUID();
    const handle = session.generateKey(graphene.KeyGenMechanism.AES, {
      class: graphene.ObjectClass.SECRET_KEY, keyType: graphene.KeyType.AES, label: `kms-${id}`, token: false, sensitive: true, extractable: false, encrypt: true, decrypt: true, valueLen: 32,
    });
    const k: KmsKey = { id, arn: `arn:aws:kms:${region}:${accountId}:key/${id}`, enabled: true, created: new Date(), description, handle };
    keys.set(id, k);
    return k.arn;
  }

  function find(keyId: unknown): KmsKey {
    if (typeof keyId !== "string" || keyId.length === 0) throw new KmsError("ValidationException", "KeyId is required");
    let id = keyId;
    const alias = /^(?:arn:aws:kms:[^:]+:\d+:)?(alias\/.+)$/.exec(keyId);
    if (alias) id = aliases.get(alias[1]!) ?? "";
    const arn = /^arn:aws:kms:([^:]+):(\d+):key\/(.+)$/.exec(id);
    if (arn) {
      if (arn[1] !== region || arn[2] !== accountId) throw new KmsError("NotFoundException", `Key '${keyId}' does not exist`);
      id = arn[3]!;
    }
    const k = keys.get(id);
    if (!k) throw new KmsError("NotFoundException", `Key '${keyId}' does not exist`);
    return k;
  }

  function usable(k: KmsKey): void {
    if (!k.enabled) throw new KmsError("DisabledException", `${k.arn} is disabled.`);
  }

  function metadata(k: KmsKey) {
    return {
      AWSAccountId: accountId, KeyId: k.id, Arn: k.arn, CreationDate: k.created.getTime() / 1000, Enabled: k.enabled, Description: k.description,
      KeyUsage: "ENCRYPT_DECRYPT", KeySpec: "SYMMETRIC_DEFAULT", CustomerMasterKeySpec: "SYMMETRIC_DEFAULT", EncryptionAlgorithms: ["SYMMETRIC_DEFAULT"],
      KeyState: k.enabled ? "Enabled" : "Disabled", Origin: "AWS_KMS", KeyManager: "CUSTOMER", MultiRegion: false,
    };
  }

  // Ciphertext blob: 36-byte key id, 12-byte IV, AES-GCM ciphertext and tag (an opaque format of our own).
  function encrypt(k: KmsKey, plaintext: Buffer, ctx: unknown): Buffer {
    if (plaintext.length < 1 || plaintext.length > 4096) throw new KmsError("ValidationException", "Plaintext must be 1 to 4096 bytes");
    const iv = randomBytes(IV);
    const c = session.createCipher({ name: "AES_GCM", params: new graphene.AesGcmParams(iv, aad(ctx), 128) }, k.handle);
    return Buffer.concat([Buffer.from(k.id, "ascii"), iv, c.once(plaintext, Buffer.alloc(plaintext.length + 32))]);
  }

  function decrypt(ciphertext: Buffer, ctx: unknown, keyId: unknown): { k: KmsKey; plaintext: Buffer } {
    if (ciphertext.length < 36 + IV + 16) throw new KmsError("InvalidCiphertextException", "");
    const k = keys.get(ciphertext.subarray(0, 36).toString("ascii"));
    if (!k) throw new KmsError("InvalidCiphertextException", "");
    if (keyId !== undefined && find(keyId) !== k) throw new KmsError("IncorrectKeyException", "The key ID in the request does not identify a KMS key that can perform this operation.");
    usable(k);
    try {
      const d = session.createDecipher({ name: "AES_GCM", params: new graphene.AesGcmParams(ciphertext.subarray(36, 36 + IV), aad(ctx), 128) }, k.handle);
      return { k, plaintext: Buffer.from(d.once(ciphertext.subarray(36 + IV), Buffer.alloc(ciphertext.length))) };
    } catch {
      throw new KmsError("InvalidCiphertextException", "");
    }
  }

  const ops: Record<string, (b: Record<string, unknown>) => Record<string, unknown>> = {
    CreateKey: (b) => ({ KeyMetadata: metadata(find(createKey(typeof b["Description"] === "string" ? b["Description"] : ""))) }),
    CreateAlias: (b) => {
      const name = b["AliasName"];
      if (typeof name !== "string" || !name.startsWith("alias/")) throw new KmsError("ValidationException", "AliasName must begin with alias/");
      aliases.set(name, find(b["TargetKeyId"]).id);
      return {};
    },
    DescribeKey: (b) => ({ KeyMetadata: metadata(find(b["KeyId"])) }),
    EnableKey: (b) => {
      find(b["KeyId"]).enabled = true;
      return {};
    },
    DisableKey: (b) => {
      find(b["KeyId"]).enabled = false;
      return {};
    },
    Encrypt: (b) => {
      const k = find(b["KeyId"]);
      usable(k);
      return { KeyId: k.arn, CiphertextBlob: encrypt(k, blob(b["Plaintext"], "Plaintext"), b["EncryptionContext"]).toString("base64"), EncryptionAlgorithm: "SYMMETRIC_DEFAULT" };
    },
    Decrypt: (b) => {
      const { k, plaintext } = decrypt(blob(b["CiphertextBlob"], "CiphertextBlob"), b["EncryptionContext"], b["KeyId"]);
      return { KeyId: k.arn, Plaintext: plaintext.toString("base64"), EncryptionAlgorithm: "SYMMETRIC_DEFAULT" };
    },
    GenerateDataKey: (b) => {
      const k = find(b["KeyId"]);
      usable(k);
      const n = b["NumberOfBytes"] ?? (b["KeySpec"] === "AES_128" ? 16 : b["KeySpec"] === "AES_256" ? 32 : undefined);
      if (typeof n !== "number" || n < 1 || n > 1024) throw new KmsError("ValidationException", "give KeySpec or NumberOfBytes");
      const plaintext = randomBytes(n);
      return { KeyId: k.arn, Plaintext: plaintext.toString("base64"), CiphertextBlob: encrypt(k, plaintext, b["EncryptionContext"]).toString("base64") };
    },
  };

  function answer(res: ServerResponse, status: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { "content-type": "application/x-amz-json-1.1", "x-amzn-requestid": randomUUID(), "content-length": Buffer.byteLength(text) });
    res.end(text);
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    try {
      if (req.method !== "POST" || req.url !== "/") throw new KmsError("UnknownOperationException", "", 404);
      if (req.headers["content-type"] !== "application/x-amz-json-1.1") throw new KmsError("SerializationException", "Content-Type must be application/x-amz-json-1.1");
      const auth = req.headers["authorization"];
      const scope = typeof auth === "string" ? /^AWS4-HMAC-SHA256 Credential=[A-Z0-9]+\/\d{8}\/([a-z0-9-]+)\/kms\/aws4_request, SignedHeaders=[a-z0-9;-]+, Signature=[0-9a-f]{64}$/.exec(auth) : null;
      if (!scope) throw new KmsError("MissingAuthenticationTokenException", "Missing or malformed SigV4 Authorization header");
      if (scope[1] !== region) throw new KmsError("InvalidSignatureException", `Credential should be scoped to a valid region: ${region}`);
      const target = req.headers["x-amz-target"];
      const m = typeof target === "string" ? /^TrentService\.([A-Za-z]+)$/.exec(target) : null;
      const op = m ? ops[m[1]!] : undefined;
      if (!op || !m) throw new KmsError("UnknownOperationException", "");
      let body: Record<string, unknown>;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}") as Record<string, unknown>;
      } catch {
        throw new KmsError("SerializationException", "the body is not JSON");
      }
      requests.push({ target: m[1]!, headers: req.headers, body });
      answer(res, 200, op(body));
    } catch (err) {
      if (err instanceof KmsError) answer(res, err.status, { __type: err.type, message: err.message });
      else answer(res, 500, { __type: "KMSInternalException", message: (err as Error).message });
    }
  }

  const ca = await createCA({ commonName: "test kms CA", validDays: 2 });
  const cert = await issueServerCert(ca, { commonName: "localhost", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"], validDays: 2 });
  const server: Server = createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    endpoint: `https://127.0.0.1:${port}`, caPem: ca.certPem, region, accountId, requests, createKey,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      try {
        session.close();
      } catch {
        // already closed
      }
    },
  };
}
