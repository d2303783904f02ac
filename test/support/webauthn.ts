import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from "node:crypto";
import { isoCBOR } from "@simplewebauthn/server/helpers";

// A software WebAuthn authenticator (a "security key" in a test): an ES256 key pair from node:crypto,
// authenticator data built by hand (RP id hash, flags, signature counter, AAGUID, COSE public key) and the
// "none" attestation as CBOR. Enough for the server to run the real verification of both ceremonies.

const sha256 = (b: Buffer | string) => createHash("sha256").update(b).digest();
const b64u = (b: Buffer | Uint8Array) => Buffer.from(b).toString("base64url");

const FLAG_UP = 0x01;
const FLAG_UV = 0x04;
const FLAG_AT = 0x40;

export interface CeremonyOverrides {
  /** The origin the "browser" reports in clientDataJSON. */
  origin?: string;
  /** The RP id whose hash goes into the authenticator data. */
  rpId?: string;
  /** Signature counter to report (default: one more than the last). */
  counter?: number;
  /** Challenge to sign instead of the server's. */
  challenge?: string;
  /** clientDataJSON type (webauthn.create / webauthn.get). */
  type?: string;
}

export class SoftAuthenticator {
  readonly credentialId = randomBytes(32);
  readonly aaguid = randomBytes(16);
  counter = 0;
  private readonly privateKey: KeyObject;
  private readonly cosePublicKey: Uint8Array;

  constructor(
    readonly origin: string,
    readonly rpId: string,
  ) {
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    this.privateKey = privateKey;
    const jwk = publicKey.export({ format: "jwk" });
    // COSE_Key (RFC 9053): kty EC2 (2), alg ES256 (-7), crv P-256 (1), x, y.
    const key = new Map<number, number | Uint8Array>([
      [1, 2],
      [3, -7],
      [-1, 1],
      [-2, new Uint8Array(Buffer.from(jwk.x!, "base64url"))],
      [-3, new Uint8Array(Buffer.from(jwk.y!, "base64url"))],
    ]);
    this.cosePublicKey = isoCBOR.encode(key);
  }

  get id(): string {
    return b64u(this.credentialId);
  }

  private authData(rpId: string, flags: number, counter: number, attested: boolean): Buffer {
    const c = Buffer.alloc(4);
    c.writeUInt32BE(counter);
    const parts = [sha256(rpId), Buffer.from([flags]), c];
    if (attested) {
      const len = Buffer.alloc(2);
      len.writeUInt16BE(this.credentialId.length);
      parts.push(this.aaguid, len, this.credentialId, Buffer.from(this.cosePublicKey));
    }
    return Buffer.concat(parts);
  }

  private clientData(type: string, challenge: string, origin: string): Buffer {
    return Buffer.from(JSON.stringify({ type, challenge, origin, crossOrigin: false }));
  }

  /** Answers registration options as navigator.credentials.create() would (RegistrationResponseJSON). */
  register(options: { challenge: string }, o: CeremonyOverrides = {}) {
    const counter = o.counter ?? this.counter;
    const authData = this.authData(o.rpId ?? this.rpId, FLAG_UP | FLAG_UV | FLAG_AT, counter, true);
    const attestationObject = isoCBOR.encode(new Map<string, string | Uint8Array | Map<string, string>>([
      ["fmt", "none"],
      ["attStmt", new Map<string, string>()],
      ["authData", new Uint8Array(authData)],
    ]));
    const clientDataJSON = this.clientData(o.type ?? "webauthn.create", o.challenge ?? options.challenge, o.origin ?? this.origin);
    return {
      id: this.id, rawId: this.id, type: "public-key" as const,
      response: { clientDataJSON: b64u(clientDataJSON), attestationObject: b64u(attestationObject), transports: ["usb"] },
      clientExtensionResults: {},
      authenticatorAttachment: "cross-platform" as const,
    };
  }

  /** Answers authentication options as navigator.credentials.get() would (AuthenticationResponseJSON). */
  authenticate(options: { challenge: string }, o: CeremonyOverrides = {}) {
    const counter = o.counter ?? this.counter + 1;
    if (o.counter === undefined) this.counter = counter;
    const authData = this.authData(o.rpId ?? this.rpId, FLAG_UP | FLAG_UV, counter, false);
    const clientDataJSON = this.clientData(o.type ?? "webauthn.get", o.challenge ?? options.challenge, o.origin ?? this.origin);
    // ES256 signatures in WebAuthn are DER-encoded ECDSA over authenticatorData ‖ SHA-256(clientDataJSON).
    const signature = sign("sha256", Buffer.concat([authData, sha256(clientDataJSON)]), this.privateKey);
    return {
      id: this.id, rawId: this.id, type: "public-key" as const,
      response: { clientDataJSON: b64u(clientDataJSON), authenticatorData: b64u(authData), signature: b64u(signature) },
      clientExtensionResults: {},
      authenticatorAttachment: "cross-platform" as const,
    };
  }
}
