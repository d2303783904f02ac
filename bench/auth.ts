/**
 * Authentication benchmark (issue 6): new authenticated TLS sessions per second (`pgbench -C -S`) through
 * the gateway with SCRAM, with a JWT (the group's cached key) and with parhelion's own short-lived
 * credential, beside direct PostgreSQL with TLS and PgBouncer (SCRAM) in the same run.
 *
 *   node dist/bench/auth.js [--connect-duration SEC (15)] [--connect-clients N (8)] [--rounds N (1)] [any bench/gateway.js option]
 *
 * It is bench/gateway.js with the token paths and the new-sessions mode only (the same servers, CPU
 * accounting and report): one implementation of the setup, not two. Exit status as bench/gateway.js.
 */
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const gateway = join(dirname(fileURLToPath(import.meta.url)), "gateway.js");
const args = [gateway, "--modes", "connect", "--paths", "tls,pgbouncer,gateway,gwjwt,gwcred", "--skip-create", "--idle", "0", ...process.argv.slice(2)];
const child = spawn(process.execPath, args, { stdio: "inherit" });
for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => child.kill(sig));
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 130 : 2)));
