import pg from "pg";
import { ParhelionError } from "../lib/errors.js";
import { parseScramVerifier } from "../gateway/protocol/scram.js";

/** The platform's superuser in every workspace (initdb's bootstrap superuser, OID 10). */
export const SYSTEM_ROLE = "parhelion_system";
/** The workspace administrator's role. */
export const ADMIN_ROLE = "admin";
/**
 * Members of this role log in from the gateway without a password: pg_hba.conf admits them by `trust` on
 * the workspace's socket, which only root and the service account can reach. They are the roles that log
 * in with tokens (a group's JWTs, parhelion's short-lived credentials): the gateway verifies the token
 * and then opens the server session. Only parhelion grants this membership (parhelion_guard refuses
 * everyone else), and never to a superuser.
 */
export const TOKEN_LOGIN_ROLE = "parhelion_token_login";
/** Databases that exist in every workspace and cannot be dropped. */
export const SYSTEM_DATABASES: readonly string[] = ["postgres", "template0", "template1"];

/**
 * Extensions a workspace's roles may create (parhelion_guard.extensions). Each is also marked trusted by
 * PostgreSQL (its control file), which PostgreSQL checks on its own: an untrusted one here would still be refused.
 */
export const ALLOWED_EXTENSIONS: readonly string[] = Object.freeze([
  "plpgsql", "pgcrypto", "hstore", "citext", "pg_trgm", "btree_gist", "btree_gin", "uuid-ossp", "tablefunc",
  "fuzzystrmatch", "unaccent", "intarray", "ltree", "cube", "isn", "seg", "tsm_system_rows", "tsm_system_time",
]);

/** Predefined roles the admin holds, each WITH ADMIN OPTION so it can hand them on. */
export const ADMIN_GRANTED_ROLES: readonly string[] = ["pg_monitor", "pg_signal_backend", "pg_read_all_data", "pg_write_all_data", "pg_checkpoint"];

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_$]{0,62}$/;
const RESERVED = new Set(["postgres", "template0", "template1", SYSTEM_ROLE, ADMIN_ROLE, TOKEN_LOGIN_ROLE]);

/**
 * Checks a name parhelion will create, alter or drop: a plain identifier, not reserved.
 * Throws ERR_VALIDATION naming what is wrong.
 */
export function validateName(name: unknown, what: string): string {
  if (typeof name !== "string" || !IDENTIFIER.test(name)) {
    throw new ParhelionError("ERR_VALIDATION", `${what} must start with a letter or underscore and contain only letters, digits, _ and $ (at most 63 characters)`);
  }
  if (RESERVED.has(name.toLowerCase()) || /^pg_/i.test(name)) throw new ParhelionError("ERR_VALIDATION", `${what} "${name}" is reserved`);
  return name;
}

/** Checks a reference to an existing role (owner, memberOf): a plain identifier, never the platform's role. */
export function validateRoleRef(name: unknown, what: string): string {
  if (typeof name !== "string" || !IDENTIFIER.test(name)) throw new ParhelionError("ERR_VALIDATION", `${what} is not a valid role name`);
  if (name === SYSTEM_ROLE) throw new ParhelionError("ERR_VALIDATION", `${what} "${name}" is reserved`);
  return name;
}

/** Checks a SCRAM-SHA-256 verifier string (never a password: no plaintext reaches SQL text or logs). */
export function validateVerifier(verifier: unknown, what = "verifier"): string {
  if (typeof verifier !== "string" || parseScramVerifier(verifier) === null) {
    throw new ParhelionError("ERR_VALIDATION", `${what} must be a SCRAM-SHA-256 verifier (see makeScramVerifier)`);
  }
  return verifier;
}

const ident = (s: string): string => pg.escapeIdentifier(s);
const literal = (s: string): string => pg.escapeLiteral(s);

/**
 * The setup run as parhelion_system after every start of a workspace server (one round trip): the admin
 * role with exactly its attributes and password, its predefined roles, and the right to work in the
 * `postgres` database. Statements that fail are not logged with their text (the verifier stays out of logs).
 */
export function adminSetupSql(verifier: string): string {
  const v = validateVerifier(verifier, "adminVerifier");
  return [
    "SET log_min_error_statement = panic",
    `DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = ${literal(ADMIN_ROLE)}) THEN CREATE ROLE ${ident(ADMIN_ROLE)}; END IF; END$$`,
    `ALTER ROLE ${ident(ADMIN_ROLE)} WITH LOGIN CREATEDB CREATEROLE NOSUPERUSER NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT -1 VALID UNTIL 'infinity' PASSWORD ${literal(v)}`,
    `GRANT ${ADMIN_GRANTED_ROLES.join(", ")} TO ${ident(ADMIN_ROLE)} WITH ADMIN OPTION`,
    `DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = ${literal(TOKEN_LOGIN_ROLE)}) THEN CREATE ROLE ${ident(TOKEN_LOGIN_ROLE)} NOLOGIN; END IF; END$$`,
    `GRANT CONNECT, CREATE, TEMPORARY ON DATABASE postgres TO ${ident(ADMIN_ROLE)}`,
    `GRANT USAGE, CREATE ON SCHEMA public TO ${ident(ADMIN_ROLE)}`,
    "RESET log_min_error_statement",
  ].join(";\n");
}

interface PgError {
  code?: string;
  message?: string;
}

/** Turns PostgreSQL's errors for the database/role API into parhelion's codes. */
export function mapPgError(err: unknown, what: string): ParhelionError {
  if (err instanceof ParhelionError) return err;
  const e = err as PgError;
  const msg = `${what}: ${e.message ?? String(err)}`;
  switch (e.code) {
    case "42710": // duplicate_object
    case "42P04": // duplicate_database
      return new ParhelionError("ERR_CONFLICT", msg, { cause: err });
    case "42704": // undefined_object
    case "3D000": // invalid_catalog_name
      return new ParhelionError("ERR_NOT_FOUND", msg, { cause: err });
    case "2BP01": // dependent_objects_still_exist
    case "55006": // object_in_use
      return new ParhelionError("ERR_CONFLICT", msg, { cause: err });
    case "42501": // insufficient_privilege (parhelion_guard, or PostgreSQL's own rules for the admin)
      return new ParhelionError("ERR_FORBIDDEN", msg, { cause: err });
    default:
      return new ParhelionError("ERR_ENGINE", msg, { cause: err });
  }
}

export interface DatabaseInfo {
  name: string;
  owner: string;
  /** postgres, template0, template1: cannot be dropped. */
  system: boolean;
}

export async function listDatabases(c: pg.Client): Promise<DatabaseInfo[]> {
  const r = await c.query<{ name: string; owner: string }>("SELECT datname AS name, pg_get_userbyid(datdba) AS owner FROM pg_database ORDER BY datname");
  return r.rows.map((row) => ({ name: row.name, owner: row.owner, system: SYSTEM_DATABASES.includes(row.name) }));
}

export async function createDatabase(c: pg.Client, name: string, owner: string): Promise<void> {
  const r = await c.query<{ rolsuper: boolean }>("SELECT rolsuper FROM pg_roles WHERE rolname = $1", [owner]);
  const row = r.rows[0];
  if (!row) throw new ParhelionError("ERR_NOT_FOUND", `role "${owner}" does not exist`);
  if (row.rolsuper) throw new ParhelionError("ERR_VALIDATION", `role "${owner}" cannot own a database`);
  await c.query(`CREATE DATABASE ${ident(name)} OWNER ${ident(owner)}`);
}

export async function dropDatabase(c: pg.Client, name: string): Promise<void> {
  // DROP DATABASE waits 5 s for sessions to leave before failing; answer at once instead (DROP still checks).
  const r = await c.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1", [name]);
  const n = r.rows[0]?.n ?? 0;
  if (n > 0) throw new ParhelionError("ERR_CONFLICT", `database "${name}" has ${n} open connection${n === 1 ? "" : "s"}`);
  await c.query(`DROP DATABASE ${ident(name)}`);
}

export interface UserInfo {
  name: string;
  canLogin: boolean;
  createdb: boolean;
  createrole: boolean;
  /** Roles this one is a direct member of. */
  memberOf: string[];
}

/** The workspace's roles, without the predefined pg_* roles and the platform's own. */
export async function listUsers(c: pg.Client): Promise<UserInfo[]> {
  const r = await c.query<{ name: string; canlogin: boolean; createdb: boolean; createrole: boolean; memberof: string[] }>(
    `SELECT r.rolname AS name, r.rolcanlogin AS canlogin, r.rolcreatedb AS createdb, r.rolcreaterole AS createrole,
            ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid ORDER BY g.rolname)::text[] AS memberof
       FROM pg_roles r
      WHERE r.rolname !~ '^pg_' AND NOT r.rolsuper
      ORDER BY r.rolname`,
  );
  return r.rows.map((row) => ({ name: row.name, canLogin: row.canlogin, createdb: row.createdb, createrole: row.createrole, memberOf: row.memberof }));
}

export interface CreateUserOptions {
  /** LOGIN (default true). */
  canLogin?: boolean;
  createdb?: boolean;
  createrole?: boolean;
  /** Existing roles to grant to the new one. */
  memberOf?: string[];
  /** Password expiry; null or absent: never. */
  validUntil?: Date | null;
  /** -1 (default): unlimited. */
  connectionLimit?: number;
}

/**
 * Runs fn as the admin role inside a transaction on a parhelion_system connection: the role API can do
 * nothing the workspace's admin could not (PostgreSQL's CREATEROLE rules and parhelion_guard apply).
 * Failing statements are not logged with their text (verifiers stay out of the server log).
 */
async function asAdmin<T>(c: pg.Client, fn: () => Promise<T>): Promise<T> {
  await c.query(`BEGIN; SET LOCAL log_min_error_statement = panic; SET LOCAL ROLE ${ident(ADMIN_ROLE)}`);
  try {
    const out = await fn();
    await c.query("COMMIT");
    return out;
  } catch (err) {
    await c.query("ROLLBACK").catch(() => undefined);
    throw err;
  }
}

export async function createUser(c: pg.Client, name: string, verifier: string, o: CreateUserOptions): Promise<void> {
  const attrs = [
    o.canLogin === false ? "NOLOGIN" : "LOGIN",
    o.createdb ? "CREATEDB" : "NOCREATEDB",
    o.createrole ? "CREATEROLE" : "NOCREATEROLE",
    `CONNECTION LIMIT ${o.connectionLimit ?? -1}`,
    `VALID UNTIL ${literal(o.validUntil ? o.validUntil.toISOString() : "infinity")}`,
    `PASSWORD ${literal(verifier)}`,
  ];
  await asAdmin(c, async () => {
    await c.query(`CREATE ROLE ${ident(name)} WITH ${attrs.join(" ")}`);
    for (const m of o.memberOf ?? []) await c.query(`GRANT ${ident(m)} TO ${ident(name)}`);
  });
}

export async function setUserPassword(c: pg.Client, name: string, verifier: string): Promise<void> {
  await asAdmin(c, () => c.query(`ALTER ROLE ${ident(name)} WITH PASSWORD ${literal(verifier)}`));
}

export async function dropUser(c: pg.Client, name: string): Promise<void> {
  await asAdmin(c, () => c.query(`DROP ROLE ${ident(name)}`));
}

export interface LoginInfo {
  /** The SCRAM-SHA-256 verifier, or null when the role has none (no password, or another kind). */
  verifier: string | null;
  /** LOGIN and not a superuser: the platform's own role never logs in through the gateway. */
  canLogin: boolean;
  /** Password expiry; null: never. */
  validUntil: Date | null;
  /** A member of parhelion_token_login: logs in with a token, and upstream without a password. */
  tokenLogin: boolean;
}

export async function getLoginInfo(c: pg.Client, role: string): Promise<LoginInfo | null> {
  const r = await c.query<{ rolpassword: string | null; canlogin: boolean; rolvaliduntil: Date | null; tokenlogin: boolean }>(
    `SELECT a.rolpassword, a.rolcanlogin AND NOT a.rolsuper AS canlogin, a.rolvaliduntil,
       EXISTS (SELECT FROM pg_auth_members m JOIN pg_authid t ON t.oid = m.roleid WHERE m.member = a.oid AND t.rolname = $2) AS tokenlogin
     FROM pg_authid a WHERE a.rolname = $1`,
    [role, TOKEN_LOGIN_ROLE],
  );
  const row = r.rows[0];
  if (!row) return null;
  const verifier = parseScramVerifier(row.rolpassword) ? row.rolpassword : null;
  // 'infinity' arrives as the Infinity timestamp, which node-postgres turns into an Invalid Date or a string.
  const until = row.rolvaliduntil instanceof Date && Number.isFinite(row.rolvaliduntil.getTime()) ? row.rolvaliduntil : null;
  return { verifier, canLogin: row.canlogin, validUntil: until, tokenLogin: row.tokenlogin };
}

/**
 * A role name a token may carry (a JWT claim, a person's e-mail address): 1 to 63 bytes of printable
 * characters, not reserved, not PostgreSQL's `pg_` prefix. Always quoted when used.
 */
export function validateTokenRoleName(name: unknown): string {
  if (typeof name !== "string" || name.length === 0 || Buffer.byteLength(name) > 63 || !/^[\x21-\x7e\u00a0-\uffff][\x20-\x7e\u00a0-\uffff]*$/.test(name)) {
    throw new ParhelionError("ERR_VALIDATION", "a token's database role must be 1 to 63 bytes of printable characters");
  }
  if (RESERVED.has(name.toLowerCase()) || /^pg_/i.test(name)) throw new ParhelionError("ERR_VALIDATION", `database role "${name}" is reserved`);
  return name;
}

export interface TokenRoleResult {
  /** The role did not exist and was created. */
  created: boolean;
  /** Roles granted now (missing memberships of `grants`). */
  granted: string[];
}

/**
 * Makes `name` a role that logs in with tokens: creates it (LOGIN, no password) when `create` allows and it
 * is missing, makes it a member of parhelion_token_login (as parhelion: only it may), and grants it the
 * roles in `grants` it lacks and revokes those in `revoke` it holds — both as the admin role, so PostgreSQL's CREATEROLE rules and
 * parhelion_guard decide as they would for the workspace's admin. A superuser or a NOLOGIN role is refused.
 */
export async function ensureTokenRole(c: pg.Client, name: string, o: { create: boolean; grants: readonly string[]; revoke?: readonly string[] }): Promise<TokenRoleResult | null> {
  try {
    return await ensureTokenRoleOnce(c, name, o);
  } catch (err) {
    // Two first logins at once: the other one created the role (or the membership) first.
    if ((err as PgError).code === "42710" || (err as PgError).code === "23505") return ensureTokenRoleOnce(c, name, o);
    throw err;
  }
}

async function ensureTokenRoleOnce(c: pg.Client, name: string, o: { create: boolean; grants: readonly string[]; revoke?: readonly string[] }): Promise<TokenRoleResult | null> {
  const role = validateTokenRoleName(name);
  for (const g of [...o.grants, ...(o.revoke ?? [])]) validateRoleRef(g, "granted role");
  await c.query("BEGIN; SET LOCAL log_min_error_statement = panic");
  try {
    const r = await c.query<{ rolsuper: boolean; rolcanlogin: boolean }>("SELECT rolsuper, rolcanlogin FROM pg_roles WHERE rolname = $1", [role]);
    const row = r.rows[0];
    let created = false;
    if (!row) {
      if (!o.create) {
        await c.query("ROLLBACK");
        return null;
      }
      await c.query(`CREATE ROLE ${ident(role)} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT`);
      created = true;
    } else if (row.rolsuper) {
      throw new ParhelionError("ERR_FORBIDDEN", `database role "${role}" is a superuser and never logs in with a token`);
    } else if (!row.rolcanlogin) {
      throw new ParhelionError("ERR_FORBIDDEN", `database role "${role}" cannot log in (NOLOGIN)`);
    }
    await c.query(`GRANT ${ident(TOKEN_LOGIN_ROLE)} TO ${ident(role)}`);
    const have = await c.query<{ rolname: string }>(
      "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = $1",
      [role],
    );
    const held = new Set(have.rows.map((x) => x.rolname));
    const granted: string[] = [];
    const revoke = (o.revoke ?? []).filter((g) => held.has(g) && !o.grants.includes(g));
    if (o.grants.some((g) => !held.has(g)) || revoke.length > 0) {
      await c.query(`SET LOCAL ROLE ${ident(ADMIN_ROLE)}`);
      for (const g of o.grants) {
        if (held.has(g)) continue;
        await c.query(`GRANT ${ident(g)} TO ${ident(role)}`);
        granted.push(g);
      }
      for (const g of revoke) await c.query(`REVOKE ${ident(g)} FROM ${ident(role)}`);
    }
    await c.query("COMMIT");
    return { created, granted };
  } catch (err) {
    await c.query("ROLLBACK").catch(() => undefined);
    throw err;
  }
}
