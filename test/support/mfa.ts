import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { Secret, TOTP } from "otpauth";
import type { TestPlatform } from "./platform.js";

/** The code an authenticator app shows for this secret at this time (SHA-1, 6 digits, 30 s). */
export function totpCode(secret: string, ms: number): string {
  return new TOTP({ secret: Secret.fromBase32(secret), algorithm: "SHA1", digits: 6, period: 30 }).generate({ timestamp: ms });
}

/** A signed-in console session: its cookie and CSRF header, ready for `tp.call`. */
export interface TestSession {
  email: string;
  password: string;
  userID: string;
  headers: { cookie: string; "x-csrf-token": string };
  login: Record<string, unknown>;
}

/** Invites a user with the owner's key (role as given), accepts, and answers the email and password. */
export async function makeUser(tp: TestPlatform, role = "Member"): Promise<{ email: string; password: string }> {
  const email = `mfa-${randomUUID().slice(0, 8)}@example.com`;
  const password = `pw-${randomUUID()}`;
  const inv = await tp.call("POST", "/v1/invitations", { body: { email, role } });
  assert.ok(inv.status < 300, inv.text);
  const acc = await tp.call("POST", "/v1/auth/invitations/accept", { key: null, body: { token: inv.body.token, password } });
  assert.ok(acc.status < 300, acc.text);
  return { email, password };
}

/** Signs in with email and password. */
export async function signIn(tp: TestPlatform, who: { email: string; password: string }): Promise<TestSession> {
  const r = await tp.call("POST", "/v1/auth/login", { key: null, body: { email: who.email, password: who.password } });
  assert.equal(r.status, 200, r.text);
  const cookie = String(r.headers["set-cookie"]).split(";")[0]!;
  return { ...who, userID: r.body.userID, headers: { cookie, "x-csrf-token": r.body.csrfToken }, login: r.body };
}

/** A call as a console session (no API key). */
export function as(tp: TestPlatform, s: TestSession, method: string, path: string, body?: unknown) {
  return tp.call(method, path, { key: null, headers: s.headers, ...(body === undefined ? {} : { body }) });
}
