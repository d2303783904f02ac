import { test, after } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { loadConfig } from "../../src/config/load.js";
import { ParhelionError } from "../../src/lib/errors.js";
import { tempDir } from "./helpers.js";

const tmp = tempDir("config");
after(() => tmp.cleanup());

function configError(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: unknown) => e instanceof ParhelionError && e.code === "ERR_CONFIG" && re.test(e.message));
}

test("kms defaults to local; pkcs11 and aws-kms need their settings, and the PIN has no default", () => {
  const cwd = tmp.dir;
  assert.equal(loadConfig({ env: {}, cwd }).kms, "local");
  configError(() => loadConfig({ env: {}, cwd, flags: { kms: "vault" } }), /kms/);
  configError(() => loadConfig({ env: {}, cwd, flags: { kms: "pkcs11" } }), /kmsHsmModule: is required.*kmsHsmToken: is required.*no default PIN/);
  configError(() => loadConfig({ env: {}, cwd, flags: { kms: "pkcs11", kmsHsmModule: "/m.so", kmsHsmToken: "t" } }), /kmsHsmPin/);
  const c = loadConfig({ env: { PARHELION_KMS_HSM_PIN: "1234" }, cwd, flags: { kms: "pkcs11", kmsHsmModule: "/m.so", kmsHsmToken: "t" } });
  assert.equal(c.kmsHsmPin, "1234");
  assert.equal(c.kmsHsmKeyLabel, "parhelion-root");
  configError(() => loadConfig({ env: {}, cwd, flags: { kms: "aws-kms" } }), /kmsAwsKeyId: is required.*kmsAwsRegion: is required/);
  configError(() => loadConfig({ env: {}, cwd, flags: { kms: "aws-kms", kmsAwsKeyId: "k", kmsAwsRegion: "eu-west-1", kmsAwsEndpoint: "http://kms.local" } }), /https/);
});

test("the HSM PIN is a secret: refused as a flag and in the config file, read from a file without its newline", () => {
  const cwd = tmp.dir;
  configError(() => loadConfig({ env: {}, cwd, flags: { kmsHsmPin: "1234" } }), /secret/);
  const yaml = join(cwd, "p.yaml");
  writeFileSync(yaml, "kmsHsmPin: '1234'\n");
  configError(() => loadConfig({ env: {}, cwd, configFile: yaml }), /secret/);
  const pinFile = join(cwd, "pin");
  writeFileSync(pinFile, "98765\n", { mode: 0o600 });
  const c = loadConfig({ env: {}, cwd, flags: { kms: "pkcs11", kmsHsmModule: "/m.so", kmsHsmToken: "t", kmsHsmPinFile: pinFile } });
  assert.equal(c.kmsHsmPin, "98765");
  configError(() => loadConfig({ env: { PARHELION_KMS_HSM_PIN: "1" }, cwd, flags: { kmsHsmPinFile: pinFile } }), /not both/);
  configError(() => loadConfig({ env: {}, cwd, flags: { kmsHsmPinFile: join(cwd, "missing") } }), /kmsHsmPinFile: cannot read/);
});
