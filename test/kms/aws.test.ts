import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Agent as HttpsAgent } from "node:https";
import { chmodSync, writeFileSync } from "node:fs";
import { randomBytes, randomUUID } from "node:crypto";
import { join } from "node:path";
import { CreateAliasCommand, DisableKeyCommand, EnableKeyCommand, GenerateDataKeyCommand, KMSClient, DisabledException } from "@aws-sdk/client-kms";
import { AwsKmsKeyProvider } from "../../src/kms/aws.js";
import { Keyring, KEY_CACHE_SECONDS, openColumn } from "../../src/kms/index.js";
import { ParhelionError } from "../../src/lib/errors.js";
import { loadConfig } from "../../src/config/load.js";
import { createLogger } from "../../src/log/logger.js";
import { startPlatform, type Platform } from "../../src/platform.js";
import { createUser } from "../../src/identity/users.js";
import { beginTotpEnrollment } from "../../src/identity/mfa.js";
import { createTestToken } from "../support/softhsm.js";
import { startTestKms, type TestKms } from "../support/kms-server.js";
import { startTestStore } from "../support/pg.js";
import { makeOrg } from "../identity/helpers.js";
import { rejectsOpaque, tempDir } from "./helpers.js";

const tok = createTestToken("aws-kms-backing");
const tmp = tempDir("aws");
chmodSync(tmp.dir, 0o711);
const caFile = join(tmp.dir, "kms-ca.pem");
let kms: TestKms;
let sdk: KMSClient;
const providers: AwsKmsKeyProvider[] = [];
// Fake static credentials: the SDK signs with them (SigV4), the test server checks the signature's shape.
process.env["AWS_ACCESS_KEY_ID"] = "AKIAPARHELIONTEST01";
process.env["AWS_SECRET_ACCESS_KEY"] = randomBytes(20).toString("base64");
process.env["AWS_CONFIG_FILE"] = join(tmp.dir, "no-aws-config");
process.env["AWS_SHARED_CREDENTIALS_FILE"] = join(tmp.dir, "no-aws-credentials");

before(async () => {
  kms = await startTestKms(tok);
  writeFileSync(caFile, kms.caPem);
  sdk = new KMSClient({ region: kms.region, endpoint: kms.endpoint, requestHandler: { httpsAgent: new HttpsAgent({ ca: kms.caPem }) } });
});
after(async () => {
  for (const p of providers) await p.close();
  sdk?.destroy();
  await kms?.close();
  tmp.cleanup();
  tok.cleanup();
});

async function provider(keyId: string): Promise<AwsKmsKeyProvider> {
  const p = await AwsKmsKeyProvider.open({ keyId, region: kms.region, endpoint: kms.endpoint, caFile });
  providers.push(p);
  return p;
}

const ctx = { purpose: "parhelion-org-kek", keyId: "kek-1", organizationId: "o1" };

test("wraps with KMS Encrypt and unwraps with Decrypt, passing the context as EncryptionContext over the real JSON 1.1 protocol", async () => {
  const arn = kms.createKey("root");
  const p = await provider(arn);
  assert.deepEqual(p.describe(), { provider: "aws-kms", keyId: arn, details: { region: kms.region, endpoint: kms.endpoint, configuredKeyId: arn } });
  const key = randomBytes(32);
  const from = kms.requests.length;
  const wrapped = await p.wrap(key, ctx);
  assert.ok(!wrapped.includes(key));
  assert.deepEqual(await p.unwrap(wrapped, ctx), key);
  const [enc, dec] = kms.requests.slice(from);
  assert.equal(enc?.target, "Encrypt");
  assert.equal(enc?.headers["x-amz-target"], "TrentService.Encrypt");
  assert.equal(enc?.headers["content-type"], "application/x-amz-json-1.1");
  assert.deepEqual(enc?.body["EncryptionContext"], ctx);
  assert.equal(enc?.body["Plaintext"], key.toString("base64"));
  assert.equal(dec?.target, "Decrypt");
  assert.equal(dec?.body["KeyId"], arn);
  assert.deepEqual(dec?.body["EncryptionContext"], ctx);
  assert.deepEqual(await p.health(), { ok: true, detail: "ok" });
  // The test server is a KMS to the SDK's own commands too.
  const dk = await sdk.send(new GenerateDataKeyCommand({ KeyId: arn, KeySpec: "AES_256", EncryptionContext: ctx }));
  assert.equal(dk.Plaintext?.length, 32);
});

test("an alias resolves to the key's ARN, which names the root key", async () => {
  const arn = kms.createKey();
  const alias = `alias/parhelion-${randomUUID().slice(0, 8)}`;
  await sdk.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: arn }));
  const p = await provider(alias);
  assert.equal(p.describe().keyId, arn);
});

test("another context, a tampered blob, another KMS key and a disabled key all give the one opaque error; re-enabling restores", async () => {
  const arn = kms.createKey();
  const p = await provider(arn);
  const other = await provider(kms.createKey());
  const wrapped = await p.wrap(randomBytes(32), ctx);
  await rejectsOpaque(() => p.unwrap(wrapped, { ...ctx, organizationId: "o2" }), "context");
  await rejectsOpaque(() => other.unwrap(wrapped, ctx), "another key");
  for (const i of [0, 1, 10, 36, 40, 50, wrapped.length - 1]) {
    const bad = Buffer.from(wrapped);
    bad[i] = (bad[i] ?? 0) ^ 0x01;
    await rejectsOpaque(() => p.unwrap(bad, ctx), `byte ${i}`);
  }
  await sdk.send(new DisableKeyCommand({ KeyId: arn }));
  await rejectsOpaque(() => p.unwrap(wrapped, ctx), "disabled key");
  await rejectsOpaque(() => p.wrap(randomBytes(32), ctx), "wrap with a disabled key");
  await assert.rejects(sdk.send(new GenerateDataKeyCommand({ KeyId: arn, KeySpec: "AES_256" })), DisabledException);
  assert.deepEqual(await p.health(), { ok: false, detail: "key state Disabled" });
  await sdk.send(new EnableKeyCommand({ KeyId: arn }));
  assert.equal((await p.unwrap(wrapped, ctx)).length, 32);
});

test("an unknown key, an endpoint whose CA is not trusted, or a wrong region is a configuration error at open", async () => {
  await assert.rejects(AwsKmsKeyProvider.open({ keyId: `arn:aws:kms:${kms.region}:${kms.accountId}:key/${randomUUID()}`, region: kms.region, endpoint: kms.endpoint, caFile }), (e: unknown) => e instanceof ParhelionError && e.code === "ERR_CONFIG" && /NotFoundException/.test(e.message));
  const arn = kms.createKey();
  await assert.rejects(AwsKmsKeyProvider.open({ keyId: arn, region: kms.region, endpoint: kms.endpoint }), (e: unknown) => e instanceof ParhelionError && e.code === "ERR_CONFIG");
  await assert.rejects(AwsKmsKeyProvider.open({ keyId: arn, region: "us-east-2", endpoint: kms.endpoint, caFile }), (e: unknown) => e instanceof ParhelionError && e.code === "ERR_CONFIG" && /InvalidSignatureException/.test(e.message));
});

test(`a disabled KMS key stops the keyring decrypting within ${KEY_CACHE_SECONDS} s (well inside a minute)`, async () => {
  const store = await startTestStore();
  try {
    const arn = kms.createKey();
    let now = Date.parse("2030-01-01T00:00:00Z");
    const keyring = new Keyring({ db: store.db, provider: await provider(arn), now: () => now });
    const org = await makeOrg(store.db);
    const env = await keyring.seal(org, "t.c:1", Buffer.from("behind KMS"));
    const kek = await store.db.selectFrom("kms_keys").selectAll().where("kind", "=", "org-kek").where("org_id", "=", org).executeTakeFirstOrThrow();
    assert.equal(kek.provider, "aws-kms");
    assert.equal(kek.wrapped_by, arn);
    await sdk.send(new DisableKeyCommand({ KeyId: arn }));
    now += 10_000;
    assert.equal((await keyring.open("t.c:1", env)).toString(), "behind KMS", "served from memory within the cache time");
    now += KEY_CACHE_SECONDS * 1000;
    await rejectsOpaque(() => keyring.open("t.c:1", env), "disabled");
    await sdk.send(new EnableKeyCommand({ KeyId: arn }));
    assert.equal((await keyring.open("t.c:1", env)).toString(), "behind KMS");
  } finally {
    await store.stop();
  }
});

test("the platform runs with --kms aws-kms: the KEK is wrapped by KMS, and a restart still decrypts", async () => {
  const arn = kms.createKey("platform root");
  const dataDir = join(tmp.dir, "platform");
  const start = (): Promise<Platform> => {
    const config = loadConfig({ flags: { dataDir, apiPort: 0, gatewayPort: 0, kms: "aws-kms", kmsAwsKeyId: arn, kmsAwsRegion: kms.region, kmsAwsEndpoint: kms.endpoint, kmsAwsCaFile: caFile }, env: {}, cwd: tmp.dir });
    return startPlatform({ config, logger: createLogger({ level: "silent" }) });
  };
  let p = await start();
  let factorID: string;
  let secret: string;
  try {
    const org = await p.db.selectFrom("organizations").select("id").executeTakeFirstOrThrow();
    const u = await createUser(p.db, { orgId: org.id, email: `aws.${randomUUID().slice(0, 8)}@example.com`, firstName: "", lastName: "", passwordHash: null });
    const e = await beginTotpEnrollment(p.db, { userId: u.userID, email: u.email, issuer: "parhelion" });
    factorID = e.factorID;
    secret = e.secret;
    const kek = await p.db.selectFrom("kms_keys").selectAll().where("kind", "=", "org-kek").executeTakeFirstOrThrow();
    assert.equal(kek.provider, "aws-kms");
    assert.equal(kek.wrapped_by, arn);
  } finally {
    await p.stop();
  }
  p = await start();
  try {
    const row = await p.db.selectFrom("mfa_totp").select("secret_enc").where("id", "=", factorID).executeTakeFirstOrThrow();
    assert.equal(await openColumn(p.db, "mfa_totp.secret", factorID, row.secret_enc!), secret);
  } finally {
    await p.stop();
  }
});
