import { z } from "zod";
import { defineRoute } from "../route.js";

const KeyStatusView = z.object({
  provider: z.object({
    provider: z.enum(["local", "pkcs11", "aws-kms"]).describe("The root key provider (config key kms)."),
    keyId: z.string().describe("The root key's id: a fingerprint of the local key file, the HSM token/label#id, or the KMS key ARN."),
    details: z.record(z.string(), z.string()).describe("Non-secret settings: key file path, PKCS#11 module and token, AWS region and endpoint."),
  }),
  health: z.object({ ok: z.boolean(), detail: z.string() }).describe("A wrap and unwrap of a throwaway key through the provider, now."),
  keys: z.array(z.object({
    keyID: z.string(),
    kind: z.enum(["org-kek", "org-data", "group-data"]).describe("org-kek: the organization's key-encryption key; org-data: seals its secret columns; group-data: a workspace group's data key."),
    organizationID: z.string(),
    workspaceGroupID: z.string().nullable(),
    wrappedBy: z.string().describe("The key that wraps this one: the root key's id for a KEK, the KEK's id for a data key."),
    provider: z.string().nullable(),
    state: z.enum(["active", "retired"]),
    createdAt: z.string(),
  })).describe("The caller's organization's keys: ids and relations only, never key material."),
});

/** The key hierarchy as an auditor sees it: provider, health, which key wraps which. Never key material. */
export const keyRoutes = [
  defineRoute({
    method: "GET", path: "/v1/keys/status", operationId: "getKeyStatus", tag: "Keys",
    summary: "The root key provider, its health, and the organization's keys and what wraps each (never key material).", access: "auditLogs:read",
    response: KeyStatusView,
    handler: async ({ services, principal }) => services.keyring.status(principal!.orgId),
  }),
];
