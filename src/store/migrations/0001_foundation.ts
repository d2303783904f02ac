import { sql, type Kysely } from "kysely";

/** Organizations, identity, RBAC and the audit chain. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE organizations (
      id uuid PRIMARY KEY,
      name text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE users (
      id uuid PRIMARY KEY,
      org_id uuid NOT NULL REFERENCES organizations(id),
      email text NOT NULL CHECK (email = lower(email)),
      first_name text NOT NULL DEFAULT '',
      last_name text NOT NULL DEFAULT '',
      password_hash text,
      password_changed_at timestamptz,
      created_at timestamptz NOT NULL DEFAULT now(),
      removed_at timestamptz
    );
    CREATE UNIQUE INDEX users_active_email ON users (email) WHERE removed_at IS NULL;
    CREATE TABLE invitations (
      id uuid PRIMARY KEY,
      org_id uuid NOT NULL REFERENCES organizations(id),
      email text NOT NULL,
      role text NOT NULL,
      team_ids uuid[] NOT NULL DEFAULT '{}',
      message text,
      token_hash bytea NOT NULL UNIQUE,
      state text NOT NULL CHECK (state IN ('Pending','Accepted','Refused','Revoked')),
      created_by uuid,
      created_at timestamptz NOT NULL DEFAULT now(),
      expires_at timestamptz NOT NULL,
      acted_at timestamptz,
      user_id uuid
    );
    CREATE INDEX invitations_org ON invitations (org_id, created_at);
    CREATE TABLE sessions (
      id uuid PRIMARY KEY,
      token_hash bytea NOT NULL UNIQUE,
      csrf_hash bytea NOT NULL,
      user_id uuid NOT NULL REFERENCES users(id),
      org_id uuid NOT NULL REFERENCES organizations(id),
      source_ip text,
      created_at timestamptz NOT NULL DEFAULT now(),
      expires_at timestamptz NOT NULL,
      last_seen_at timestamptz,
      revoked_at timestamptz
    );
    CREATE TABLE api_keys (
      id uuid PRIMARY KEY,
      org_id uuid NOT NULL REFERENCES organizations(id),
      name text NOT NULL,
      prefix text NOT NULL UNIQUE,
      secret_hash bytea NOT NULL,
      role text NOT NULL,
      created_by uuid,
      created_at timestamptz NOT NULL DEFAULT now(),
      expires_at timestamptz NOT NULL,
      last_used_at timestamptz,
      revoked_at timestamptz
    );
    CREATE TABLE teams (
      id uuid PRIMARY KEY,
      org_id uuid NOT NULL REFERENCES organizations(id),
      name text NOT NULL,
      description text NOT NULL DEFAULT '',
      created_at timestamptz NOT NULL DEFAULT now(),
      UNIQUE (org_id, name)
    );
    CREATE TABLE team_members (
      team_id uuid NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
      member_type text NOT NULL CHECK (member_type IN ('user','team')),
      member_id uuid NOT NULL,
      PRIMARY KEY (team_id, member_type, member_id)
    );
    CREATE TABLE access_controls (
      org_id uuid NOT NULL REFERENCES organizations(id),
      resource_type text NOT NULL,
      resource_id uuid NOT NULL,
      principal_type text NOT NULL CHECK (principal_type IN ('user','team')),
      principal_id uuid NOT NULL,
      role text NOT NULL,
      granted_by uuid,
      granted_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (resource_type, resource_id, principal_type, principal_id, role)
    );
    CREATE INDEX access_controls_principal ON access_controls (principal_type, principal_id);
    CREATE TABLE audit_log (
      seq bigint PRIMARY KEY,
      id uuid NOT NULL UNIQUE,
      org_id uuid,
      created_at timestamptz NOT NULL,
      type text NOT NULL,
      source text NOT NULL,
      result text NOT NULL CHECK (result IN ('SUCCESS','DENIED','FAILURE')),
      actor_type text NOT NULL,
      actor_id uuid,
      actor_email text,
      resource_type text,
      resource_id text,
      source_ip text,
      request_id text,
      reason text NOT NULL,
      attributes jsonb NOT NULL DEFAULT '{}',
      prev_hash bytea NOT NULL,
      hash bytea NOT NULL
    );
    CREATE INDEX audit_log_created ON audit_log (created_at, seq);
    CREATE INDEX audit_log_type ON audit_log (type, seq);
    CREATE TABLE settings (
      key text PRIMARY KEY,
      value jsonb NOT NULL,
      updated_at timestamptz NOT NULL DEFAULT now()
    );
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE settings, audit_log, access_controls, team_members, teams, api_keys, sessions, invitations, users, organizations`.execute(db);
}
