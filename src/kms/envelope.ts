import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { keyUnavailable } from "./errors.js";

/**
 * parhelion's envelope: AES-256-GCM with a 96-bit random IV and a 128-bit tag (NIST SP 800-38D).
 *
 *   byte 0        version (1)
 *   byte 1        n, the length of the key id (1..64)
 *   bytes 2..2+n  key id (ASCII: the data key or key-encryption key that sealed it)
 *   12 bytes      IV
 *   ...           ciphertext
 *   16 bytes      tag
 *
 * The additional data is the header (version, n, key id) followed by the purpose string (e.g.
 * `mfa_totp.secret:<row id>`), so neither the key id nor the purpose can be changed, and a ciphertext
 * copied to another row or column does not open.
 */
export const ENVELOPE_VERSION = 1;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const KEY_ID = /^[A-Za-z0-9._:-]{1,64}$/;

/** Checks a key id: 1..64 characters of [A-Za-z0-9._:-]. */
export function checkKeyId(keyId: string): string {
  if (!KEY_ID.test(keyId)) throw new TypeError("a key id is 1..64 characters of [A-Za-z0-9._:-]");
  return keyId;
}

function header(keyId: string): Buffer {
  const id = Buffer.from(checkKeyId(keyId), "ascii");
  return Buffer.concat([Buffer.from([ENVELOPE_VERSION, id.length]), id]);
}

/** Seals plaintext under a 32-byte key, naming the key by keyId and binding the purpose. */
export function seal(key: Buffer, keyId: string, purpose: string, plaintext: Buffer): Buffer {
  if (key.length !== 32) throw new TypeError("an envelope key is 32 bytes");
  const head = header(keyId);
  const iv = randomBytes(IV_BYTES);
  const c = createCipheriv("aes-256-gcm", key, iv, { authTagLength: TAG_BYTES });
  c.setAAD(Buffer.concat([head, Buffer.from(purpose, "utf8")]));
  const body = Buffer.concat([c.update(plaintext), c.final()]);
  return Buffer.concat([head, iv, body, c.getAuthTag()]);
}

/** The key id an envelope names, or ERR_KEY_UNAVAILABLE when it is not an envelope. */
export function envelopeKeyId(envelope: Buffer): string {
  if (!Buffer.isBuffer(envelope) || envelope.length < 2) throw keyUnavailable();
  const n = envelope[1] ?? 0;
  if (envelope[0] !== ENVELOPE_VERSION || n < 1 || n > 64 || envelope.length < 2 + n + IV_BYTES + TAG_BYTES) throw keyUnavailable();
  const id = envelope.subarray(2, 2 + n).toString("latin1");
  if (!KEY_ID.test(id)) throw keyUnavailable();
  return id;
}

/** Opens an envelope with the key it names; any failure is the one opaque ERR_KEY_UNAVAILABLE. */
export function open(key: Buffer, purpose: string, envelope: Buffer): Buffer {
  const keyId = envelopeKeyId(envelope);
  const headLen = 2 + keyId.length;
  try {
    const iv = envelope.subarray(headLen, headLen + IV_BYTES);
    const tag = envelope.subarray(envelope.length - TAG_BYTES);
    const d = createDecipheriv("aes-256-gcm", key, iv, { authTagLength: TAG_BYTES });
    d.setAAD(Buffer.concat([envelope.subarray(0, headLen), Buffer.from(purpose, "utf8")]));
    d.setAuthTag(tag);
    return Buffer.concat([d.update(envelope.subarray(headLen + IV_BYTES, envelope.length - TAG_BYTES)), d.final()]);
  } catch (err) {
    throw keyUnavailable(err);
  }
}
