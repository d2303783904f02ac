import { execFile } from "node:child_process";
import { open, readdir, readFile } from "node:fs/promises";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { resolveServiceAccount, type ServiceAccount } from "../../src/engine/postgres.js";
import { createLogger } from "../../src/log/logger.js";
import { readMounts } from "../../src/volumes/index.js";
import { SERVICE_USER, tempRoot } from "../support/proc.js";

export const execFileAsync = promisify(execFile);
export const logger = createLogger({ level: "silent" });
export const HELPER = "/usr/local/lib/parhelion/parhelion-fscrypt";
export const SIZE = 128 * 1024 * 1024;

export function account(): ServiceAccount {
  return resolveServiceAccount(SERVICE_USER);
}

/** A temporary data directory the service account can traverse (realpath'd: mountinfo shows canonical paths). */
export function dataRoot(): string {
  return tempRoot("parhelion-volume-test-");
}

/** Runs a shell snippet as the service account; answers stdout, or the error (with code and stderr). */
export async function asService(acct: ServiceAccount, script: string, ...args: string[]): Promise<string> {
  const r = await execFileAsync("/bin/sh", ["-c", script, "sh", ...args], { uid: acct.uid, gid: acct.gid, cwd: "/", env: { PATH: "/usr/bin:/bin" } });
  return r.stdout;
}

/** Offsets of needle in the whole file, read in chunks that overlap by the needle's length. */
export async function findInFile(file: string, needle: string | Buffer): Promise<number[]> {
  const n = typeof needle === "string" ? Buffer.from(needle) : needle;
  const fh = await open(file, "r");
  const hits: number[] = [];
  try {
    const chunk = Buffer.alloc(8 * 1024 * 1024);
    let pos = 0;
    for (;;) {
      const { bytesRead } = await fh.read(chunk, 0, chunk.length, pos);
      if (bytesRead === 0) break;
      const view = chunk.subarray(0, bytesRead);
      for (let i = view.indexOf(n); i >= 0; i = view.indexOf(n, i + 1)) {
        if (!hits.includes(pos + i)) hits.push(pos + i);
      }
      if (bytesRead < chunk.length) break;
      pos += bytesRead - (n.length - 1);
    }
  } finally {
    await fh.close();
  }
  return hits;
}

/** Mounts at or under root and loop devices whose backing file is under root: what a test must not leave behind. */
export async function leftovers(root: string): Promise<{ mounts: string[]; loops: string[] }> {
  const mounts = (await readMounts()).map((m) => m.mountPoint).filter((p) => p === root || p.startsWith(`${root}/`));
  const loops: string[] = [];
  for (const name of (await readdir("/sys/block")).filter((n) => /^loop\d+$/.test(n))) {
    const backing = await readFile(`/sys/block/${name}/loop/backing_file`, "utf8").catch(() => "");
    if (backing.startsWith(`${root}/`)) loops.push(`/dev/${name} ${backing.trim()}`);
  }
  // losetup -a says the same from the other side; both are checked.
  const { stdout } = await execFileAsync("losetup", ["-a"]);
  for (const line of stdout.split("\n")) if (line.includes(`${root}/`) && !loops.some((l) => line.startsWith(l.split(" ")[0]! + ":"))) loops.push(line);
  return { mounts, loops };
}

/** Unmounts everything under root (deepest first), detaches loop devices on its files, removes it. Never throws. */
export async function cleanupRoot(root: string): Promise<void> {
  for (let pass = 0; pass < 3; pass++) {
    const { mounts, loops } = await leftovers(root).catch(() => ({ mounts: [] as string[], loops: [] as string[] }));
    for (const m of mounts.sort((a, b) => b.length - a.length)) {
      await execFileAsync("umount", ["--", m]).catch(() => execFileAsync("umount", ["--lazy", "--", m]).catch(() => undefined));
    }
    for (const l of loops) await execFileAsync("losetup", ["--detach", l.split(/[ :]/)[0]!]).catch(() => undefined);
    if (mounts.length === 0 && loops.length === 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  rmSync(root, { recursive: true, force: true });
}

export { join };
