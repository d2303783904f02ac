/** What the kernel says is mounted and which loop devices back which files (/proc/self/mountinfo, sysfs). */
import { readFile, readdir } from "node:fs/promises";

export interface MountEntry {
  mountPoint: string;
  fsType: string;
  source: string;
  options: string;
}

/** Undoes mountinfo's octal escapes (\040 for a space, \011, \012, \134). */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Every mount this process sees, in mount order (proc(5), /proc/pid/mountinfo). */
export async function readMounts(): Promise<MountEntry[]> {
  const text = await readFile("/proc/self/mountinfo", "utf8");
  const out: MountEntry[] = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    const f = line.split(" ");
    const sep = f.indexOf("-", 6);
    if (sep < 0 || f.length < sep + 3) continue;
    out.push({ mountPoint: unescape(f[4]!), options: f[5]!, fsType: f[sep + 1]!, source: unescape(f[sep + 2]!) });
  }
  return out;
}

/** The mount on top at path (the last one mounted there), if any. */
export async function mountAt(path: string): Promise<MountEntry | undefined> {
  return (await readMounts()).filter((m) => m.mountPoint === path).at(-1);
}

/** The loop devices (/dev/loopN) whose backing file is `file` (an absolute, canonical path). */
export async function loopDevicesFor(file: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir("/sys/block");
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const name of names.filter((n) => /^loop\d+$/.test(n))) {
    let backing: string;
    try {
      backing = (await readFile(`/sys/block/${name}/loop/backing_file`, "utf8")).replace(/\n$/, "");
    } catch {
      continue; // not attached
    }
    if (backing === file || backing === `${file} (deleted)`) out.push(`/dev/${name}`);
  }
  return out.sort();
}

/** The file behind a loop device, or undefined when it is not a loop device or not attached. */
export async function loopBackingFile(device: string): Promise<string | undefined> {
  const m = /^\/dev\/(loop\d+)$/.exec(device);
  if (!m) return undefined;
  try {
    return (await readFile(`/sys/block/${m[1]}/loop/backing_file`, "utf8")).replace(/\n$/, "");
  } catch {
    return undefined;
  }
}
