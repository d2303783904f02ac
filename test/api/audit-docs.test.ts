import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { ROUTES } from "../../src/api/routes/index.js";

test("every audit event type a route writes is documented in docs/audit.md", () => {
  const doc = readFileSync("docs/audit.md", "utf8");
  const types = new Set<string>(["OrganizationBootstrap", "AuthFailure", "ApiRequest", "ApiRequestRejected"]);
  for (const r of ROUTES) if (r.method !== "GET") types.add(r.auditType ?? r.operationId);
  const missing = [...types].filter((t) => !doc.includes(`\`${t}\``));
  assert.deepEqual(missing, []);
});
