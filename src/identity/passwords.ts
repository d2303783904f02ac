import { argon2, randomBytes, timingSafeEqual, type Argon2Parameters } from "node:crypto";
import { ParhelionError } from "../lib/errors.js";

/** The argon2id parameters of new hashes (OWASP's second recommended configuration). */
export const ARGON2_PARAMS = Object.freeze({ memory: 19456, passes: 2, parallelism: 1, saltLength: 16, tagLength: 32 });

export const PASSWORD_MIN_LENGTH = 12;
export const PASSWORD_MAX_LENGTH = 256;

// Bounds on parameters read back from a stored PHC string, so a corrupted or hostile row cannot make
// one verification allocate gigabytes or run for minutes. Hashes outside them simply fail to verify.
const LIMITS = { memoryMax: 262_144, passesMax: 10, parallelismMax: 16, saltMin: 8, saltMax: 64, tagMin: 16, tagMax: 64 };
// Inputs longer than this are never a valid password (policy caps at 256 characters); they still cost one hash.
const VERIFY_INPUT_MAX = 4096;

function runArgon2(params: Argon2Parameters): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    argon2("argon2id", params, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

const B64_RE = /^[A-Za-z0-9+/]+$/;

// PHC strings use standard base64 without padding.
function b64(bytes: Buffer): string {
  return bytes.toString("base64").replace(/=+$/, "");
}

function unb64(text: string): Buffer | null {
  if (!B64_RE.test(text)) return null;
  const bytes = Buffer.from(text, "base64");
  return b64(bytes) === text ? bytes : null;
}

interface ParsedPhc {
  memory: number;
  passes: number;
  parallelism: number;
  salt: Buffer;
  hash: Buffer;
}

function parseInt10(text: string | undefined, max: number): number | null {
  if (text === undefined || !/^[1-9][0-9]{0,9}$/.test(text)) return null;
  const n = Number(text);
  return n <= max ? n : null;
}

/** Parses `$argon2id$v=19$m=<m>,t=<t>,p=<p>$<salt>$<hash>`; null on any deviation or out-of-bounds value. */
function parsePhc(phc: string): ParsedPhc | null {
  if (phc.length > 512) return null;
  const parts = phc.split("$");
  if (parts.length !== 6 || parts[0] !== "" || parts[1] !== "argon2id" || parts[2] !== "v=19") return null;
  const m = /^m=([0-9]+),t=([0-9]+),p=([0-9]+)$/.exec(parts[3] ?? "");
  if (!m) return null;
  const memory = parseInt10(m[1], LIMITS.memoryMax);
  const passes = parseInt10(m[2], LIMITS.passesMax);
  const parallelism = parseInt10(m[3], LIMITS.parallelismMax);
  if (memory === null || passes === null || parallelism === null) return null;
  if (passes < 1 || memory < 8 * parallelism) return null;
  const salt = unb64(parts[4] ?? "");
  const hash = unb64(parts[5] ?? "");
  if (!salt || !hash) return null;
  if (salt.length < LIMITS.saltMin || salt.length > LIMITS.saltMax) return null;
  if (hash.length < LIMITS.tagMin || hash.length > LIMITS.tagMax) return null;
  return { memory, passes, parallelism, salt, hash };
}

// A fixed hash with the current parameters that no password matches (its tag is all zeroes): verifying
// against it costs exactly what verifying a real hash costs.
const DUMMY: ParsedPhc = {
  memory: ARGON2_PARAMS.memory,
  passes: ARGON2_PARAMS.passes,
  parallelism: ARGON2_PARAMS.parallelism,
  salt: Buffer.from("parhelion-dummy!", "utf8"),
  hash: Buffer.alloc(ARGON2_PARAMS.tagLength),
};

/** Hashes a password with argon2id into a PHC string `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`. */
export async function hashPassword(password: string): Promise<string> {
  if (typeof password !== "string") throw new ParhelionError("ERR_VALIDATION", "password must be a string");
  const salt = randomBytes(ARGON2_PARAMS.saltLength);
  const { memory, passes, parallelism, tagLength } = ARGON2_PARAMS;
  const tag = await runArgon2({ message: Buffer.from(password, "utf8"), nonce: salt, memory, passes, parallelism, tagLength });
  return `$argon2id$v=19$m=${memory},t=${passes},p=${parallelism}$${b64(salt)}$${b64(tag)}`;
}

/**
 * Verifies a password against a stored PHC string in constant time. Never throws: a null, malformed or
 * out-of-bounds hash answers false after spending one argon2 computation, as a real check would.
 */
export async function verifyPassword(password: string, phc: string | null): Promise<boolean> {
  const parsed = typeof phc === "string" ? parsePhc(phc) : null;
  const usable = parsed !== null && typeof password === "string" && password.length <= VERIFY_INPUT_MAX;
  const target = usable ? parsed : DUMMY;
  const message = usable ? Buffer.from(password, "utf8") : Buffer.from(typeof password === "string" ? password.slice(0, VERIFY_INPUT_MAX) : "", "utf8");
  try {
    const tag = await runArgon2({
      message,
      nonce: target.salt,
      memory: target.memory,
      passes: target.passes,
      parallelism: target.parallelism,
      tagLength: target.hash.length,
    });
    return timingSafeEqual(tag, target.hash) && usable;
  } catch {
    return false;
  }
}

/** True if a stored hash was made with weaker (or different) parameters than today's and should be redone at next login. */
export function needsRehash(phc: string): boolean {
  const p = parsePhc(phc);
  return (
    p === null ||
    p.memory !== ARGON2_PARAMS.memory ||
    p.passes !== ARGON2_PARAMS.passes ||
    p.parallelism !== ARGON2_PARAMS.parallelism ||
    p.salt.length !== ARGON2_PARAMS.saltLength ||
    p.hash.length !== ARGON2_PARAMS.tagLength
  );
}

// Among the most common passwords of public breach corpora, plus the 12+ character variants people pick
// to satisfy a length rule. Compared case-insensitively. Short entries are kept so the list stays
// meaningful if the minimum length is ever lowered.
const COMMON_PASSWORDS: ReadonlySet<string> = new Set([
  "123456", "123456789", "12345678", "password", "qwerty", "12345", "1234567", "111111", "123123", "abc123",
  "1234567890", "password1", "iloveyou", "000000", "qwerty123", "1q2w3e4r", "admin", "letmein", "welcome", "monkey",
  "dragon", "football", "baseball", "sunshine", "princess", "master", "shadow", "superman", "trustno1", "passw0rd",
  "123456789012", "1234567890123", "12345678901234", "123456123456", "123123123123", "111111111111", "000000000000",
  "121212121212", "112233445566", "987654321098", "098765432109", "qwertyuiop12", "qwertyuiopas", "qwertyuiop123",
  "qwertyuiopasdfgh", "qwertyuiopasdfghjkl", "asdfghjkl123", "asdfghjkl;'", "zxcvbnm12345", "1qaz2wsx3edc",
  "1qaz2wsx3edc4rfv", "1q2w3e4r5t6y", "1q2w3e4r5t6y7u8i", "q1w2e3r4t5y6", "qazwsxedcrfv", "zaq12wsxcde3",
  "password1234", "password12345", "password123456", "password123!", "password1234!", "passwordpassword",
  "p@ssw0rd1234", "p@ssword1234", "passw0rd1234", "mypassword123", "changeme1234", "changemenow!", "letmein12345",
  "letmeinplease", "welcome12345", "welcome123456", "welcometo2024", "iloveyou1234", "iloveyouforever",
  "administrator", "administrator1", "admin1234567", "adminadmin123", "rootpassword", "root12345678",
  "superuser1234", "postgres1234", "postgrespassword", "database1234", "secretpassword", "supersecret123",
  "trustno1trustno1", "football1234", "baseball1234", "basketball123", "sunshine1234", "princess1234",
  "monkey123456", "dragon123456", "starwars1234", "pokemon12345", "minecraft123", "computer1234", "internet1234",
  "abcdefghijkl", "abcdefghijklm", "abcd12345678", "abc123456789", "aaaaaa111111", "correcthorsebatterystaple",
  "summer2024!!", "winter2024!!", "spring2024!!", "autumn2024!!",
]);

/**
 * Checks a new password against the policy; throws ERR_PASSWORD_POLICY naming the first rule it breaks:
 * 12..256 characters, not one repeated character, not (containing) the email or its local part, not common.
 */
export function checkPasswordPolicy(password: string, ctx: { email: string }): void {
  if (typeof password !== "string") throw new ParhelionError("ERR_PASSWORD_POLICY", "The password must be a string.");
  const chars = [...password];
  if (chars.length < PASSWORD_MIN_LENGTH) {
    throw new ParhelionError("ERR_PASSWORD_POLICY", `The password must be at least ${PASSWORD_MIN_LENGTH} characters long.`);
  }
  if (chars.length > PASSWORD_MAX_LENGTH) {
    throw new ParhelionError("ERR_PASSWORD_POLICY", `The password must be at most ${PASSWORD_MAX_LENGTH} characters long.`);
  }
  if (chars.every((c) => c === chars[0])) {
    throw new ParhelionError("ERR_PASSWORD_POLICY", "The password must not be a single repeated character.");
  }
  const lower = password.toLowerCase();
  const email = (ctx.email ?? "").trim().toLowerCase();
  const at = email.lastIndexOf("@");
  const local = at > 0 ? email.slice(0, at) : email;
  // Containment of a very short local part ("a@x.io") would forbid most passwords; require 3+ characters.
  if (email.length > 0 && (lower === email || lower.includes(email) || lower === local || (local.length >= 3 && lower.includes(local)))) {
    throw new ParhelionError("ERR_PASSWORD_POLICY", "The password must not contain your email address or its user name.");
  }
  if (COMMON_PASSWORDS.has(lower)) {
    throw new ParhelionError("ERR_PASSWORD_POLICY", "The password is too common; choose another.");
  }
}
