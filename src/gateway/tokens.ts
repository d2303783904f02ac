import { randomUUID } from "node:crypto";
import { Agent, fetch as undiciFetch } from "undici";
import {
  SignJWT, jwtVerify, createLocalJWKSet, createRemoteJWKSet, decodeJwt, customFetch,
  type JWTPayload, type JSONWebKeySet, type JWTVerifyGetKey, type RemoteJWKSetOptions,
} from "jose";
import type { Db } from "../store/db.js";
import { validateTokenRoleName } from "../engine/sql.js";
import { OrgSigningKeys, type KeySealer } from "../kms/signingKeys.js";

/** Signature algorithms a group may accept. Never `none`, never HMAC (a JWKS holds public keys). */
export const JWT_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"] as const;
export type JwtAlgorithm = (typeof JWT_ALGORITHMS)[number];

/** A workspace group's JWT login settings (PUT /v1/workspaceGroups/{id}/jwtAuth). */
export interface JwtAuthConfig {
  /** HTTPS URL of the issuer's JSON Web Key Set; exclusive with `jwks`. */
  jwksEndpoint: string | null;
  /** Inline keys; exclusive with `jwksEndpoint`. */
  jwks: JSONWebKeySet | null;
  /** PEM certificates to trust for `jwksEndpoint` (a private issuer); null: the system's trust store. */
  jwksCaPem: string | null;
  /** The claim that names the database role (Helios's `jwks_username_field`). */
  usernameField: string;
  issuer: string;
  audience: string[];
  algorithms: JwtAlgorithm[];
  /** Create a missing role on its first login. */
  provisionRoles: boolean;
  /** Roles granted to the roles it creates (and to existing roles on their first token login). */
  defaultGrants: string[];
  /** How long fetched keys are used before they are fetched again. */
  cacheMaxAgeSeconds: number;
  /** Leeway for exp and nbf. */
  clockToleranceSeconds: number;
}

/** The issuer of parhelion's own short-lived database credentials. */
export const PLATFORM_ISSUER = "parhelion";
/** Longest lifetime of a platform credential. */
export const PLATFORM_MAX_TTL_SECONDS = 900;
const platformAudience = (workspaceId: string) => `parhelion:workspace:${workspaceId}`;

/** Why a token was refused; the client sees the text, the audit record the code. */
export class TokenRejected extends Error {
  constructor(readonly reason: "malformed" | "expired" | "not-yet-valid" | "issuer" | "audience" | "unknown-key" | "algorithm" | "signature" | "claim" | "role" | "not-configured" | "keys-unavailable", message: string) {
    super(message);
  }
}

export interface VerifiedToken {
  kind: "jwt" | "platform";
  /** The database role the token logs in as. */
  role: string;
  issuer: string;
  subject: string | null;
  /** For platform credentials: the person (or API key) the credential was issued to. */
  platform: { principalId: string; email: string | null; orgId: string } | null;
  expiresAt: Date;
  /** What a first login may do: create the role, and grant it these roles. */
  provision: { create: boolean; grants: string[] };
}

/** A JWS compact serialization: three base64url parts. A password never looks like one by accident. */
export function looksLikeJwt(s: string): boolean {
  return s.length >= 16 && s.length <= 16_384 && /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(s);
}

function reject(err: unknown): never {
  if (err instanceof TokenRejected) throw err;
  const e = err as { code?: string; claim?: string; message?: string };
  switch (e.code) {
    case "ERR_JWT_EXPIRED":
      throw new TokenRejected("expired", "the token has expired");
    case "ERR_JWT_CLAIM_VALIDATION_FAILED":
      if (e.claim === "nbf" || e.claim === "iat") throw new TokenRejected("not-yet-valid", "the token is not valid yet");
      if (e.claim === "iss") throw new TokenRejected("issuer", "the token's issuer is not accepted");
      if (e.claim === "aud") throw new TokenRejected("audience", "the token's audience is not accepted");
      throw new TokenRejected("claim", `the token's ${e.claim ?? "claims"} claim is not accepted`);
    case "ERR_JWKS_NO_MATCHING_KEY":
    case "ERR_JWKS_MULTIPLE_MATCHING_KEYS":
      throw new TokenRejected("unknown-key", "no key of the workspace group's key set matches the token");
    case "ERR_JOSE_ALG_NOT_ALLOWED":
    case "ERR_JOSE_NOT_SUPPORTED":
      throw new TokenRejected("algorithm", "the token's signature algorithm is not accepted");
    case "ERR_JWS_SIGNATURE_VERIFICATION_FAILED":
      throw new TokenRejected("signature", "the token's signature does not verify");
    case "ERR_JWKS_TIMEOUT":
    case "ERR_JWKS_INVALID":
      throw new TokenRejected("keys-unavailable", "the workspace group's key set could not be read");
    default:
      if (typeof e.code === "string" && e.code.startsWith("ERR_J")) throw new TokenRejected("malformed", "the token is malformed");
      throw new TokenRejected("keys-unavailable", "the workspace group's key set could not be read");
  }
}

// ---------------------------------------------------------------------------------------------- platform

/** What PlatformCredentials needs of the key hierarchy (src/kms Keyring). */
export type CredentialKeySealer = KeySealer;

/**
 * parhelion's own short-lived database credentials: EdDSA JWTs for one workspace and one database role,
 * bound to the platform identity that asked, valid at most 15 minutes, signed by the organization's own
 * Ed25519 key (src/kms/signingKeys.ts: made on first use, private half sealed under the organization's data
 * key and held in memory at most 50 s, so a root key the provider stops serving stops minting).
 */
export class PlatformCredentials {
  private readonly keys: OrgSigningKeys;

  constructor(o: { db: Db; keys: CredentialKeySealer }) {
    this.keys = new OrgSigningKeys({ db: o.db, keys: o.keys, table: "db_credential_keys" });
  }

  private publicKey(orgId: string, create: boolean) {
    return this.keys.publicKey(orgId, create);
  }

  private privateKey(orgId: string) {
    return this.keys.privateKey(orgId);
  }

  /** Forgets every key held in memory. */
  clear(): void {
    this.keys.clear();
  }

  /** Signs a credential; the caller has checked that the principal may have it. */
  async mint(o: { workspaceId: string; orgId: string; principalId: string; email: string | null; role: string; grants: string[]; ttlSeconds: number; now?: Date }): Promise<{ token: string; expiresAt: Date; id: string }> {
    const ttl = Math.floor(o.ttlSeconds);
    if (!(ttl >= 60 && ttl <= PLATFORM_MAX_TTL_SECONDS)) throw new RangeError(`ttlSeconds must be 60..${PLATFORM_MAX_TTL_SECONDS}`);
    validateTokenRoleName(o.role);
    const signer = await this.privateKey(o.orgId);
    const now = Math.floor((o.now ?? new Date()).getTime() / 1000);
    const id = randomUUID();
    const token = await new SignJWT({ org: o.orgId, email: o.email, db_role: o.role, db_grants: o.grants })
      .setProtectedHeader({ alg: "EdDSA", kid: signer.kid, typ: "JWT" })
      .setIssuer(PLATFORM_ISSUER).setAudience(platformAudience(o.workspaceId)).setSubject(o.principalId)
      .setIssuedAt(now).setNotBefore(now - 5).setExpirationTime(now + ttl).setJti(id)
      .sign(signer.key);
    return { token, expiresAt: new Date((now + ttl) * 1000), id };
  }

  /** Verifies a credential for a workspace of organization `orgId` (its own key: another's never verifies). */
  async verify(token: string, workspaceId: string, orgId: string): Promise<VerifiedToken> {
    const pub = await this.publicKey(orgId, false);
    if (!pub) throw new TokenRejected("unknown-key", "no key of this organization signed the credential");
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, async (header) => {
        if (header.kid !== pub.kid) throw Object.assign(new Error("unknown kid"), { code: "ERR_JWKS_NO_MATCHING_KEY" });
        return pub.key;
      }, { issuer: PLATFORM_ISSUER, audience: platformAudience(workspaceId), algorithms: ["EdDSA"], requiredClaims: ["exp", "iat", "sub", "jti"], clockTolerance: 5 }));
    } catch (err) {
      reject(err);
    }
    if (payload.exp! - payload.iat! > PLATFORM_MAX_TTL_SECONDS) throw new TokenRejected("claim", "the credential lives longer than parhelion issues");
    const role = payload["db_role"];
    const grants = payload["db_grants"];
    const org = payload["org"];
    const email = payload["email"];
    if (typeof role !== "string" || org !== orgId || !Array.isArray(grants) || !grants.every((g) => typeof g === "string")) throw new TokenRejected("claim", "the credential's claims are incomplete");
    return {
      kind: "platform", role, issuer: PLATFORM_ISSUER, subject: payload.sub!,
      platform: { principalId: payload.sub!, email: typeof email === "string" ? email : null, orgId },
      expiresAt: new Date(payload.exp! * 1000), provision: { create: true, grants: grants as string[] },
    };
  }
}

// ---------------------------------------------------------------------------------------------- groups

interface GroupKeys {
  version: string;
  config: JwtAuthConfig;
  keys: JWTVerifyGetKey;
  remote: ReturnType<typeof createRemoteJWKSet> | null;
}

const CONFIG_TTL_MS = 2000;

/**
 * Verifies the tokens a client offers as its password: parhelion's own credentials (any group), and JWTs
 * from the issuer a workspace group trusts (its JWKS, fetched over HTTPS and cached, re-fetched when a
 * token names a key it does not know — key rotation — at most every 30 s).
 */
export class TokenVerifier {
  private readonly configs = new Map<string, { at: number; row: { config: JwtAuthConfig; version: string } | null }>();
  private readonly keys = new Map<string, GroupKeys>();

  constructor(private readonly o: { db: Db; platform: PlatformCredentials }) {}

  /** Forgets a group's settings (after the API changed them). */
  invalidate(groupId: string): void {
    this.configs.delete(groupId);
  }

  /** The group's JWT settings, or null when it has none. */
  async groupConfig(groupId: string): Promise<JwtAuthConfig | null> {
    return (await this.load(groupId))?.config ?? null;
  }

  private async load(groupId: string): Promise<{ config: JwtAuthConfig; version: string } | null> {
    const c = this.configs.get(groupId);
    if (c && Date.now() - c.at < CONFIG_TTL_MS) return c.row;
    const r = await this.o.db.selectFrom("workspace_group_jwt_auth").select(["config", "updated_at"]).where("group_id", "=", groupId).executeTakeFirst();
    const row = r ? { config: r.config as JwtAuthConfig, version: new Date(r.updated_at).toISOString() } : null;
    this.configs.set(groupId, { at: Date.now(), row });
    if (!row) this.keys.delete(groupId);
    return row;
  }

  private groupKeys(groupId: string, row: { config: JwtAuthConfig; version: string }): GroupKeys {
    const have = this.keys.get(groupId);
    if (have && have.version === row.version) return have;
    const c = row.config;
    let keys: JWTVerifyGetKey;
    let remote: GroupKeys["remote"] = null;
    if (c.jwksEndpoint) {
      const options: RemoteJWKSetOptions = { cacheMaxAge: c.cacheMaxAgeSeconds * 1000, cooldownDuration: 30_000, timeoutDuration: 5000 };
      if (c.jwksCaPem) {
        const dispatcher = new Agent({ connect: { ca: c.jwksCaPem } });
        options[customFetch] = ((url: string, init: Record<string, unknown>) => undiciFetch(url, { ...init, dispatcher })) as never;
      }
      remote = createRemoteJWKSet(new URL(c.jwksEndpoint), options);
      keys = remote;
    } else {
      keys = createLocalJWKSet(c.jwks ?? { keys: [] });
    }
    const g = { version: row.version, config: c, keys, remote };
    this.keys.set(groupId, g);
    return g;
  }

  /** Fetches the group's JWKS again now (Data API `POST /api/v2/jwks_setup`); answers how many keys it holds. */
  async refresh(groupId: string): Promise<{ keys: number; source: "endpoint" | "inline" }> {
    this.invalidate(groupId);
    const row = await this.load(groupId);
    if (!row) throw new TokenRejected("not-configured", "this workspace group has no JWT login settings");
    const g = this.groupKeys(groupId, row);
    if (!g.remote) return { keys: row.config.jwks?.keys.length ?? 0, source: "inline" };
    try {
      await g.remote.reload();
    } catch (err) {
      reject(err);
    }
    return { keys: g.remote.jwks()?.keys.length ?? 0, source: "endpoint" };
  }

  /**
   * Verifies `token` for a login to `workspaceId` in `groupId`: a platform credential when its issuer is
   * parhelion's, else a JWT against the group's settings. Throws TokenRejected.
   */
  async verify(token: string, o: { groupId: string; workspaceId: string; orgId: string }): Promise<VerifiedToken> {
    if (!looksLikeJwt(token)) throw new TokenRejected("malformed", "the password is not a token");
    let iss: unknown;
    try {
      iss = decodeJwt(token).iss;
    } catch {
      throw new TokenRejected("malformed", "the token is malformed");
    }
    if (iss === PLATFORM_ISSUER) return this.o.platform.verify(token, o.workspaceId, o.orgId);
    const row = await this.load(o.groupId);
    if (!row) throw new TokenRejected("not-configured", "this workspace group accepts no JWTs: set up JWT logins first (PUT /v1/workspaceGroups/{id}/jwtAuth)");
    const g = this.groupKeys(o.groupId, row);
    const c = row.config;
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, g.keys, { issuer: c.issuer, audience: c.audience, algorithms: c.algorithms, requiredClaims: ["exp"], clockTolerance: c.clockToleranceSeconds }));
    } catch (err) {
      reject(err);
    }
    const claim = payload[c.usernameField];
    if (typeof claim !== "string") throw new TokenRejected("role", `the token has no ${c.usernameField} claim naming a database user`);
    let role: string;
    try {
      role = validateTokenRoleName(claim);
    } catch (err) {
      throw new TokenRejected("role", (err as Error).message);
    }
    return {
      kind: "jwt", role, issuer: c.issuer, subject: typeof payload.sub === "string" ? payload.sub : null, platform: null,
      expiresAt: new Date(payload.exp! * 1000), provision: { create: c.provisionRoles, grants: c.defaultGrants },
    };
  }
}
