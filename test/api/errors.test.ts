import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { ERROR_CATALOG, ParhelionError } from "../../src/lib/errors.js";
import { problemOf } from "../../src/api/problem.js";

test("every error code is in the catalog with a status and SQLSTATE, and documented in docs/errors.md", () => {
  const doc = readFileSync("docs/errors.md", "utf8");
  for (const [code, e] of Object.entries(ERROR_CATALOG)) {
    assert.ok(e.status >= 400 && e.status < 600, code);
    assert.match(e.sqlstate, /^[0-9A-Z]{5}$/, code);
    assert.ok(doc.includes(`\`${code}\` | ${e.status} | \`${e.sqlstate}\``), `${code} is not documented as in the catalog`);
  }
});

test("a problem carries code, message and request id, and masks internal causes", () => {
  const p = problemOf(new ParhelionError("ERR_INTERNAL", undefined, { cause: new Error("password=hunter2") }), "req-1");
  assert.equal(p.code, "ERR_INTERNAL");
  assert.equal(p.status, 500);
  assert.equal(p.requestId, "req-1");
  assert.ok(!JSON.stringify(p).includes("hunter2"));
});
