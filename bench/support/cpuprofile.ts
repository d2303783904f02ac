/**
 * Summarises a V8 .cpuprofile (node --cpu-prof): self time per function and per source file, largest first.
 *
 *   node dist/bench/support/cpuprofile.js FILE.cpuprofile [top=30]
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface ProfileSummary {
  totalMs: number;
  idleMs: number;
  functions: Array<{ name: string; ms: number }>;
  files: Array<{ name: string; ms: number }>;
}

function shortUrl(url: string): string {
  if (!url) return "(native)";
  const u = url.replace(/^file:\/\//, "");
  const i = u.indexOf("/node_modules/");
  if (i >= 0) return u.slice(i + 1);
  const d = u.indexOf("/dist/");
  if (d >= 0) return u.slice(d + 6);
  return u;
}

export function summarizeProfile(file: string, top = 30): ProfileSummary {
  const p = JSON.parse(readFileSync(file, "utf8")) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  // Self time from samples and their time deltas (µs) when present, else hit counts at the mean interval.
  const self = new Map<number, number>();
  if (p.samples && p.timeDeltas && p.samples.length === p.timeDeltas.length) {
    for (let i = 0; i < p.samples.length; i++) {
      const dt = p.timeDeltas[i + 1] ?? p.timeDeltas[i] ?? 0;
      self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + dt);
    }
  } else {
    const hits = p.nodes.reduce((a, n) => a + (n.hitCount ?? 0), 0);
    const per = hits > 0 ? (p.endTime - p.startTime) / hits : 0;
    for (const n of p.nodes) self.set(n.id, (n.hitCount ?? 0) * per);
  }
  const fns = new Map<string, number>();
  const files = new Map<string, number>();
  let total = 0;
  let idle = 0;
  for (const [id, us] of self) {
    const n = byId.get(id);
    if (!n) continue;
    const name = n.callFrame.functionName || "(anonymous)";
    if (name === "(idle)") {
      idle += us;
      continue;
    }
    total += us;
    const where = shortUrl(n.callFrame.url);
    const key = n.callFrame.url ? `${name} ${where}:${n.callFrame.lineNumber + 1}` : name;
    fns.set(key, (fns.get(key) ?? 0) + us);
    const fileKey = n.callFrame.url ? where : name.startsWith("(") ? name : "(native)";
    files.set(fileKey, (files.get(fileKey) ?? 0) + us);
  }
  const sorted = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]).slice(0, top).map(([name, us]) => ({ name, ms: us / 1000 }));
  return { totalMs: total / 1000, idleMs: idle / 1000, functions: sorted(fns), files: sorted(files) };
}

export function formatSummary(s: ProfileSummary): string {
  const pct = (ms: number) => `${((ms / s.totalMs) * 100).toFixed(1)}%`.padStart(6);
  const out = [`busy ${(s.totalMs / 1000).toFixed(1)} s (idle ${(s.idleMs / 1000).toFixed(1)} s); self time, largest first:`];
  out.push("  by file:");
  for (const f of s.files) out.push(`    ${pct(f.ms)}  ${f.name}`);
  out.push("  by function:");
  for (const f of s.functions) out.push(`    ${pct(f.ms)}  ${f.name}`);
  return out.join("\n");
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write("usage: node dist/bench/support/cpuprofile.js FILE.cpuprofile [top=30]\n");
    process.exit(2);
  }
  process.stdout.write(formatSummary(summarizeProfile(file, Number(process.argv[3] ?? 30))) + "\n");
}
