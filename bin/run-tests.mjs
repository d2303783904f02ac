// Runs the compiled test suite with node:test. Files: dist/test/**/*.test.js (or those given as args).
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (name.endsWith(".test.js")) out.push(p);
  }
  return out;
}

const args = process.argv.slice(2);
const files = args.length > 0 ? args : walk("dist/test").sort();
const res = spawnSync(
  process.execPath,
  ["--enable-source-maps", "--test", "--test-concurrency=2", "--test-timeout=180000", "--test-reporter=spec", ...files],
  { stdio: "inherit", env: { ...process.env, NODE_ENV: "test" } },
);
process.exit(res.status ?? 1);
