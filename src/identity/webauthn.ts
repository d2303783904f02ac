import { randomUUID } from "node:crypto";
import { isIP } from "node:net";
import {
  generateAuthenticationOptions,
  generateRegistrationOptions,
  verifyAuthenticationResponse,
  verifyRegistrationResponse,
  type AuthenticationResponseJSON,
  type PublicKeyCredentialCreationOptionsJSON,
  type PublicKeyCredentialRequestOptionsJSON,
  type RegistrationResponseJSON,
} from "@simplewebauthn/server";
import { ParhelionError } from "../lib/errors.js";
import type { Db } from "../store/schema.js";
import { isUniqueViolation } from "./internal.js";
import { factorName, markSessionMfaVerified, replaceRecoveryCodes } from "./mfa.js";
import { systemClock, type Clock } from "./types.js";

// WebAuthn (security keys, passkeys) through @simplewebauthn/server: options and verification of the
// registration and authentication ceremonies. Challenges live server-side, bound to one session and one
// ceremony, are consumed by their first use and expire after CHALLENGE_TTL_MS.

/** Where WebAuthn credentials are scoped: the relying party id (a host name) and the origins the browser reports. */
export interface WebAuthnSettings {
  rpID: string;
  rpName: string;
  origins: readonly string[];
}

export const CHALLENGE_TTL_MS = 5 * 60_000;
const INVALID = "The security key's answer did not verify.";

/** An error carrying why a WebAuthn answer was refused, for the audit record (never a secret). */
export class WebAuthnRejected extends ParhelionError {
  constructor(readonly reason: string) {
    super("ERR_MFA_INVALID", INVALID, { details: { reason } });
  }
}

/** The WebAuthn user handle: the user id's 16 bytes (stable, not personally identifying). */
function userHandle(userId: string): Uint8Array<ArrayBuffer> {
  return new Uint8Array(Buffer.from(userId.replace(/-/g, ""), "hex"));
}

async function storeChallenge(db: Db, input: { sessionId: string; userId: string; ceremony: "registration" | "authentication"; challenge: string }, now: Date): Promise<void> {
  await db.transaction().execute(async (trx) => {
    // One outstanding challenge per session and ceremony: a new one replaces the old.
    await trx.deleteFrom("mfa_challenges").where("session_id", "=", input.sessionId).where("ceremony", "=", input.ceremony).execute();
    await trx.insertInto("mfa_challenges").values({ id: randomUUID(), session_id: input.sessionId, user_id: input.userId, ceremony: input.ceremony, challenge: input.challenge, expires_at: new Date(now.getTime() + CHALLENGE_TTL_MS) }).execute();
  });
}

/** Takes (deletes) the session's outstanding challenge of a ceremony; null if there is none or it expired. */
async function takeChallenge(db: Db, sessionId: string, ceremony: "registration" | "authentication", now: Date): Promise<string | null> {
  const rows = await db.deleteFrom("mfa_challenges").where("session_id", "=", sessionId).where("ceremony", "=", ceremony).returning(["challenge", "expires_at"]).execute();
  const live = rows.find((r) => new Date(r.expires_at).getTime() > now.getTime());
  return live?.challenge ?? null;
}

/** Registration options for a new credential of the user (the user's existing credentials are excluded). */
export async function beginWebAuthnRegistration(
  db: Db,
  settings: WebAuthnSettings,
  input: { userId: string; email: string; sessionId: string },
  clock: Clock = systemClock,
): Promise<PublicKeyCredentialCreationOptionsJSON> {
  const existing = await db.selectFrom("mfa_webauthn_credentials").select(["credential_id", "transports"]).where("user_id", "=", input.userId).execute();
  const options = await generateRegistrationOptions({
    rpName: settings.rpName,
    rpID: settings.rpID,
    userName: input.email,
    userID: userHandle(input.userId),
    userDisplayName: input.email,
    timeout: CHALLENGE_TTL_MS,
    attestationType: "none",
    excludeCredentials: existing.map((c) => ({ id: c.credential_id, transports: c.transports })),
    authenticatorSelection: { residentKey: "preferred", userVerification: "preferred" },
  });
  await storeChallenge(db, { sessionId: input.sessionId, userId: input.userId, ceremony: "registration", challenge: options.challenge }, clock());
  return options;
}

/**
 * Verifies the browser's registration answer against the session's challenge, the configured origins and RP
 * id; stores the credential; marks the session verified; issues recovery codes if the user has none unused.
 */
export async function finishWebAuthnRegistration(
  db: Db,
  settings: WebAuthnSettings,
  input: { userId: string; sessionId: string; name?: string | undefined; response: RegistrationResponseJSON },
  clock: Clock = systemClock,
): Promise<{ factorID: string; recoveryCodes: string[] | null }> {
  const name = factorName(input.name, "Security key");
  const now = clock();
  const challenge = await takeChallenge(db, input.sessionId, "registration", now);
  if (challenge === null) throw new WebAuthnRejected("no registration challenge is outstanding for this session (or it expired)");
  let verified: Awaited<ReturnType<typeof verifyRegistrationResponse>>;
  try {
    verified = await verifyRegistrationResponse({
      response: input.response,
      expectedChallenge: challenge,
      expectedOrigin: [...settings.origins],
      expectedRPID: settings.rpID,
      requireUserVerification: false,
    });
  } catch (err) {
    throw new WebAuthnRejected(String((err as Error)?.message ?? err).slice(0, 300));
  }
  if (!verified.verified) throw new WebAuthnRejected("the registration answer did not verify");
  const info = verified.registrationInfo;
  const factorID = randomUUID();
  try {
    return await db.transaction().execute(async (trx) => {
      await trx.insertInto("mfa_webauthn_credentials").values({
        id: factorID,
        user_id: input.userId,
        name,
        credential_id: info.credential.id,
        public_key: Buffer.from(info.credential.publicKey),
        counter: info.credential.counter,
        transports: (info.credential.transports ?? input.response.response.transports ?? []).filter((t) => typeof t === "string" && t.length <= 32).slice(0, 8),
        aaguid: info.aaguid,
        device_type: info.credentialDeviceType,
        backed_up: info.credentialBackedUp,
        last_used_at: null,
      }).execute();
      await markSessionMfaVerified(trx, input.sessionId, () => now);
      const unused = await trx.selectFrom("mfa_recovery_codes").select("id").where("user_id", "=", input.userId).where("used_at", "is", null).limit(1).executeTakeFirst();
      return { factorID, recoveryCodes: unused ? null : await replaceRecoveryCodes(trx, input.userId) };
    });
  } catch (err) {
    if (isUniqueViolation(err)) throw new ParhelionError("ERR_CONFLICT", "This security key is already registered.", { cause: err });
    throw err;
  }
}

/** Authentication options listing the user's credentials; ERR_CONFLICT if the user has none. */
export async function beginWebAuthnAuthentication(
  db: Db,
  settings: WebAuthnSettings,
  input: { userId: string; sessionId: string },
  clock: Clock = systemClock,
): Promise<PublicKeyCredentialRequestOptionsJSON> {
  const creds = await db.selectFrom("mfa_webauthn_credentials").select(["credential_id", "transports"]).where("user_id", "=", input.userId).execute();
  if (creds.length === 0) throw new ParhelionError("ERR_CONFLICT", "You have no security key enrolled.");
  const options = await generateAuthenticationOptions({
    rpID: settings.rpID,
    allowCredentials: creds.map((c) => ({ id: c.credential_id, transports: c.transports })),
    userVerification: "preferred",
    timeout: CHALLENGE_TTL_MS,
  });
  await storeChallenge(db, { sessionId: input.sessionId, userId: input.userId, ceremony: "authentication", challenge: options.challenge }, clock());
  return options;
}

/**
 * Verifies an assertion against the session's challenge and the user's stored credential; the signature
 * counter must grow (a cloned authenticator shows up as a counter that does not), and is stored with a
 * compare-and-set. Marks the session verified.
 */
export async function finishWebAuthnAuthentication(
  db: Db,
  settings: WebAuthnSettings,
  input: { userId: string; sessionId: string; response: AuthenticationResponseJSON },
  clock: Clock = systemClock,
): Promise<{ verifiedAt: Date; factorID: string }> {
  const now = clock();
  const challenge = await takeChallenge(db, input.sessionId, "authentication", now);
  if (challenge === null) throw new WebAuthnRejected("no authentication challenge is outstanding for this session (or it expired)");
  const cred = await db
    .selectFrom("mfa_webauthn_credentials")
    .select(["id", "credential_id", "public_key", "counter", "transports"])
    .where("user_id", "=", input.userId)
    .where("credential_id", "=", String(input.response.id))
    .executeTakeFirst();
  if (!cred) throw new WebAuthnRejected("the credential is not one of this user's security keys");
  let result: Awaited<ReturnType<typeof verifyAuthenticationResponse>>;
  try {
    result = await verifyAuthenticationResponse({
      response: input.response,
      expectedChallenge: challenge,
      expectedOrigin: [...settings.origins],
      expectedRPID: settings.rpID,
      credential: { id: cred.credential_id, publicKey: new Uint8Array(cred.public_key), counter: Number(cred.counter), transports: cred.transports },
      requireUserVerification: false,
    });
  } catch (err) {
    throw new WebAuthnRejected(String((err as Error)?.message ?? err).slice(0, 300));
  }
  if (!result.verified) throw new WebAuthnRejected("the assertion did not verify");
  return db.transaction().execute(async (trx) => {
    const res = await trx
      .updateTable("mfa_webauthn_credentials")
      .set({ counter: result.authenticationInfo.newCounter, last_used_at: now })
      .where("id", "=", cred.id)
      .where("counter", "=", cred.counter)
      .executeTakeFirst();
    if (res.numUpdatedRows !== 1n) throw new WebAuthnRejected("the credential was used concurrently");
    const verifiedAt = await markSessionMfaVerified(trx, input.sessionId, () => now);
    return { verifiedAt, factorID: cred.id };
  });
}

/**
 * The relying party from configuration: `rpId` if given, else the API's host name (localhost when it is an
 * IP address, which WebAuthn does not accept as an RP id); origins if given (comma-separated), else
 * https://<rpID>:<apiPort>. ERR_CONFIG for an origin that is not an https (or http://localhost) origin, or one
 * whose host is not the RP id or a subdomain of it.
 */
export function webauthnSettingsFrom(input: { rpName: string; rpId?: string | undefined; origins?: string | undefined; host: string; apiPort: number }): WebAuthnSettings {
  const rpID = input.rpId ?? (isIP(input.host) !== 0 || input.host === "" ? "localhost" : input.host.toLowerCase());
  const list = input.origins === undefined ? [`https://${rpID}:${input.apiPort}`] : input.origins.split(",").map((o) => o.trim()).filter(Boolean);
  const origins = list.map((o) => {
    let u: URL;
    try {
      u = new URL(o);
    } catch {
      throw new ParhelionError("ERR_CONFIG", `webauthnOrigins: "${o}" is not a URL`);
    }
    const local = u.hostname === "localhost";
    if (u.protocol !== "https:" && !(u.protocol === "http:" && local)) throw new ParhelionError("ERR_CONFIG", `webauthnOrigins: "${o}" must be https (http only for localhost)`);
    if (u.hostname !== rpID && !u.hostname.endsWith(`.${rpID}`)) throw new ParhelionError("ERR_CONFIG", `webauthnOrigins: "${o}" is not on the relying party id ${rpID} or a subdomain of it`);
    return u.origin;
  });
  if (origins.length === 0) throw new ParhelionError("ERR_CONFIG", "webauthnOrigins: no origin given");
  return { rpID, rpName: input.rpName, origins };
}
