#!/usr/bin/env node
/** Entry point of the `parhelion` CLI: runs the command tree and turns every failure into an exit code. */
import { enableCompileCache } from "node:module";
import { homedir } from "node:os";
import { join } from "node:path";

// Cache compiled code per user (a third off every start); a failure to cache is silently ignored.
try {
  enableCompileCache(join(process.env["XDG_CACHE_HOME"] || join(homedir(), ".cache"), "parhelion", "compile-cache"));
} catch {
  // no cache: slower, not wrong
}

const { run } = await import("./run.js");
process.exitCode = await run(process.argv);
