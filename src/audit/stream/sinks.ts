/**
 * Audit sinks as an organization manages them (`/v1/auditSinks`): validation, sealed secrets, the store rows,
 * and the running pipeline kept in step. A sink's secrets (webhook HMAC key, object-store secret key) and its
 * file key are sealed under the organization's data key; answers name which secrets are set, never their values.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { z } from "zod";
import type { Db } from "../../store/db.js";
import { ParhelionError } from "../../lib/errors.js";
import { isUuid } from "../../lib/ids.js";
import type { KeySealer, OrgSigningKeys } from "../../kms/signingKeys.js";
import type { AuditEvent } from "../types.js";
import { createTransport } from "../sinks/index.js";
import { fieldsFromRow } from "../chain.js";
import { defaultSettings, SINK_KINDS, type StoreReader, type AuditPipeline, type FailMode, type SinkDefinition, type SinkKind, type SinkStatus, type StreamSettings } from "./pipeline.js";

const MiB = 1024 * 1024;

/** Stream settings a sink may override (all optional; defaults in DEFAULT_STREAM_SETTINGS). */
export const streamSettingsSchema = z.object({
  checkpointEvery: z.number().int().min(10).max(100_000).optional().describe("Lines between signed checkpoints (default 1000)."),
  checkpointSeconds: z.number().int().min(1).max(3600).optional().describe("Longest wait of a line for its checkpoint, in seconds (default 10)."),
  maxBytes: z.number().int().min(MiB).max(1024 * 1024 * MiB).optional().describe("Remote sinks: bound of the on-disk spool (default 256 MiB; an alert at 80 %). File sinks: total size of the files kept (default 16 GiB; oldest removed first, audited)."),
  rotateBytes: z.number().int().min(64 * 1024).max(1024 * MiB).optional().describe("File sinks: start a new file beyond this size (default 64 MiB)."),
  rotateSeconds: z.number().int().min(60).max(31 * 86_400).optional().describe("File sinks: start a new file after this many seconds (default 86400)."),
  retentionDays: z.number().int().min(1).max(3650).optional().describe("File sinks: remove files whose newest line is older (default 365)."),
}).strict();

/** A file sink has no destination settings: its files live under the data directory (`audit/sinks/<id>/`), encrypted. */
export const fileSinkConfig = z.object({}).strict();

const SECRET_NAMES: Record<SinkKind, readonly string[]> = { file: [], syslog: [], webhook: ["secret"], s3: ["secretAccessKey"] };

export interface SinkInput {
  name: string;
  type: SinkKind;
  workspaceGroupID?: string | null | undefined;
  failMode?: FailMode | undefined;
  enabled?: boolean | undefined;
  config?: Record<string, unknown> | undefined;
  settings?: z.input<typeof streamSettingsSchema> | undefined;
  secrets?: Record<string, string> | undefined;
}

export type SinkPatch = Partial<Omit<SinkInput, "type" | "workspaceGroupID">>;

export interface SinkView {
  auditSinkID: string;
  name: string;
  type: SinkKind;
  workspaceGroupID: string | null;
  failMode: FailMode;
  enabled: boolean;
  config: Record<string, unknown>;
  settings: StreamSettings;
  /** Names of the secrets set (never their values). */
  secretsSet: string[];
  createdAt: string;
  updatedAt: string;
  status: SinkStatus | null;
}

interface StoredConfig {
  transport: Record<string, unknown>;
  settings: Partial<StreamSettings>;
  /** Names of the sealed secrets (never values), for answers. */
  secretNames?: string[];
}

function bad(message: string, field: string): ParhelionError {
  return new ParhelionError("ERR_VALIDATION", message, { details: { field } });
}

const secretPurpose = (id: string) => `audit_sinks.secrets:${id}`;
const fileKeyPurpose = (id: string) => `audit_sinks.file_key:${id}`;

export class AuditSinks {
  constructor(private readonly o: { db: Db; keys: KeySealer; pipeline: AuditPipeline; signing: OrgSigningKeys }) {}

  /** The running pipeline (listing reads statement records from it). */
  get pipeline(): AuditPipeline {
    return this.o.pipeline;
  }

  /** Validates a kind's config and secrets by building (and closing) its transport: no connection is made. */
  private async validate(kind: SinkKind, transport: Record<string, unknown>, secrets: Record<string, string>): Promise<Record<string, unknown>> {
    const allowed = SECRET_NAMES[kind];
    // A webhook may also carry credential headers for its receiver (`header:Authorization`), kept sealed like its key.
    const optional = (k: string) => kind === "webhook" && /^header:[A-Za-z0-9-]{1,64}$/.test(k);
    for (const k of Object.keys(secrets)) if (!allowed.includes(k) && !optional(k)) throw bad(`secrets.${k}: a ${kind} sink has ${allowed.length ? `only the secrets ${allowed.join(", ")}${kind === "webhook" ? " and header:<Name>" : ""}` : "no secrets"}`, `secrets.${k}`);
    for (const k of allowed) if (typeof secrets[k] !== "string" || secrets[k] === "") throw bad(`secrets.${k} is required for a ${kind} sink`, `secrets.${k}`);
    if (kind === "file") {
      const r = fileSinkConfig.safeParse(transport);
      if (!r.success) throw bad(`config: a file sink takes no config (its files live under the data directory): ${r.error.issues[0]?.message ?? "invalid"}`, "config");
      return {};
    }
    const t = createTransport(kind, transport, secrets);
    await t.close();
    return transport;
  }

  private settings(input: unknown, base: Partial<StreamSettings> = {}): Partial<StreamSettings> {
    const r = streamSettingsSchema.safeParse(input ?? {});
    if (!r.success) {
      const i = r.error.issues[0];
      throw bad(`settings${i?.path.length ? `.${i.path.join(".")}` : ""}: ${i?.message ?? "invalid"}`, `settings${i?.path.length ? `.${i.path.join(".")}` : ""}`);
    }
    const merged: Record<string, number> = { ...(base as Record<string, number>) };
    for (const [k, v] of Object.entries(r.data)) if (v !== undefined) merged[k] = v;
    return merged as Partial<StreamSettings>;
  }

  async create(orgId: string, actorId: string | null, input: SinkInput): Promise<SinkView> {
    if (!(SINK_KINDS as readonly string[]).includes(input.type)) throw bad(`type must be one of ${SINK_KINDS.join(", ")}`, "type");
    const groupId = input.workspaceGroupID ?? null;
    if (groupId !== null) await this.checkGroup(orgId, groupId);
    const secrets = input.secrets ?? {};
    const transport = await this.validate(input.type, input.config ?? {}, secrets);
    const settings = this.settings(input.settings);
    const id = randomUUID();
    const fileKey = randomBytes(32);
    const fileKeyEnc = await this.o.keys.seal(orgId, fileKeyPurpose(id), fileKey);
    fileKey.fill(0);
    const secretsEnc = Object.keys(secrets).length > 0 ? await this.o.keys.seal(orgId, secretPurpose(id), Buffer.from(JSON.stringify(secrets), "utf8")) : null;
    try {
      await this.o.db.insertInto("audit_sinks").values({
        id, org_id: orgId, group_id: groupId, name: input.name, kind: input.type, config: JSON.stringify({ transport, settings, secretNames: Object.keys(secrets).sort() } satisfies StoredConfig),
        secrets_enc: secretsEnc, file_key_enc: fileKeyEnc, fail_mode: input.failMode ?? "open", enabled: input.enabled ?? true, created_by: actorId,
      }).execute();
    } catch (err) {
      if ((err as { code?: unknown }).code === "23505") throw new ParhelionError("ERR_CONFLICT", `an audit sink named "${input.name}" already exists`);
      throw err;
    }
    await this.o.pipeline.add(await this.definition(id));
    return this.get(orgId, id);
  }

  private async checkGroup(orgId: string, groupId: string): Promise<void> {
    if (!isUuid(groupId)) throw bad("workspaceGroupID must be a UUID", "workspaceGroupID");
    const g = await this.o.db.selectFrom("workspace_groups").select("id").where("id", "=", groupId).where("org_id", "=", orgId).executeTakeFirst();
    if (!g) throw new ParhelionError("ERR_NOT_FOUND", "workspace group not found", { details: { field: "workspaceGroupID" } });
  }

  private async row(orgId: string, id: string) {
    if (!isUuid(id)) throw new ParhelionError("ERR_NOT_FOUND", "audit sink not found");
    const r = await this.o.db.selectFrom("audit_sinks").selectAll().where("id", "=", id).where("org_id", "=", orgId).where("deleted_at", "is", null).executeTakeFirst();
    if (!r) throw new ParhelionError("ERR_NOT_FOUND", "audit sink not found");
    return r;
  }

  private async openSecrets(r: { id: string; secrets_enc: Buffer | null }): Promise<Record<string, string>> {
    if (!r.secrets_enc) return {};
    const plain = await this.o.keys.open(secretPurpose(r.id), r.secrets_enc);
    try {
      return JSON.parse(plain.toString("utf8")) as Record<string, string>;
    } finally {
      plain.fill(0);
    }
  }

  /** The running definition of a stored sink: secrets and file key opened through the key hierarchy. */
  async definition(id: string): Promise<SinkDefinition> {
    const r = await this.o.db.selectFrom("audit_sinks").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
    const cfg = r.config as unknown as StoredConfig;
    return {
      id: r.id, orgId: r.org_id, groupId: r.group_id, name: r.name, kind: r.kind, failMode: r.fail_mode, enabled: r.enabled,
      settings: { ...defaultSettings(r.kind), ...cfg.settings }, config: cfg.transport, secrets: await this.openSecrets(r),
      fileKey: await this.o.keys.open(fileKeyPurpose(r.id), r.file_key_enc),
    };
  }

  /**
   * Gives every organization that never had a sink a file sink named "default": audit is on from the first
   * statement, encrypted on local disk, queryable, and statement records need no store row each. An
   * organization that deleted its sinks does not get it back. Returns the organizations given one.
   */
  async ensureDefaults(record: (e: AuditEvent) => Promise<boolean>): Promise<string[]> {
    const orgs = await this.o.db.selectFrom("organizations").select("id")
      .where(({ not, exists, selectFrom }) => not(exists(selectFrom("audit_sinks").select("audit_sinks.id").whereRef("audit_sinks.org_id", "=", "organizations.id")))).execute();
    const made: string[] = [];
    for (const { id: orgId } of orgs) {
      try {
        const v = await this.create(orgId, null, { name: "default", type: "file" });
        made.push(orgId);
        await record({
          type: "AuditSinkCreate", source: "System", result: "SUCCESS", orgId, actor: { type: "system" }, resource: { type: "AuditSink", id: v.auditSinkID },
          reason: "the organization's default audit sink: encrypted files under the data directory", attributes: { sinkName: "default", sinkType: "file", failMode: "open", workspaceGroupID: null, secretsSet: [] },
        });
      } catch (err) {
        if (err instanceof ParhelionError && err.code === "ERR_CONFLICT") continue; // another process made it
        // The organization's keys are not this process's to open (another control plane's local root key, or a
        // disabled one): no sink is made here; its records stay in the store.
        if (err instanceof ParhelionError && err.code === "ERR_KEY_UNAVAILABLE") continue;
        throw err;
      }
    }
    return made;
  }

  /**
   * Every sink to run at start. A sink whose secrets or file key cannot be opened (its organization's keys are
   * unavailable to this process: a disabled root key, or another control plane's local root key) is left out and
   * reported; the organization's statement records then go to the store, and its other records stay there too.
   */
  async definitions(onUnavailable?: (sinkId: string, err: unknown) => void): Promise<SinkDefinition[]> {
    const rows = await this.o.db.selectFrom("audit_sinks").select("id").where("deleted_at", "is", null).orderBy("created_at").execute();
    const out: SinkDefinition[] = [];
    for (const r of rows) {
      try {
        out.push(await this.definition(r.id));
      } catch (err) {
        if (!(err instanceof ParhelionError && err.code === "ERR_KEY_UNAVAILABLE")) throw err;
        onUnavailable?.(r.id, err);
      }
    }
    return out;
  }

  private view(r: Awaited<ReturnType<AuditSinks["row"]>>): SinkView {
    const cfg = r.config as unknown as StoredConfig;
    return {
      auditSinkID: r.id, name: r.name, type: r.kind, workspaceGroupID: r.group_id, failMode: r.fail_mode, enabled: r.enabled,
      config: cfg.transport, settings: { ...defaultSettings(r.kind), ...cfg.settings }, secretsSet: r.secrets_enc === null ? [] : [...((r.config as unknown as StoredConfig).secretNames ?? SECRET_NAMES[r.kind])],
      createdAt: new Date(r.created_at).toISOString(), updatedAt: new Date(r.updated_at).toISOString(), status: this.o.pipeline.status(r.id),
    };
  }

  async get(orgId: string, id: string): Promise<SinkView> {
    return this.view(await this.row(orgId, id));
  }

  async list(orgId: string): Promise<SinkView[]> {
    const rows = await this.o.db.selectFrom("audit_sinks").selectAll().where("org_id", "=", orgId).where("deleted_at", "is", null).orderBy("created_at").orderBy("id").execute();
    return rows.map((r) => this.view(r));
  }

  async update(orgId: string, id: string, patch: SinkPatch): Promise<SinkView> {
    const r = await this.row(orgId, id);
    const cfg = r.config as unknown as StoredConfig;
    const secrets = patch.secrets === undefined ? await this.openSecrets(r) : { ...(await this.openSecrets(r)), ...patch.secrets };
    const transport = patch.config === undefined && patch.secrets === undefined ? cfg.transport : await this.validate(r.kind, patch.config ?? cfg.transport, secrets);
    const settings = patch.settings === undefined ? cfg.settings : this.settings(patch.settings, cfg.settings);
    const secretsEnc = patch.secrets === undefined ? r.secrets_enc : await this.o.keys.seal(orgId, secretPurpose(id), Buffer.from(JSON.stringify(secrets), "utf8"));
    try {
      await this.o.db.updateTable("audit_sinks").set({
        ...(patch.name !== undefined ? { name: patch.name } : {}), ...(patch.failMode !== undefined ? { fail_mode: patch.failMode } : {}),
        ...(patch.enabled !== undefined ? { enabled: patch.enabled } : {}), config: JSON.stringify({ transport, settings, secretNames: Object.keys(secrets).sort() } satisfies StoredConfig),
        secrets_enc: secretsEnc, updated_at: new Date(),
      }).where("id", "=", id).execute();
    } catch (err) {
      if ((err as { code?: unknown }).code === "23505") throw new ParhelionError("ERR_CONFLICT", `an audit sink named "${patch.name ?? ""}" already exists`);
      throw err;
    }
    await this.o.pipeline.add(await this.definition(id));
    return this.get(orgId, id);
  }

  /** Stops the sink and deletes its local files (spool or file-sink files); the store keeps every record. */
  async delete(orgId: string, id: string): Promise<void> {
    await this.row(orgId, id);
    await this.o.db.updateTable("audit_sinks").set({ deleted_at: new Date(), enabled: false }).where("id", "=", id).execute();
    await this.o.pipeline.remove(id, true);
  }

  /** The sink's local lines (file sinks: all retained; remote sinks: the undelivered spool), in order. */
  async lines(orgId: string, id: string): Promise<Iterable<string>> {
    await this.row(orgId, id);
    await this.o.pipeline.flushed(id);
    return this.o.pipeline.lines(id) ?? [];
  }

  /** The organization's checkpoint-signing public keys (made on first use). */
  async signingKeys(orgId: string): Promise<Array<{ keyID: string; algorithm: "Ed25519"; publicKey: string }>> {
    const k = await this.o.signing.publicKey(orgId, true);
    return k ? [{ keyID: k.kid, algorithm: "Ed25519", publicKey: k.pem }] : [];
  }
}

/** The store as the pipeline reads it when a sink catches up. */
export function storeReader(db: Db): StoreReader {
  return {
    async after(orgId, after, limit) {
      const rows = await db.selectFrom("audit_log")
        .select(["seq", "id", "org_id", "created_at", "type", "source", "result", "actor_type", "actor_id", "actor_email", "resource_type", "resource_id", "source_ip", "request_id", "reason", "attributes"])
        .where("seq", ">", after.toString()).where((eb) => eb.or([eb("org_id", "=", orgId), eb("org_id", "is", null)]))
        .orderBy("seq").limit(limit).execute();
      return rows.map(fieldsFromRow);
    },
    async head() {
      const r = await db.selectFrom("audit_log").select("seq").orderBy("seq", "desc").limit(1).executeTakeFirst();
      return r ? BigInt(r.seq) : 0n;
    },
  };
}
