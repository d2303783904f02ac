/** Built-in organization roles, strongest first. */
export const ORG_ROLES = ["Owner", "Admin", "Operator", "Auditor", "Member"] as const;
export type OrgRole = (typeof ORG_ROLES)[number];

/** Who is making a request, after authentication and before authorization. */
export interface Principal {
  kind: "user" | "apiKey";
  orgId: string;
  /** The signed-in user, or the user who created the API key (null if that user is gone). */
  userId: string | null;
  email: string | null;
  apiKeyId: string | null;
  sessionId: string | null;
  /** An API key acts with exactly the role it was created with; users get theirs from grants (rbac). */
  keyRole: OrgRole | null;
}

/** An injectable clock: tests control time. */
export type Clock = () => Date;
export const systemClock: Clock = () => new Date();
