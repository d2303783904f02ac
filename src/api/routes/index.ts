import type { RouteSpec } from "../route.js";
import { orgRoutes } from "./org.js";
import { userRoutes } from "./users.js";
import { invitationRoutes } from "./invitations.js";
import { teamRoutes } from "./teams.js";
import { apiKeyRoutes } from "./apiKeys.js";
import { auditRoutes } from "./auditLogs.js";
import { authRoutes } from "./auth.js";
import { workspaceRoutes } from "./workspaces.js";
import { tokenRoutes } from "./tokens.js";
import { ssoRoutes } from "./sso.js";
import { mfaRoutes } from "./mfa.js";
import { keyRoutes } from "./keys.js";
import { auditSinkRoutes } from "./auditSinks.js";
import { groupKeyRoutes } from "./groupKeys.js";

/** Every /v1 route. The RBAC test walks this list against its expected allow/deny table. */
export const ROUTES: readonly RouteSpec[] = [...orgRoutes, ...userRoutes, ...invitationRoutes, ...teamRoutes, ...apiKeyRoutes, ...auditRoutes, ...authRoutes, ...workspaceRoutes, ...groupKeyRoutes, ...tokenRoutes, ...ssoRoutes, ...mfaRoutes, ...keyRoutes, ...auditSinkRoutes];
