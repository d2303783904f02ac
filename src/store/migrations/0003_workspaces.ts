import { sql, type Kysely } from "kysely";

/**
 * Regions, workspace groups and workspaces. A workspace row holds both the desired state (what the API
 * asked for) and the observed state (what the reconciler last achieved); the reconciler drives one to the
 * other, so a crash at any step is finished by the next start.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE TABLE regions (
    id uuid PRIMARY KEY,
    name text NOT NULL UNIQUE,
    provider text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
  )`.execute(db);
  await sql`CREATE TABLE workspace_groups (
    id uuid PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations(id),
    name text NOT NULL,
    region_id uuid NOT NULL REFERENCES regions(id),
    firewall_ranges text[] NOT NULL,
    allow_all_traffic boolean NOT NULL DEFAULT false,
    admin_verifier text NOT NULL,
    tls_min_version text NOT NULL DEFAULT '1.2' CHECK (tls_min_version IN ('1.2', '1.3')),
    update_window jsonb,
    expires_at timestamptz,
    state text NOT NULL CHECK (state IN ('PENDING', 'ACTIVE', 'FAILED', 'TERMINATED')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    terminated_at timestamptz
  )`.execute(db);
  await sql`CREATE UNIQUE INDEX workspace_groups_live_name ON workspace_groups (org_id, lower(name)) WHERE state <> 'TERMINATED'`.execute(db);
  await sql`CREATE TABLE workspaces (
    id uuid PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations(id),
    group_id uuid NOT NULL REFERENCES workspace_groups(id),
    name text NOT NULL,
    size text NOT NULL,
    auto_suspend jsonb,
    desired_state text NOT NULL CHECK (desired_state IN ('ACTIVE', 'SUSPENDED', 'TERMINATED')),
    state text NOT NULL CHECK (state IN ('PENDING', 'ACTIVE', 'SUSPENDED', 'RESUMING', 'FAILED', 'TERMINATED')),
    state_reason text,
    generation integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    last_resumed_at timestamptz,
    suspended_at timestamptz,
    terminated_at timestamptz,
    last_activity_at timestamptz
  )`.execute(db);
  await sql`CREATE UNIQUE INDEX workspaces_live_name ON workspaces (group_id, lower(name)) WHERE state <> 'TERMINATED'`.execute(db);
  await sql`CREATE INDEX workspaces_group ON workspaces (group_id)`.execute(db);
  await sql`CREATE INDEX workspaces_unsettled ON workspaces (id) WHERE state <> desired_state`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE workspaces`.execute(db);
  await sql`DROP TABLE workspace_groups`.execute(db);
  await sql`DROP TABLE regions`.execute(db);
}
