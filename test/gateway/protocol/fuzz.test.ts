import { test, describe } from "node:test";
import { PROPERTIES } from "./properties.js";

// fast-check properties of the protocol codec (see properties.ts); fuzz-long.ts runs them 20 times longer.
describe("protocol codec under random and mutated input", () => {
  for (const p of PROPERTIES) {
    test(p.name, () => p.check(p.numRuns));
  }
});
