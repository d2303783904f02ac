// @peculiar/x509's dependency tsyringe throws at load time without a Reflect metadata polyfill;
// this import must stay ahead of the @peculiar/x509 one.
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { KeyObject, X509Certificate, createPrivateKey, randomBytes, webcrypto } from "node:crypto";
import { closeSync, chmodSync, existsSync, fchmodSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from "node:fs";
import { isIP } from "node:net";
import { join } from "node:path";
import { ParhelionError } from "../lib/errors.js";

x509.cryptoProvider.set(webcrypto);

/** A PEM certificate and its PEM (PKCS#8) private key. */
export interface CertAndKey {
  certPem: string;
  keyPem: string;
}

export interface CreateCAOptions {
  commonName: string;
  validDays: number;
}

export interface IssueServerCertOptions {
  commonName: string;
  dnsNames: string[];
  ipAddresses: string[];
  validDays: number;
}

export interface EnsureTlsMaterialOptions {
  /** Where parhelion keeps the CA and server certificate it makes (created 0700). */
  dir: string;
  /** Names and addresses clients use; localhost, 127.0.0.1 and ::1 are always included. */
  hosts: string[];
  /** The operator's own certificate (chain) and key; both or neither. */
  certFile?: string | undefined;
  keyFile?: string | undefined;
  /** Injectable clock for tests. */
  now?: () => Date;
}

export interface TlsMaterial extends CertAndKey {
  /** The CA to hand to clients (sslrootcert), or null when the operator supplied the certificate. */
  caPem: string | null;
  caFile: string | null;
  /** Where the certificate and key live on disk. */
  certFile: string;
  keyFile: string;
}

/** Days before expiry at which ensureTlsMaterial issues a fresh server certificate. */
export const RENEW_BEFORE_DAYS = 30;
export const CA_VALID_DAYS = 3650;
export const SERVER_VALID_DAYS = 365;
const DAY_MS = 86_400_000;
/** notBefore is back-dated this much so a client with a slightly slow clock accepts a new certificate. */
const BACKDATE_MS = 5 * 60_000;
const ALWAYS_HOSTS = ["localhost", "127.0.0.1", "::1"];

function checkOptions(what: string, commonName: unknown, validDays: unknown): void {
  if (typeof commonName !== "string" || commonName.length === 0 || commonName.length > 64) {
    throw new TypeError(`${what}: commonName must be a string of 1 to 64 characters`);
  }
  if (typeof validDays !== "number" || !Number.isInteger(validDays) || validDays < 1 || validDays > 36_500) {
    throw new TypeError(`${what}: validDays must be an integer from 1 to 36500`);
  }
}

/** The name CN=<commonName>, a UTF8String as RFC 5280 4.1.2.4 recommends. */
const name = (commonName: string): x509.Name => new x509.Name([{ CN: [{ utf8String: commonName }] }]);

/** 16 random bytes, positive and with a non-zero first byte so the INTEGER is exactly 16 bytes; as hex. */
function serialNumber(): string {
  const b = randomBytes(16);
  b[0] = ((b[0] ?? 0) & 0x7f) | 0x40;
  return b.toString("hex");
}

const ECDSA_P256 = { name: "ECDSA", namedCurve: "P-256" } as const;
/** Signatures are ecdsa-with-SHA256 whatever the curve of the signing key. */
const SIGNING_ALGORITHM = { name: "ECDSA", hash: "SHA-256" } as const;

function newKey(): Promise<webcrypto.CryptoKeyPair> {
  return webcrypto.subtle.generateKey(ECDSA_P256, true, ["sign", "verify"]);
}

/** The PKCS#8 PEM form of a WebCrypto private key, exactly as node:crypto writes it. */
function keyPem(key: webcrypto.CryptoKey): string {
  return KeyObject.from(key).export({ type: "pkcs8", format: "pem" }).toString();
}

/** PEM as node:crypto writes it (64-column base64, trailing newline). */
function certPem(cert: x509.X509Certificate): string {
  return new X509Certificate(Buffer.from(cert.rawData)).toString();
}

function validity(validDays: number, now: Date): { notBefore: Date; notAfter: Date } {
  return { notBefore: new Date(now.getTime() - BACKDATE_MS), notAfter: new Date(now.getTime() + validDays * DAY_MS) };
}

/** Creates a self-signed ECDSA P-256 certificate authority. */
export async function createCA(opts: CreateCAOptions, now: Date = new Date()): Promise<CertAndKey> {
  checkOptions("createCA", opts?.commonName, opts?.validDays);
  const keys = await newKey();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: name(opts.commonName),
    keys,
    ...validity(opts.validDays, now),
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: certPem(cert), keyPem: keyPem(keys.privateKey) };
}

/**
 * The canonical text of an IP address for an iPAddress GeneralName. IPv6 goes through the WHATWG URL
 * parser, which turns an embedded dotted IPv4 tail (::ffff:10.0.0.1) into hex groups that
 * @peculiar/x509's IPv6 parser reads correctly; a zone ID (fe80::1%eth0) has no place in a certificate.
 */
function canonicalIp(ip: string): string {
  const family = isIP(ip);
  if (family === 4) return ip;
  if (family === 6) {
    try {
      return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
    } catch {
      // a zone ID, which URL rejects
    }
  }
  throw new ParhelionError("ERR_CONFIG", `"${ip}" is not an IP address`);
}

const DNS_NAME = /^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

function checkDnsName(n: string): string {
  const lower = n.toLowerCase().replace(/\.$/, "");
  if (lower.length > 253 || !DNS_NAME.test(lower)) throw new ParhelionError("ERR_CONFIG", `"${n}" is neither a valid DNS name nor an IP address`);
  return lower;
}

/** WebCrypto names of the curves an ECDSA CA key may use. */
const CURVES: Record<string, string> = { prime256v1: "P-256", secp384r1: "P-384", secp521r1: "P-521" };

/** Issues an ECDSA P-256 TLS server certificate signed by the CA. */
export async function issueServerCert(ca: CertAndKey, opts: IssueServerCertOptions, now: Date = new Date()): Promise<CertAndKey> {
  checkOptions("issueServerCert", opts?.commonName, opts?.validDays);
  if (!Array.isArray(opts.dnsNames) || !Array.isArray(opts.ipAddresses) || opts.dnsNames.length + opts.ipAddresses.length === 0) {
    throw new TypeError("issueServerCert: dnsNames and ipAddresses must be arrays, together naming at least one host");
  }
  const caCert = new X509Certificate(ca.certPem);
  const caKey = createPrivateKey(ca.keyPem);
  if (!caCert.ca || !caCert.checkPrivateKey(caKey)) throw new TypeError("issueServerCert: ca is not a CA certificate with its private key");
  const namedCurve = caKey.asymmetricKeyType === "ec" ? CURVES[caKey.asymmetricKeyDetails?.namedCurve ?? ""] : undefined;
  if (namedCurve === undefined) throw new TypeError("issueServerCert: the CA key must be an ECDSA P-256, P-384 or P-521 key");
  const signingKey = await webcrypto.subtle.importKey("pkcs8", caKey.export({ type: "pkcs8", format: "der" }), { name: "ECDSA", namedCurve }, false, ["sign"]);
  const issuer = new x509.X509Certificate(caCert.raw);

  const sans: x509.JsonGeneralNames = [
    ...opts.dnsNames.map((d) => ({ type: "dns" as const, value: checkDnsName(d) })),
    ...opts.ipAddresses.map((ip) => ({ type: "ip" as const, value: canonicalIp(ip) })),
  ];
  const keys = await newKey();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    // The issuer is the CA's subject as the CA certificate encodes it.
    issuer: issuer.subjectName,
    subject: name(opts.commonName),
    publicKey: keys.publicKey,
    signingKey,
    ...validity(opts.validDays, now),
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(sans),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(issuer.publicKey),
    ],
  });
  return { certPem: certPem(cert), keyPem: keyPem(keys.privateKey) };
}

/** SHA-256 fingerprint of a PEM certificate, as colon-separated hex (the form `openssl x509 -fingerprint` prints). */
export function fingerprint(certPem: string): string {
  return new X509Certificate(certPem).fingerprint256;
}

/** Writes a file so readers see the old content or the new, never a part: temp file, fsync, rename. */
export function writeFileAtomic(path: string, data: string, mode: number): void {
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
  const fd = openSync(tmp, "wx", mode);
  try {
    fchmodSync(fd, mode);
    const buf = Buffer.from(data);
    for (let off = 0; off < buf.length; ) off += writeSync(fd, buf, off);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  closeSync(fd);
  try {
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

function readOperatorFile(path: string, what: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw new ParhelionError("ERR_CONFIG", `cannot read the TLS ${what} file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
}

function loadOperatorMaterial(certFile: string, keyFile: string, now: Date): TlsMaterial {
  const certPem = readOperatorFile(certFile, "certificate");
  const keyPem = readOperatorFile(keyFile, "key");
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch (err) {
    throw new ParhelionError("ERR_CONFIG", `${certFile} does not hold a PEM certificate`, { cause: err });
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch (err) {
    throw new ParhelionError("ERR_CONFIG", `${keyFile} does not hold an unencrypted PEM private key`, { cause: err });
  }
  if (!cert.checkPrivateKey(key)) {
    throw new ParhelionError("ERR_CONFIG", `the private key in ${keyFile} does not match the certificate in ${certFile}`);
  }
  if (cert.validToDate.getTime() <= now.getTime()) {
    throw new ParhelionError("ERR_CONFIG", `the certificate in ${certFile} expired on ${cert.validToDate.toISOString()}`);
  }
  if (cert.validFromDate.getTime() > now.getTime()) {
    throw new ParhelionError("ERR_CONFIG", `the certificate in ${certFile} is not valid before ${cert.validFromDate.toISOString()}`);
  }
  return { certPem, keyPem, caPem: null, caFile: null, certFile, keyFile };
}

/** A certificate and key read from the managed directory, or why they cannot be used. */
function loadPair(certFile: string, keyFile: string): { pair: CertAndKey; cert: X509Certificate; key: KeyObject } | "missing" | "broken" {
  const haveCert = existsSync(certFile);
  const haveKey = existsSync(keyFile);
  if (!haveCert && !haveKey) return "missing";
  if (!haveCert || !haveKey) return "broken";
  try {
    const pair = { certPem: readFileSync(certFile, "utf8"), keyPem: readFileSync(keyFile, "utf8") };
    const cert = new X509Certificate(pair.certPem);
    const key = createPrivateKey(pair.keyPem);
    return cert.checkPrivateKey(key) ? { pair, cert, key } : "broken";
  } catch {
    return "broken";
  }
}

function covers(cert: X509Certificate, hosts: string[]): boolean {
  return hosts.every((h) => (isIP(h) ? cert.checkIP(h) !== undefined : cert.checkHost(h, { wildcards: true, partialWildcards: false }) !== undefined));
}

/**
 * The API's TLS certificate and key. With certFile/keyFile, the operator's own (checked: readable,
 * key matches, within its validity). Otherwise parhelion's own CA in `dir` (made once, kept) and a
 * server certificate it issues for `hosts` plus localhost, 127.0.0.1 and ::1, issued again when it
 * expires within 30 days, no longer covers the hosts, or was not issued by the CA.
 */
export async function ensureTlsMaterial(opts: EnsureTlsMaterialOptions): Promise<TlsMaterial> {
  const now = opts.now?.() ?? new Date();
  if ((opts.certFile === undefined) !== (opts.keyFile === undefined)) {
    throw new ParhelionError("ERR_CONFIG", "a TLS certificate file and key file must be given together");
  }
  if (opts.certFile !== undefined && opts.keyFile !== undefined) return loadOperatorMaterial(opts.certFile, opts.keyFile, now);

  const requested = [...new Set([...ALWAYS_HOSTS, ...opts.hosts])];
  const ca = await ensureCA(opts.dir, now);
  const certFile = join(opts.dir, "server.crt");
  const keyFile = join(opts.dir, "server.key");
  const pair = await ensureServerCert(ca, { certFile, keyFile, hosts: requested, now });
  return { certPem: pair.certPem, keyPem: pair.keyPem, caPem: ca.certPem, caFile: ca.caFile, certFile, keyFile };
}

/** parhelion's own CA in `dir` (made once, kept; made again only when expired). */
export async function ensureCA(dir: string, now: Date = new Date()): Promise<CertAndKey & { caFile: string }> {
  // Traversable, not listable: ca.crt (0644) is what an operator's clients trust, also when parhelion runs as
  // root through sudo; every key beside it stays 0600.
  mkdirSync(dir, { recursive: true, mode: 0o711 });
  chmodSync(dir, 0o711);
  const caFile = join(dir, "ca.crt");
  const caKeyFile = join(dir, "ca.key");
  let ca = loadPair(caFile, caKeyFile);
  if (ca === "broken") {
    throw new ParhelionError("ERR_CONFIG", `${caFile} and ${caKeyFile} are missing one another, unreadable or do not match; restore them, or remove both to have parhelion create a new CA (clients must then trust the new ca.crt)`);
  }
  if (ca === "missing" || ca.cert.validToDate.getTime() <= now.getTime()) {
    const made = await createCA({ commonName: "parhelion CA", validDays: CA_VALID_DAYS }, now);
    writeFileAtomic(caKeyFile, made.keyPem, 0o600);
    writeFileAtomic(caFile, made.certPem, 0o644);
    ca = { pair: made, cert: new X509Certificate(made.certPem), key: createPrivateKey(made.keyPem) };
  }
  chmodSync(caKeyFile, 0o600);
  return { ...ca.pair, caFile };
}

/**
 * A server certificate for `hosts` issued by `ca`, kept in certFile/keyFile: reused while it covers the
 * hosts, was issued by the CA and has more than RENEW_BEFORE_DAYS left; issued again otherwise.
 */
export async function ensureServerCert(ca: CertAndKey, opts: { certFile: string; keyFile: string; hosts: string[]; now?: Date }): Promise<CertAndKey> {
  const now = opts.now ?? new Date();
  const { certFile, keyFile } = opts;
  const requested = [...new Set(opts.hosts.map((h) => (isIP(h) ? h : checkDnsName(h))))];
  const caCert = new X509Certificate(ca.certPem);
  const server = loadPair(certFile, keyFile);
  const reusable =
    typeof server === "object" &&
    server.cert.checkIssued(caCert) &&
    server.cert.verify(caCert.publicKey) &&
    server.cert.validToDate.getTime() - now.getTime() > RENEW_BEFORE_DAYS * DAY_MS &&
    covers(server.cert, requested);
  let pair: CertAndKey;
  if (reusable) {
    pair = server.pair;
  } else {
    const ipAddresses = requested.filter((h) => isIP(h));
    const dnsNames = requested.filter((h) => !isIP(h));
    pair = await issueServerCert(ca, { commonName: dnsNames.find((d) => d !== "localhost") ?? "localhost", dnsNames, ipAddresses, validDays: SERVER_VALID_DAYS }, now);
    writeFileAtomic(keyFile, pair.keyPem, 0o600);
    writeFileAtomic(certFile, pair.certPem, 0o644);
  }
  chmodSync(keyFile, 0o600);
  return pair;
}
