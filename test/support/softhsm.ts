import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so";

export interface TestToken {
  dir: string;
  conf: string;
  token: string;
  pin: string;
  soPin: string;
  /** Removes the token directory (the caller closes its sessions first). */
  cleanup(): void;
}

/**
 * A SoftHSM2 token of its own in a temporary directory (never the system's): a softhsm2.conf there, and
 * SOFTHSM2_CONF pointing at it in this process's environment, as SoftHSM reads it at C_Initialize.
 */
export function createTestToken(label = "parhelion-test"): TestToken {
  const dir = mkdtempSync(join(tmpdir(), "parhelion-softhsm-"));
  try {
    const tokens = join(dir, "tokens");
    mkdirSync(tokens, { mode: 0o700 });
    const conf = join(dir, "softhsm2.conf");
    writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`, { mode: 0o600 });
    const pin = randomBytes(8).toString("hex");
    const soPin = randomBytes(8).toString("hex");
    execFileSync("softhsm2-util", ["--init-token", "--free", "--label", label, "--so-pin", soPin, "--pin", pin], { env: { ...process.env, SOFTHSM2_CONF: conf }, stdio: "pipe" });
    process.env["SOFTHSM2_CONF"] = conf;
    return { dir, conf, token: label, pin, soPin, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
