import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import fc from "fast-check";
import { startTestPlatform, type TestPlatform } from "../support/platform.js";
import { ROUTES } from "../../src/api/routes/index.js";
import { ERROR_CATALOG } from "../../src/lib/errors.js";

let tp: TestPlatform;
const logLines: string[] = [];
const secrets: string[] = [];
const expiresAt = () => new Date(Date.now() + 86400_000).toISOString();

before(async () => {
  const sink = new PassThrough();
  sink.on("data", (c: Buffer) => logLines.push(c.toString("utf8")));
  tp = await startTestPlatform({ logDestination: sink, env: {} });
  secrets.push(tp.ownerKey);
});

after(async () => {
  await tp?.stop();
});

async function count(table: "teams" | "users" | "api_keys" | "invitations"): Promise<number> {
  const r = await tp.platform.db.selectFrom(table).select((eb) => eb.fn.countAll<string>().as("n")).executeTakeFirstOrThrow();
  return Number(r.n);
}

describe("basics", () => {
  test("healthz answers 200 when ready", async () => {
    const r = await tp.call("GET", "/healthz", { key: null });
    assert.equal(r.status, 200);
    assert.equal(r.body.status, "ok");
  });

  test("the OpenAPI document describes every route with its permission", async () => {
    const r = await tp.call("GET", "/v1/openapi.json", { key: null });
    assert.equal(r.status, 200);
    assert.equal(r.body.openapi, "3.1.0");
    for (const route of ROUTES) {
      const op = r.body.paths[route.path]?.[route.method.toLowerCase()];
      assert.ok(op, `${route.method} ${route.path} missing from OpenAPI`);
      assert.equal(op["x-parhelion-permission"], route.access);
    }
    assert.deepEqual(r.body.components.schemas.Problem.properties.code.enum.sort(), Object.keys(ERROR_CATALOG).sort());
  });

  test("organization current has Helios's shape", async () => {
    const r = await tp.call("GET", "/v1/organizations/current");
    assert.equal(r.status, 200);
    assert.match(r.body.orgID, /^[0-9a-f-]{36}$/);
    assert.equal(typeof r.body.name, "string");
    assert.equal(r.headers["cache-control"], "no-store");
    assert.match(String(r.headers["x-request-id"]), /^[0-9a-f-]{36}$/);
  });

  test("unknown routes answer problem+json 404", async () => {
    const r = await tp.call("GET", "/v1/nope");
    assert.equal(r.status, 404);
    assert.equal(r.body.code, "ERR_ROUTE_NOT_FOUND");
  });
});

describe("bad input gets a typed 4xx and changes nothing", () => {
  test("malformed JSON", async () => {
    const before = await count("teams");
    const r = await tp.call("POST", "/v1/teams", { rawBody: "{\"name\": ", headers: { "content-type": "application/json" } });
    assert.equal(r.status, 400);
    assert.equal(r.body.code, "ERR_VALIDATION");
    assert.equal(await count("teams"), before);
  });

  test("prototype pollution in JSON bodies is refused", async () => {
    for (const raw of ['{"name":"p","__proto__":{"admin":true}}', '{"name":"p","constructor":{"prototype":{"admin":true}}}']) {
      const r = await tp.call("POST", "/v1/teams", { rawBody: raw, headers: { "content-type": "application/json" } });
      assert.equal(r.status, 400, raw);
      assert.ok(r.body.code === "ERR_VALIDATION" || r.body.code === "ERR_UNKNOWN_FIELD", r.text);
    }
    assert.equal(({} as Record<string, unknown>)["admin"], undefined);
  });

  test("wrong types", async () => {
    const r = await tp.call("POST", "/v1/teams", { body: { name: 42 } });
    assert.equal(r.status, 400);
    assert.equal(r.body.code, "ERR_VALIDATION");
    assert.match(r.body.message, /name/);
  });

  test("unknown fields are rejected, naming them", async () => {
    const before = await count("teams");
    const r = await tp.call("POST", "/v1/teams", { body: { name: "x-unknown", color: "red" } });
    assert.equal(r.status, 400);
    assert.equal(r.body.code, "ERR_UNKNOWN_FIELD");
    assert.match(r.body.message, /color/);
    assert.equal(await count("teams"), before);
  });

  test("unknown query parameters are rejected, naming them", async () => {
    const r = await tp.call("GET", "/v1/organizations/current?color=red");
    assert.equal(r.status, 400);
    assert.equal(r.body.code, "ERR_UNKNOWN_FIELD");
    assert.match(r.body.message, /color/);
    const listed = await tp.call("GET", "/v1/teams?limit=5&colour=red");
    assert.equal(listed.body.code, "ERR_UNKNOWN_FIELD");
  });

  test("property: arbitrary JSON bodies to every route that takes one never cause a 5xx", async () => {
    const withBody = ROUTES.filter((r) => r.body !== undefined);
    assert.ok(withBody.length >= 8);
    for (const route of withBody) {
      const path = route.path.replace(/\{[^}]+\}/g, "00000000-0000-4000-8000-000000000000");
      await fc.assert(
        fc.asyncProperty(fc.jsonValue({ maxDepth: 3 }), async (v) => {
          const r = await tp.call(route.method, path, { rawBody: JSON.stringify(v), headers: { "content-type": "application/json" } });
          return r.status < 500 && (r.status < 400 || (typeof r.body?.code === "string" && r.body.code in ERROR_CATALOG));
        }),
        { numRuns: 25 },
      );
    }
    const who = await tp.call("GET", "/v1/auth/whoami");
    assert.equal(who.status, 200, "the owner key still works afterwards");
  });

  test("a Helios field parhelion lacks is accepted only at its neutral value", async () => {
    const ok = await tp.call("GET", "/v1/auditLogs?firstName=");
    assert.equal(ok.status, 200);
    const bad = await tp.call("GET", "/v1/auditLogs?firstName=Ann");
    assert.equal(bad.status, 400);
    assert.equal(bad.body.code, "ERR_FIELD_NOT_SUPPORTED");
  });

  test("oversized bodies answer 413, and the rejected mutation is audited", async () => {
    const before = await count("teams");
    const r = await tp.call("POST", "/v1/teams", { body: { name: "big", description: "x".repeat(2 * 1024 * 1024) } });
    assert.equal(r.status, 413);
    assert.equal(r.body.code, "ERR_BODY_TOO_LARGE");
    assert.equal(await count("teams"), before);
    const rec = await tp.platform.db.selectFrom("audit_log").select(["type", "result", "attributes"]).where("request_id", "=", r.body.requestId).executeTakeFirst();
    assert.equal(rec?.type, "ApiRequestRejected");
    assert.equal(rec?.result, "FAILURE");
    assert.equal((rec?.attributes as { code?: string }).code, "ERR_BODY_TOO_LARGE");
  });

  test("non-JSON content types answer 415", async () => {
    const r = await tp.call("POST", "/v1/teams", { rawBody: "name=x", headers: { "content-type": "application/x-www-form-urlencoded" } });
    assert.equal(r.status, 415);
    assert.equal(r.body.code, "ERR_UNSUPPORTED_MEDIA_TYPE");
  });

  test("path traversal and junk in ids answer 400 without touching anything", async () => {
    for (const id of ["..%2F..%2Fetc%2Fpasswd", "..", "1%27%20OR%201%3D1--", "%00", "a".repeat(150)]) {
      const r = await tp.call("GET", `/v1/teams/${id}`);
      assert.ok(r.status === 400 || r.status === 404, `${id}: ${r.status}`);
      assert.ok(r.body.code === "ERR_VALIDATION" || r.body.code === "ERR_ROUTE_NOT_FOUND", r.text);
    }
  });

  test("SQL metacharacters in string fields are stored literally", async () => {
    const name = "'; DROP TABLE users; -- \"\\ $1 %s";
    const r = await tp.call("POST", "/v1/teams", { body: { name, description: "' OR '1'='1" } });
    assert.equal(r.status, 200, r.text);
    const g = await tp.call("GET", `/v1/teams/${r.body.teamID}`);
    assert.equal(g.body.name, name);
    assert.equal(g.body.description, "' OR '1'='1");
    assert.ok((await count("users")) >= 1);
  });

  test("malformed, unknown, expired and revoked API keys answer 401 ERR_API_KEY_INVALID", async () => {
    const created = await tp.call("POST", "/v1/apiKeys", { body: { name: "to-revoke", role: "Auditor", expiresAt: expiresAt() } });
    assert.equal(created.status, 201);
    secrets.push(created.body.key);
    assert.equal((await tp.call("GET", "/v1/organizations/current", { key: created.body.key })).status, 200);
    assert.equal((await tp.call("DELETE", `/v1/apiKeys/${created.body.apiKeyID}`)).status, 200);
    const revoked = await tp.call("GET", "/v1/organizations/current", { key: created.body.key });
    assert.equal(revoked.status, 401);
    assert.equal(revoked.body.code, "ERR_API_KEY_INVALID");
    for (const bad of ["x", "phk_", "phk_abc_def", created.body.key.slice(0, -2) + "AA", "phk_" + "z".repeat(300)]) {
      const r = await tp.call("GET", "/v1/organizations/current", { key: bad });
      assert.equal(r.status, 401, bad);
      assert.equal(r.body.code, "ERR_API_KEY_INVALID");
    }
    const list = await tp.call("GET", "/v1/apiKeys");
    const entry = list.body.find((k: { apiKeyID: string }) => k.apiKeyID === created.body.apiKeyID);
    assert.equal(entry.state, "REVOKED");
    const secret = /^phk_[^_]+_(.+)$/.exec(created.body.key)?.[1] ?? ""; // base64url: the secret may itself contain "_"
    assert.ok(secret.length >= 40);
    assert.ok(!list.text.includes(secret), "a list never shows a key's secret");
  });

  test("an expiry in the past is refused", async () => {
    const r = await tp.call("POST", "/v1/apiKeys", { body: { name: "past", role: "Member", expiresAt: "2001-01-01T00:00:00Z" } });
    assert.equal(r.status, 400);
    assert.equal(r.body.code, "ERR_VALIDATION");
  });

  test("an Admin key cannot mint an Owner key", async () => {
    const admin = await tp.call("POST", "/v1/apiKeys", { body: { name: "admin", role: "Admin", expiresAt: expiresAt() } });
    secrets.push(admin.body.key);
    const r = await tp.call("POST", "/v1/apiKeys", { key: admin.body.key, body: { name: "escalate", role: "Owner", expiresAt: expiresAt() } });
    assert.equal(r.status, 403);
    assert.equal(r.body.code, "ERR_FORBIDDEN");
  });

  test("property: arbitrary JSON bodies to createTeam only ever get 200 or a typed 4xx", async () => {
    await fc.assert(
      fc.asyncProperty(fc.jsonValue(), async (v) => {
        const r = await tp.call("POST", "/v1/teams", { rawBody: JSON.stringify(v), headers: { "content-type": "application/json" } });
        if (r.status === 200) return true;
        return r.status >= 400 && r.status < 500 && typeof r.body?.code === "string" && r.body.code in ERROR_CATALOG;
      }),
      { numRuns: 60 },
    );
  });

  test("property: arbitrary query strings to listAuditLogs never cause a 5xx", async () => {
    await fc.assert(
      fc.asyncProperty(fc.dictionary(fc.constantFrom("startDate", "endDate", "type", "source", "limit", "nextToken", "bogus"), fc.string({ maxLength: 40 })), async (q) => {
        const qs = new URLSearchParams(q).toString();
        const r = await tp.call("GET", `/v1/auditLogs?${qs}`);
        return r.status === 200 || (r.status >= 400 && r.status < 500 && r.body.code in ERROR_CATALOG);
      }),
      { numRuns: 60 },
    );
  });
});

describe("console sessions", () => {
  const password = "correct horse battery staple 42";
  let invite: { token: string; invitationID: string };

  before(async () => {
    const r = await tp.call("POST", "/v1/invitations", { body: { email: "ada@example.com", role: "Admin" } });
    assert.equal(r.status, 200, r.text);
    invite = r.body;
    secrets.push(invite.token, password);
  });

  test("an invitation is accepted once and then signs in with HttpOnly, Secure, SameSite cookies", async () => {
    const weak = await tp.call("POST", "/v1/auth/invitations/accept", { key: null, body: { token: invite.token, password: "short" } });
    assert.equal(weak.status, 400);
    assert.equal(weak.body.code, "ERR_PASSWORD_POLICY");
    const ok = await tp.call("POST", "/v1/auth/invitations/accept", { key: null, body: { token: invite.token, password, firstName: "Ada", lastName: "L" } });
    assert.equal(ok.status, 201, ok.text);
    const again = await tp.call("POST", "/v1/auth/invitations/accept", { key: null, body: { token: invite.token, password } });
    assert.equal(again.status, 400);
    assert.equal(again.body.code, "ERR_INVITATION_INVALID");

    const login = await tp.call("POST", "/v1/auth/login", { key: null, body: { email: "ADA@example.com", password } });
    assert.equal(login.status, 200, login.text);
    const setCookie = String(login.headers["set-cookie"]);
    assert.match(setCookie, /parhelion_session=/);
    assert.match(setCookie, /HttpOnly/);
    assert.match(setCookie, /Secure/);
    assert.match(setCookie, /SameSite=Strict/);
    const cookie = setCookie.split(";")[0]!;
    secrets.push(cookie.split("=")[1]!, login.body.csrfToken);

    const who = await tp.call("GET", "/v1/auth/whoami", { key: null, headers: { cookie } });
    assert.equal(who.status, 200);
    assert.equal(who.body.email, "ada@example.com");
    assert.deepEqual(who.body.roles, ["Admin"]);

    const noCsrf = await tp.call("POST", "/v1/teams", { key: null, headers: { cookie }, body: { name: "csrf-less" } });
    assert.equal(noCsrf.status, 403);
    assert.equal(noCsrf.body.code, "ERR_CSRF");
    const denied = await tp.platform.db.selectFrom("audit_log").select(["type", "result", "actor_email", "source"]).where("request_id", "=", noCsrf.body.requestId).executeTakeFirst();
    assert.deepEqual(denied, { type: "TeamCreate", result: "DENIED", actor_email: "ada@example.com", source: "Portal" }, "a forged request is audited against the session's user");
    const wrongCsrf = await tp.call("POST", "/v1/teams", { key: null, headers: { cookie, "x-csrf-token": "A".repeat(43) }, body: { name: "csrf-wrong" } });
    assert.equal(wrongCsrf.body.code, "ERR_CSRF");
    const withCsrf = await tp.call("POST", "/v1/teams", { key: null, headers: { cookie, "x-csrf-token": login.body.csrfToken }, body: { name: "csrf-ok" } });
    assert.equal(withCsrf.status, 200, withCsrf.text);

    const out = await tp.call("POST", "/v1/auth/logout", { key: null, headers: { cookie, "x-csrf-token": login.body.csrfToken } });
    assert.equal(out.status, 200);
    const after = await tp.call("GET", "/v1/auth/whoami", { key: null, headers: { cookie } });
    assert.equal(after.status, 401);
    assert.equal(after.body.code, "ERR_SESSION_INVALID");
  });

  test("password change needs the current password and ends other sessions", async () => {
    const login = await tp.call("POST", "/v1/auth/login", { key: null, body: { email: "ada@example.com", password } });
    const cookie = String(login.headers["set-cookie"]).split(";")[0]!;
    const h = { cookie, "x-csrf-token": login.body.csrfToken };
    const wrong = await tp.call("POST", "/v1/auth/password", { key: null, headers: h, body: { currentPassword: "nope", newPassword: "another long passphrase 9" } });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.body.code, "ERR_INVALID_CREDENTIALS");
    const other = await tp.call("POST", "/v1/auth/login", { key: null, body: { email: "ada@example.com", password } });
    const otherCookie = String(other.headers["set-cookie"]).split(";")[0]!;
    const ok = await tp.call("POST", "/v1/auth/password", { key: null, headers: h, body: { currentPassword: password, newPassword: "another long passphrase 9" } });
    assert.equal(ok.status, 200, ok.text);
    secrets.push("another long passphrase 9");
    assert.equal((await tp.call("GET", "/v1/auth/whoami", { key: null, headers: { cookie: otherCookie } })).status, 401);
    assert.equal((await tp.call("GET", "/v1/auth/whoami", { key: null, headers: { cookie } })).status, 200);
  });

  test("failed logins lock the account out with Retry-After", async () => {
    let last;
    for (let i = 0; i < 6; i++) {
      last = await tp.call("POST", "/v1/auth/login", { key: null, body: { email: "victim@example.com", password: `wrong-password-${i}` } });
    }
    assert.equal(last!.status, 429);
    assert.equal(last!.body.code, "ERR_RATE_LIMITED");
    assert.ok(Number(last!.headers["retry-after"]) > 0);
    const logs = await tp.call("GET", "/v1/auditLogs?type=Login");
    assert.ok(logs.body.auditLogs.filter((l: { result: string }) => l.result !== "SUCCESS").length >= 6);
  });

  test("removing a user ends their sessions and revokes the API keys they created", async () => {
    const inv = await tp.call("POST", "/v1/invitations", { body: { email: "leaver@example.com", role: "Admin" } });
    const pw = "departing soon passphrase 5";
    secrets.push(inv.body.token, pw);
    const acc = await tp.call("POST", "/v1/auth/invitations/accept", { key: null, body: { token: inv.body.token, password: pw } });
    assert.equal(acc.status, 201);
    const login = await tp.call("POST", "/v1/auth/login", { key: null, body: { email: "leaver@example.com", password: pw } });
    const cookie = String(login.headers["set-cookie"]).split(";")[0]!;
    const key = await tp.call("POST", "/v1/apiKeys", { key: null, headers: { cookie, "x-csrf-token": login.body.csrfToken }, body: { name: "leaver-key", role: "Auditor", expiresAt: expiresAt() } });
    assert.equal(key.status, 201, key.text);
    secrets.push(key.body.key);
    assert.equal((await tp.call("GET", "/v1/organizations/current", { key: key.body.key })).status, 200);
    const del = await tp.call("DELETE", `/v1/users/${acc.body.userID}`);
    assert.equal(del.status, 200, del.text);
    assert.equal((await tp.call("GET", "/v1/organizations/current", { key: key.body.key })).status, 401);
    assert.equal((await tp.call("GET", "/v1/auth/whoami", { key: null, headers: { cookie } })).status, 401);
    const k = await tp.call("GET", `/v1/apiKeys/${key.body.apiKeyID}`);
    assert.equal(k.body.state, "REVOKED");
  });

  test("a resource grant lets a Member read that team and nothing else", async () => {
    const inv = await tp.call("POST", "/v1/invitations", { body: { email: "mem@example.com", role: "Member" } });
    const pw = "quiet river lantern 77";
    secrets.push(inv.body.token);
    const acc = await tp.call("POST", "/v1/auth/invitations/accept", { key: null, body: { token: inv.body.token, password: pw } });
    assert.equal(acc.status, 201);
    const t1 = (await tp.call("POST", "/v1/teams", { body: { name: "granted" } })).body.teamID;
    const t2 = (await tp.call("POST", "/v1/teams", { body: { name: "not-granted" } })).body.teamID;
    const g = await tp.call("PATCH", `/v1/teams/${t1}/accessControls`, { body: { grants: [{ role: "Reader", users: [acc.body.userID] }] } });
    assert.equal(g.status, 200, g.text);
    const login = await tp.call("POST", "/v1/auth/login", { key: null, body: { email: "mem@example.com", password: pw } });
    const cookie = String(login.headers["set-cookie"]).split(";")[0]!;
    assert.equal((await tp.call("GET", `/v1/teams/${t1}`, { key: null, headers: { cookie } })).status, 200);
    assert.equal((await tp.call("GET", `/v1/teams/${t2}`, { key: null, headers: { cookie } })).status, 403);
    const listed = await tp.call("GET", "/v1/teams", { key: null, headers: { cookie } });
    assert.equal(listed.status, 200, listed.text);
    assert.deepEqual(listed.body.map((t: { teamID: string }) => t.teamID), [t1], "a Member lists only the teams it holds a role on");
    assert.equal((await tp.call("PATCH", `/v1/teams/${t1}`, { key: null, headers: { cookie, "x-csrf-token": login.body.csrfToken }, body: { name: "renamed" } })).status, 403);
  });
});

describe("organization invariants", () => {
  test("the last Owner cannot be removed or revoked", async () => {
    const who = await tp.call("GET", "/v1/auth/whoami");
    const del = await tp.call("DELETE", `/v1/users/${who.body.userID}`);
    assert.equal(del.status, 409);
    assert.equal(del.body.code, "ERR_LAST_OWNER");
    const rev = await tp.call("PATCH", `/v1/organizations/${who.body.orgID}/accessControls`, { body: { revokes: [{ role: "Owner", users: [who.body.userID] }] } });
    assert.equal(rev.status, 409);
    assert.equal(rev.body.code, "ERR_LAST_OWNER");
  });

  test("only an Owner grants Owner or invites an Owner", async () => {
    const admin = await tp.call("POST", "/v1/apiKeys", { body: { name: "admin-2", role: "Admin", expiresAt: expiresAt() } });
    secrets.push(admin.body.key);
    const who = await tp.call("GET", "/v1/auth/whoami");
    const grant = await tp.call("PATCH", `/v1/organizations/${who.body.orgID}/accessControls`, { key: admin.body.key, body: { grants: [{ role: "Owner", users: [who.body.userID] }] } });
    assert.equal(grant.status, 403);
    assert.equal(grant.body.code, "ERR_FORBIDDEN");
    const before = await count("invitations");
    const inv = await tp.call("POST", "/v1/invitations", { key: admin.body.key, body: { email: "would-be-owner@example.com", role: "Owner" } });
    assert.equal(inv.status, 403);
    assert.equal(inv.body.code, "ERR_FORBIDDEN");
    assert.equal(await count("invitations"), before);
    const ok = await tp.call("PATCH", `/v1/organizations/${who.body.orgID}/accessControls`, { key: admin.body.key, body: { grants: [{ role: "Auditor", users: [who.body.userID] }] } });
    assert.equal(ok.status, 200, "an Admin grants the other roles");
  });

  test("teams: members by email, cycles refused, identity roles listed", async () => {
    const a = (await tp.call("POST", "/v1/teams", { body: { name: "team-a" } })).body.teamID;
    const b = (await tp.call("POST", "/v1/teams", { body: { name: "team-b" } })).body.teamID;
    assert.equal((await tp.call("PATCH", `/v1/teams/${a}`, { body: { addMemberTeamIDs: [b] } })).status, 200);
    const cyc = await tp.call("PATCH", `/v1/teams/${b}`, { body: { addMemberTeamIDs: [a] } });
    assert.equal(cyc.status, 409);
    const add = await tp.call("PATCH", `/v1/teams/${b}`, { body: { addMemberUserEmails: ["owner@parhelion.local"] } });
    assert.equal(add.status, 200, add.text);
    const team = await tp.call("GET", `/v1/teams/${b}`);
    assert.deepEqual(team.body.memberUsers.map((u: { email: string }) => u.email), ["owner@parhelion.local"]);
    const dup = await tp.call("POST", "/v1/teams", { body: { name: "team-a" } });
    assert.equal(dup.status, 409);
    assert.equal(dup.body.code, "ERR_CONFLICT");
  });
});

describe("lists paginate", () => {
  test("teams, users, invitations and API keys page with limit and X-Next-Token, each row once", async () => {
    for (const n of ["page-1", "page-2", "page-3"]) await tp.call("POST", "/v1/teams", { body: { name: n } });
    for (const e of ["p1@example.com", "p2@example.com", "p3@example.com"]) await tp.call("POST", "/v1/invitations", { body: { email: e } });
    for (const path of ["/v1/teams", "/v1/users", "/v1/invitations", "/v1/apiKeys"]) {
      const all = await tp.call("GET", path);
      assert.equal(all.status, 200);
      assert.equal(all.headers["x-next-token"], undefined, `${path}: one page holds everything by default`);
      const seen: unknown[] = [];
      let token: string | undefined;
      for (let i = 0; i < 50; i++) {
        const r = await tp.call("GET", `${path}?limit=1${token ? `&nextToken=${encodeURIComponent(token)}` : ""}`);
        assert.equal(r.status, 200, r.text);
        seen.push(...r.body);
        token = r.headers["x-next-token"] as string | undefined;
        if (token === undefined) break;
      }
      assert.deepEqual(seen, all.body, `${path}: pages add up to the whole list`);
      assert.ok(all.body.length >= 1);
    }
    const bad = await tp.call("GET", "/v1/teams?nextToken=not-a-token");
    assert.equal(bad.status, 400);
    assert.equal(bad.body.code, "ERR_VALIDATION");
  });

  test("fields= returns only the named fields", async () => {
    const r = await tp.call("GET", "/v1/teams?fields=teamID,name");
    assert.equal(r.status, 200);
    assert.ok(r.body.length > 0);
    for (const t of r.body) assert.deepEqual(Object.keys(t).sort(), ["name", "teamID"]);
  });
});

describe("audit from the first line", () => {
  test("mutations and auth attempts are recorded with who, what, where and the request id; the chain verifies", async () => {
    const r = await tp.call("POST", "/v1/teams", { body: { name: "audited" } });
    const logs = await tp.call("GET", "/v1/auditLogs?type=TeamCreate&limit=5");
    assert.equal(logs.status, 200);
    const rec = logs.body.auditLogs.find((l: { requestID: string }) => l.requestID === r.headers["x-request-id"]);
    assert.ok(rec, "the createTeam call is audited");
    assert.equal(rec.result, "SUCCESS");
    assert.equal(rec.resourceID, r.body.teamID);
    assert.equal(rec.userType, "Automation");
    assert.ok(rec.sourceIP);
    const v = await tp.call("GET", "/v1/auditLogs/verify");
    assert.equal(v.status, 200);
    assert.equal(v.body.ok, true, JSON.stringify(v.body.problems));
    assert.ok(v.body.checked > 10);
  });

  test("no secret used in this file ever appears in a log line", async () => {
    await new Promise((r) => setTimeout(r, 100));
    const all = logLines.join("");
    assert.ok(all.length > 0, "the platform logged something");
    for (const s of secrets) assert.ok(!all.includes(s), `a secret leaked into the logs: ${s.slice(0, 6)}…`);
  });
});
