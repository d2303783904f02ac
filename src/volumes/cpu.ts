/** Whether the kernel's AES-XTS (fscrypt's contents mode) is accelerated: it decides what encryption costs. */
import { readFile } from "node:fs/promises";

export interface XtsAesSupport {
  /** The highest-priority xts(aes) driver registered now (a template such as "xts(ecb(aes-fixed-time))" until a dedicated one exists). */
  driver: string | undefined;
  /** A dedicated implementation (xts-aes-aesni, xts-aes-vaes-*, xts-aes-ce) or an accelerated AES under the template. */
  accelerated: boolean;
}

/**
 * Reads /proc/crypto. On this project's test VM the kernel has no AES-NI driver and fscrypt writes at ~50 MB/s
 * per core (docs/benchmarks.md); a stock distribution kernel loads aesni_intel and runs at GB/s.
 */
export async function xtsAesSupport(procCrypto = "/proc/crypto"): Promise<XtsAesSupport> {
  let text: string;
  try {
    text = await readFile(procCrypto, "utf8");
  } catch {
    return { driver: undefined, accelerated: false };
  }
  const entries = text.split(/\n\s*\n/).map((b) => ({
    name: /^name\s+: (.+)$/m.exec(b)?.[1],
    driver: /^driver\s+: (.+)$/m.exec(b)?.[1] ?? "",
    priority: Number(/^priority\s+: (\d+)$/m.exec(b)?.[1] ?? 0),
  }));
  const xts = entries.filter((e) => e.name === "xts(aes)").sort((a, b) => b.priority - a.priority);
  const fastAes = entries.some((e) => e.name === "aes" && /aesni|aes-ce|aes-arm64/.test(e.driver));
  const dedicated = xts.some((e) => !e.driver.includes("("));
  return { driver: xts[0]?.driver, accelerated: dedicated || fastAes };
}
