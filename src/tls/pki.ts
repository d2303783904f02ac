import { X509Certificate, createHash, createPrivateKey, generateKeyPairSync, randomBytes, sign, type KeyObject } from "node:crypto";
import { closeSync, chmodSync, existsSync, fchmodSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from "node:fs";
import { isIP, isIPv4 } from "node:net";
import { join } from "node:path";
import { ParhelionError } from "../lib/errors.js";
import { bits, bool, children, explicit, implicit, octets, oid, read, seq, set, smallInt, time, uint, utf8, type Der } from "./der.js";

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

const OID = {
  ecdsaWithSHA256: "1.2.840.10045.4.3.2",
  commonName: "2.5.4.3",
  subjectKeyIdentifier: "2.5.29.14",
  keyUsage: "2.5.29.15",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  authorityKeyIdentifier: "2.5.29.35",
  extKeyUsage: "2.5.29.37",
  serverAuth: "1.3.6.1.5.5.7.3.1",
} as const;

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

const name = (commonName: string): Der => seq(set(seq(oid(OID.commonName), utf8(commonName))));
const algorithm = (): Der => seq(oid(OID.ecdsaWithSHA256));
const extension = (id: string, critical: boolean, value: Der): Der => (critical ? seq(oid(id), bool(true), octets(value)) : seq(oid(id), octets(value)));

/** 16 random bytes, positive and with a non-zero first byte so the INTEGER is exactly 16 bytes. */
function serialNumber(): Buffer {
  const b = randomBytes(16);
  b[0] = ((b[0] ?? 0) & 0x7f) | 0x40;
  return b;
}

/** RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING's value. */
function keyIdentifier(spki: Buffer): Buffer {
  const [, subjectPublicKey] = children(read(spki).content);
  if (!subjectPublicKey) throw new RangeError("malformed SubjectPublicKeyInfo");
  return createHash("sha1").update(subjectPublicKey.content.subarray(1)).digest();
}

function newKey(): { privateKey: KeyObject; spki: Buffer; keyPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  return { privateKey, spki: publicKey.export({ type: "spki", format: "der" }), keyPem: privateKey.export({ type: "pkcs8", format: "pem" }).toString() };
}

function buildCertificate(p: { issuer: Der; subject: Der; spki: Buffer; notBefore: Date; notAfter: Date; extensions: Der[]; signer: KeyObject }): string {
  const tbs = seq(
    explicit(0, smallInt(2)), // v3
    uint(serialNumber()),
    algorithm(),
    p.issuer,
    seq(time(p.notBefore), time(p.notAfter)),
    p.subject,
    p.spki,
    explicit(3, seq(...p.extensions)),
  );
  const signature = sign("sha256", tbs, { key: p.signer, dsaEncoding: "der" });
  const der = seq(tbs, algorithm(), bits(signature));
  return `-----BEGIN CERTIFICATE-----\n${der.toString("base64").replace(/.{1,64}/g, "$&\n")}-----END CERTIFICATE-----\n`;
}

function validity(validDays: number, now: Date): { notBefore: Date; notAfter: Date } {
  return { notBefore: new Date(now.getTime() - BACKDATE_MS), notAfter: new Date(now.getTime() + validDays * DAY_MS) };
}

/** Creates a self-signed ECDSA P-256 certificate authority. */
export function createCA(opts: CreateCAOptions, now: Date = new Date()): CertAndKey {
  checkOptions("createCA", opts?.commonName, opts?.validDays);
  const key = newKey();
  const subject = name(opts.commonName);
  const certPem = buildCertificate({
    issuer: subject,
    subject,
    spki: key.spki,
    ...validity(opts.validDays, now),
    signer: key.privateKey,
    extensions: [
      extension(OID.basicConstraints, true, seq(bool(true))),
      extension(OID.keyUsage, true, bits(Buffer.from([0x06]), 1)), // keyCertSign(5), cRLSign(6)
      extension(OID.subjectKeyIdentifier, false, octets(keyIdentifier(key.spki))),
    ],
  });
  return { certPem, keyPem: key.keyPem };
}

/** The 4- or 16-byte form of an IP address for an iPAddress GeneralName (RFC 5280 4.2.1.6). */
function ipBytes(ip: string): Buffer {
  if (isIPv4(ip)) return Buffer.from(ip.split(".").map(Number));
  if (isIP(ip) !== 6) throw new ParhelionError("ERR_CONFIG", `"${ip}" is not an IP address`);
  let s = ip;
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(s);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    s = s.slice(0, v4.index) + ((a << 8) | b).toString(16) + ":" + ((c << 8) | d).toString(16);
  }
  const [head = "", tail] = s.split("::");
  const h = head === "" ? [] : head.split(":");
  const t = tail === undefined || tail === "" ? [] : tail.split(":");
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill("0"), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

const DNS_NAME = /^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

function checkDnsName(n: string): string {
  const lower = n.toLowerCase().replace(/\.$/, "");
  if (lower.length > 253 || !DNS_NAME.test(lower)) throw new ParhelionError("ERR_CONFIG", `"${n}" is neither a valid DNS name nor an IP address`);
  return lower;
}

/** Issues an ECDSA P-256 TLS server certificate signed by the CA. */
export function issueServerCert(ca: CertAndKey, opts: IssueServerCertOptions, now: Date = new Date()): CertAndKey {
  checkOptions("issueServerCert", opts?.commonName, opts?.validDays);
  if (!Array.isArray(opts.dnsNames) || !Array.isArray(opts.ipAddresses) || opts.dnsNames.length + opts.ipAddresses.length === 0) {
    throw new TypeError("issueServerCert: dnsNames and ipAddresses must be arrays, together naming at least one host");
  }
  const caCert = new X509Certificate(ca.certPem);
  const caKey = createPrivateKey(ca.keyPem);
  if (!caCert.ca || !caCert.checkPrivateKey(caKey)) throw new TypeError("issueServerCert: ca is not a CA certificate with its private key");
  // The issuer must be the CA's subject byte for byte; take it from the CA certificate itself.
  const [tbs] = children(read(caCert.raw).content);
  const fields = children(tbs?.content ?? Buffer.alloc(0));
  const caSubject = fields[5]?.raw;
  const caSpki = fields[6]?.raw;
  if (!caSubject || !caSpki) throw new TypeError("issueServerCert: malformed CA certificate");

  const san = seq(...opts.dnsNames.map((d) => implicit(2, Buffer.from(checkDnsName(d), "ascii"))), ...opts.ipAddresses.map((ip) => implicit(7, ipBytes(ip))));
  const key = newKey();
  const certPem = buildCertificate({
    issuer: Buffer.from(caSubject),
    subject: name(opts.commonName),
    spki: key.spki,
    ...validity(opts.validDays, now),
    signer: caKey,
    extensions: [
      extension(OID.basicConstraints, true, seq()),
      extension(OID.keyUsage, true, bits(Buffer.from([0x80]), 7)), // digitalSignature(0)
      extension(OID.extKeyUsage, false, seq(oid(OID.serverAuth))),
      extension(OID.subjectAltName, false, san),
      extension(OID.subjectKeyIdentifier, false, octets(keyIdentifier(key.spki))),
      extension(OID.authorityKeyIdentifier, false, seq(implicit(0, keyIdentifier(Buffer.from(caSpki))))),
    ],
  });
  return { certPem, keyPem: key.keyPem };
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
export function ensureTlsMaterial(opts: EnsureTlsMaterialOptions): TlsMaterial {
  const now = opts.now?.() ?? new Date();
  if ((opts.certFile === undefined) !== (opts.keyFile === undefined)) {
    throw new ParhelionError("ERR_CONFIG", "a TLS certificate file and key file must be given together");
  }
  if (opts.certFile !== undefined && opts.keyFile !== undefined) return loadOperatorMaterial(opts.certFile, opts.keyFile, now);

  const requested = [...new Set([...ALWAYS_HOSTS, ...opts.hosts.map((h) => (isIP(h) ? h : checkDnsName(h)))])];
  mkdirSync(opts.dir, { recursive: true, mode: 0o700 });
  chmodSync(opts.dir, 0o700);
  const caFile = join(opts.dir, "ca.crt");
  const caKeyFile = join(opts.dir, "ca.key");
  const certFile = join(opts.dir, "server.crt");
  const keyFile = join(opts.dir, "server.key");

  let ca = loadPair(caFile, caKeyFile);
  if (ca === "broken") {
    throw new ParhelionError("ERR_CONFIG", `${caFile} and ${caKeyFile} are missing one another, unreadable or do not match; restore them, or remove both to have parhelion create a new CA (clients must then trust the new ca.crt)`);
  }
  if (ca === "missing" || ca.cert.validToDate.getTime() <= now.getTime()) {
    const made = createCA({ commonName: "parhelion CA", validDays: CA_VALID_DAYS }, now);
    writeFileAtomic(caKeyFile, made.keyPem, 0o600);
    writeFileAtomic(caFile, made.certPem, 0o644);
    ca = { pair: made, cert: new X509Certificate(made.certPem), key: createPrivateKey(made.keyPem) };
  }
  chmodSync(caKeyFile, 0o600);

  const server = loadPair(certFile, keyFile);
  const reusable =
    typeof server === "object" &&
    server.cert.checkIssued(ca.cert) &&
    server.cert.verify(ca.cert.publicKey) &&
    server.cert.validToDate.getTime() - now.getTime() > RENEW_BEFORE_DAYS * DAY_MS &&
    covers(server.cert, requested);
  let pair: CertAndKey;
  if (reusable) {
    pair = server.pair;
  } else {
    const ipAddresses = requested.filter((h) => isIP(h));
    const dnsNames = requested.filter((h) => !isIP(h));
    pair = issueServerCert(ca.pair, { commonName: dnsNames.find((d) => d !== "localhost") ?? "localhost", dnsNames, ipAddresses, validDays: SERVER_VALID_DAYS }, now);
    writeFileAtomic(keyFile, pair.keyPem, 0o600);
    writeFileAtomic(certFile, pair.certPem, 0o644);
  }
  chmodSync(keyFile, 0o600);
  return { certPem: pair.certPem, keyPem: pair.keyPem, caPem: ca.pair.certPem, caFile, certFile, keyFile };
}
