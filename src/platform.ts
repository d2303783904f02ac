import { mkdirSync, chmodSync, chownSync, rmSync } from "node:fs";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import type { AddressInfo } from "node:net";
import type { FastifyInstance } from "fastify";
import { sql } from "kysely";
import type { Config } from "./config/schema.js";
import type { Logger } from "./log/logger.js";
import { EmbeddedPostgres } from "./store/embedded.js";
import { openDb, migrate, type Db } from "./store/db.js";
import { ensureTlsMaterial } from "./tls/index.js";
import { createAuditLog, type AuditLog } from "./audit/index.js";
import { ApiKeyAuthenticator, LoginThrottle, OrganizationDirectory, createApiKey, createUser, systemClock, webauthnSettingsFrom, type Clock } from "./identity/index.js";
import { grantOrgRole } from "./rbac/accessControls.js";
import { buildApiServer } from "./api/server.js";
import { ensureCA, ensureServerCert } from "./tls/index.js";
import { writeFileAtomic } from "./tls/pki.js";
import { createWorkspaceEngine, type WorkspaceEngine } from "./engine/index.js";
import { PlatformCredentials, TokenVerifier } from "./gateway/tokens.js";
import { StatementClassifier } from "./audit/sql/classify.js";
import { AuditPipeline, STREAM_ONLY_TYPES } from "./audit/stream/pipeline.js";
import { AuditSinks, storeReader } from "./audit/stream/sinks.js";
import { createTransport } from "./audit/sinks/index.js";
import { OrgSigningKeys } from "./kms/signingKeys.js";
import { WORKSPACE_SIZES, isWorkspaceSize } from "./engine/sizes.js";
import { WorkspaceService } from "./workspaces/service.js";
import { DatabaseAdmin } from "./workspaces/databases.js";
import { Reconciler } from "./workspaces/reconciler.js";
import { WORKSPACE_SIZE_NAMES } from "./workspaces/sizes.js";
import { Router, tlsIdentity } from "./gateway/routing.js";
import { Gateway } from "./gateway/server.js";
import { DataApi } from "./gateway/dataApi.js";
import { InflightTracker, type Services } from "./api/context.js";
import { Keyring, attachKeyring, createKeyProvider, encryptLegacySecrets } from "./kms/index.js";
import { CustomerKeys } from "./kms/cmek.js";
import { KeyMonitor } from "./workspaces/keyMonitor.js";
import { GroupRekeys } from "./workspaces/rekey.js";
import { openStoreVolume, refuseEncryptedStore } from "./volumes/store.js";
import { checkVolumeSupport, createGroupStorage, type GroupStorage, type VolumeEncryption } from "./volumes/groups.js";
import { assertReachable, resolveServiceAccount } from "./engine/postgres.js";

export const VERSION = "0.1.0";

export interface Platform {
  apiUrl: string;
  apiPort: number;
  caFile: string | null;
  db: Db;
  audit: AuditLog;
  store: EmbeddedPostgres | null;
  app: FastifyInstance;
  gatewayPort: number;
  engine: WorkspaceEngine;
  /** Each workspace group's storage: its encrypted volume, or plaintext with volumeEncryption none. */
  storage: GroupStorage;
  workspaces: WorkspaceService;
  reconciler: Reconciler;
  /** Re-keys of workspace groups' data keys (the volume rewritten under a new key). */
  rekeys: GroupRekeys;
  gateway: Gateway;
  /** Signs short-lived database credentials. */
  credentials: PlatformCredentials;
  /** Where this start wrote the first owner API key (null when the organization already existed). */
  ownerKeyFile: string | null;
  /** Stops everything it started, in order: API, audit flush, pool, store. */
  stop(): Promise<void>;
}

export interface StartOptions {
  config: Config;
  logger: Logger;
  clock?: Clock;
}


/**
 * Started as root through sudo (`./bin/parhelion up` by an operator who is not root: the encrypted volumes need
 * root): the files meant for that operator (the owner API key and its directory) become theirs, still 0600/0700,
 * so their CLI can read the key without root. Nothing changes otherwise.
 */
function handToSudoUser(paths: string[], logger: Logger): void {
  if (process.getuid?.() !== 0) return;
  const uid = Number(process.env["SUDO_UID"]);
  const gid = Number(process.env["SUDO_GID"]);
  if (!Number.isInteger(uid) || !Number.isInteger(gid) || uid <= 0 || gid < 0) return;
  for (const p of paths) chownSync(p, uid, gid);
  logger.info({ uid, user: process.env["SUDO_USER"] ?? null }, "started through sudo: the owner API key belongs to the user who ran it");
}

/**
 * Creates the organization, its owner and an owner API key the first time the store is used. Serialized by
 * an advisory lock so two processes starting on one store bootstrap once.
 */
async function bootstrapOrganization(db: Db, cfg: Config, audit: AuditLog, logger: Logger, clock: Clock): Promise<string | null> {
  const keyFile = join(cfg.dataDir, "bootstrap", "owner-api-key");
  const created = await db.transaction().execute(async (trx) => {
    await sql`SELECT pg_advisory_xact_lock(hashtext('parhelion.bootstrap'))`.execute(trx);
    const existing = await trx.selectFrom("organizations").select("id").limit(1).executeTakeFirst();
    if (existing) return null;
    const orgId = randomUUID();
    await trx.insertInto("organizations").values({ id: orgId, name: cfg.orgName }).execute();
    const owner = await createUser(trx, { orgId, email: cfg.ownerEmail, firstName: "", lastName: "", passwordHash: null });
    await grantOrgRole(trx, orgId, owner.userID, "Owner", null);
    const expiresAt = new Date(clock().getTime() + 365 * 86400_000);
    const key = await createApiKey(trx, { orgId, name: "bootstrap owner key", role: "Owner", expiresAt, createdBy: owner.userID }, clock);
    return { orgId, owner, key };
  });
  if (created === null) return null;
  mkdirSync(join(cfg.dataDir, "bootstrap"), { recursive: true, mode: 0o700 });
  writeFileAtomic(keyFile, created.key.token + "\n", 0o600);
  handToSudoUser([join(cfg.dataDir, "bootstrap"), keyFile], logger);
  await audit.record({
    type: "OrganizationBootstrap", source: "System", result: "SUCCESS", orgId: created.orgId, actor: { type: "system" },
    resource: { type: "Organization", id: created.orgId }, reason: `organization "${cfg.orgName}" created with owner ${created.owner.email}`,
    attributes: { ownerUserID: created.owner.userID, apiKeyID: created.key.key.apiKeyID, apiKeyPrefix: created.key.key.prefix },
  });
  logger.info({ ownerEmail: created.owner.email }, `first start: owner API key written to ${keyFile} (mode 0600); it is shown nowhere else`);
  return keyFile;
}

/** Starts the control plane: metadata store, migrations, bootstrap, TLS, audit, API. */
export async function startPlatform(opts: StartOptions): Promise<Platform> {
  const { config: cfg, logger } = opts;
  const clock = opts.clock ?? systemClock;
  let ready = false;
  const stack: Array<{ name: string; stop: () => Promise<void> }> = [];
  const inflight = new InflightTracker();
  let app: FastifyInstance | undefined;
  const stopAll = async () => {
    ready = false;
    // The API goes first: closing the listener does not wait for handlers still running, so wait for them
    // (and their audit records) before the audit log and the store go away.
    if (app) {
      try {
        await app.close();
        await inflight.idle(5000);
      } catch (err) {
        logger.warn({ component: "api", err: { message: (err as Error).message } }, "error while stopping");
      }
    }
    while (stack.length > 0) {
      const s = stack.pop()!;
      try {
        await s.stop();
      } catch (err) {
        logger.warn({ component: s.name, err: { message: (err as Error).message } }, "error while stopping");
      }
    }
  };
  try {
    mkdirSync(cfg.dataDir, { recursive: true });
    chmodSync(cfg.dataDir, 0o711); // the store's service user must traverse it; nothing in it is world-readable
    assertReachable(cfg.dataDir, resolveServiceAccount(cfg.serviceUser));
    // Encryption at rest of workspace data: fscrypt unless the operator chose none. Checked before anything
    // starts, so a host that cannot run the volumes fails here, naming the option, instead of serving plaintext.
    const volumeEncryption: VolumeEncryption = cfg.volumeEncryption;
    if (volumeEncryption === "fscrypt") await checkVolumeSupport();
    else logger.warn({ volumeEncryption }, "volumeEncryption is none: workspace data and WAL are written to disk in plaintext (the operator's explicit choice); see docs/security.md");

    // Listen first: /healthz answers 503 (and every other route ERR_NOT_READY) while the store starts,
    // migrates and bootstraps; the services below fill `services` before `ready` turns true.
    const tls = await ensureTlsMaterial({ dir: join(cfg.dataDir, "tls"), hosts: [cfg.host], certFile: cfg.tlsCert, keyFile: cfg.tlsKey });
    const services = {
      clock, logger, inflight,
      settings: { sessionTtlSeconds: cfg.sessionTtlSeconds, invitationTtlSeconds: cfg.invitationTtlSeconds, bodyLimitBytes: cfg.bodyLimitBytes, auditReads: cfg.auditReads },
    } as Services;
    app = await buildApiServer({ services, logger, tls: { cert: tls.certPem, key: tls.keyPem }, ready: () => ready, version: VERSION, health: () => ({ volumeEncryption }) });
    await app.listen({ host: cfg.host, port: cfg.apiPort });
    const port = (app.server.address() as AddressInfo).port;
    // WebAuthn origins name the API's port, known only now (apiPort 0 picks one).
    services.settings.mfa = { issuer: cfg.mfaIssuer, webauthn: webauthnSettingsFrom({ rpName: cfg.mfaIssuer, rpId: cfg.webauthnRpId, origins: cfg.webauthnOrigins, host: cfg.host, apiPort: port }) };
    const hostForUrl = cfg.host.includes(":") ? `[${cfg.host}]` : cfg.host === "0.0.0.0" ? "127.0.0.1" : cfg.host;
    const apiUrl = `https://${hostForUrl}:${port}`;
    writeFileAtomic(join(cfg.dataDir, "runtime.json"), JSON.stringify({ apiUrl, caFile: tls.caFile, pid: process.pid, version: VERSION, volumeEncryption }, null, 2) + "\n", 0o644);

    // The root key provider first: the embedded store's volume key is wrapped by it (the keyring, which reads
    // kms_keys from the store, comes after the store).
    const keyProvider = await createKeyProvider(cfg);
    stack.push({ name: "kms", stop: () => keyProvider.close() });

    let store: EmbeddedPostgres | null = null;
    let connectionString = cfg.databaseUrl;
    if (connectionString === undefined) {
      // The embedded store's data directory (tables and WAL) on its own encrypted volume, keyed by a random key
      // kept only wrapped by the root key; unmounted at stop, after the store (the stack stops it first).
      let storeData: string | undefined;
      if (volumeEncryption === "fscrypt") {
        const sv = await openStoreVolume({ dataDir: cfg.dataDir, provider: keyProvider, logger: logger.child({ component: "volumes" }) });
        stack.push({ name: "store-volume", stop: () => sv.close() });
        storeData = sv.pgdata;
      } else {
        refuseEncryptedStore(cfg.dataDir);
      }
      store = new EmbeddedPostgres({ dir: join(cfg.dataDir, "store"), ...(storeData !== undefined ? { dataDir: storeData } : {}), serviceUser: cfg.serviceUser, logger: logger.child({ component: "store" }) });
      await store.start();
      const s = store;
      stack.push({ name: "store", stop: () => s.stop() });
      connectionString = store.connectionString;
    } else {
      logger.info("using the external metadata store from PARHELION_DATABASE_URL");
    }
    const { db } = openDb({ connectionString, max: 16, logger });
    stack.push({ name: "pool", stop: () => db.destroy() });
    await migrate(db, logger);

    // The key hierarchy: the root key provider, then the keyring that seals the store's secret columns.
    // Rows written in plaintext before migration 0007 are encrypted before anything is served.
    const keyring = new Keyring({ db, provider: keyProvider });
    stack.push({ name: "keyring", stop: async () => keyring.clear() });
    // Customer-managed keys: a group's data key wrapped by the customer's AWS KMS or PKCS#11 key, reached with the operator's settings.
    const customerKeys = new CustomerKeys({ db, logger: logger.child({ component: "cmek" }), settings: { awsRegion: cfg.cmekAwsRegion, awsEndpoint: cfg.cmekAwsEndpoint, awsCaFile: cfg.cmekAwsCaFile, hsmModule: cfg.cmekHsmModule } });
    stack.push({ name: "cmek", stop: () => customerKeys.close() });
    keyring.attachCustomerKeys(customerKeys);
    attachKeyring(db, keyring);
    await encryptLegacySecrets(db, logger.child({ component: "kms" }));
    logger.info({ provider: keyProvider.describe().provider, rootKeyId: keyProvider.describe().keyId }, "key hierarchy ready");

    // The audit log on the store, and the pipeline that streams each committed record to the organization's
    // sinks (it stops after the log, so the last records still reach them, sealed by a final checkpoint).
    const auditSigning = new OrgSigningKeys({ db, keys: keyring, table: "audit_signing_keys" });
    stack.push({ name: "audit-signing", stop: async () => auditSigning.clear() });
    let auditLog: AuditLog | null = null;
    const auditPipeline = new AuditPipeline({
      dir: join(cfg.dataDir, "audit", "sinks"), store: storeReader(db), signing: auditSigning, logger: logger.child({ component: "audit-pipeline" }),
      transport: createTransport, record: (e) => void auditLog?.record(e),
    });
    stack.push({ name: "audit-pipeline", stop: () => auditPipeline.stop() });
    const audit = createAuditLog({ db, logger: logger.child({ component: "audit" }), clock, onCommitted: auditPipeline.publish });
    auditLog = audit;
    stack.push({ name: "audit", stop: () => audit.close() });
    const auditSinks = new AuditSinks({ db, keys: keyring, pipeline: auditPipeline, signing: auditSigning });
    await auditPipeline.start(await auditSinks.definitions((sinkId, err) => logger.error({ component: "audit-pipeline", sinkId, err: { message: (err as Error).message } }, "audit sink not started: its keys cannot be opened by this process")));
    // Statement records (one per statement at the query levels) and successful sessions' connect, login and
    // disconnect records go to the organization's streams without a store row each when it has an
    // organization-wide file sink (every organization starts with one): pipeline.ts STREAM_ONLY_TYPES.
    const dataPlaneAudit: Pick<AuditLog, "record"> = {
      record: (e) => (STREAM_ONLY_TYPES.has(e.type) && auditPipeline.publishDirect(e) ? Promise.resolve(true) : audit.record(e)),
    };
    const ownerKeyFile = await bootstrapOrganization(db, cfg, audit, logger, clock);
    await auditSinks.ensureDefaults((e) => audit.record(e));

    const apiKeys = new ApiKeyAuthenticator(db, clock);
    stack.push({ name: "apiKeys", stop: () => apiKeys.flush() });

    // Workspaces: each group's data on its encrypted volume (unlocked with the group's key before any of its
    // workspaces starts; locked and unmounted at stop, after the servers), the engine runs their servers, the
    // reconciler drives them to the desired state, the gateway is the only way in.
    const storage = createGroupStorage({ encryption: volumeEncryption, dataDir: cfg.dataDir, keys: keyring, logger: logger.child({ component: "volumes" }) });
    stack.push({ name: "volumes", stop: () => storage.closeAll() });
    const engine = createWorkspaceEngine({
      dir: join(cfg.dataDir, "workspaces"), serviceUser: cfg.serviceUser, logger: logger.child({ component: "engine" }),
      ...(cfg.workspaceFsync ? {} : { settings: { fsync: "off", synchronous_commit: "off", full_page_writes: "off" } }),
    });
    stack.push({ name: "engine", stop: () => engine.stopAll() });
    let gateway: Gateway | undefined;
    const workspaces = new WorkspaceService(db, { clock, domain: cfg.gatewayDomain, gatewayPort: () => gateway?.port ?? cfg.gatewayPort, sizes: WORKSPACE_SIZE_NAMES, keys: keyring });
    await workspaces.ensureRegion(cfg.regionName);
    const tlsDir = join(cfg.dataDir, "tls");
    const ca = await ensureCA(tlsDir);
    const router = new Router({ db, ca, tlsDir, domain: cfg.gatewayDomain, hostNames: (g) => workspaces.groupHostNames(g) });
    const defaultPair = await ensureServerCert(ca, { certFile: join(tlsDir, "gateway.crt"), keyFile: join(tlsDir, "gateway.key"), hosts: ["localhost", "127.0.0.1", "::1", cfg.host, cfg.gatewayDomain].filter((h) => h !== "0.0.0.0" && h !== "::") });
    // Token logins: parhelion's own short-lived credentials (an Ed25519 key per organization, sealed by the
    // keyring) and each group's JWTs. Releases before 0008 kept one signing key in a plaintext file: gone.
    rmSync(join(cfg.dataDir, "keys", "db-credentials.key"), { force: true });
    const credentials = new PlatformCredentials({ db, keys: keyring });
    stack.push({ name: "credentials", stop: async () => credentials.clear() });
    const tokens = new TokenVerifier({ db, platform: credentials });
    const dataApi = new DataApi({ router, engine, audit, tokens, logger: logger.child({ component: "data-api" }) });
    gateway = new Gateway({
      router, engine, audit: dataPlaneAudit, statementStream: auditPipeline, logger: logger.child({ component: "gateway" }), defaultIdentity: tlsIdentity(defaultPair, "TLSv1.2"),
      authTimeoutMs: cfg.gatewayAuthTimeoutSeconds * 1000, idleTimeoutMs: cfg.gatewayIdleTimeoutSeconds * 1000, maxMessageBytes: cfg.gatewayMaxMessageBytes,
      // A few server connections stay for the superuser reserve, parhelion's own and the pool's spare.
      connectionLimit: (ws) => Math.max(1, (isWorkspaceSize(ws.size) ? WORKSPACE_SIZES[ws.size].maxConnections : 25) - 5),
      tokens, statements: await StatementClassifier.create(), auditBlocked: (orgId, groupId) => auditPipeline.isBlocked(orgId, groupId),
      http: (socket, ctx) => dataApi.accept(socket, ctx),
      onServerFull: (id) => dataApi.drop(id),
    });
    const gw = gateway;
    const reconciler = new Reconciler({ db, engine, storage, logger: logger.child({ component: "reconciler" }), audit, clock, activity: gw, onStopping: (id) => {
      gw.disconnectWorkspace(id);
      dataApi.drop(id);
    }, onGroupExpired: (id) => router.invalidate({ workspaceGroupID: id }),
      onStateChange: (id) => router.invalidate({ workspaceID: id }) });
    stack.push({ name: "reconciler", stop: () => reconciler.stop() });
    // Revocation: each customer key checked every kmsCheckSeconds; a disabled or deleted one stops its group.
    const keyMonitor = new KeyMonitor({
      db, keyring, customer: customerKeys, engine, storage, reconciler, audit, logger: logger.child({ component: "cmek" }), intervalMs: cfg.kmsCheckSeconds * 1000,
      onStopping: (id) => {
        gw.disconnectWorkspace(id);
        dataApi.drop(id);
      },
      onStateChange: (id) => router.invalidate({ workspaceID: id }),
    });
    stack.push({ name: "key-monitor", stop: () => keyMonitor.stop() });
    // Re-keys of groups' data keys: the group held away from the reconciler while its volume is rewritten. A stop
    // leaves a running one as a crash would; recover() (below, before the reconciler starts) rolls it back or finishes it.
    const rekeys = new GroupRekeys({
      db, keyring, engine, storage, reconciler, audit, logger: logger.child({ component: "rekey" }),
      onStopping: (id) => {
        gw.disconnectWorkspace(id);
        dataApi.drop(id);
      },
      onStateChange: (id) => router.invalidate({ workspaceID: id }),
    });
    stack.push({ name: "rekeys", stop: () => rekeys.stop() });
    workspaces.on("change", (e) => {
      router.invalidate(e);
      if (e.workspaceGroupID) tokens.invalidate(e.workspaceGroupID);
      // Without volumes every workspace's data directory is made in the engine's directory: keep a spare there.
      // A group's volume gets its spare from the engine once it holds several workspaces.
      if (volumeEncryption === "none") engine.prepare();
      reconciler.kick();
      if (e.workspaceGroupID && !e.workspaceID) {
        gw.recheckGroup(e.workspaceGroupID).catch((err: unknown) => logger.warn({ err: { message: (err as Error).message } }, "could not re-check sessions against a changed firewall"));
      }
    });
    const gatewayPort = await gw.listen(cfg.host, cfg.gatewayPort);
    stack.push({ name: "gateway", stop: async () => {
      await gw.close();
      await dataApi.close();
    } });
    await rekeys.recover();
    reconciler.start();
    keyMonitor.start();
    if (volumeEncryption === "none" && (await db.selectFrom("workspace_groups").select("id").where("state", "<>", "TERMINATED").limit(1).executeTakeFirst())) engine.prepare();

    Object.assign(services, {
      db, audit, apiKeys,
      throttle: new LoginThrottle({ threshold: cfg.lockoutThreshold, lockoutSeconds: cfg.lockoutSeconds, clock }),
      orgs: new OrganizationDirectory(db, clock),
      workspaces, databases: new DatabaseAdmin(workspaces, engine), credentials, tokens, keyring, auditSinks, rekeys,
    } satisfies Omit<Services, "clock" | "logger" | "inflight" | "settings">);
    // Readers (`parhelion login`, tests) see the old file or the new one, never a half-written one.
    writeFileAtomic(join(cfg.dataDir, "runtime.json"), JSON.stringify({ apiUrl, caFile: tls.caFile ?? ca.caFile, gatewayPort, pid: process.pid, version: VERSION, volumeEncryption }, null, 2) + "\n", 0o644);
    ready = true;
    logger.info({ apiUrl, caFile: tls.caFile, gatewayPort, volumeEncryption }, "parhelion is ready");
    return { apiUrl, apiPort: port, caFile: tls.caFile, db, audit, store, app, gatewayPort, engine, storage, workspaces, reconciler, rekeys, gateway: gw, credentials, ownerKeyFile, stop: stopAll };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
