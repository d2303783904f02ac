import { z } from "zod";

/**
 * The one configuration schema of `parhelion up`. Every key has its default next to it; none of the
 * secret-bearing keys has a default. Sources, strongest first: flags, PARHELION_* environment, the YAML
 * file, defaults (see load.ts). Secret values (databaseUrl) come only from the environment or a file.
 */
export const ConfigSchema = z
  .object({
    dataDir: z.string().min(1).default("./.parhelion").describe("Directory for all state: metadata store, TLS material, bootstrap files."),
    host: z.string().min(1).default("127.0.0.1").describe("Address the API and gateway listen on. Loopback by default: nothing outside the host can connect."),
    apiPort: z.coerce.number().int().min(0).max(65535).default(9443).describe("HTTPS port of the Management API and console (0 picks a free port)."),
    gatewayPort: z.coerce.number().int().min(0).max(65535).default(5433).describe("Port of the PostgreSQL wire-protocol gateway."),
    gatewayDomain: z.string().trim().toLowerCase().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/, { message: "must be a DNS domain" }).max(160).default("parhelion.localhost").describe("DNS domain of workspace endpoints: <workspaceID>.<groupID>.<domain>. Clients that cannot resolve it pass hostaddr (parhelion connect does)."),
    gatewayAuthTimeoutSeconds: z.coerce.number().int().min(1).max(600).default(30).describe("Seconds a gateway client has to finish TLS and authentication."),
    gatewayIdleTimeoutSeconds: z.coerce.number().int().min(0).max(7 * 86400).default(3600).describe("Seconds a gateway session may stay idle outside a transaction before it is closed (0: never)."),
    gatewayMaxMessageBytes: z.coerce.number().int().min(64 * 1024).max(1024 * 1024 * 1024).default(64 * 1024 * 1024).describe("Largest PostgreSQL protocol message the gateway accepts from a client."),
    workspaceFsync: z.enum(["true", "false"]).default("true").transform((v) => v === "true").describe("fsync in workspace servers. false loses committed data on a host crash: only for throwaway test installs."),
    regionName: z.string().trim().min(1).max(64).regex(/^[A-Za-z0-9][A-Za-z0-9 ._-]*$/, { message: "letters, digits, space, dot, dash, underscore" }).default("local").describe("Name of this host's placement region in /v1/regions."),
    databaseUrl: z.string().min(1).optional().describe("External metadata store (postgres://...). Environment (PARHELION_DATABASE_URL) or databaseUrlFile only."),
    databaseUrlFile: z.string().min(1).optional().describe("File holding the external metadata store URL."),
    tlsCert: z.string().min(1).optional().describe("PEM certificate (chain) for the API; parhelion's own CA issues one when absent."),
    tlsKey: z.string().min(1).optional().describe("PEM private key matching tlsCert."),
    serviceUser: z.string().min(1).default("parhelion").describe("Unprivileged system user PostgreSQL runs as when parhelion runs as root."),
    orgName: z.string().min(1).max(256).default("My Organization").describe("Name of the organization created on first start."),
    ownerEmail: z.email().default("owner@parhelion.local").describe("Email of the owner user created on first start."),
    logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace"]).default("info").describe("Log level."),
    logFormat: z.enum(["auto", "json", "pretty"]).default("auto").describe("auto: pretty on a TTY, JSON otherwise."),
    auditReads: z.enum(["all", "failures"]).default("all").describe("Audit every authenticated read (all), or only failed and denied reads (failures). Mutations, sign-in attempts and exports of the audit log are always audited."),
    bodyLimitBytes: z.coerce.number().int().min(1024).max(64 * 1024 * 1024).default(1024 * 1024).describe("Largest accepted request body."),
    sessionTtlSeconds: z.coerce.number().int().min(60).max(30 * 86400).default(12 * 3600).describe("Console session lifetime."),
    invitationTtlSeconds: z.coerce.number().int().min(300).max(30 * 86400).default(7 * 86400).describe("Invitation lifetime."),
    lockoutThreshold: z.coerce.number().int().min(1).max(1000).default(5).describe("Failed logins per account (and 4x per source) before a lockout."),
    lockoutSeconds: z.coerce.number().int().min(1).max(86400).default(300).describe("How long a lockout lasts."),
    mfaIssuer: z.string().trim().min(1).max(64).regex(/^[^:\u0000-\u001f\u007f]+$/, { message: "no colon or control characters" }).default("parhelion").describe("Issuer name authenticator apps show for TOTP, and the WebAuthn relying party name."),
    webauthnRpId: z.string().trim().toLowerCase().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/, { message: "must be a DNS host name (WebAuthn refuses IP addresses)" }).max(253).optional().describe("WebAuthn relying party id: the host name users reach the console at. Default: host, or localhost when host is an IP address."),
    webauthnOrigins: z.string().trim().min(1).max(2048).optional().describe("Comma-separated origins (https://host[:port]) WebAuthn answers may come from. Default: https://<webauthnRpId>:<API port>."),
    volumeEncryption: z.enum(["fscrypt", "none"]).default("fscrypt").describe("Encryption at rest of workspace data: fscrypt (each workspace group's data directories and WAL on an ext4 image with the kernel's file encryption, keyed by the group's data key; the embedded metadata store's data directory likewise on its own volume, keyed by a random key wrapped by the root key; needs root, loop devices and a kernel with ext4 encryption: up fails at start without them) or none (plaintext on the data disk: choose it explicitly, it is logged as a warning at every start and shown in /healthz)."),
    kms: z.enum(["local", "pkcs11", "aws-kms"]).default("local").describe("Root key provider of the key hierarchy: local (a key file), pkcs11 (an HSM) or aws-kms."),
    kmsKeyFile: z.string().min(1).optional().describe("kms local: the root key file (32 bytes, mode 0600), made at first start. Default: <dataDir>/keys/root.key. Back it up apart from the metadata store."),
    kmsHsmModule: z.string().min(1).optional().describe("kms pkcs11: path of the PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so)."),
    kmsHsmToken: z.string().min(1).max(32).optional().describe("kms pkcs11: label of the token holding the root key."),
    kmsHsmKeyLabel: z.string().min(1).max(128).default("parhelion-root").describe("kms pkcs11: label of the AES-256 root key on the token (made non-extractable on first start when absent)."),
    kmsHsmPin: z.string().min(1).optional().describe("kms pkcs11: the token's user PIN. Environment (PARHELION_KMS_HSM_PIN) or kmsHsmPinFile only."),
    kmsHsmPinFile: z.string().min(1).optional().describe("kms pkcs11: file holding the token's user PIN."),
    kmsAwsKeyId: z.string().min(1).max(2048).optional().describe("kms aws-kms: the KMS key id, ARN or alias that wraps the organizations' keys."),
    kmsAwsRegion: z.string().regex(/^[a-z0-9-]{1,32}$/, { message: "must be an AWS region name" }).optional().describe("kms aws-kms: the AWS region."),
    kmsAwsEndpoint: z.string().url().optional().describe("kms aws-kms: an https:// endpoint instead of AWS's (a VPC endpoint or a KMS-compatible server). Credentials come from the AWS SDK's usual chain (AWS_ACCESS_KEY_ID, profiles, instance roles)."),
    kmsAwsCaFile: z.string().min(1).optional().describe("kms aws-kms: extra PEM CA certificates to trust for kmsAwsEndpoint."),
    kmsCheckSeconds: z.coerce.number().int().min(1).max(30).default(15).describe("Seconds between checks of each workspace group's customer-managed key; a disabled or deleted key stops the group's workspaces within two periods."),
    cmekAwsRegion: z.string().regex(/^[a-z0-9-]{1,32}$/, { message: "must be an AWS region name" }).optional().describe("Customer-managed keys: the AWS region of aws-kms keys given by id or alias (an ARN names its own)."),
    cmekAwsEndpoint: z.string().url().optional().describe("Customer-managed keys: an https:// AWS KMS endpoint instead of AWS's regional one (a VPC endpoint or a KMS-compatible server). Credentials come from the AWS SDK's usual chain: customers grant that principal kms:Encrypt, kms:Decrypt and kms:DescribeKey in their key policy."),
    cmekAwsCaFile: z.string().min(1).optional().describe("Customer-managed keys: extra PEM CA certificates to trust for cmekAwsEndpoint."),
    cmekHsmModule: z.string().min(1).optional().describe("Customer-managed keys: the PKCS#11 module customers' HSM tokens are reached through; without it, pkcs11 customer keys are refused."),
  })
  .strict()
  .superRefine((c, ctx) => {
    if ((c.tlsCert === undefined) !== (c.tlsKey === undefined)) {
      ctx.addIssue({ code: "custom", path: ["tlsCert"], message: "tlsCert and tlsKey must be given together" });
    }
    if (c.databaseUrl !== undefined && c.databaseUrlFile !== undefined) {
      ctx.addIssue({ code: "custom", path: ["databaseUrl"], message: "give databaseUrl or databaseUrlFile, not both" });
    }
    if (c.kmsHsmPin !== undefined && c.kmsHsmPinFile !== undefined) {
      ctx.addIssue({ code: "custom", path: ["kmsHsmPin"], message: "give kmsHsmPin or kmsHsmPinFile, not both" });
    }
    if (c.kms === "pkcs11") {
      for (const k of ["kmsHsmModule", "kmsHsmToken"] as const) if (c[k] === undefined) ctx.addIssue({ code: "custom", path: [k], message: "is required with kms pkcs11" });
      if (c.kmsHsmPin === undefined && c.kmsHsmPinFile === undefined) ctx.addIssue({ code: "custom", path: ["kmsHsmPin"], message: "kms pkcs11 needs the token's PIN: set PARHELION_KMS_HSM_PIN or kmsHsmPinFile (there is no default PIN)" });
    }
    if (c.cmekAwsEndpoint !== undefined && !c.cmekAwsEndpoint.startsWith("https://")) ctx.addIssue({ code: "custom", path: ["cmekAwsEndpoint"], message: "must be an https:// URL" });
    if (c.kms === "aws-kms") {
      for (const k of ["kmsAwsKeyId", "kmsAwsRegion"] as const) if (c[k] === undefined) ctx.addIssue({ code: "custom", path: [k], message: "is required with kms aws-kms" });
      if (c.kmsAwsEndpoint !== undefined && !c.kmsAwsEndpoint.startsWith("https://")) ctx.addIssue({ code: "custom", path: ["kmsAwsEndpoint"], message: "must be an https:// URL" });
    }
  });

export type Config = Readonly<z.output<typeof ConfigSchema>>;

/** Keys whose values are secrets: they may not appear in the YAML file or on the command line. */
export const SECRET_KEYS = new Set<string>(["databaseUrl", "kmsHsmPin"]);

/** Environment variable for each key: dataDir -> PARHELION_DATA_DIR. */
export function envName(key: string): string {
  return "PARHELION_" + key.replace(/([A-Z])/g, "_$1").toUpperCase();
}

/** Flag for each key: dataDir -> --data-dir. */
export function flagName(key: string): string {
  return "--" + key.replace(/([A-Z])/g, "-$1").toLowerCase();
}

/** Environment variables the launcher sets that are not configuration. */
export const NON_CONFIG_ENV = new Set(["PARHELION_NODE", "PARHELION_ROOT", "PARHELION_FORCE_PINNED_NODE", "PARHELION_CONFIG", "PARHELION_HOME", "PARHELION_API_URL", "PARHELION_API_KEY", "PARHELION_CA_FILE"]);
