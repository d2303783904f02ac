import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import Provider from "oidc-provider";
import { SignJWT, decodeJwt, exportJWK, generateKeyPair } from "jose";
import { Agent, request } from "undici";
import { createCA, issueServerCert } from "../../src/tls/pki.js";

/** A user of the test identity provider. */
export interface TestAccount {
  sub: string;
  email?: string;
  email_verified?: boolean;
  groups?: string[];
  given_name?: string;
  family_name?: string;
}

/**
 * A real OpenID provider (oidc-provider) over HTTPS on 127.0.0.1, port 0, with a certificate from its own
 * test CA. Interactions are answered by the test: the login prompt signs in as `account`, consent grants
 * what was asked. `tamperIdToken` rewrites the next token response's ID token and re-signs it with the
 * provider's own key (a provider misbehaving or an attacker holding its key); `/other/` serves the real
 * discovery document under another issuer path.
 */
export interface TestIdp {
  issuer: string;
  caPem: string;
  clientId: string;
  clientSecret: string;
  account: TestAccount | null;
  /** Answer the next login prompt with access_denied. */
  deny: boolean;
  tamperIdToken: ((claims: Record<string, unknown>) => Record<string, unknown>) | null;
  /** With tamperIdToken: sign with a key the provider never published (same kid). */
  forgeSignature: boolean;
  close(): Promise<void>;
}

export async function startTestIdp(opts: { redirectUris: string[]; idTokenTtlSeconds?: number }): Promise<TestIdp> {
  const ca = await createCA({ commonName: "parhelion test IdP CA", validDays: 2 });
  const cert = await issueServerCert(ca, { commonName: "127.0.0.1", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"], validDays: 2 });
  const { privateKey } = await generateKeyPair("RS256", { extractable: true });
  const kid = randomBytes(8).toString("hex");
  const jwk = { ...(await exportJWK(privateKey)), kid, alg: "RS256", use: "sig" };
  const accounts = new Map<string, TestAccount>();
  let handler: ((req: IncomingMessage, res: ServerResponse) => void) | null = null;
  const server: Server = createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    if (handler) handler(req, res);
    else res.writeHead(503).end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const issuer = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const idp: TestIdp = {
    issuer,
    caPem: ca.certPem,
    clientId: "parhelion-test",
    clientSecret: randomBytes(24).toString("base64url"),
    account: null,
    deny: false,
    tamperIdToken: null,
    forgeSignature: false,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const provider = new Provider(issuer, {
    clients: [{
      client_id: idp.clientId,
      client_secret: idp.clientSecret,
      redirect_uris: opts.redirectUris,
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    }],
    jwks: { keys: [jwk] },
    cookies: { keys: [randomBytes(32).toString("hex")] },
    claims: { openid: ["sub"], email: ["email", "email_verified"], profile: ["given_name", "family_name"], groups: ["groups"] },
    features: { devInteractions: { enabled: false } },
    pkce: { required: () => true },
    ttl: { AccessToken: 600, AuthorizationCode: 60, IdToken: opts.idTokenTtlSeconds ?? 600, Interaction: 600, Session: 600, Grant: 600 },
    async findAccount(_ctx: unknown, sub: string) {
      const a = accounts.get(sub);
      if (!a) return undefined;
      return { accountId: sub, async claims() { return { ...a }; } };
    },
  });
  const callback = provider.callback();

  async function interaction(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const details = await provider.interactionDetails(req, res);
    if (details.prompt.name === "login") {
      const account = idp.account;
      if (idp.deny || account === null) {
        idp.deny = false;
        await provider.interactionFinished(req, res, { error: "access_denied", error_description: "the test denied the sign-in" }, { mergeWithLastSubmission: false });
        return;
      }
      accounts.set(account.sub, account);
      await provider.interactionFinished(req, res, { login: { accountId: account.sub } }, { mergeWithLastSubmission: false });
      return;
    }
    const accountId = details.session?.accountId ?? "";
    const grant = (details.grantId ? await provider.Grant.find(details.grantId) : undefined) ?? new provider.Grant({ accountId, clientId: String(details.params["client_id"]) });
    const d = details.prompt.details as { missingOIDCScope?: string[]; missingOIDCClaims?: string[]; missingResourceScopes?: Record<string, string[]> };
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(" "));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(d.missingResourceScopes ?? {})) grant.addResourceScope(indicator, scopes.join(" "));
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }

  handler = (req, res) => {
    const url = req.url ?? "/";
    if (url.startsWith("/interaction/")) {
      interaction(req, res).catch((err: unknown) => {
        if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain" });
        res.end(String(err));
      });
      return;
    }
    if (url.startsWith("/other/")) req.url = url.slice("/other".length);
    const tamper = idp.tamperIdToken;
    if (tamper !== null && req.method === "POST" && url.startsWith("/token")) {
      idp.tamperIdToken = null;
      const forge = idp.forgeSignature;
      idp.forgeSignature = false;
      const end = res.end.bind(res) as (chunk?: unknown) => ServerResponse;
      (res as unknown as { end: (chunk?: unknown) => ServerResponse }).end = (chunk?: unknown) => {
        void (async () => {
          const body = JSON.parse(Buffer.from(chunk as string | Buffer).toString("utf8")) as Record<string, unknown>;
          if (typeof body["id_token"] === "string") {
            const claims = tamper({ ...decodeJwt(body["id_token"]) });
            const key = forge ? (await generateKeyPair("RS256")).privateKey : privateKey;
            body["id_token"] = await new SignJWT(claims).setProtectedHeader({ alg: "RS256", kid }).sign(key);
          }
          const out = JSON.stringify(body);
          res.setHeader("content-length", Buffer.byteLength(out));
          end(out);
        })().catch((err: unknown) => res.destroy(err as Error));
        return res;
      };
    }
    callback(req, res);
  };
  return idp;
}

/**
 * A minimal browser: one cookie jar per host:port, manual redirects, trusting the given CAs. It is how the
 * tests walk the authorization URL through the IdP back to parhelion's callback.
 */
export class TestBrowser {
  private readonly jar = new Map<string, Map<string, string>>();
  private readonly agent: Agent;

  constructor(cas: string[]) {
    this.agent = new Agent({ connect: { ca: cas }, pipelining: 0 });
  }

  cookie(url: string, name: string): string | undefined {
    return this.jar.get(new URL(url).host)?.get(name);
  }

  async send(method: string, url: string, opts: { body?: unknown; headers?: Record<string, string> } = {}): Promise<{ status: number; location: string | null; headers: Record<string, string | string[] | undefined>; text: string; body: any }> {
    const u = new URL(url);
    const cookies = this.jar.get(u.host);
    const headers: Record<string, string> = { ...(opts.headers ?? {}) };
    if (cookies && cookies.size > 0) headers["cookie"] = [...cookies].map(([k, v]) => `${k}=${v}`).join("; ");
    let body: string | undefined;
    if (opts.body !== undefined) {
      body = JSON.stringify(opts.body);
      headers["content-type"] = "application/json";
    }
    const res = await request(url, { method: method as never, headers, body, dispatcher: this.agent });
    const text = await res.body.text();
    const set = res.headers["set-cookie"];
    for (const line of set === undefined ? [] : Array.isArray(set) ? set : [set]) {
      const [pair, ...attrs] = line.split(";");
      const eq = pair!.indexOf("=");
      const name = pair!.slice(0, eq).trim();
      const value = pair!.slice(eq + 1).trim();
      const jar = this.jar.get(u.host) ?? new Map<string, string>();
      const gone = value === "" || attrs.some((a) => /^\s*max-age=0\s*$/i.test(a)) || attrs.some((a) => /^\s*expires=Thu, 01 Jan 1970/i.test(a));
      if (gone) jar.delete(name);
      else jar.set(name, value);
      this.jar.set(u.host, jar);
    }
    const loc = res.headers["location"];
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    return { status: res.statusCode, location: typeof loc === "string" ? new URL(loc, url).href : null, headers: res.headers, text, body: parsed };
  }

  /** Follows the IdP's redirects from `url` until one leads to `stopAt`; answers that URL (not fetched). */
  async authorize(url: string, stopAt: string): Promise<URL> {
    let next = url;
    for (let i = 0; i < 20; i++) {
      const r = await this.send("GET", next);
      if (r.status < 300 || r.status >= 400 || r.location === null) throw new Error(`the IdP answered ${r.status} at ${next}: ${r.text.slice(0, 500)}`);
      if (r.location.startsWith(stopAt)) return new URL(r.location);
      next = r.location;
    }
    throw new Error("too many redirects at the IdP");
  }

  async close(): Promise<void> {
    await this.agent.close().catch(() => undefined);
  }
}
