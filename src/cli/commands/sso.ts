import { createHash, randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { readFileSync } from "node:fs";
import { Option, type Command } from "commander";
import { ApiClient, sessionCookieOf } from "../client.js";
import { apiAction, formatOf, resolveUserId } from "../context.js";
import { saveCredentials, type Credentials, type SessionCredential } from "../credentials.js";
import { CliError, EXIT, usageError } from "../errors.js";
import { readSecretFile, readStdinLines } from "../input.js";
import { emit, note, printRecord } from "../output.js";
import type { WhoAmI } from "../types.js";
import { targetOf, type TargetOpts } from "./login.js";

/** GET /v1/organizations/current/sso (src/api/routes/sso.ts). */
export interface SsoConfig {
  organizationID: string; issuer: string; clientID: string; clientSecretSet: boolean; redirectURI: string; caPem: string | null;
  scopes: string[]; claims: { email: string; groups: string; firstName: string; lastName: string }; jit: boolean; defaultRole: string | null;
  teamMappings: Array<{ group: string; teamID: string }>; roleMappings: Array<{ group: string; role: string }>;
  ssoOnly: boolean; breakGlassUserIDs: string[]; createdAt: string; updatedAt: string;
}

const SHOWN = ["organizationID", "issuer", "clientID", "clientSecretSet", "redirectURI", "idpCA", "scopes", "claims", "jit", "defaultRole", "teamMappings", "roleMappings", "ssoOnly", "breakGlassUserIDs", "updatedAt"];

function shown(c: SsoConfig): Record<string, unknown> {
  return {
    ...c,
    idpCA: c.caPem === null ? "system roots" : `system roots + ${(c.caPem.match(/BEGIN CERTIFICATE/g) ?? []).length} certificate(s)`,
    claims: `email=${c.claims.email} groups=${c.claims.groups} firstName=${c.claims.firstName} lastName=${c.claims.lastName}`,
    teamMappings: c.teamMappings.map((m) => `${m.group}=${m.teamID}`),
    roleMappings: c.roleMappings.map((m) => `${m.group}=${m.role}`),
  };
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

function pairs(list: string[], flag: string): Array<[string, string]> {
  return list.map((p) => {
    const eq = p.lastIndexOf("=");
    if (eq <= 0 || eq === p.length - 1) throw usageError(`${flag} "${p}": expected GROUP=VALUE`);
    return [p.slice(0, eq), p.slice(eq + 1)];
  });
}

interface SetOpts {
  issuer?: string; clientId?: string; clientSecretFile?: string; clientSecretStdin?: boolean; publicClient?: boolean; redirectUri?: string;
  idpCaFile?: string; clearIdpCa?: boolean; scopes?: string; emailClaim?: string; groupsClaim?: string; firstNameClaim?: string; lastNameClaim?: string;
  jit?: boolean; defaultRole?: string; teamMap?: string[]; clearTeamMaps?: boolean; roleMap?: string[]; clearRoleMaps?: boolean;
  ssoOnly?: boolean; breakGlass?: string[]; clearBreakGlass?: boolean;
}

/** A loopback HTTP listener (127.0.0.1, port 0) that waits for the browser to bring the one-time code (RFC 8252 §7.3). */
async function loopbackListener(): Promise<{ redirect: string; code(timeoutMs: number): Promise<string>; close(): Promise<void> }> {
  const path = `/parhelion/${randomBytes(12).toString("base64url")}`;
  let deliver: (code: string) => void = () => undefined;
  const got = new Promise<string>((resolve) => (deliver = resolve));
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    const code = url.searchParams.get("code");
    if (req.method !== "GET" || url.pathname !== path || code === null || !/^[A-Za-z0-9_-]{43}$/.test(code)) {
      res.writeHead(404, { "content-type": "text/plain; charset=utf-8" }).end("Not found.\n");
      return;
    }
    res.writeHead(200, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" }).end("Signed in to parhelion. You can close this window and return to the terminal.\n");
    deliver(code);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    redirect: `http://127.0.0.1:${port}${path}`,
    code(timeoutMs) {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new CliError(EXIT.UNAUTHENTICATED, "ERR_CLI_SSO_TIMEOUT", `no sign-in arrived within ${Math.round(timeoutMs / 1000)} s`, {
          hint: "finish the sign-in in the browser; if the browser showed an error (ERR_SSO_*), it says what was refused",
        })), timeoutMs);
      });
      return Promise.race([got, timeout]).finally(() => clearTimeout(timer));
    },
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

interface SsoLoginOpts extends TargetOpts { org?: string; ssoTimeout?: string }

/**
 * `parhelion login --sso`: starts a sign-in with a loopback redirect and a verifier only this process
 * knows, prints the authorization URL, waits for the browser to bring the one-time code to the listener,
 * and redeems it (with the verifier) for a console session saved like `login --email`.
 */
export async function ssoLogin(opts: SsoLoginOpts, cmd: Command): Promise<void> {
  const format = formatOf(cmd);
  const seconds = opts.ssoTimeout === undefined ? 300 : Number(opts.ssoTimeout);
  if (!Number.isInteger(seconds) || seconds < 10 || seconds > 3600) throw usageError("--sso-timeout must be a whole number of seconds between 10 and 3600");
  if (opts.org !== undefined && !/^[0-9a-f-]{36}$/i.test(opts.org)) throw usageError(`--org "${opts.org}" is not an organization ID`);
  const where = targetOf(opts);
  const verifier = randomBytes(32).toString("base64url");
  const challenge = createHash("sha256").update(verifier).digest("base64url");
  const listener = await loopbackListener();
  const anon = new ApiClient({ ...where, credential: null, from: "login" });
  let session: SessionCredential;
  let mfa = { mfaRequired: false, mfaEnrollmentRequired: false };
  try {
    const start = await anon.call<{ authorizationURL: string; expiresAt: string }>("POST", "/v1/auth/sso/start", {
      body: { ...(opts.org ? { organizationID: opts.org } : {}), redirect: listener.redirect, clientChallenge: challenge },
    });
    note(`parhelion: open this URL in a browser to sign in (waiting up to ${seconds} s):\n${start.body.authorizationURL}`);
    const code = await listener.code(seconds * 1000);
    const res = await anon.call<{ csrfToken: string; expiresAt: string; mfaRequired?: boolean; mfaEnrollmentRequired?: boolean }>("POST", "/v1/auth/sso/token", { body: { code, codeVerifier: verifier } });
    mfa = { mfaRequired: res.body?.mfaRequired === true, mfaEnrollmentRequired: res.body?.mfaEnrollmentRequired === true };
    const cookie = sessionCookieOf(res.headers);
    if (cookie === null || typeof res.body?.csrfToken !== "string" || typeof res.body.expiresAt !== "string") {
      throw new CliError(EXIT.INTERNAL, "ERR_CLI_PROTOCOL", "the sign-in answer lacks the session cookie, the CSRF token or the expiry");
    }
    session = { cookie, csrfToken: res.body.csrfToken, expiresAt: res.body.expiresAt, email: "" };
  } finally {
    await anon.close();
    await listener.close();
  }
  const client = new ApiClient({ ...where, credential: { kind: "session", session }, from: "login" });
  let who: WhoAmI;
  try {
    who = await client.get<WhoAmI>("/v1/auth/whoami");
  } finally {
    await client.close();
  }
  const creds: Credentials = { url: where.url, caFile: where.caFile, session: { ...session, email: who.email ?? "" } };
  const path = saveCredentials(creds);
  emit(format, who, () => printRecord({ ...who, url: where.url, caFile: where.caFile, expiresAt: session.expiresAt }, ["kind", "email", "userID", "orgID", "roles", "expiresAt", "url", "caFile"]));
  note(`parhelion: signed in to ${where.url} as ${who.email ?? "?"} with single sign-on until ${session.expiresAt}; credentials saved to ${path}`);
  if (mfa.mfaRequired) note("parhelion: this account has a second factor: the session can only verify it; run `parhelion mfa verify`.");
  if (mfa.mfaEnrollmentRequired) note("parhelion: your organization requires a second factor: run `parhelion mfa enroll-totp` before anything else.");
}

/** `sso show`, `sso set`, `sso delete`. */
export function registerSso(program: Command): void {
  const sso = program.command("sso").description("The organization's single sign-on (OpenID Connect) identity provider");

  sso.command("show").description("Show the identity provider settings (GET /v1/organizations/current/sso; the client secret is never shown)")
    .action(apiAction(async ({ client, format }) => {
      const c = await client.get<SsoConfig>("/v1/organizations/current/sso");
      emit(format, c, () => printRecord(shown(c), SHOWN));
    }));

  sso.command("set").description("Create or change the identity provider settings (PUT /v1/organizations/current/sso); options not given keep their current value")
    .option("--issuer <url>", "the IdP's issuer (https)")
    .option("--client-id <id>", "client ID registered at the IdP")
    .addOption(new Option("--client-secret-file <file>", "read the client secret from this file").conflicts(["clientSecretStdin", "publicClient"]))
    .addOption(new Option("--client-secret-stdin", "read the client secret from the first line of stdin").conflicts("publicClient"))
    .option("--public-client", "no client secret: a public client, PKCE only")
    .option("--redirect-uri <url>", "this API's callback as registered at the IdP (default on creation: <API URL>/v1/auth/sso/callback)")
    .addOption(new Option("--idp-ca-file <file>", "PEM CA certificate(s) to trust for the IdP's TLS, besides the system roots").conflicts("clearIdpCa"))
    .option("--clear-idp-ca", "trust only the system roots for the IdP")
    .option("--scopes <list>", "comma-separated scopes (must include openid; default openid,email,profile)")
    .option("--email-claim <name>", "claim holding the email (default email)")
    .option("--groups-claim <name>", "claim holding the groups (default groups)")
    .option("--first-name-claim <name>", "default given_name")
    .option("--last-name-claim <name>", "default family_name")
    .option("--jit", "create users on their first sign-in (the default)")
    .option("--no-jit", "only users already linked or matched by verified email may sign in")
    .option("--default-role <role>", "role of users in no mapped group: Admin, Operator, Auditor, Member, or none to refuse them")
    .option("--team-map <group=teamID>", "map an IdP group to a team (repeatable; replaces the team mappings)", collect)
    .option("--clear-team-maps", "remove every team mapping")
    .option("--role-map <group=role>", "map an IdP group to an organization role (repeatable; replaces the role mappings)", collect)
    .option("--clear-role-maps", "remove every role mapping")
    .option("--sso-only", "refuse password sign-in except for break-glass owners (Owner only)")
    .option("--no-sso-only", "allow password sign-in again (Owner only)")
    .option("--break-glass <user>", "an Owner (ID or email) who may still use a password under --sso-only (repeatable; replaces the list)", collect)
    .option("--clear-break-glass", "remove every break-glass owner")
    .addHelpText("after", "\nThe client secret is never taken from argv and never printed. See docs/security.md \"Single sign-on\" for the mapping rules.")
    .action(apiAction(async ({ client, format }, opts: SetOpts) => {
      let current: SsoConfig | null = null;
      try {
        current = await client.get<SsoConfig>("/v1/organizations/current/sso");
      } catch (err) {
        if (!(err instanceof CliError && err.code === "ERR_SSO_NOT_CONFIGURED")) throw err;
      }
      const issuer = opts.issuer ?? current?.issuer;
      const clientID = opts.clientId ?? current?.clientID;
      if (issuer === undefined || clientID === undefined) throw usageError("no settings yet: --issuer and --client-id are required");
      const body: Record<string, unknown> = {
        issuer, clientID,
        redirectURI: opts.redirectUri ?? current?.redirectURI ?? new URL("/v1/auth/sso/callback", client.target.url).href,
        caPem: opts.clearIdpCa ? null : opts.idpCaFile !== undefined ? readPem(opts.idpCaFile) : (current?.caPem ?? null),
        scopes: opts.scopes !== undefined ? opts.scopes.split(",").map((s) => s.trim()).filter(Boolean) : (current?.scopes ?? ["openid", "email", "profile"]),
        claims: {
          email: opts.emailClaim ?? current?.claims.email ?? "email", groups: opts.groupsClaim ?? current?.claims.groups ?? "groups",
          firstName: opts.firstNameClaim ?? current?.claims.firstName ?? "given_name", lastName: opts.lastNameClaim ?? current?.claims.lastName ?? "family_name",
        },
        jit: opts.jit ?? current?.jit ?? true,
        defaultRole: opts.defaultRole === undefined ? (current === null ? "Member" : current.defaultRole) : opts.defaultRole.toLowerCase() === "none" ? null : opts.defaultRole,
        teamMappings: opts.clearTeamMaps ? [] : opts.teamMap ? pairs(opts.teamMap, "--team-map").map(([group, teamID]) => ({ group, teamID })) : (current?.teamMappings ?? []),
        roleMappings: opts.clearRoleMaps ? [] : opts.roleMap ? pairs(opts.roleMap, "--role-map").map(([group, role]) => ({ group, role })) : (current?.roleMappings ?? []),
        ssoOnly: opts.ssoOnly ?? current?.ssoOnly ?? false,
        breakGlassUserIDs: opts.clearBreakGlass ? [] : opts.breakGlass ? await Promise.all(opts.breakGlass.map((u) => resolveUserId(client, u))) : (current?.breakGlassUserIDs ?? []),
      };
      if (opts.publicClient) body["clientSecret"] = null;
      else if (opts.clientSecretFile !== undefined) body["clientSecret"] = readSecretFile(opts.clientSecretFile, "client secret");
      else if (opts.clientSecretStdin) {
        const line = (await readStdinLines(1))[0]?.trim() ?? "";
        if (line === "") throw usageError("no client secret on stdin");
        body["clientSecret"] = line;
      }
      const c = (await client.call<SsoConfig>("PUT", "/v1/organizations/current/sso", { body })).body;
      emit(format, c, () => printRecord(shown(c), SHOWN));
    }));

  sso.command("delete").description("Remove the identity provider settings and the SSO-only policy (DELETE /v1/organizations/current/sso)")
    .action(apiAction(async ({ client, format }) => {
      const c = (await client.call<SsoConfig>("DELETE", "/v1/organizations/current/sso")).body;
      emit(format, c, () => note(`parhelion: single sign-on removed (issuer ${c.issuer}); password sign-in works again for everyone with a password`));
    }));
}

function readPem(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw usageError(`cannot read the IdP CA file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}
