import type pg from "pg";
import type { Logger } from "../log/logger.js";
import type { EnforcedMemory, MemoryLimiter } from "./cgroup.js";
import type { SizeSpec, WorkspaceSize } from "./sizes.js";
import type { CreateUserOptions, DatabaseInfo, LoginInfo, TokenRoleResult, UserInfo } from "./sql.js";
import { PostgresWorkspaceEngine } from "./engine.js";
import type { NestedStatement } from "../audit/pgaudit.js";

export { WORKSPACE_SIZES, isWorkspaceSize, type WorkspaceSize, type SizeSpec } from "./sizes.js";
export { ALLOWED_EXTENSIONS, ADMIN_ROLE, SYSTEM_ROLE, SYSTEM_DATABASES, TOKEN_LOGIN_ROLE, validateName, validateTokenRoleName, type CreateUserOptions, type DatabaseInfo, type LoginInfo, type TokenRoleResult, type UserInfo } from "./sql.js";
export type { EnforcedMemory, LimitMechanism } from "./cgroup.js";

/** What the engine needs to run a workspace. */
export interface WorkspaceSpec {
  /** The workspace's UUID. */
  id: string;
  size: WorkspaceSize;
  /** The admin role's password as a SCRAM-SHA-256 verifier (makeScramVerifier), never the password itself. */
  adminVerifier: string;
  /**
   * The directory that holds the workspace's data directory, `<storage>/<id>/pgdata`: its group's encrypted
   * volume (EncryptedVolume.path). Default: the engine's own directory (no encryption at rest). The socket
   * and the logs stay in `<dir>/<id>/` either way.
   */
  storage?: string;
}

/** What limits a workspace server actually runs under. */
export interface WorkspaceLimits {
  /** The size the server was last started with (null when this engine has not started it). */
  size: WorkspaceSize | null;
  /** The size's PostgreSQL settings and intended memory limit. */
  settings: SizeSpec | null;
  /** The memory limit the kernel enforces, read back from the postmaster's cgroup. */
  memory: EnforcedMemory;
}

export interface CrashEvent {
  id: string;
  code: number | null;
  signal: string | null;
}

/** Each parhelion workspace is a PostgreSQL server process supervised by the engine. */
export interface WorkspaceEngine {
  /** Creates the server if its data directory is absent (crash-safe), starts it if stopped, applies the size and the admin verifier; idempotent; resolves when it accepts connections. A size change restarts the server. */
  ensureRunning(ws: WorkspaceSpec): Promise<void>;
  /** Stops the server (fast shutdown, escalating), keeping its data: suspend. Idempotent. `storage`: as in WorkspaceSpec (default: where it last ran, else the engine's directory). */
  ensureStopped(id: string, storage?: string): Promise<void>;
  /** Stops the server and removes its directories (`<dir>/<id>` and `<storage>/<id>`). Idempotent. */
  destroy(id: string, storage?: string): Promise<void>;
  /** Workspace ids that have a directory in the engine's directory, or in `storage` (the reconciler removes those it does not know). */
  listOnDisk(storage?: string): string[];
  /** True while a server this engine started runs (false during a restart after a crash). */
  isRunning(id: string): boolean;
  /** The unix socket directory of a workspace (0700, owned by the service user); the port is 5432. */
  socketDir(id: string): string;
  /** Runs fn with a superuser connection (role parhelion_system, peer authentication) to a database of a running workspace. */
  withSystem<T>(id: string, database: string, fn: (c: pg.Client) => Promise<T>): Promise<T>;
  /**
   * Prepares a spare data directory in `storage` (default the engine's directory) in the background so the
   * next create there is fast (initdb costs ~1-3 s of CPU here); idempotent. The engine also refills a
   * storage's spare after a create in it when it is its own directory or holds several workspaces.
   */
  prepare(storage?: string): void;
  /** Stops making a spare in `storage` and forgets it (before its volume is locked or unmounted); the spare on disk stays. */
  releaseStorage(storage: string): Promise<void>;
  /** Stops every server this process started (platform shutdown; desired state unchanged). */
  stopAll(): Promise<void>;
  /** The size and the limits actually enforced on a workspace's server. */
  limits(id: string): WorkspaceLimits;

  /** Databases of a workspace, system ones flagged. */
  listDatabases(id: string): Promise<DatabaseInfo[]>;
  /** CREATE DATABASE owned by owner (default admin). ERR_CONFLICT when it exists, ERR_NOT_FOUND when the owner does not. */
  createDatabase(id: string, name: string, owner?: string): Promise<void>;
  /** DROP DATABASE; refuses postgres, template0 and template1. ERR_CONFLICT while it has connections. */
  dropDatabase(id: string, name: string): Promise<void>;
  /** Roles of a workspace, without pg_* and the platform's own. */
  listUsers(id: string): Promise<UserInfo[]>;
  /** CREATE ROLE with a SCRAM verifier, run with the admin role's privileges (never more). */
  createUser(id: string, name: string, verifier: string, opts?: CreateUserOptions): Promise<void>;
  /** ALTER ROLE ... PASSWORD with a SCRAM verifier, with the admin role's privileges. */
  setUserPassword(id: string, name: string, verifier: string): Promise<void>;
  /** DROP ROLE with the admin role's privileges; ERR_CONFLICT while the role owns objects. */
  dropUser(id: string, name: string): Promise<void>;
  /** What the gateway needs to authenticate a client as role (from pg_authid); null when the role does not exist. */
  getLoginInfo(id: string, role: string): Promise<LoginInfo | null>;
  /**
   * Makes `role` log in with tokens (member of parhelion_token_login), creating it when `create` allows,
   * and grants it `grants` as the workspace's admin would. Null when it is missing and not created.
   */
  ensureTokenRole(id: string, role: string, o: { create: boolean; grants: readonly string[]; revoke?: readonly string[] }): Promise<TokenRoleResult | null>;

  /** pgaudit.log's classes in force on a running workspace's server ([] for none). */
  auditClasses(id: string): readonly string[];
  /**
   * Sets pgaudit.log (ALTER SYSTEM, reload) and resolves once the server applies it: every statement sent after
   * that is logged by the new classes. Kept across restarts after a crash; a stopped workspace starts with none.
   */
  setAuditClasses(id: string, classes: readonly string[]): Promise<void>;
  /** Statements pgaudit logs inside functions, DO blocks, procedures and triggers (parhelion_guard keeps the top-level ones out of the log), read from the servers' csvlogs; the platform's own role's are left out. */
  onNestedStatement(listener: (e: NestedStatement) => void): void;

  on(event: "crash", listener: (e: CrashEvent) => void): this;
  on(event: "restarted", listener: (e: { id: string }) => void): this;
}

export interface EngineOptions {
  /** Where workspace directories live, e.g. `<dataDir>/workspaces`. */
  dir: string;
  /** The OS user servers run as when parhelion runs as root. */
  serviceUser: string;
  logger: Logger;
  /** Extra postgresql.conf settings for every workspace (tests pass fsync=off and the like); values as in postgresql.conf. */
  settings?: Record<string, string | number>;
  /** Extensions the workspaces' roles may create (default ALLOWED_EXTENSIONS); each must also be trusted by PostgreSQL. */
  extensions?: readonly string[];
  /** Keep a pre-initialised spare data directory (default true). */
  spare?: boolean;
  /** PostgreSQL's bin directory (default: the newest under /usr/lib/postgresql). */
  pgBin?: string;
  /** Where the preloaded modules must be installed (default: PostgreSQL's lib directory). Tests point it elsewhere. */
  libDir?: string;
  /** How memory limits are enforced (default: detected: cgroup v2, cgroup v1, or none). */
  memoryLimiter?: MemoryLimiter;
  /** Bytes of a server's csvlog read before the engine rotates it (default 16 MiB). */
  logRotateBytes?: number;
}

/** The workspace engine: one supervised PostgreSQL 15 server per workspace under `opts.dir/<id>`. */
export function createWorkspaceEngine(opts: EngineOptions): WorkspaceEngine {
  return new PostgresWorkspaceEngine(opts);
}
