import { randomBytes, timingSafeEqual } from "node:crypto";
import * as graphene from "graphene-pk11";
import { ParhelionError } from "../lib/errors.js";
import { hmacSha256 } from "../lib/hmac.js";
import { keyUnavailable } from "./errors.js";
import { contextBytes, probe, type KeyProvider, type ProviderDescription, type ProviderHealth, type WrapContext } from "./provider.js";

export interface Pkcs11Options {
  /** Path of the PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so). */
  module: string;
  /** Label of the token holding the root key. */
  token: string;
  /** Label of the AES-256 root key on the token. */
  keyLabel: string;
  /** The token's user PIN (never defaulted, never logged). */
  pin: string;
  /** Make the key when the token has none (the platform's root key); false for a customer's key, which must exist. */
  create?: boolean;
}

const IV_BYTES = 12;
const TAG_BYTES = 16;
const WRAP_VERSION = 1;

// One loaded module per library path: C_Finalize ends every session of the process, so it runs only when
// the last provider using the library closes. `logins` holds, per token label, an HMAC (under a key of this
// process) of the PIN that logged this process in: PKCS#11 login state is per process and token, so a second
// C_Login answers CKR_USER_ALREADY_LOGGED_IN without checking the PIN it was given, and this is what checks it.
const modules = new Map<string, { mod: graphene.Module; refs: number; logins: Map<string, Buffer> }>();
const pinKey = randomBytes(32);
const pinTag = (pin: string): Buffer => hmacSha256(pinKey, pin);

function acquire(path: string): { mod: graphene.Module; logins: Map<string, Buffer> } {
  const m = modules.get(path);
  if (m) {
    m.refs++;
    return m;
  }
  const mod = graphene.Module.load(path, "parhelion");
  mod.initialize();
  const entry = { mod, refs: 1, logins: new Map<string, Buffer>() };
  modules.set(path, entry);
  return entry;
}

function release(path: string): void {
  const m = modules.get(path);
  if (!m) return;
  if (--m.refs > 0) return;
  modules.delete(path);
  try {
    m.mod.finalize();
  } catch {
    // already finalized
  }
}

function configError(message: string, cause?: unknown): ParhelionError {
  return new ParhelionError("ERR_CONFIG", message, cause === undefined ? undefined : { cause });
}

/**
 * The root key is an AES-256 secret key on an HSM token (PKCS#11, e.g. SoftHSM2 or a network HSM), found by
 * label and made on first start when the token has none: CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE, not
 * CKA_EXTRACTABLE, so it never leaves the HSM. Keys are wrapped inside the HSM with CKM_AES_GCM (96-bit
 * random IV, 128-bit tag) and the context as additional data, which AES-KW could not bind.
 */
export class Pkcs11KeyProvider implements KeyProvider {
  private constructor(
    private readonly opts: Omit<Pkcs11Options, "pin">,
    private readonly session: graphene.Session,
    private readonly key: graphene.SecretKey,
    private readonly keyId: string,
    readonly created: boolean,
  ) {}

  /** Loads the module, logs in to the token and finds (or makes) the root key. ERR_CONFIG when it cannot. */
  static open(o: Pkcs11Options): Pkcs11KeyProvider {
    let mod: graphene.Module;
    let logins: Map<string, Buffer>;
    try {
      ({ mod, logins } = acquire(o.module));
    } catch (err) {
      throw configError(`cannot load the PKCS#11 module ${o.module}: ${(err as Error).message}`, err);
    }
    let session: graphene.Session | undefined;
    try {
      const slots = mod.getSlots(true);
      let slot: graphene.Slot | undefined;
      for (let i = 0; i < slots.length; i++) {
        const s = slots.items(i);
        if (s.getToken().label.trim() === o.token) {
          slot = s;
          break;
        }
      }
      if (!slot) throw configError(`no PKCS#11 token labelled "${o.token}" in ${o.module}`);
      session = slot.open(graphene.SessionFlag.SERIAL_SESSION | graphene.SessionFlag.RW_SESSION);
      try {
        session.login(o.pin, graphene.UserType.USER);
        logins.set(o.token, pinTag(o.pin));
      } catch (err) {
        // The PKCS#11 return code only (CKR_PIN_INCORRECT, CKR_PIN_LOCKED, ...): never the PIN.
        if (!/CKR_USER_ALREADY_LOGGED_IN/.test((err as Error).message)) {
          throw configError(`cannot log in to the PKCS#11 token "${o.token}": ${/CKR_[A-Z_]+/.exec((err as Error).message)?.[0] ?? "error"}`, err);
        }
        // Login state is per token and process: another provider of this process logged in, and the token did
        // not look at this PIN. It must be the one that did (a customer key given with a wrong PIN is refused even
        // while the token is open for another group). A login made outside this module leaves no record to compare.
        const known = logins.get(o.token);
        if (known !== undefined && !timingSafeEqual(known, pinTag(o.pin))) {
          throw configError(`cannot log in to the PKCS#11 token "${o.token}": CKR_PIN_INCORRECT`);
        }
      }
      const template = { class: graphene.ObjectClass.SECRET_KEY, keyType: graphene.KeyType.AES, label: o.keyLabel };
      const found = session.find(template);
      if (found.length > 1) throw configError(`the token "${o.token}" holds ${found.length} AES keys labelled "${o.keyLabel}": keep one`);
      let created = false;
      let key: graphene.SecretKey;
      if (found.length === 1) {
        key = found.items(0).toType<graphene.SecretKey>();
      } else if (o.create === false) {
        throw configError(`the token "${o.token}" holds no AES key labelled "${o.keyLabel}"`);
      } else {
        key = session.generateKey(graphene.KeyGenMechanism.AES, {
          ...template, id: randomBytes(16), token: true, private: true, sensitive: true, extractable: false, modifiable: false,
          encrypt: true, decrypt: true, wrap: false, unwrap: false, sign: false, verify: false, derive: false, valueLen: 32,
        });
        created = true;
      }
      if (key.getAttribute({ extractable: null }).extractable !== false || key.getAttribute({ sensitive: null }).sensitive !== true) {
        throw configError(`the root key "${o.keyLabel}" on token "${o.token}" is extractable or not sensitive: make a non-extractable, sensitive AES-256 key`);
      }
      if (key.getAttribute({ valueLen: null }).valueLen !== 32) throw configError(`the root key "${o.keyLabel}" on token "${o.token}" is not an AES-256 key`);
      const id = key.getAttribute({ id: null }).id;
      const keyId = `pkcs11:${o.token}/${o.keyLabel}${id && id.length > 0 ? `#${id.toString("hex")}` : ""}`;
      return new Pkcs11KeyProvider({ module: o.module, token: o.token, keyLabel: o.keyLabel }, session, key, keyId, created);
    } catch (err) {
      try {
        session?.close();
      } catch {
        // closing after a failure
      }
      release(o.module);
      if (err instanceof ParhelionError) throw err;
      throw configError(`cannot use the PKCS#11 token "${o.token}": ${(err as Error).message}`, err);
    }
  }

  async wrap(key: Buffer, context: WrapContext): Promise<Buffer> {
    try {
      const iv = randomBytes(IV_BYTES);
      const cipher = this.session.createCipher({ name: "AES_GCM", params: new graphene.AesGcmParams(iv, contextBytes(context), TAG_BYTES * 8) }, this.key);
      const out = cipher.once(key, Buffer.alloc(key.length + TAG_BYTES + 16));
      return Buffer.concat([Buffer.from([WRAP_VERSION]), iv, out]);
    } catch (err) {
      throw keyUnavailable(err);
    }
  }

  async unwrap(wrapped: Buffer, context: WrapContext): Promise<Buffer> {
    if (!Buffer.isBuffer(wrapped) || wrapped.length < 1 + IV_BYTES + TAG_BYTES + 1 || wrapped[0] !== WRAP_VERSION) throw keyUnavailable();
    try {
      const decipher = this.session.createDecipher({ name: "AES_GCM", params: new graphene.AesGcmParams(wrapped.subarray(1, 1 + IV_BYTES), contextBytes(context), TAG_BYTES * 8) }, this.key);
      return Buffer.from(decipher.once(wrapped.subarray(1 + IV_BYTES), Buffer.alloc(wrapped.length)));
    } catch (err) {
      throw keyUnavailable(err);
    }
  }

  describe(): ProviderDescription {
    return { provider: "pkcs11", keyId: this.keyId, details: { module: this.opts.module, token: this.opts.token, keyLabel: this.opts.keyLabel } };
  }

  /** A wrap and unwrap in the HSM; when that fails, the PKCS#11 return code (e.g. CKR_KEY_FUNCTION_NOT_PERMITTED for a key whose use was turned off). */
  async health(): Promise<ProviderHealth> {
    const h = await probe(this);
    if (h.ok) return h;
    const ctx = { purpose: "parhelion-health" };
    const key = randomBytes(32);
    try {
      await this.unwrap(await this.wrap(key, ctx), ctx);
      return h;
    } catch (err) {
      const code = /CKR_[A-Z_]+/.exec(String(((err as { cause?: unknown }).cause as Error | undefined)?.message))?.[0];
      return code ? { ok: false, detail: code } : h;
    } finally {
      key.fill(0);
    }
  }

  /** Closes the session; the token logs the process out when its last session closes (PKCS#11 5.6). */
  async close(): Promise<void> {
    try {
      this.session.close();
    } catch {
      // already closed
    }
    release(this.opts.module);
  }
}
