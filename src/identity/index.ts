// Identity: passwords, users, console sessions, API keys, invitations and sign-in throttling.
export { ORG_ROLES, systemClock, type OrgRole, type Principal, type Clock } from "./types.js";
export { hashPassword, verifyPassword, needsRehash, checkPasswordPolicy, ARGON2_PARAMS, PASSWORD_MIN_LENGTH, PASSWORD_MAX_LENGTH } from "./passwords.js";
export {
  createUser,
  getUser,
  findUserByEmail,
  verifyUserPassword,
  listUsers,
  removeUser,
  setPassword,
  changePassword,
  type UserView,
  type UserAccount,
} from "./users.js";
export {
  SESSION_COOKIE,
  SESSION_TTL_MIN,
  SESSION_TTL_MAX,
  createSession,
  authenticateSession,
  checkCsrf,
  revokeSession,
  revokeUserSessions,
  type NewSession,
  type SessionAuth,
} from "./sessions.js";
export {
  API_KEY_MAX_LIFETIME_MS,
  createApiKey,
  listApiKeys,
  getApiKey,
  revokeApiKey,
  revokeApiKeysCreatedBy,
  parseApiKeyToken,
  ApiKeyAuthenticator,
  type ApiKeyView,
  type ApiKeyAuthenticatorOptions,
} from "./apiKeys.js";
export {
  INVITATION_TTL_MIN,
  INVITATION_TTL_MAX,
  createInvitation,
  listInvitations,
  getInvitation,
  revokeInvitation,
  acceptInvitation,
  type InvitationView,
  type InvitationState,
  type OnInvitationAccepted,
} from "./invitations.js";
export { LoginThrottle, type LoginThrottleOptions, type ThrottleSubject } from "./ratelimit.js";
export { OrganizationDirectory, type OrganizationView } from "./organizations.js";
