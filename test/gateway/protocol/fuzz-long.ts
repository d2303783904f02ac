/**
 * The protocol fuzz properties with 20 times the runs of the suite. Not a *.test.ts file, so the suite
 * does not run it: `node dist/test/gateway/protocol/fuzz-long.js [multiplier]`. Exits non-zero on the first
 * counterexample (fast-check prints it with its seed).
 */
import { PROPERTIES } from "./properties.js";

const multiplier = Number(process.argv[2] ?? 20);
if (!Number.isInteger(multiplier) || multiplier < 1) {
  console.error("usage: node dist/test/gateway/protocol/fuzz-long.js [multiplier, default 20]");
  process.exit(2);
}
let total = 0;
const started = performance.now();
for (const p of PROPERTIES) {
  const runs = p.numRuns * multiplier;
  const t0 = performance.now();
  p.check(runs);
  total += runs;
  console.log(`ok  ${runs.toString().padStart(8)} runs  ${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s  ${p.name}`);
}
console.log(`all ${PROPERTIES.length} properties held for ${total} runs in ${((performance.now() - started) / 1000).toFixed(1)} s`);
