import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { ROUTES } from "../../src/api/routes/index.js";

test("every audit event type a route writes is documented in docs/audit.md", () => {
  const doc = readFileSync("docs/audit.md", "utf8");
  const types = new Set<string>(["OrganizationBootstrap", "AuthFailure", "ApiRequest", "ApiRequestRejected"]);
  for (const r of ROUTES) if (r.method !== "GET") types.add(r.auditType ?? r.operationId);
  // Written outside the API: the reconciler and the gateway.
  for (const t of ["WorkspaceProvisioned", "WorkspaceResumed", "WorkspaceSuspended", "WorkspaceTerminated", "WorkspaceAutoSuspend", "WorkspaceFailed", "WorkspaceGroupExpired",
    "DatabaseConnect", "DatabaseLoginSuccess", "DatabaseLoginFailure", "DatabaseDisconnect", "DatabaseCancel", "DataApiRequest",
    "GatewayFirewallDeny", "GatewayTlsFailure", "GatewayPlaintextRefused", "GatewayProtocolError", "GatewayUnknownEndpoint"]) types.add(t);
  for (const dir of ["src/gateway", "src/workspaces"]) {
    for (const f of readdirSync(dir).filter((n) => n.endsWith(".ts"))) {
      for (const m of readFileSync(`${dir}/${f}`, "utf8").matchAll(/type: "([A-Z][A-Za-z]+)"/g)) if (!["Workspace", "WorkspaceGroup", "Cluster"].includes(m[1]!)) types.add(m[1]!);
    }
  }
  const missing = [...types].filter((t) => !doc.includes(`\`${t}\``));
  assert.deepEqual(missing, []);
});
