/** Rendering: JSON is the API's answer as is; tables are plain aligned columns for people. */

export type OutputFormat = "json" | "table";

/** The format asked for, or table on a terminal and JSON otherwise. */
export function resolveFormat(asked: string | undefined, isTTY: boolean | undefined = process.stdout.isTTY): OutputFormat {
  if (asked === "json" || asked === "table") return asked;
  return isTTY ? "table" : "json";
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + "\n");
}

// Server-provided text (names, audit reasons) must not drive the terminal: control characters become "?".
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;

/** One table cell: "-" for nothing, lists comma-joined, objects as compact JSON, control characters masked. */
export function cell(v: unknown): string {
  let s: string;
  if (v === null || v === undefined || v === "") s = "-";
  else if (Array.isArray(v)) s = v.length === 0 ? "-" : v.map((x) => (typeof x === "object" && x !== null ? JSON.stringify(x) : String(x))).join(",");
  else if (typeof v === "object") s = JSON.stringify(v);
  else s = String(v);
  return s.replace(CONTROL, "?");
}

export interface Column<T> {
  header: string;
  get: (row: T) => unknown;
}

/** Formats rows as aligned columns separated by two spaces; the last column is not padded. */
export function formatTable<T>(rows: readonly T[], cols: readonly Column<T>[]): string {
  const cells = [cols.map((c) => c.header), ...rows.map((r) => cols.map((c) => cell(c.get(r))))];
  const widths = cols.map((_, i) => Math.max(...cells.map((line) => line[i]!.length)));
  return cells.map((line) => line.map((s, i) => (i === line.length - 1 ? s : s.padEnd(widths[i]!))).join("  ").trimEnd()).join("\n") + "\n";
}

export function printTable<T>(rows: readonly T[], cols: readonly Column<T>[]): void {
  process.stdout.write(formatTable(rows, cols));
}

/** One object as a two-column FIELD / VALUE table. */
export function printRecord(obj: Record<string, unknown>, fields?: readonly string[]): void {
  const keys = fields ?? Object.keys(obj);
  printTable(keys.map((k) => [k, obj[k]] as const), [{ header: "FIELD", get: (r) => r[0] }, { header: "VALUE", get: (r) => r[1] }]);
}

/** JSON as is, or the table the command describes. */
export function emit(format: OutputFormat, value: unknown, table: () => void): void {
  if (format === "json") printJson(value);
  else table();
}

/** Notes for people (warnings, next steps) go to stderr so stdout stays parseable. */
export function note(text: string): void {
  process.stderr.write(text.endsWith("\n") ? text : text + "\n");
}
