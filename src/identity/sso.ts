import { X509Certificate, createHash, randomUUID, timingSafeEqual } from "node:crypto";
import { rootCertificates } from "node:tls";
import { sql } from "kysely";
import * as oidc from "openid-client";
import { Agent, fetch as undiciFetch } from "undici";
import { ParhelionError } from "../lib/errors.js";
import type { Db } from "../store/schema.js";
import { keyUnavailable, openColumn, sealColumn } from "../kms/index.js";
import { identityRolesOfUser } from "../rbac/grants.js";
import { createUser } from "./users.js";
import { decodeToken, isUniqueViolation, isUuid, isoNN, randomToken, sha256 } from "./internal.js";
import { ORG_ROLES, systemClock, type Clock, type OrgRole } from "./types.js";

// OpenID Connect sign-in (authorization code + PKCE, state and nonce) against one identity provider per
// organization; see identity/DESIGN.md "Single sign-on" for the rules this file implements.

/** Name of the cookie that binds a console login transaction to the browser that started it. */
export const SSO_BINDING_COOKIE = "parhelion_sso";
/** How long a login transaction (state, nonce, PKCE verifier) stays usable. */
export const SSO_TRANSACTION_TTL_SECONDS = 600;
/** How long a CLI has to redeem the one-time code its loopback listener received. */
export const SSO_HANDOFF_TTL_SECONDS = 60;
/** Unused, unexpired transactions one source address may hold at once. */
const MAX_OPEN_PER_SOURCE = 50;
const IDP_TIMEOUT_SECONDS = 10;
const MAX_GROUPS = 1000;

/** Roles SSO may grant: Owner is only ever granted and revoked by hand. */
export const SSO_ROLES = ["Admin", "Operator", "Auditor", "Member"] as const;
export type SsoRole = (typeof SSO_ROLES)[number];

/** Why a sign-in was refused: stable, safe to show (details.reason of ERR_SSO_FAILED). */
export type SsoFailureReason =
  | "state_invalid"
  | "browser_mismatch"
  | "idp_error"
  | "issuer_mismatch"
  | "audience_mismatch"
  | "token_expired"
  | "nonce_mismatch"
  | "token_invalid"
  | "token_exchange_failed"
  | "subject_missing"
  | "email_missing"
  | "email_not_verified"
  | "email_in_use"
  | "jit_disabled"
  | "no_mapped_role"
  | "handoff_invalid";

const MESSAGES: Record<SsoFailureReason, string> = {
  state_invalid: "the sign-in request is unknown, expired or already used; start again",
  browser_mismatch: "the sign-in was started in another browser; start again here",
  idp_error: "the identity provider refused the sign-in",
  issuer_mismatch: "the identity provider is not the configured issuer",
  audience_mismatch: "the ID token was not issued to this client",
  token_expired: "the ID token has expired",
  nonce_mismatch: "the ID token does not belong to this sign-in request",
  token_invalid: "the identity provider's answer failed validation",
  token_exchange_failed: "the identity provider refused to exchange the authorization code",
  subject_missing: "the ID token names no subject",
  email_missing: "the identity provider sent no email address",
  email_not_verified: "an account with this email exists, but the identity provider has not verified the email",
  email_in_use: "this email belongs to another account",
  jit_disabled: "no account is linked to this identity and automatic account creation is off",
  no_mapped_role: "none of your groups is allowed to sign in to this organization",
  handoff_invalid: "the sign-in code is unknown, expired, already used or not for this client",
};

/** A typed ERR_SSO_FAILED with its stable reason. */
export function ssoFailure(reason: SsoFailureReason, cause?: unknown): ParhelionError {
  return new ParhelionError("ERR_SSO_FAILED", `Single sign-on failed: ${MESSAGES[reason]}.`, { details: { reason }, ...(cause === undefined ? {} : { cause }) });
}

// ---------------------------------------------------------------------------------------------------------
// Configuration

export interface SsoClaimNames {
  email: string;
  groups: string;
  firstName: string;
  lastName: string;
}

/** The organization's identity provider settings as the API takes them (PUT replaces; see `clientSecret`). */
export interface SsoConfigInput {
  issuer: string;
  clientID: string;
  /** Write-only. Omitted: keep the stored one; null: none (a public client: PKCE only). */
  clientSecret?: string | null | undefined;
  redirectURI: string;
  /** PEM certificates trusted for the IdP's TLS in addition to the system roots (a private IdP). */
  caPem?: string | null | undefined;
  scopes?: string[] | undefined;
  claims?: Partial<SsoClaimNames> | undefined;
  jit?: boolean | undefined;
  defaultRole?: SsoRole | null | undefined;
  teamMappings?: Array<{ group: string; teamID: string }> | undefined;
  roleMappings?: Array<{ group: string; role: SsoRole }> | undefined;
  ssoOnly?: boolean | undefined;
  breakGlassUserIDs?: string[] | undefined;
}

/** The settings as the API shows them: never the client secret, only whether one is set. */
export interface SsoConfigView {
  organizationID: string;
  issuer: string;
  clientID: string;
  clientSecretSet: boolean;
  redirectURI: string;
  caPem: string | null;
  scopes: string[];
  claims: SsoClaimNames;
  jit: boolean;
  defaultRole: SsoRole | null;
  teamMappings: Array<{ group: string; teamID: string }>;
  roleMappings: Array<{ group: string; role: SsoRole }>;
  ssoOnly: boolean;
  breakGlassUserIDs: string[];
  createdAt: string;
  updatedAt: string;
}

export const DEFAULT_SCOPES = ["openid", "email", "profile"];
export const DEFAULT_CLAIMS: SsoClaimNames = { email: "email", groups: "groups", firstName: "given_name", lastName: "family_name" };

interface ProviderRow {
  org_id: string;
  issuer: string;
  client_id: string;
  client_secret: string | null;
  client_secret_enc: Buffer | null;
  redirect_uri: string;
  ca_pem: string | null;
  scopes: string[];
  email_claim: string;
  groups_claim: string;
  first_name_claim: string;
  last_name_claim: string;
  jit: boolean;
  default_role: string | null;
  team_mappings: Array<{ group: string; teamID: string }>;
  role_mappings: Array<{ group: string; role: string }>;
  sso_only: boolean;
  break_glass_user_ids: string[];
  created_at: Date | string;
  updated_at: Date | string;
}

function view(r: ProviderRow): SsoConfigView {
  return {
    organizationID: r.org_id,
    issuer: r.issuer,
    clientID: r.client_id,
    clientSecretSet: r.client_secret_enc !== null || r.client_secret !== null,
    redirectURI: r.redirect_uri,
    caPem: r.ca_pem,
    scopes: [...r.scopes],
    claims: { email: r.email_claim, groups: r.groups_claim, firstName: r.first_name_claim, lastName: r.last_name_claim },
    jit: r.jit,
    defaultRole: r.default_role as SsoRole | null,
    teamMappings: r.team_mappings,
    roleMappings: r.role_mappings as Array<{ group: string; role: SsoRole }>,
    ssoOnly: r.sso_only,
    breakGlassUserIDs: [...r.break_glass_user_ids],
    createdAt: isoNN(r.created_at),
    updatedAt: isoNN(r.updated_at),
  };
}

async function providerRow(db: Db, orgId: string): Promise<ProviderRow | undefined> {
  if (!isUuid(orgId)) return undefined;
  return (await db.selectFrom("sso_providers").selectAll().where("org_id", "=", orgId).executeTakeFirst()) as ProviderRow | undefined;
}

/** The organization's settings; ERR_SSO_NOT_CONFIGURED when it has none. */
export async function getSsoConfig(db: Db, orgId: string): Promise<SsoConfigView> {
  const row = await providerRow(db, orgId);
  if (!row) throw new ParhelionError("ERR_SSO_NOT_CONFIGURED");
  return view(row);
}

function invalid(field: string, message: string): ParhelionError {
  return new ParhelionError("ERR_VALIDATION", `${field}: ${message}`);
}

/** An https URL without credentials, query or fragment. */
function httpsUrl(value: string, field: string): URL {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw invalid(field, "is not a URL");
  }
  if (u.protocol !== "https:") throw invalid(field, "must be an https URL");
  if (u.username || u.password) throw invalid(field, "must not carry credentials");
  if (u.search || u.hash || value.includes("?") || value.includes("#")) throw invalid(field, "must not have a query or fragment");
  return u;
}

/** Checks a PEM bundle: one or more parseable certificates and nothing else. */
function checkCaPem(pem: string): string {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  const rest = pem.replace(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g, "").trim();
  if (blocks.length === 0 || rest.length > 0) throw invalid("caPem", "must be one or more PEM certificates and nothing else");
  for (const b of blocks) {
    try {
      new X509Certificate(b);
    } catch {
      throw invalid("caPem", "contains a certificate that does not parse");
    }
  }
  return blocks.join("\n") + "\n";
}

/** Whether the user holds Owner on the organization (directly or through a team). */
async function isOwner(db: Db, orgId: string, userId: string): Promise<boolean> {
  const roles = await identityRolesOfUser(db, orgId, userId);
  return roles.some((r) => r.resourceType === "Organization" && r.resourceID === orgId && r.role === "Owner");
}

/**
 * Creates or replaces the organization's settings. `clientSecret` omitted keeps the stored secret. Changing
 * `ssoOnly` or the break-glass list needs the Owner role (`callerRoles`); break-glass users must be active
 * Owners; team mappings must name the organization's teams. Bad input changes nothing.
 */
export async function putSsoConfig(db: Db, orgId: string, input: SsoConfigInput, callerRoles: ReadonlySet<OrgRole>, clock: Clock = systemClock): Promise<SsoConfigView> {
  httpsUrl(input.issuer, "issuer");
  const redirect = httpsUrl(input.redirectURI, "redirectURI");
  if (!redirect.pathname.endsWith("/v1/auth/sso/callback")) throw invalid("redirectURI", "must be this API's /v1/auth/sso/callback URL as the identity provider knows it");
  const scopes = [...new Set(input.scopes ?? DEFAULT_SCOPES)];
  if (!scopes.includes("openid")) throw invalid("scopes", 'must include "openid"');
  const caPem = input.caPem === undefined || input.caPem === null ? null : checkCaPem(input.caPem);
  const claims = { ...DEFAULT_CLAIMS, ...(input.claims ?? {}) };
  const teamMappings = input.teamMappings ?? [];
  const roleMappings = input.roleMappings ?? [];
  const breakGlass = [...new Set((input.breakGlassUserIDs ?? []).map((id) => id.toLowerCase()))];
  const ssoOnly = input.ssoOnly ?? false;
  const now = clock();
  // Sealed before the transaction: a first secret of the organization makes its keys (their own writes).
  const sealedSecret = input.clientSecret === undefined || input.clientSecret === null ? null : await sealColumn(db, orgId, "sso_providers.client_secret", orgId, input.clientSecret);
  return db.transaction().execute(async (trx) => {
    // One writer at a time per organization, so two PUTs never interleave their checks.
    await sql`SELECT pg_advisory_xact_lock(hashtextextended(${`sso:${orgId}`}, 0))`.execute(trx);
    const current = (await trx.selectFrom("sso_providers").selectAll().where("org_id", "=", orgId).executeTakeFirst()) as ProviderRow | undefined;
    const policyChanged = ssoOnly !== (current?.sso_only ?? false) || breakGlass.slice().sort().join(",") !== [...(current?.break_glass_user_ids ?? [])].sort().join(",");
    if (policyChanged && !callerRoles.has("Owner")) {
      throw new ParhelionError("ERR_FORBIDDEN", "only an Owner may change ssoOnly or the break-glass owners");
    }
    const teamIds = [...new Set(teamMappings.map((m) => m.teamID.toLowerCase()))];
    if (teamIds.length > 0) {
      const found = await trx.selectFrom("teams").select("id").where("org_id", "=", orgId).where("id", "in", teamIds).execute();
      const missing = teamIds.filter((id) => !found.some((f) => f.id === id));
      if (missing.length > 0) throw invalid("teamMappings", `no team ${missing.join(", ")} in this organization`);
    }
    for (const id of breakGlass) {
      const u = await trx.selectFrom("users").select("id").where("id", "=", id).where("org_id", "=", orgId).where("removed_at", "is", null).executeTakeFirst();
      if (!u || !(await isOwner(trx, orgId, id))) throw invalid("breakGlassUserIDs", `${id} is not an active Owner of this organization`);
    }
    const keep = input.clientSecret === undefined;
    const values = {
      issuer: input.issuer,
      client_id: input.clientID,
      client_secret: keep ? (current?.client_secret ?? null) : null,
      client_secret_enc: keep ? (current?.client_secret_enc ?? null) : sealedSecret,
      redirect_uri: input.redirectURI,
      ca_pem: caPem,
      scopes,
      email_claim: claims.email,
      groups_claim: claims.groups,
      first_name_claim: claims.firstName,
      last_name_claim: claims.lastName,
      jit: input.jit ?? true,
      default_role: input.defaultRole === undefined ? "Member" : input.defaultRole,
      team_mappings: JSON.stringify(teamMappings.map((m) => ({ group: m.group, teamID: m.teamID.toLowerCase() }))),
      role_mappings: JSON.stringify(roleMappings.map((m) => ({ group: m.group, role: m.role }))),
      sso_only: ssoOnly,
      break_glass_user_ids: breakGlass,
      updated_at: now,
    };
    const row = await trx
      .insertInto("sso_providers")
      .values({ org_id: orgId, ...values, created_at: now })
      .onConflict((oc) => oc.column("org_id").doUpdateSet(values))
      .returningAll()
      .executeTakeFirstOrThrow();
    return view(row as ProviderRow);
  });
}

/**
 * Deletes the organization's settings (and with them the SSO-only policy) and its open login transactions.
 * Links to external identities stay, so a later configuration of the same issuer finds the same users.
 * Only an Owner may delete settings whose ssoOnly is on.
 */
export async function deleteSsoConfig(db: Db, orgId: string, callerRoles: ReadonlySet<OrgRole>): Promise<SsoConfigView> {
  return db.transaction().execute(async (trx) => {
    const current = (await trx.selectFrom("sso_providers").selectAll().where("org_id", "=", orgId).forUpdate().executeTakeFirst()) as ProviderRow | undefined;
    if (!current) throw new ParhelionError("ERR_SSO_NOT_CONFIGURED");
    if (current.sso_only && !callerRoles.has("Owner")) throw new ParhelionError("ERR_FORBIDDEN", "only an Owner may remove single sign-on while ssoOnly is on");
    await trx.deleteFrom("sso_login_transactions").where("org_id", "=", orgId).execute();
    await trx.deleteFrom("sso_providers").where("org_id", "=", orgId).execute();
    return view(current);
  });
}

// ---------------------------------------------------------------------------------------------------------
// Password sign-in policy

/**
 * Throws ERR_SSO_REQUIRED when the user's organization signs in with SSO only and the user is not one of
 * its break-glass owners (listed, and still an Owner). Called after the password verified, so the answer
 * never tells an unauthenticated caller whether an account exists.
 */
export async function assertPasswordSignInAllowed(db: Db, user: { userID: string; orgId: string }): Promise<void> {
  const p = await db.selectFrom("sso_providers").select(["sso_only", "break_glass_user_ids"]).where("org_id", "=", user.orgId).executeTakeFirst();
  if (!p || !p.sso_only) return;
  if (p.break_glass_user_ids.includes(user.userID) && (await isOwner(db, user.orgId, user.userID))) return;
  throw new ParhelionError("ERR_SSO_REQUIRED", "This organization signs in with single sign-on only; use `parhelion login --sso` or the console's SSO button.");
}

// ---------------------------------------------------------------------------------------------------------
// Talking to the identity provider

/** What a sign-in step learned, for the audit record (never secrets). */
export type SsoTrail = Record<string, unknown>;

function claimOf(err: unknown): string | undefined {
  const c = (err as { cause?: { claim?: unknown; attribute?: unknown; cause?: { claim?: unknown; attribute?: unknown } } }).cause;
  const v = c?.claim ?? c?.attribute ?? c?.cause?.claim ?? c?.cause?.attribute;
  return typeof v === "string" ? v : undefined;
}

function safeCode(s: unknown): string {
  return typeof s === "string" ? s.replace(/[^A-Za-z0-9_.-]/g, "").slice(0, 64) : "unknown";
}

/** Turns what openid-client throws into ERR_SSO_FAILED (a check failed) or ERR_SSO_IDP_UNAVAILABLE (the IdP did not answer properly). */
function mapIdpError(err: unknown, trail: SsoTrail): ParhelionError {
  if (err instanceof ParhelionError) return err;
  if (err instanceof oidc.AuthorizationResponseError) {
    trail["idpError"] = safeCode(err.error);
    return ssoFailure("idp_error", err);
  }
  if (err instanceof oidc.ResponseBodyError) {
    trail["idpError"] = safeCode(err.error);
    return ssoFailure("token_exchange_failed", err);
  }
  if (err instanceof oidc.ClientError) {
    const claim = claimOf(err);
    trail["check"] = `${err.code ?? "unknown"}${claim ? `:${claim}` : ""}`;
    switch (err.code) {
      case "OAUTH_JWT_CLAIM_COMPARISON_FAILED":
        if (claim === "iss") return ssoFailure("issuer_mismatch", err);
        if (claim === "aud" || claim === "azp") return ssoFailure("audience_mismatch", err);
        if (claim === "nonce") return ssoFailure("nonce_mismatch", err);
        return ssoFailure("token_invalid", err);
      case "OAUTH_JWT_TIMESTAMP_CHECK_FAILED":
        return ssoFailure(claim === "exp" ? "token_expired" : "token_invalid", err);
      case "OAUTH_JSON_ATTRIBUTE_COMPARISON_FAILED":
        return ssoFailure(claim === "issuer" || claim === "iss" ? "issuer_mismatch" : "token_invalid", err);
      case "OAUTH_RESPONSE_IS_NOT_CONFORM":
      case "OAUTH_RESPONSE_IS_NOT_JSON":
      case "OAUTH_HTTP_REQUEST_FORBIDDEN":
      case "OAUTH_REQUEST_PROTOCOL_FORBIDDEN":
        return new ParhelionError("ERR_SSO_IDP_UNAVAILABLE", "The identity provider answered something that is not OpenID Connect.", { cause: err });
      default:
        // openid-client wraps what it does not recognise (a failed fetch among them) without a code.
        if (err.code === undefined) return new ParhelionError("ERR_SSO_IDP_UNAVAILABLE", "The identity provider could not be used (network, TLS or an unexpected answer).", { cause: err });
        return ssoFailure("token_invalid", err);
    }
  }
  if (err instanceof TypeError || (err instanceof Error && err.name === "AbortError") || (err instanceof Error && err.name === "TimeoutError")) {
    trail["network"] = safeCode((err.cause as { code?: unknown } | undefined)?.code ?? err.name);
    return new ParhelionError("ERR_SSO_IDP_UNAVAILABLE", "The identity provider could not be reached (network or TLS).", { cause: err });
  }
  return new ParhelionError("ERR_SSO_IDP_UNAVAILABLE", "The identity provider could not be used.", { cause: err });
}

interface Idp {
  config: oidc.Configuration;
  close(): Promise<void>;
}

/**
 * Discovers the provider (its metadata must name exactly the configured issuer) over TLS that trusts the
 * system roots plus the configured `caPem`. The clock's offset from the system clock is handed to
 * openid-client, so token times are judged by parhelion's clock.
 */
/** The organization's client secret, opened from its envelope; null when none is set. */
async function clientSecretOf(db: Db, p: ProviderRow): Promise<string | null> {
  if (p.client_secret_enc === null) {
    if (p.client_secret !== null) throw keyUnavailable(); // written before 0007_keys and not yet re-encrypted
    return null;
  }
  return openColumn(db, "sso_providers.client_secret", p.org_id, p.client_secret_enc);
}

async function openIdp(p: ProviderRow, clientSecret: string | null, clock: Clock, trail: SsoTrail): Promise<Idp> {
  const agent = new Agent({
    connect: { ...(p.ca_pem ? { ca: [...rootCertificates, p.ca_pem] } : {}), rejectUnauthorized: true, timeout: IDP_TIMEOUT_SECONDS * 1000 },
    headersTimeout: IDP_TIMEOUT_SECONDS * 1000,
    bodyTimeout: IDP_TIMEOUT_SECONDS * 1000,
  });
  const customFetch: oidc.CustomFetch = (url, options) => undiciFetch(url, { ...options, dispatcher: agent } as never) as unknown as Promise<Response>;
  const metadata: Partial<oidc.ClientMetadata> = { [oidc.clockSkew]: Math.round((clock().getTime() - Date.now()) / 1000) };
  if (clientSecret !== null) metadata.client_secret = clientSecret;
  const auth = clientSecret === null ? oidc.None() : oidc.ClientSecretBasic(clientSecret);
  try {
    // Signatures are checked too (openid-client's "non-repudiation checks"): OIDC Core lets a client trust
    // TLS alone for a token from the token endpoint, but a TLS-terminating proxy or a misissued certificate
    // must not be able to mint identities.
    let config = await oidc.discovery(new URL(p.issuer), p.client_id, metadata, auth, { [oidc.customFetch]: customFetch, timeout: IDP_TIMEOUT_SECONDS, execute: [oidc.enableNonRepudiationChecks] });
    const methods = config.serverMetadata().token_endpoint_auth_methods_supported;
    if (clientSecret !== null && methods !== undefined && !methods.includes("client_secret_basic") && methods.includes("client_secret_post")) {
      config = new oidc.Configuration(config.serverMetadata(), p.client_id, metadata, oidc.ClientSecretPost(clientSecret));
      config[oidc.customFetch] = customFetch;
      config.timeout = IDP_TIMEOUT_SECONDS;
      oidc.enableNonRepudiationChecks(config);
    }
    return { config, close: () => agent.close().catch(() => undefined) };
  } catch (err) {
    await agent.close().catch(() => undefined);
    trail["step"] = "discovery";
    throw mapIdpError(err, trail);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Login transactions

const LOOPBACK_RE = /^http:\/\/(127\.0\.0\.1|\[::1\]|localhost):([0-9]{1,5})(\/[A-Za-z0-9._~\/-]*)?$/;
const CHALLENGE_RE = /^[A-Za-z0-9_-]{43}$/;

/** Where the login ends: a console path (answered back, never redirected to) or a CLI's loopback listener. */
function checkRedirect(redirect: string | undefined, clientChallenge: string | undefined): { redirect: string | null; loopback: boolean } {
  if (clientChallenge !== undefined && !CHALLENGE_RE.test(clientChallenge)) throw invalid("clientChallenge", "must be the base64url SHA-256 of the client's verifier (43 characters)");
  if (redirect === undefined) {
    if (clientChallenge !== undefined) throw invalid("clientChallenge", "needs a loopback redirect");
    return { redirect: null, loopback: false };
  }
  const m = LOOPBACK_RE.exec(redirect);
  if (m) {
    const port = Number(m[2]);
    if (port < 1 || port > 65535) throw invalid("redirect", "has an invalid port");
    if (clientChallenge === undefined) throw invalid("clientChallenge", "is required with a loopback redirect");
    return { redirect, loopback: true };
  }
  if (clientChallenge !== undefined) throw invalid("redirect", "must be a loopback URL (http://127.0.0.1:PORT/...) when clientChallenge is given");
  if (!/^\/[A-Za-z0-9._~!$&'()*+,;=:@%\/-]*$/.test(redirect) || redirect.startsWith("//") || redirect.length > 512) {
    throw invalid("redirect", "must be a path on this server (/...) or a loopback URL http://127.0.0.1:PORT/...");
  }
  return { redirect, loopback: false };
}

export interface SsoStart {
  orgId: string;
  authorizationURL: string;
  expiresAt: string;
  /** Console logins: the value of the browser-binding cookie to set (null for CLI logins). */
  bindingToken: string | null;
}

/**
 * Opens a login transaction: fresh state, nonce and PKCE verifier stored server-side (state as its sha256),
 * and answers the IdP's authorization URL. Without `orgId` the install's only configured organization is used.
 */
export async function startSsoLogin(
  db: Db,
  input: { orgId?: string | undefined; redirect?: string | undefined; clientChallenge?: string | undefined; sourceIp: string | null },
  clock: Clock = systemClock,
  trail: SsoTrail = {},
): Promise<SsoStart> {
  const target = checkRedirect(input.redirect, input.clientChallenge);
  let row: ProviderRow | undefined;
  if (input.orgId !== undefined) {
    row = await providerRow(db, input.orgId);
  } else {
    const rows = (await db.selectFrom("sso_providers").selectAll().limit(2).execute()) as ProviderRow[];
    if (rows.length > 1) throw invalid("organizationID", "is required: more than one organization has single sign-on");
    row = rows[0];
  }
  if (!row) throw new ParhelionError("ERR_SSO_NOT_CONFIGURED");
  trail["orgId"] = row.org_id;
  trail["issuer"] = row.issuer;
  const now = clock();
  await db.deleteFrom("sso_login_transactions").where("expires_at", "<", new Date(now.getTime() - 3600_000)).execute();
  const sourceIp = input.sourceIp === null ? null : input.sourceIp.slice(0, 64);
  if (sourceIp !== null) {
    const open = await db.selectFrom("sso_login_transactions").select((eb) => eb.fn.countAll<string>().as("n")).where("source_ip", "=", sourceIp).where("used_at", "is", null).where("expires_at", ">", now).executeTakeFirstOrThrow();
    if (Number(open.n) >= MAX_OPEN_PER_SOURCE) throw new ParhelionError("ERR_RATE_LIMITED", "too many unfinished single sign-on attempts from this address", { details: { retryAfterSeconds: SSO_TRANSACTION_TTL_SECONDS } });
  }
  const idp = await openIdp(row, await clientSecretOf(db, row), clock, trail);
  try {
    const state = oidc.randomState();
    const nonce = oidc.randomNonce();
    const verifier = oidc.randomPKCECodeVerifier();
    const challenge = await oidc.calculatePKCECodeChallenge(verifier);
    const url = oidc.buildAuthorizationUrl(idp.config, {
      redirect_uri: row.redirect_uri,
      scope: row.scopes.join(" "),
      response_type: "code",
      state,
      nonce,
      code_challenge: challenge,
      code_challenge_method: "S256",
    });
    const bindingToken = target.loopback ? null : randomToken();
    const expiresAt = new Date(now.getTime() + SSO_TRANSACTION_TTL_SECONDS * 1000);
    await db.insertInto("sso_login_transactions").values({
      id: randomUUID(),
      org_id: row.org_id,
      state_hash: sha256(state),
      nonce,
      code_verifier: verifier,
      redirect: target.redirect,
      client_challenge: target.loopback ? (input.clientChallenge ?? null) : null,
      binding_hash: bindingToken === null ? null : sha256(Buffer.from(bindingToken, "base64url")),
      source_ip: sourceIp,
      created_at: now,
      expires_at: expiresAt,
      used_at: null,
      handoff_hash: null,
      handoff_user_id: null,
      handoff_expires_at: null,
      handoff_used_at: null,
    }).execute();
    return { orgId: row.org_id, authorizationURL: url.href, expiresAt: expiresAt.toISOString(), bindingToken };
  } finally {
    await idp.close();
  }
}

/** Who signed in, and what the mappings changed. */
export interface SsoIdentityResult {
  orgId: string;
  userId: string;
  email: string;
  created: boolean;
  linked: boolean;
  role: OrgRole | null;
  rolesRemoved: string[];
  teamsAdded: string[];
  teamsRemoved: string[];
}

export type SsoCallbackResult =
  | (SsoIdentityResult & { mode: "console"; redirect: string | null })
  | (SsoIdentityResult & { mode: "cli"; location: string });

function sameDigest(a: Buffer, b: Buffer): boolean {
  return a.length === 32 && b.length === 32 && timingSafeEqual(a, b);
}

/**
 * Completes a sign-in at the callback: consumes the transaction named by `state` (single use, unexpired,
 * bound to this browser for console logins), exchanges the code with the PKCE verifier, verifies the ID
 * token (issuer, audience, expiry, nonce, signature) and maps the identity to a user. Console logins
 * answer the user (the caller opens the session); CLI logins answer the loopback URL carrying a one-time
 * code that `redeemSsoHandoff` exchanges for a session.
 */
export async function completeSsoLogin(
  db: Db,
  input: { query: Record<string, unknown>; bindingCookie: string | undefined },
  clock: Clock = systemClock,
  trail: SsoTrail = {},
): Promise<SsoCallbackResult> {
  const stateBytes = typeof input.query["state"] === "string" ? Buffer.from(input.query["state"]) : null;
  if (stateBytes === null || stateBytes.length === 0 || stateBytes.length > 512) {
    trail["stateCheck"] = "missing";
    throw ssoFailure("state_invalid");
  }
  const stateHash = sha256(stateBytes);
  const now = clock();
  const tx = await db
    .updateTable("sso_login_transactions")
    .set({ used_at: now })
    .where("state_hash", "=", stateHash)
    .where("used_at", "is", null)
    .where("expires_at", ">", now)
    .returningAll()
    .executeTakeFirst();
  if (!tx) {
    const seen = await db.selectFrom("sso_login_transactions").select(["org_id", "used_at", "expires_at"]).where("state_hash", "=", stateHash).executeTakeFirst();
    trail["stateCheck"] = !seen ? "unknown" : seen.used_at !== null ? "replayed" : "expired";
    if (seen) trail["orgId"] = seen.org_id;
    throw ssoFailure("state_invalid");
  }
  trail["orgId"] = tx.org_id;
  if (tx.binding_hash !== null) {
    const cookie = decodeToken(input.bindingCookie);
    if (!sameDigest(sha256(cookie ?? Buffer.alloc(32)), tx.binding_hash) || cookie === null) throw ssoFailure("browser_mismatch");
  }
  const row = await providerRow(db, tx.org_id);
  if (!row) throw new ParhelionError("ERR_SSO_NOT_CONFIGURED");
  trail["issuer"] = row.issuer;
  const idp = await openIdp(row, await clientSecretOf(db, row), clock, trail);
  let claims: Record<string, unknown>;
  try {
    const current = new URL(row.redirect_uri);
    for (const [k, v] of Object.entries(input.query)) if (typeof v === "string") current.searchParams.set(k, v);
    let tokens: Awaited<ReturnType<typeof oidc.authorizationCodeGrant>>;
    try {
      tokens = await oidc.authorizationCodeGrant(idp.config, current, {
        pkceCodeVerifier: tx.code_verifier,
        expectedState: String(input.query["state"]),
        expectedNonce: tx.nonce,
        idTokenExpected: true,
      });
    } catch (err) {
      trail["step"] = "token";
      throw mapIdpError(err, trail);
    }
    const idClaims = tokens.claims();
    if (!idClaims || typeof idClaims.sub !== "string" || idClaims.sub.length === 0) throw ssoFailure("subject_missing");
    let userinfo: Record<string, unknown> = {};
    if (idp.config.serverMetadata().userinfo_endpoint !== undefined && typeof tokens.access_token === "string") {
      try {
        userinfo = (await oidc.fetchUserInfo(idp.config, tokens.access_token, idClaims.sub)) as Record<string, unknown>;
      } catch (err) {
        trail["step"] = "userinfo";
        throw mapIdpError(err, trail);
      }
    }
    // The ID token's own claims win; the userinfo endpoint fills what a conformant ID token leaves out.
    claims = { ...userinfo, ...(idClaims as Record<string, unknown>) };
  } finally {
    await idp.close();
  }
  const identity = await resolveIdentity(db, row, claims, clock, trail);
  if (tx.client_challenge !== null && tx.redirect !== null) {
    const code = randomToken();
    await db
      .updateTable("sso_login_transactions")
      .set({ handoff_hash: sha256(Buffer.from(code, "base64url")), handoff_user_id: identity.userId, handoff_expires_at: new Date(now.getTime() + SSO_HANDOFF_TTL_SECONDS * 1000) })
      .where("id", "=", tx.id)
      .execute();
    const location = new URL(tx.redirect);
    location.searchParams.set("code", code);
    return { ...identity, mode: "cli", location: location.href };
  }
  return { ...identity, mode: "console", redirect: tx.redirect };
}

/**
 * Redeems a CLI's one-time code: single use, within SSO_HANDOFF_TTL_SECONDS, and only with the verifier
 * whose SHA-256 the CLI sent when it started. A wrong verifier burns the code. Answers the user to open a
 * session for.
 */
export async function redeemSsoHandoff(db: Db, input: { code: string; codeVerifier: string }, clock: Clock = systemClock, trail: SsoTrail = {}): Promise<{ userId: string; orgId: string }> {
  const code = decodeToken(input.code);
  if (code === null) throw ssoFailure("handoff_invalid");
  const now = clock();
  const tx = await db
    .updateTable("sso_login_transactions")
    .set({ handoff_used_at: now })
    .where("handoff_hash", "=", sha256(code))
    .where("handoff_used_at", "is", null)
    .where("handoff_expires_at", ">", now)
    .returning(["org_id", "client_challenge", "handoff_user_id"])
    .executeTakeFirst();
  if (!tx || tx.client_challenge === null || tx.handoff_user_id === null) throw ssoFailure("handoff_invalid");
  trail["orgId"] = tx.org_id;
  const expected = sha256(tx.client_challenge);
  const actual = sha256(createHash("sha256").update(input.codeVerifier).digest("base64url"));
  if (!sameDigest(expected, actual)) {
    trail["check"] = "client_verifier";
    throw ssoFailure("handoff_invalid");
  }
  return { userId: tx.handoff_user_id, orgId: tx.org_id };
}

// ---------------------------------------------------------------------------------------------------------
// Identity mapping

function stringClaim(claims: Record<string, unknown>, name: string): string | undefined {
  const v = claims[name];
  return typeof v === "string" && v.length > 0 ? v : undefined;
}

function groupsOf(claims: Record<string, unknown>, name: string): Set<string> {
  const v = claims[name];
  const list = Array.isArray(v) ? v : typeof v === "string" ? [v] : [];
  return new Set(list.filter((g): g is string => typeof g === "string" && g.length > 0 && g.length <= 256).slice(0, MAX_GROUPS));
}

/** A display name from a claim: control characters dropped, at most 200 characters. */
function nameOf(v: string | undefined): string {
  // eslint-disable-next-line no-control-regex
  return (v ?? "").replace(/[\u0000-\u001f\u007f]/g, "").trim().slice(0, 200);
}

/** The strongest role any matched group maps to, else the default role (null: not allowed in). */
function mappedRole(row: ProviderRow, groups: Set<string>): OrgRole | null {
  let best: OrgRole | null = null;
  for (const m of row.role_mappings) {
    if (!groups.has(m.group)) continue;
    const r = m.role as OrgRole;
    if (best === null || ORG_ROLES.indexOf(r) < ORG_ROLES.indexOf(best)) best = r;
  }
  return best ?? (row.default_role as OrgRole | null);
}

/**
 * Finds or creates the user for (issuer, sub) and applies the mappings, in one transaction serialized per
 * identity: an existing link; else an active user of this organization with the same email, only when the
 * IdP says `email_verified`; else a just-in-time user (when `jit` is on) with the mapped role.
 */
async function resolveIdentity(db: Db, row: ProviderRow, claims: Record<string, unknown>, clock: Clock, trail: SsoTrail): Promise<SsoIdentityResult> {
  const issuer = String(claims["iss"]);
  const subject = String(claims["sub"]);
  const groups = groupsOf(claims, row.groups_claim);
  const rawEmail = stringClaim(claims, row.email_claim);
  const email = rawEmail?.trim().toLowerCase();
  const verified = claims["email_verified"] === true || claims["email_verified"] === "true";
  trail["subject"] = subject.slice(0, 255);
  if (email !== undefined) trail["email"] = email.slice(0, 254);
  trail["groups"] = [...groups].slice(0, 50);
  const orgId = row.org_id;
  const now = clock();
  return db.transaction().execute(async (trx) => {
    await sql`SELECT pg_advisory_xact_lock(hashtextextended(${`sso-id:${orgId}:${issuer}:${subject}`}, 0))`.execute(trx);
    let userId: string | undefined;
    let userEmail: string | undefined;
    let created = false;
    let linked = false;
    const link = await trx
      .selectFrom("user_external_identities as x")
      .innerJoin("users as u", "u.id", "x.user_id")
      .select(["u.id", "u.email", "u.removed_at"])
      .where("x.org_id", "=", orgId)
      .where("x.issuer", "=", issuer)
      .where("x.subject", "=", subject)
      .executeTakeFirst();
    if (link && link.removed_at === null) {
      userId = link.id;
      userEmail = link.email;
    } else {
      // A link to a removed user is dead: the identity is treated as new.
      if (link) await trx.deleteFrom("user_external_identities").where("org_id", "=", orgId).where("issuer", "=", issuer).where("subject", "=", subject).execute();
      if (email === undefined) throw ssoFailure("email_missing");
      const existing = await trx.selectFrom("users").select(["id", "org_id", "email"]).where("email", "=", email).where("removed_at", "is", null).executeTakeFirst();
      if (existing) {
        if (!verified) throw ssoFailure("email_not_verified");
        if (existing.org_id !== orgId) throw ssoFailure("email_in_use");
        const other = await trx.selectFrom("user_external_identities").select("subject").where("user_id", "=", existing.id).where("issuer", "=", issuer).executeTakeFirst();
        if (other) throw ssoFailure("email_in_use");
        userId = existing.id;
        userEmail = existing.email;
        linked = true;
      } else {
        if (!row.jit) throw ssoFailure("jit_disabled");
        if (mappedRole(row, groups) === null) throw ssoFailure("no_mapped_role");
        let user: Awaited<ReturnType<typeof createUser>>;
        try {
          user = await createUser(trx, { orgId, email, firstName: nameOf(stringClaim(claims, row.first_name_claim)), lastName: nameOf(stringClaim(claims, row.last_name_claim)), passwordHash: null });
        } catch (err) {
          if (err instanceof ParhelionError && err.code === "ERR_VALIDATION") throw ssoFailure("email_missing", err);
          throw err;
        }
        userId = user.userID;
        userEmail = user.email;
        created = true;
      }
      try {
        await trx.insertInto("user_external_identities").values({ org_id: orgId, issuer, subject, user_id: userId, last_login_at: now }).execute();
      } catch (err) {
        if (isUniqueViolation(err)) throw ssoFailure("email_in_use", err);
        throw err;
      }
    }
    await trx.updateTable("user_external_identities").set({ last_login_at: now }).where("org_id", "=", orgId).where("issuer", "=", issuer).where("subject", "=", subject).execute();

    // Organization role: set on creation; kept in step with the groups on every sign-in when role mappings
    // exist. Owner is never granted or removed here.
    let role: OrgRole | null = null;
    const rolesRemoved: string[] = [];
    if (created || row.role_mappings.length > 0) {
      role = mappedRole(row, groups);
      if (role === null) throw ssoFailure("no_mapped_role");
      const held = await trx.selectFrom("access_controls").select("role").where("org_id", "=", orgId).where("resource_type", "=", "Organization").where("resource_id", "=", orgId).where("principal_type", "=", "user").where("principal_id", "=", userId).execute();
      for (const h of held) {
        if (h.role === "Owner" || h.role === role) continue;
        rolesRemoved.push(h.role);
      }
      if (rolesRemoved.length > 0) {
        await trx.deleteFrom("access_controls").where("org_id", "=", orgId).where("resource_type", "=", "Organization").where("resource_id", "=", orgId).where("principal_type", "=", "user").where("principal_id", "=", userId).where("role", "in", rolesRemoved).execute();
      }
      if (!held.some((h) => h.role === role)) {
        await trx.insertInto("access_controls").values({ org_id: orgId, resource_type: "Organization", resource_id: orgId, principal_type: "user", principal_id: userId, role, granted_by: null }).onConflict((oc) => oc.doNothing()).execute();
      }
    }

    // Teams named in a mapping are managed: membership follows the groups on every sign-in (added when a
    // mapped group is present, removed when none is). Other teams are left alone.
    const managed = new Set(row.team_mappings.map((m) => m.teamID));
    const wanted = new Set(row.team_mappings.filter((m) => groups.has(m.group)).map((m) => m.teamID));
    const teamsAdded: string[] = [];
    const teamsRemoved: string[] = [];
    if (managed.size > 0) {
      const existingTeams = new Set((await trx.selectFrom("teams").select("id").where("org_id", "=", orgId).where("id", "in", [...managed]).execute()).map((t) => t.id));
      const member = new Set((await trx.selectFrom("team_members").select("team_id").where("member_type", "=", "user").where("member_id", "=", userId).where("team_id", "in", [...managed]).execute()).map((m) => m.team_id));
      for (const t of managed) {
        if (!existingTeams.has(t)) continue;
        if (wanted.has(t) && !member.has(t)) teamsAdded.push(t);
        if (!wanted.has(t) && member.has(t)) teamsRemoved.push(t);
      }
      if (teamsAdded.length > 0) await trx.insertInto("team_members").values(teamsAdded.map((t) => ({ team_id: t, member_type: "user" as const, member_id: userId }))).onConflict((oc) => oc.doNothing()).execute();
      if (teamsRemoved.length > 0) await trx.deleteFrom("team_members").where("member_type", "=", "user").where("member_id", "=", userId).where("team_id", "in", teamsRemoved).execute();
    }
    trail["userId"] = userId;
    return { orgId, userId, email: userEmail!, created, linked, role, rolesRemoved, teamsAdded, teamsRemoved };
  });
}
