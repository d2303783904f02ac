import { createHash, createHmac, pbkdf2Sync, randomBytes } from "node:crypto";

/**
 * SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL stores it:
 * `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 parts).
 */
export interface ScramVerifier {
  iterations: number;
  salt: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
}

const hmac = (key: Buffer, data: string | Buffer): Buffer => createHmac("sha256", key).update(data).digest();
const sha256 = (data: Buffer): Buffer => createHash("sha256").update(data).digest();

/**
 * The password as PostgreSQL hashes it. PostgreSQL applies SASLprep and falls back to the raw bytes when
 * the password is not valid for it; NFKC normalisation is SASLprep's mapping for the common cases.
 */
function preparePassword(password: string): string {
  // eslint-disable-next-line no-control-regex
  return /^[\x00-\x7f]*$/.test(password) ? password : password.normalize("NFKC");
}

/** Derives the keys of a verifier from a password (what `password_encryption = scram-sha-256` stores). */
export function deriveScramKeys(password: string, salt: Buffer, iterations: number): { clientKey: Buffer; storedKey: Buffer; serverKey: Buffer } {
  const salted = pbkdf2Sync(preparePassword(password), salt, iterations, 32, "sha256");
  const clientKey = hmac(salted, "Client Key");
  return { clientKey, storedKey: sha256(clientKey), serverKey: hmac(salted, "Server Key") };
}

/** A PostgreSQL SCRAM-SHA-256 verifier string for a password; it can be given to CREATE/ALTER ROLE ... PASSWORD. */
export function makeScramVerifier(password: string, opts: { iterations?: number; salt?: Buffer } = {}): string {
  const iterations = opts.iterations ?? 4096;
  const salt = opts.salt ?? randomBytes(16);
  const { storedKey, serverKey } = deriveScramKeys(password, salt, iterations);
  return `SCRAM-SHA-256$${iterations}:${salt.toString("base64")}$${storedKey.toString("base64")}:${serverKey.toString("base64")}`;
}

/** Parses a stored verifier; null for anything else (md5 hashes, plaintext, garbage). */
export function parseScramVerifier(s: string | null | undefined): ScramVerifier | null {
  if (!s) return null;
  const m = /^SCRAM-SHA-256\$(\d{1,9}):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$/.exec(s);
  if (!m) return null;
  const iterations = Number(m[1]);
  const salt = Buffer.from(m[2]!, "base64");
  const storedKey = Buffer.from(m[3]!, "base64");
  const serverKey = Buffer.from(m[4]!, "base64");
  if (iterations < 1 || salt.length === 0 || storedKey.length !== 32 || serverKey.length !== 32) return null;
  return { iterations, salt, storedKey, serverKey };
}
