/**
 * What the benchmarks read from /proc: CPU time of processes and of the whole machine, memory (Pss/Rss from
 * smaps_rollup), and the processes of a PostgreSQL server (those working in its data directory).
 */
import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync, readlinkSync, realpathSync } from "node:fs";
import { join } from "node:path";

/** Clock ticks per second (USER_HZ): /proc times are in these. */
export const TICKS_PER_SECOND = (() => {
  try {
    const n = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());
    return Number.isFinite(n) && n > 0 ? n : 100;
  } catch {
    return 100;
  }
})();

export interface ProcStat {
  pid: number;
  comm: string;
  ppid: number;
  /** CPU the process itself used, seconds (utime + stime). */
  cpu: number;
  /** CPU of its children that exited and were reaped, seconds (cutime + cstime). */
  childrenCpu: number;
}

export function procStat(pid: number): ProcStat | undefined {
  let s: string;
  try {
    s = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  const close = s.lastIndexOf(")");
  const comm = s.slice(s.indexOf("(") + 1, close);
  const f = s.slice(close + 2).split(" "); // f[0] is field 3 (state)
  const n = (i: number) => Number(f[i] ?? 0);
  return { pid, comm, ppid: n(1), cpu: (n(11) + n(12)) / TICKS_PER_SECOND, childrenCpu: (n(13) + n(14)) / TICKS_PER_SECOND };
}

/** CPU seconds a process used (0 when it is gone). */
export function processCpu(pid: number): number {
  return procStat(pid)?.cpu ?? 0;
}

/** CPU seconds of this process's reaped children (the pgbench runs it waited for). */
export function reapedChildrenCpu(): number {
  return procStat(process.pid)?.childrenCpu ?? 0;
}

/** The machine's CPU seconds from /proc/stat: busy (non-idle, non-iowait, steal included), and of that the hypervisor's steal. */
export function machineCpu(): { busy: number; steal: number } {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0]!; // "cpu  user nice system idle iowait irq softirq steal ..."
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = v;
  return { busy: (user + nice + system + irq + softirq + steal) / TICKS_PER_SECOND, steal: steal / TICKS_PER_SECOND };
}

/** Busy (non-idle, non-iowait) CPU seconds of the whole machine, steal included. */
export function machineBusy(): number {
  return machineCpu().busy;
}

/** Pss and Rss of one process in kB (smaps_rollup). */
export function memoryKb(pid: number): { pss: number; rss: number } | undefined {
  try {
    const t = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
    const get = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(t)?.[1] ?? NaN);
    return { pss: get("Pss"), rss: get("Rss") };
  } catch {
    return undefined;
  }
}

export function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean).join(" ");
  } catch {
    return "";
  }
}

/** Pids of live processes whose comm is name. */
export function pidsNamed(name: string): number[] {
  const out: number[] = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    const st = procStat(Number(e));
    if (st && st.comm === name) out.push(st.pid);
  }
  return out;
}

/** The postmaster pid named in a data directory's postmaster.pid, if any. */
export function postmasterPid(pgdata: string): number | undefined {
  try {
    const pid = Number(readFileSync(join(pgdata, "postmaster.pid"), "utf8").split("\n")[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Live processes whose working directory is the data directory (a postmaster chdirs there; its children inherit it). */
export function processesIn(pgdata: string): number[] {
  let dir: string;
  try {
    dir = realpathSync(pgdata);
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    if (pid === process.pid) continue;
    try {
      if (readlinkSync(`/proc/${pid}/cwd`) === dir) out.push(pid);
    } catch {
      // gone, or a kernel thread
    }
  }
  return out.sort((a, b) => a - b);
}

/**
 * CPU seconds a PostgreSQL server has used so far: every live process working in its data directory plus
 * the backends that already exited (the postmaster reaps them, so their time is in its children's time).
 * Differences of this across a run count backends that came and went during it.
 */
export function serverCpu(pgdata: string): number {
  const pm = postmasterPid(pgdata);
  let total = 0;
  for (const pid of processesIn(pgdata)) {
    const st = procStat(pid);
    if (!st) continue;
    total += st.cpu;
    if (pid === pm) total += st.childrenCpu;
  }
  return total;
}

export interface ProcessMemory {
  pid: number;
  role: string;
  pss: number;
  rss: number;
}

/** Pss/Rss (kB) of every process working in a data directory, with its role (PostgreSQL's process title). */
export function serverMemory(pgdata: string): ProcessMemory[] {
  const out: ProcessMemory[] = [];
  for (const pid of processesIn(pgdata)) {
    const m = memoryKb(pid);
    if (!m) continue;
    const title = cmdline(pid);
    const role = title.startsWith("postgres:") ? title.replace(/^postgres:\s*/, "") : "postmaster";
    out.push({ pid, role, ...m });
  }
  return out;
}
