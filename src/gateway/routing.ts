import { createSecureContext, type SecureContext } from "node:tls";
import { X509Certificate } from "node:crypto";
import { join } from "node:path";
import { mkdirSync } from "node:fs";
import type { Db } from "../store/db.js";
import type { CertAndKey } from "../tls/index.js";
import { ensureServerCert } from "../tls/index.js";
import { Firewall } from "../workspaces/firewall.js";
import { isUuid } from "../lib/ids.js";
import type { WorkspaceState } from "../store/schema.js";
import { tlsServerEndPoint } from "./protocol/scram.js";
import type { AuditLevel } from "../audit/sql/classify.js";

/** What the gateway knows of a workspace group. */
export interface GroupRoute {
  id: string;
  orgId: string;
  firewall: Firewall;
  tlsMinVersion: "1.2" | "1.3";
  terminated: boolean;
  /** Statement audit level for sessions that start now. */
  auditLevel: AuditLevel;
}

/** What the gateway knows of a workspace. */
export interface WorkspaceRoute {
  id: string;
  orgId: string;
  groupId: string;
  state: WorkspaceState;
  desiredState: "ACTIVE" | "SUSPENDED" | "TERMINATED";
  size: string;
  /** Why the workspace is in its state (FAILED: the error code first, e.g. `ERR_KEY_UNAVAILABLE: ...`). */
  stateReason: string | null;
}

/** A TLS server identity: the context to hand to node's TLS, and the channel-binding data of its certificate. */
export interface TlsIdentity {
  context: SecureContext;
  /** RFC 5929 tls-server-end-point of the certificate; null when the certificate's algorithm has none. */
  endPoint: Buffer | null;
}

const TTL_MS = 2000;
const TLS_OPTIONS = { ciphers: "ECDHE+AESGCM:ECDHE+CHACHA20", honorCipherOrder: true } as const;

/** Builds a TLS identity from a certificate and key (one shared context per identity, never one per connection). */
export function tlsIdentity(pair: CertAndKey, minVersion: "TLSv1.2" | "TLSv1.3"): TlsIdentity {
  const context = createSecureContext({ cert: pair.certPem, key: pair.keyPem, minVersion, ...TLS_OPTIONS });
  const der = new X509Certificate(pair.certPem).raw;
  return { context, endPoint: tlsServerEndPoint(der) };
}

/**
 * Resolves endpoints to workspaces and groups from the metadata store, with a short cache that the
 * workspace service's change events clear. Each group has its own server certificate from parhelion's CA
 * (a group is a security boundary), made on first use and kept under `<tlsDir>/groups/`.
 */
export class Router {
  private readonly groups = new Map<string, { at: number; route: GroupRoute | null }>();
  private readonly workspaces = new Map<string, { at: number; route: WorkspaceRoute | null }>();
  private readonly userLevels = new Map<string, { at: number; level: AuditLevel | null }>();
  private readonly identities = new Map<string, Promise<TlsIdentity>>();
  private allGroups: { at: number; firewalls: Firewall[] } | undefined;

  constructor(
    private readonly o: {
      db: Db;
      ca: CertAndKey;
      tlsDir: string;
      domain: string;
      hostNames: (groupId: string) => string[];
    },
  ) {
    mkdirSync(join(o.tlsDir, "groups"), { recursive: true, mode: 0o700 });
  }

  /** Forgets what it cached about a workspace or group. */
  invalidate(e: { workspaceID?: string; workspaceGroupID?: string }): void {
    if (e.workspaceID) this.workspaces.delete(e.workspaceID);
    if (e.workspaceGroupID) {
      this.groups.delete(e.workspaceGroupID);
      this.allGroups = undefined;
    }
  }

  async group(id: string): Promise<GroupRoute | null> {
    if (!isUuid(id)) return null;
    const c = this.groups.get(id);
    if (c && Date.now() - c.at < TTL_MS) return c.route;
    const g = await this.o.db.selectFrom("workspace_groups").select(["id", "org_id", "firewall_ranges", "allow_all_traffic", "tls_min_version", "state", "audit_level"]).where("id", "=", id).executeTakeFirst();
    const route = g ? { id: g.id, orgId: g.org_id, firewall: new Firewall(g.firewall_ranges, g.allow_all_traffic), tlsMinVersion: g.tls_min_version, terminated: g.state === "TERMINATED", auditLevel: g.audit_level as AuditLevel } : null;
    this.groups.set(id, { at: Date.now(), route });
    return route;
  }

  /** A database user's own statement audit level in a workspace, or null (the group's applies). */
  async userAuditLevel(workspaceId: string, role: string): Promise<AuditLevel | null> {
    const key = `${workspaceId}\u0000${role}`;
    const c = this.userLevels.get(key);
    if (c && Date.now() - c.at < TTL_MS) return c.level;
    const r = await this.o.db.selectFrom("database_user_audit_levels").select("audit_level").where("workspace_id", "=", workspaceId).where("role_name", "=", role).executeTakeFirst();
    const level = (r?.audit_level as AuditLevel | undefined) ?? null;
    if (this.userLevels.size >= 10_000) this.userLevels.clear();
    this.userLevels.set(key, { at: Date.now(), level });
    return level;
  }

  async workspace(id: string): Promise<WorkspaceRoute | null> {
    if (!isUuid(id)) return null;
    const c = this.workspaces.get(id);
    if (c && Date.now() - c.at < TTL_MS) return c.route;
    const w = await this.o.db.selectFrom("workspaces").select(["id", "org_id", "group_id", "state", "desired_state", "size", "state_reason"]).where("id", "=", id).executeTakeFirst();
    const route = w ? { id: w.id, orgId: w.org_id, groupId: w.group_id, state: w.state, desiredState: w.desired_state, size: w.size, stateReason: w.state_reason } : null;
    this.workspaces.set(id, { at: Date.now(), route });
    return route;
  }

  /**
   * True when some live group's firewall admits the address: a peer no group admits is dropped before it
   * can send a byte of TLS.
   */
  async anyGroupAllows(address: string | undefined): Promise<boolean> {
    if (!this.allGroups || Date.now() - this.allGroups.at >= TTL_MS) {
      const rows = await this.o.db.selectFrom("workspace_groups").select(["firewall_ranges", "allow_all_traffic"]).where("state", "<>", "TERMINATED").execute();
      this.allGroups = { at: Date.now(), firewalls: rows.map((r) => new Firewall(r.firewall_ranges, r.allow_all_traffic)) };
    }
    return this.allGroups.firewalls.some((f) => f.allows(address));
  }

  /**
   * Parses an SNI host name: `<workspaceID>.<groupID>.<domain>` or `<groupID>.<domain>`. Anything else
   * (an IP, localhost, another domain) names no group.
   */
  parseServerName(name: string | null): { workspaceId?: string; groupId: string } | null {
    if (!name) return null;
    const n = name.toLowerCase().replace(/\.$/, "");
    const suffix = `.${this.o.domain}`;
    if (!n.endsWith(suffix)) return null;
    const labels = n.slice(0, -suffix.length).split(".");
    if (labels.length === 1 && isUuid(labels[0]!)) return { groupId: labels[0]! };
    if (labels.length === 2 && isUuid(labels[0]!) && isUuid(labels[1]!)) return { workspaceId: labels[0]!, groupId: labels[1]! };
    return null;
  }

  /** The group's TLS identity at its minimum version (certificate issued once and renewed before expiry). */
  groupIdentity(groupId: string, minVersion: "1.2" | "1.3"): Promise<TlsIdentity> {
    const key = `${groupId}/${minVersion}`;
    let p = this.identities.get(key);
    if (!p) {
      p = ensureServerCert(this.o.ca, {
        certFile: join(this.o.tlsDir, "groups", `${groupId}.crt`),
        keyFile: join(this.o.tlsDir, "groups", `${groupId}.key`),
        hosts: this.o.hostNames(groupId),
      }).then((pair) => tlsIdentity(pair, minVersion === "1.3" ? "TLSv1.3" : "TLSv1.2"));
      p.catch(() => this.identities.delete(key));
      this.identities.set(key, p);
    }
    return p;
  }
}
