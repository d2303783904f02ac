/** parhelion's own PKI: a local CA and the TLS server certificates it issues, or the operator's own. */
export {
  createCA,
  issueServerCert,
  ensureTlsMaterial,
  ensureCA,
  ensureServerCert,
  fingerprint,
  RENEW_BEFORE_DAYS,
  CA_VALID_DAYS,
  SERVER_VALID_DAYS,
  type CertAndKey,
  type CreateCAOptions,
  type IssueServerCertOptions,
  type EnsureTlsMaterialOptions,
  type TlsMaterial,
} from "./pki.js";
