/** Number formatting and plain-text tables for benchmark reports (Markdown-compatible). */

export const f0 = (n: number): string => (Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "n/a");
export const f1 = (n: number): string => (Number.isFinite(n) ? n.toFixed(1) : "n/a");
export const f2 = (n: number): string => (Number.isFinite(n) ? n.toFixed(2) : "n/a");
export const f3 = (n: number): string => (Number.isFinite(n) ? n.toFixed(3) : "n/a");

export function median(xs: number[]): number {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** A Markdown table: first column left-aligned, the others right-aligned. */
export function table(headers: string[], rows: string[][]): string {
  const w = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => "| " + cells.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join(" | ") + " |";
  return [line(headers), "|" + w.map((n, i) => (i === 0 ? "-".repeat(n + 2) : "-".repeat(n + 1) + ":")).join("|") + "|", ...rows.map(line)].join("\n");
}
