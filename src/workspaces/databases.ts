import type { AuditLevel } from "../audit/sql/classify.js";
import { ParhelionError } from "../lib/errors.js";
import { makeScramVerifier } from "../gateway/protocol/scram.js";
import { generateAdminPassword, ADMIN_PASSWORD_MIN_LENGTH, type WorkspaceService } from "./service.js";

/** A database user as the API shows it. */
export interface DatabaseUserView {
  userName: string;
  canLogin: boolean;
  createdb: boolean;
  createrole: boolean;
  memberOf: string[];
  /** The user's own statement audit level; null: the workspace group's. */
  auditLevel: AuditLevel | null;
}

/** What the database routes need of the engine (src/engine). */
export interface EngineDatabaseOps {
  isRunning(id: string): boolean;
  listDatabases(id: string): Promise<Array<{ name: string; owner: string }>>;
  createDatabase(id: string, name: string, owner?: string): Promise<void>;
  dropDatabase(id: string, name: string): Promise<void>;
  listUsers(id: string): Promise<Array<{ name: string; canLogin: boolean; createdb: boolean; createrole: boolean; memberOf: string[] }>>;
  createUser(id: string, name: string, verifier: string, opts?: { createdb?: boolean; createrole?: boolean; inRoles?: string[] }): Promise<void>;
  setUserPassword(id: string, name: string, verifier: string): Promise<void>;
  dropUser(id: string, name: string): Promise<void>;
  ensureTokenRole(id: string, role: string, o: { create: boolean; grants: readonly string[]; revoke?: readonly string[] }): Promise<unknown>;
}

/**
 * Databases and database users of a workspace, through the Management API. The same objects can be made
 * with SQL by the workspace admin; this reads and changes the server itself, never a copy.
 */
export class DatabaseAdmin {
  constructor(
    private readonly workspaces: WorkspaceService,
    private readonly engine: EngineDatabaseOps,
  ) {}

  /** The workspace, which must be ACTIVE with its server running. */
  private async serving(orgId: string, workspaceId: string): Promise<string> {
    const w = await this.workspaces.workspaceRow(orgId, workspaceId);
    if (w.state !== "ACTIVE" || w.desired_state !== "ACTIVE" || !this.engine.isRunning(w.id)) {
      throw new ParhelionError("ERR_WORKSPACE_UNAVAILABLE", `the workspace is ${w.desired_state === "ACTIVE" ? w.state.toLowerCase() : w.desired_state.toLowerCase()}; databases and users can be managed while it is ACTIVE`);
    }
    return w.id;
  }

  /**
   * Makes `role` a user that logs in with tokens, with exactly the managed `grants` among `managed` (the
   * others revoked): a person's platform credential follows their current platform role.
   */
  async ensureTokenRole(orgId: string, workspaceId: string, role: string, grants: string[], managed: readonly string[] = ["admin", "pg_read_all_data"]): Promise<void> {
    await this.engine.ensureTokenRole(await this.serving(orgId, workspaceId), role, { create: true, grants, revoke: managed.filter((m) => !grants.includes(m)) });
  }

  async listDatabases(orgId: string, workspaceId: string): Promise<Array<{ name: string; owner: string }>> {
    return this.engine.listDatabases(await this.serving(orgId, workspaceId));
  }

  async createDatabase(orgId: string, workspaceId: string, input: { name: string; owner?: string | undefined }): Promise<{ name: string }> {
    await this.engine.createDatabase(await this.serving(orgId, workspaceId), input.name, input.owner);
    return { name: input.name };
  }

  async dropDatabase(orgId: string, workspaceId: string, name: string): Promise<{ name: string }> {
    await this.engine.dropDatabase(await this.serving(orgId, workspaceId), name);
    return { name };
  }

  async listUsers(orgId: string, workspaceId: string): Promise<DatabaseUserView[]> {
    const id = await this.serving(orgId, workspaceId);
    const [users, levels] = await Promise.all([this.engine.listUsers(id), this.workspaces.userAuditLevels(id)]);
    return users.map((u) => ({ userName: u.name, canLogin: u.canLogin, createdb: u.createdb, createrole: u.createrole, memberOf: u.memberOf, auditLevel: levels.get(u.name) ?? null }));
  }

  /** Creates a login role; the password is generated (and returned once) when none is given. */
  async createUser(orgId: string, workspaceId: string, input: { userName: string; password?: string | undefined; createdb?: boolean | undefined; createrole?: boolean | undefined; grantRoles?: string[] | undefined }): Promise<{ userName: string; password?: string }> {
    const id = await this.serving(orgId, workspaceId);
    const generated = input.password === undefined ? generateAdminPassword() : undefined;
    const password = input.password ?? generated!;
    checkPassword(password);
    await this.engine.createUser(id, input.userName, makeScramVerifier(password), { createdb: input.createdb ?? false, createrole: input.createrole ?? false, inRoles: input.grantRoles ?? [] });
    return generated === undefined ? { userName: input.userName } : { userName: input.userName, password: generated };
  }

  async setPassword(orgId: string, workspaceId: string, userName: string, password: string): Promise<{ userName: string }> {
    const id = await this.serving(orgId, workspaceId);
    checkPassword(password);
    await this.engine.setUserPassword(id, userName, makeScramVerifier(password));
    return { userName };
  }

  async dropUser(orgId: string, workspaceId: string, userName: string): Promise<{ userName: string }> {
    await this.engine.dropUser(await this.serving(orgId, workspaceId), userName);
    return { userName };
  }
}

function checkPassword(pw: string): void {
  if (pw.length < ADMIN_PASSWORD_MIN_LENGTH || pw.length > 256) throw new ParhelionError("ERR_PASSWORD_POLICY", `password must be ${ADMIN_PASSWORD_MIN_LENGTH} to 256 characters`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(pw)) throw new ParhelionError("ERR_PASSWORD_POLICY", "password must not contain control characters");
}
