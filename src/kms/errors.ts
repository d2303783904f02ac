import { ParhelionError } from "../lib/errors.js";

/** The one message of every decryption or unwrap failure: it never says which part failed. */
export const KEY_UNAVAILABLE_MESSAGE = "Encrypted data could not be decrypted: its key is unavailable or disabled, or the data was altered.";

/**
 * The opaque error of every decryption, unwrap and provider failure. The cause is kept for the server log
 * only (problem+json masks it as for every error: `details` is never set here).
 */
export function keyUnavailable(cause?: unknown): ParhelionError {
  return new ParhelionError("ERR_KEY_UNAVAILABLE", KEY_UNAVAILABLE_MESSAGE, cause === undefined ? undefined : { cause });
}
