import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync, accessSync, constants } from "node:fs";
import { join } from "node:path";
import type { Logger } from "../log/logger.js";

export type LimitMechanism = "cgroup2" | "cgroup1" | "none";

/** What a workspace server's memory limit actually is, read back from the kernel. */
export interface EnforcedMemory {
  mechanism: LimitMechanism;
  /** The limit the kernel applies to the postmaster's cgroup; null when none is enforced. */
  maxBytes: number | null;
  /** The cgroup directory, when there is one. */
  cgroup: string | null;
  /** Why nothing is enforced, when nothing is. */
  reason: string | null;
}

/**
 * Memory limits for workspace servers through a cgroup per workspace: `<root>/parhelion/<id>` with
 * memory.max (cgroup v2) or `<root>/memory/parhelion/<id>` with memory.limit_in_bytes (cgroup v1, the
 * memory controller of a hybrid hierarchy). The postmaster enters its cgroup before it execs, so all of
 * its memory, shared buffers included, is charged there; the kernel's OOM killer acts within the cgroup.
 */
export interface MemoryLimiter {
  readonly mechanism: LimitMechanism;
  /** Why there is no mechanism (null when there is one). */
  readonly reason: string | null;
  /** Creates or updates a workspace's cgroup; returns the cgroup.procs file to enter, or undefined without a mechanism. */
  prepare(id: string, maxBytes: number): string | undefined;
  /** Reads back what the kernel enforces on the process pid, which must be in the workspace's cgroup. */
  enforced(id: string, pid: number | undefined): EnforcedMemory;
  /** Removes a workspace's cgroup (it must have no process left). */
  remove(id: string): void;
}

const none = (reason: string): MemoryLimiter => ({
  mechanism: "none",
  reason,
  prepare: () => undefined,
  enforced: () => ({ mechanism: "none", maxBytes: null, cgroup: null, reason }),
  remove: () => undefined,
});

function writable(path: string): boolean {
  try {
    accessSync(path, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

function controllersOf(file: string): string[] {
  try {
    return readFileSync(file, "utf8").trim().split(/\s+/);
  } catch {
    return [];
  }
}

/** Finds how this host lets parhelion limit memory, preparing `parhelion/` beneath the cgroup root. */
export function detectMemoryLimiter(logger: Logger, root = "/sys/fs/cgroup"): MemoryLimiter {
  if (process.getuid?.() !== 0) return none("parhelion does not run as root, and only root may create cgroups here");
  try {
    if (controllersOf(join(root, "cgroup.controllers")).includes("memory")) return cgroup2(root);
    if (existsSync(join(root, "memory", "memory.limit_in_bytes"))) return cgroup1(join(root, "memory"));
  } catch (err) {
    const reason = `cgroups are present but not usable: ${(err as Error).message}`;
    logger.warn({ reason }, "workspace memory limits are not enforced");
    return none(reason);
  }
  return none(`no cgroup v2 memory controller at ${root} and no cgroup v1 memory hierarchy at ${join(root, "memory")}`);
}

function cgroup2(root: string): MemoryLimiter {
  const base = join(root, "parhelion");
  mkdirSync(base, { recursive: true });
  // Children of parhelion/ get memory.* files only when both levels delegate the controller.
  for (const dir of [root, base]) {
    if (!controllersOf(join(dir, "cgroup.subtree_control")).includes("memory")) writeFileSync(join(dir, "cgroup.subtree_control"), "+memory");
  }
  return limiter("cgroup2", base, "memory.max", (line) => (line.startsWith("0::") ? line.slice(3) : undefined));
}

function cgroup1(hierarchy: string): MemoryLimiter {
  const base = join(hierarchy, "parhelion");
  mkdirSync(base, { recursive: true });
  if (!writable(join(base, "memory.limit_in_bytes"))) throw new Error(`${base}/memory.limit_in_bytes is not writable`);
  return limiter("cgroup1", base, "memory.limit_in_bytes", (line) => {
    const [, controllers, path] = /^\d+:([^:]*):(.*)$/.exec(line) ?? [];
    return controllers?.split(",").includes("memory") ? path : undefined;
  });
}

function limiter(mechanism: "cgroup1" | "cgroup2", base: string, limitFile: string, pathOf: (procCgroupLine: string) => string | undefined): MemoryLimiter {
  const dirOf = (id: string): string => join(base, id);
  return {
    mechanism,
    reason: null,
    prepare(id, maxBytes) {
      const dir = dirOf(id);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, limitFile), String(maxBytes));
      return join(dir, "cgroup.procs");
    },
    enforced(id, pid) {
      const dir = dirOf(id);
      if (pid === undefined) return { mechanism, maxBytes: null, cgroup: dir, reason: "the server is not running" };
      let lines: string[] = [];
      try {
        lines = readFileSync(`/proc/${pid}/cgroup`, "utf8").split("\n");
      } catch {
        return { mechanism, maxBytes: null, cgroup: dir, reason: "the server is not running" };
      }
      const want = `/parhelion/${id}`;
      if (!lines.some((l) => pathOf(l) === want)) return { mechanism, maxBytes: null, cgroup: dir, reason: `the postmaster (pid ${pid}) is not in ${dir}` };
      const raw = readFileSync(join(dir, limitFile), "utf8").trim();
      // cgroup v1 says "no limit" with a number near 2^63.
      const maxBytes = raw === "max" || !(Number(raw) < 2 ** 62) ? null : Number(raw);
      return { mechanism, maxBytes, cgroup: dir, reason: maxBytes === null ? `${limitFile} is unlimited` : null };
    },
    remove(id) {
      try {
        rmdirSync(dirOf(id));
      } catch {
        // absent, or a process is still inside (it is reused at the next start)
      }
    },
  };
}
