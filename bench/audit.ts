/**
 * Statement audit benchmark (issue 5): pgbench select-only through the gateway to three workspaces of one size
 * and data, each in a group at its own audit level: OFF, ADMIN-ONLY (the default) and ALL-QUERIES, in one run;
 * target ALL-QUERIES ≥ 0.9 × OFF, judged on the median of the rounds' own ratios (each ALL-QUERIES run against the
 * OFF run right beside it).
 *
 *   node dist/bench/audit.js [-T SEC (20)] [--rounds N (6)] [any bench/gateway.js option]
 *
 * It is bench/gateway.js with the audit-level paths and the select-only mode only (the same servers, CPU
 * accounting and report). Exit status as bench/gateway.js.
 */
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const gateway = join(dirname(fileURLToPath(import.meta.url)), "gateway.js");
const args = [gateway, "--modes", "select", "--paths", "gateway,gwoff,gwall", "--rounds", "6", "-T", "20", "--skip-create", "--idle", "0", ...process.argv.slice(2)];
const child = spawn(process.execPath, args, { stdio: "inherit" });
for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => child.kill(sig));
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 130 : 2)));
