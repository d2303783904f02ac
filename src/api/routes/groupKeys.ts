import { z } from "zod";
import { defineRoute } from "../route.js";
import { Id } from "../schemas.js";
import { GroupParams, groupResource } from "./shared.js";

const KeyWrap = z.object({
  workspaceGroupID: Id,
  keyID: z.string().describe("The group's data key (its id never changes: re-wrapping keeps the key, so the volume is not rewritten)."),
  provider: z.enum(["platform", "aws-kms", "pkcs11"]).describe("What wraps the data key: the platform's key hierarchy (the organization's KEK), or the group's customer-managed key."),
  wrappedBy: z.string().describe("The wrapping key: the KEK's id, or the customer key's ARN / PKCS#11 id."),
  keyVersion: z.number().int().describe("Counts re-wraps of the data key (rotation, moving to or from a customer key)."),
  wrappedAt: z.string(),
});

const Rekey = z.object({
  operationID: Id, workspaceGroupID: Id,
  phase: z.enum(["STOPPING", "COPYING", "SWITCHING", "CLEANUP", "DONE", "FAILED"]).describe("The step running (or the last one): the group's workspaces are offline from STOPPING until DONE."),
  state: z.enum(["RUNNING", "DONE", "FAILED"]).describe("FAILED: rolled back; the group keeps its old data key and no data was lost (error says why)."),
  oldKeyID: z.string(), newKeyID: z.string().nullable(),
  bytesCopied: z.number().int(), bytesTotal: z.number().int().describe("Bytes of the workspaces' files to copy under the new key (0 until COPYING has measured them)."),
  workspaceIDs: z.array(Id).describe("The workspaces stopped for the re-key."),
  startedAt: z.string(), updatedAt: z.string(), finishedAt: z.string().optional(), error: z.string().optional(),
});

/** A workspace group's data key: what wraps it, its customer key's status, rotation and re-keying. Never key material. */
export const groupKeyRoutes = [
  defineRoute({
    method: "GET", path: "/v1/workspaceGroups/{workspaceGroupID}/keys", operationId: "getWorkspaceGroupKeys", tag: "Keys",
    summary: "The group's data key, what wraps it, and its customer-managed key's status (never key material).", access: "workspaceGroups:read", resource: groupResource, params: GroupParams,
    response: z.object({
      workspaceGroupID: Id, dataKey: KeyWrap.nullable().describe("null until the group's first workspace made its data key."),
      kmsKey: z.object({ provider: z.enum(["aws-kms", "pkcs11"]), keyID: z.string(), status: z.enum(["ENABLED", "UNAVAILABLE"]), statusDetail: z.string().optional(), checkedAt: z.string().optional() }).nullable(),
      rekey: Rekey.nullable().describe("The group's latest re-key of its data key (running or finished), with its progress; null if it never had one."),
    }),
    handler: async ({ params, principal, services }) => ({
      ...(await services.workspaces.groupKeyStatus(principal!.orgId, params.workspaceGroupID)),
      rekey: await services.rekeys.latest(principal!.orgId, params.workspaceGroupID),
    }),
  }),
  defineRoute({
    method: "POST", path: "/v1/workspaceGroups/{workspaceGroupID}/keys/rotate", operationId: "rotateWorkspaceGroupKey", tag: "Keys", auditType: "WorkspaceGroupKeyRotate", stepUp: true,
    summary: "Re-wraps the group's data key under the current version of its wrapping key (the platform KEK or the customer's key): no data rewrite, no downtime.",
    access: "workspaceGroups:write", resource: groupResource, params: GroupParams, response: KeyWrap,
    handler: async ({ params, principal, services, audit }) => {
      audit.resource = { type: "WorkspaceGroup", id: params.workspaceGroupID };
      const w = await services.workspaces.rotateGroupKey(principal!.orgId, params.workspaceGroupID);
      audit.attributes = { dataKeyID: w.keyID, provider: w.provider, wrappedBy: w.wrappedBy, keyVersion: w.keyVersion };
      return w;
    },
  }),
  defineRoute({
    method: "POST", path: "/v1/workspaceGroups/{workspaceGroupID}/keys/rekey", operationId: "rekeyWorkspaceGroupKey", tag: "Keys", auditType: "WorkspaceGroupRekey", stepUp: true, status: 202,
    summary: "Replaces the group's data key with a new one and rewrites its encrypted volume under the new volume key, offline: the group's workspaces stop, their data is copied, they start again. Answers 202 with the operation; GET .../keys shows its progress.",
    access: "workspaceGroups:write", resource: groupResource, params: GroupParams, response: Rekey,
    handler: async ({ params, principal, services, audit }) => {
      audit.resource = { type: "WorkspaceGroup", id: params.workspaceGroupID };
      const p = principal!;
      const by = p.kind === "apiKey" ? `apiKey:${p.apiKeyId ?? ""}` : `user:${p.userId ?? ""}`;
      const op = await services.rekeys.start(p.orgId, params.workspaceGroupID, by);
      audit.attributes = { operationID: op.operationID, oldKeyID: op.oldKeyID };
      return op;
    },
  }),
];
