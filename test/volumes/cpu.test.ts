import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { xtsAesSupport } from "../../src/volumes/index.js";

const entry = (name: string, driver: string, priority: number) => `name         : ${name}\ndriver       : ${driver}\nmodule       : kernel\npriority     : ${priority}\ntype         : skcipher\n`;

test("an AES-XTS built from the table-free C AES is reported as not accelerated; a dedicated driver or AES-NI is", async () => {
  const dir = mkdtempSync(join(tmpdir(), "parhelion-crypto-"));
  try {
    const slow = join(dir, "slow");
    writeFileSync(slow, [entry("xts(aes)", "xts(ecb(aes-fixed-time))", 101), entry("aes", "aes-fixed-time", 100), entry("aes", "aes-generic", 100)].join("\n"));
    assert.deepEqual(await xtsAesSupport(slow), { driver: "xts(ecb(aes-fixed-time))", accelerated: false });
    const fast = join(dir, "fast");
    writeFileSync(fast, [entry("xts(aes)", "xts(ecb(aes-generic))", 100), entry("xts(aes)", "xts-aes-vaes-avx2", 600), entry("aes", "aes-generic", 100)].join("\n"));
    assert.deepEqual(await xtsAesSupport(fast), { driver: "xts-aes-vaes-avx2", accelerated: true });
    const ni = join(dir, "ni");
    writeFileSync(ni, entry("aes", "aes-aesni", 300));
    assert.deepEqual(await xtsAesSupport(ni), { driver: undefined, accelerated: true });
    assert.deepEqual(await xtsAesSupport(join(dir, "missing")), { driver: undefined, accelerated: false });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
