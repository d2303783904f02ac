import { spawn } from "node:child_process";
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { apiAction, isUuid, type Ctx } from "../context.js";
import { CliError, EXIT, usageError } from "../errors.js";
import { emit, printRecord, printTable } from "../output.js";
import type { ApiClient } from "../client.js";
import type { Workspace, WorkspaceGroup } from "../types.js";

/** A workspace by ID, or by name when exactly one live workspace has it. */
async function resolveWorkspace(client: ApiClient, ref: string): Promise<Workspace> {
  if (isUuid(ref)) return client.get<Workspace>(`/v1/workspaces/${ref}`);
  const all = (await client.get<Workspace[]>("/v1/workspaces")).filter((w) => w.name === ref);
  if (all.length === 1) return all[0]!;
  if (all.length === 0) throw new CliError(EXIT.NOT_FOUND, "ERR_NOT_FOUND", `no workspace named "${ref}"`, { hint: "`parhelion workspace list` shows them" });
  throw usageError(`${all.length} workspaces are named "${ref}" (in different groups)`, "use the workspace ID");
}

/** A workspace group by ID, or by name when exactly one has it. */
export async function resolveGroupId(client: ApiClient, ref: string): Promise<string> {
  if (isUuid(ref)) return ref;
  const all = (await client.get<WorkspaceGroup[]>("/v1/workspaceGroups")).filter((g) => g.name === ref);
  if (all.length === 1) return all[0]!.workspaceGroupID;
  if (all.length === 0) throw new CliError(EXIT.NOT_FOUND, "ERR_NOT_FOUND", `no workspace group named "${ref}"`, { hint: "`parhelion workspace-group list` shows them" });
  throw usageError(`${all.length} workspace groups are named "${ref}"`, "use the group ID");
}

function ranges(v: string): string[] {
  return v.split(",").map((s) => s.trim()).filter(Boolean);
}

/** Where a client reaches the gateway: the API host's address (they share --host), and the CA to trust. */
async function connectionOf(ctx: Ctx, w: Workspace, opts: { caFile?: string; hostaddr?: string }): Promise<{ host: string; hostaddr: string; port: number; caFile: string }> {
  const apiHost = new URL(ctx.client.target.url).hostname.replace(/^\[|\]$/g, "");
  const hostaddr = opts.hostaddr ?? (isIP(apiHost) ? apiHost : (await lookup(apiHost)).address);
  const caFile = opts.caFile ?? process.env["PARHELION_CA_FILE"] ?? ctx.client.target.caFile;
  if (!caFile) throw usageError("no CA file to verify the workspace's certificate", "pass --ca-file DATA_DIR/tls/ca.crt or set PARHELION_CA_FILE");
  return { host: w.endpoint, hostaddr, port: w.port, caFile };
}

function password(opts: { passwordFile?: string }): string | undefined {
  if (opts.passwordFile !== undefined) {
    try {
      return readFileSync(opts.passwordFile, "utf8").replace(/\r?\n$/, "");
    } catch (err) {
      throw usageError(`cannot read ${opts.passwordFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
  return process.env["PGPASSWORD"];
}

/** A libpq conninfo value, quoted when it holds anything but plain characters. */
function conninfoValue(v: string): string {
  return /^[A-Za-z0-9_@.:\/+-]+$/.test(v) ? v : `'${v.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
}

/**
 * Who logs in: -U with PGPASSWORD / --password-file as given; with neither, a short-lived credential of
 * the caller's own (the API mints it; the database user is the caller's e-mail address or API key).
 */
async function loginFor(ctx: Ctx, workspaceID: string, opts: { user?: string; passwordFile?: string }): Promise<{ user: string; pw: string | undefined }> {
  const pw = password(opts);
  if (opts.user !== undefined || pw !== undefined) return { user: opts.user ?? "admin", pw };
  const { body } = await ctx.client.call<{ databaseUser: string; token: string; expiresAt: string }>("POST", `/v1/workspaces/${workspaceID}/credentials`, { body: {} });
  process.stderr.write(`using a short-lived credential for database user ${body.databaseUser} (valid until ${body.expiresAt})\n`);
  return { user: body.databaseUser, pw: body.token };
}

/** `workspace-group ...`, `workspace ...`, `connect`, `sql`. */
/** The API's `kmsKey` object from the CLI's flags (the PIN read from its file, never from the command line). */
function customerKey(provider: string, keyID: string, region: string | undefined, pinFile: string | undefined): Record<string, unknown> {
  const key: Record<string, unknown> = { provider, keyID };
  if (region !== undefined) key["region"] = region;
  if (pinFile !== undefined) key["pin"] = password({ passwordFile: pinFile });
  return key;
}

export function registerWorkspaces(program: Command): void {
  const wg = program.command("workspace-group").alias("wg").description("Workspace groups: firewall, TLS minimum and admin password of a set of workspaces");

  wg.command("create").description("Create a workspace group (its admin password is shown once when generated)")
    .argument("<name>")
    .option("--region <regionID>", "placement region (default: the only one)")
    .option("--firewall <cidrs>", "comma-separated CIDRs allowed to connect (default: this host only)")
    .option("--allow-all-traffic", "admit every address (not recommended)")
    .option("--tls-min-version <v>", "1.2 or 1.3")
    .option("--audit-level <level>", "statement audit: OFF, LOGINS-ONLY, ADMIN-ONLY (default), WRITES-ONLY, ALL-QUERIES, ALL-QUERIES-PLAINTEXT, ALL-RESULTS (and -INCLUDING-PARSE-FAILS)")
    .option("--admin-password-file <file>", "set the admin password from a file instead of generating one")
    .option("--kms-provider <provider>", "wrap the group's data key under a customer-managed key from birth: aws-kms or pkcs11 (with --kms-key-id)")
    .option("--kms-key-id <id>", "aws-kms: key id, ARN or alias; pkcs11: <token label>/<key label>")
    .option("--kms-region <region>", "aws-kms: the key's region when --kms-key-id is not an ARN")
    .option("--kms-pin-file <file>", "pkcs11: file holding the token's user PIN")
    .action(apiAction(async ({ client, format }, name: string, opts: { region?: string; firewall?: string; allowAllTraffic?: boolean; tlsMinVersion?: string; auditLevel?: string; adminPasswordFile?: string; kmsProvider?: string; kmsKeyId?: string; kmsRegion?: string; kmsPinFile?: string }) => {
      const regionID = opts.region ?? (await client.get<Array<{ regionID: string }>>("/v1/regions"))[0]?.regionID;
      const body: Record<string, unknown> = { name, regionID };
      if (opts.firewall !== undefined) body["firewallRanges"] = ranges(opts.firewall);
      if (opts.allowAllTraffic) body["allowAllTraffic"] = true;
      if (opts.tlsMinVersion !== undefined) body["tlsMinVersion"] = opts.tlsMinVersion;
      if (opts.auditLevel !== undefined) body["auditLevel"] = opts.auditLevel;
      if (opts.adminPasswordFile !== undefined) body["adminPassword"] = password({ passwordFile: opts.adminPasswordFile });
      if (opts.kmsProvider !== undefined || opts.kmsKeyId !== undefined || opts.kmsRegion !== undefined || opts.kmsPinFile !== undefined) {
        if (opts.kmsProvider === undefined || opts.kmsKeyId === undefined) throw usageError("give --kms-provider and --kms-key-id together");
        body["kmsKey"] = customerKey(opts.kmsProvider, opts.kmsKeyId, opts.kmsRegion, opts.kmsPinFile);
      }
      const { body: r } = await client.call<{ workspaceGroupID: string; adminPassword?: string }>("POST", "/v1/workspaceGroups", { body });
      emit(format, r, () => {
        process.stdout.write(`created workspace group ${r.workspaceGroupID}\n`);
        if (r.adminPassword) process.stdout.write(`admin password (shown once): ${r.adminPassword}\n`);
      });
    }));

  wg.command("list").description("List workspace groups")
    .option("--include-terminated", "also terminated groups")
    .action(apiAction(async ({ client, format }, opts: { includeTerminated?: boolean }) => {
      const groups = await client.get<WorkspaceGroup[]>("/v1/workspaceGroups", opts.includeTerminated ? { includeTerminated: "true" } : {});
      emit(format, groups, () => printTable(groups, [
        { header: "GROUP ID", get: (g) => g.workspaceGroupID }, { header: "NAME", get: (g) => g.name }, { header: "STATE", get: (g) => g.state },
        { header: "FIREWALL", get: (g) => (g.allowAllTraffic ? "all traffic" : g.firewallRanges.join(",")) }, { header: "TLS", get: (g) => `>=${g.tlsMinVersion}` }, { header: "AUDIT", get: (g) => g.auditLevel },
      ]));
    }));

  wg.command("show").description("Show a workspace group").argument("<group>", "ID or name")
    .action(apiAction(async ({ client, format }, ref: string) => {
      const g = await client.get<WorkspaceGroup>(`/v1/workspaceGroups/${await resolveGroupId(client, ref)}`);
      emit(format, g, () => printRecord(g as unknown as Record<string, unknown>));
    }));

  wg.command("update").description("Change a group's firewall, TLS minimum, audit level, name or admin password").argument("<group>", "ID or name")
    .option("--name <name>").option("--firewall <cidrs>", "comma-separated CIDRs (replaces the list)")
    .option("--allow-all-traffic <bool>", "true or false").option("--tls-min-version <v>", "1.2 or 1.3")
    .option("--audit-level <level>", "statement audit level (see create); applies to sessions that start afterwards")
    .option("--admin-password-file <file>", "new admin password, read from a file")
    .action(apiAction(async ({ client, format }, ref: string, opts: { name?: string; firewall?: string; allowAllTraffic?: string; tlsMinVersion?: string; auditLevel?: string; adminPasswordFile?: string }) => {
      const body: Record<string, unknown> = {};
      if (opts.name !== undefined) body["name"] = opts.name;
      if (opts.firewall !== undefined) body["firewallRanges"] = ranges(opts.firewall);
      if (opts.allowAllTraffic !== undefined) {
        if (opts.allowAllTraffic !== "true" && opts.allowAllTraffic !== "false") throw usageError("--allow-all-traffic takes true or false");
        body["allowAllTraffic"] = opts.allowAllTraffic === "true";
      }
      if (opts.tlsMinVersion !== undefined) body["tlsMinVersion"] = opts.tlsMinVersion;
      if (opts.auditLevel !== undefined) body["auditLevel"] = opts.auditLevel;
      if (opts.adminPasswordFile !== undefined) body["adminPassword"] = password({ passwordFile: opts.adminPasswordFile });
      if (Object.keys(body).length === 0) throw usageError("nothing to change", "pass --firewall, --tls-min-version, --audit-level, --name, --allow-all-traffic or --admin-password-file");
      const { body: r } = await client.call<{ workspaceGroupID: string }>("PATCH", `/v1/workspaceGroups/${await resolveGroupId(client, ref)}`, { body });
      emit(format, r, () => process.stdout.write(`updated workspace group ${r.workspaceGroupID}\n`));
    }));

  wg.command("set-kms").description("Wrap the group's data key under a customer-managed key (online, no data rewrite), or --platform to go back to the platform key")
    .argument("<group>", "ID or name")
    .option("--provider <provider>", "aws-kms or pkcs11")
    .option("--key-id <id>", "aws-kms: key id, ARN or alias; pkcs11: <token label>/<key label>")
    .option("--region <region>", "aws-kms: the key's region when --key-id is not an ARN")
    .option("--pin-file <file>", "pkcs11: file holding the token's user PIN")
    .option("--platform", "back to the platform's key hierarchy")
    .action(apiAction(async ({ client, format }, ref: string, opts: { provider?: string; keyId?: string; region?: string; pinFile?: string; platform?: boolean }) => {
      let kmsKey: Record<string, unknown> | null;
      if (opts.platform) {
        if (opts.provider !== undefined || opts.keyId !== undefined) throw usageError("--platform takes no --provider or --key-id");
        kmsKey = null;
      } else {
        if (opts.provider === undefined || opts.keyId === undefined) throw usageError("give --provider and --key-id, or --platform");
        kmsKey = customerKey(opts.provider, opts.keyId, opts.region, opts.pinFile);
      }
      const id = await resolveGroupId(client, ref);
      await client.call<{ workspaceGroupID: string }>("PATCH", `/v1/workspaceGroups/${id}`, { body: { kmsKey } });
      const g = await client.get<{ workspaceGroupID: string; kmsKey: { provider: string; keyID: string; status: string } | null }>(`/v1/workspaceGroups/${id}`);
      emit(format, g, () => process.stdout.write(g.kmsKey ? `workspace group ${id}: data key wrapped by ${g.kmsKey.provider} ${g.kmsKey.keyID} (${g.kmsKey.status})\n` : `workspace group ${id}: data key wrapped by the platform key\n`));
    }));

  wg.command("delete").description("Terminate a workspace group").argument("<group>", "ID or name")
    .option("--force", "also terminate its workspaces")
    .action(apiAction(async ({ client, format }, ref: string, opts: { force?: boolean }) => {
      const { body: r } = await client.call<{ workspaceGroupID: string }>("DELETE", `/v1/workspaceGroups/${await resolveGroupId(client, ref)}`, { query: opts.force ? { force: "true" } : {} });
      emit(format, r, () => process.stdout.write(`terminated workspace group ${r.workspaceGroupID}\n`));
    }));

  const ws = program.command("workspace").alias("ws").description("Workspaces: PostgreSQL servers reachable through the gateway");

  ws.command("create").description("Create a workspace (PENDING until its server runs; --wait waits for ACTIVE)")
    .argument("<name>").requiredOption("--group <group>", "workspace group ID or name")
    .option("--size <size>", "S-00, S-0, S-1, S-2 or S-4", "S-00")
    .option("--auto-suspend <minutes>", "suspend after this many idle minutes")
    .option("--wait", "wait until the workspace is ACTIVE")
    .action(apiAction(async ({ client, format }, name: string, opts: { group: string; size: string; autoSuspend?: string; wait?: boolean }) => {
      const body: Record<string, unknown> = { workspaceGroupID: await resolveGroupId(client, opts.group), name, size: opts.size };
      if (opts.autoSuspend !== undefined) {
        const m = Number(opts.autoSuspend);
        if (!Number.isInteger(m) || m < 1) throw usageError("--auto-suspend takes a whole number of minutes");
        body["autoSuspend"] = { suspendType: "IDLE", suspendAfterSeconds: m * 60 };
      }
      const { body: r } = await client.call<{ workspaceID: string }>("POST", "/v1/workspaces", { body });
      const w = opts.wait ? await waitFor(client, r.workspaceID, "ACTIVE") : undefined;
      emit(format, w ?? r, () => process.stdout.write(`created workspace ${r.workspaceID}${w ? ` (ACTIVE at ${w.endpoint})` : ""}\n`));
    }));

  ws.command("list").description("List workspaces").option("--group <group>", "only this group (ID or name)")
    .option("--include-terminated", "also terminated workspaces")
    .action(apiAction(async ({ client, format }, opts: { group?: string; includeTerminated?: boolean }) => {
      const query: Record<string, string> = {};
      if (opts.group) query["workspaceGroupID"] = await resolveGroupId(client, opts.group);
      if (opts.includeTerminated) query["includeTerminated"] = "true";
      const list = await client.get<Workspace[]>("/v1/workspaces", query);
      emit(format, list, () => printTable(list, [
        { header: "WORKSPACE ID", get: (w) => w.workspaceID }, { header: "NAME", get: (w) => w.name }, { header: "STATE", get: (w) => w.state },
        { header: "SIZE", get: (w) => w.size }, { header: "ENDPOINT", get: (w) => `${w.endpoint}:${w.port}` },
      ]));
    }));

  ws.command("show").description("Show a workspace").argument("<workspace>", "ID or name")
    .action(apiAction(async ({ client, format }, ref: string) => {
      const w = await resolveWorkspace(client, ref);
      emit(format, w, () => printRecord(w as unknown as Record<string, unknown>));
    }));

  for (const [verb, path, state, text] of [["suspend", "suspend", "SUSPENDED", "suspended"], ["resume", "resume", "ACTIVE", "resumed"], ["delete", "", "TERMINATED", "terminated"]] as const) {
    ws.command(verb).description(`${verb[0]!.toUpperCase()}${verb.slice(1)} a workspace`).argument("<workspace>", "ID or name")
      .option("--wait", `wait until it is ${state}`)
      .action(apiAction(async ({ client, format }, ref: string, opts: { wait?: boolean }) => {
        const w = await resolveWorkspace(client, ref);
        const { body: r } = await client.call<{ workspaceID: string }>(path ? "POST" : "DELETE", `/v1/workspaces/${w.workspaceID}${path ? `/${path}` : ""}`);
        if (opts.wait) await waitFor(client, w.workspaceID, state);
        emit(format, r, () => process.stdout.write(`${text} workspace ${r.workspaceID}${opts.wait ? "" : " (in progress)"}\n`));
      }));
  }

  ws.command("resize").description("Change a workspace's size (its server restarts)").argument("<workspace>", "ID or name").argument("<size>")
    .action(apiAction(async ({ client, format }, ref: string, size: string) => {
      const w = await resolveWorkspace(client, ref);
      const { body: r } = await client.call<{ workspaceID: string }>("PATCH", `/v1/workspaces/${w.workspaceID}`, { body: { size } });
      emit(format, r, () => process.stdout.write(`resized workspace ${r.workspaceID} to ${size}\n`));
    }));

  const db = ws.command("database").alias("db").description("Databases in a workspace");
  db.command("list").argument("<workspace>").action(apiAction(async ({ client, format }, ref: string) => {
    const w = await resolveWorkspace(client, ref);
    const list = await client.get<Array<{ name: string; owner: string }>>(`/v1/workspaces/${w.workspaceID}/databases`);
    emit(format, list, () => printTable(list, [{ header: "DATABASE", get: (d) => d.name }, { header: "OWNER", get: (d) => d.owner }]));
  }));
  db.command("create").argument("<workspace>").argument("<name>").option("--owner <role>")
    .action(apiAction(async ({ client, format }, ref: string, name: string, opts: { owner?: string }) => {
      const w = await resolveWorkspace(client, ref);
      const { body: r } = await client.call<{ name: string }>("POST", `/v1/workspaces/${w.workspaceID}/databases`, { body: { name, ...(opts.owner ? { owner: opts.owner } : {}) } });
      emit(format, r, () => process.stdout.write(`created database ${r.name}\n`));
    }));
  db.command("drop").argument("<workspace>").argument("<name>")
    .action(apiAction(async ({ client, format }, ref: string, name: string) => {
      const w = await resolveWorkspace(client, ref);
      const { body: r } = await client.call<{ name: string }>("DELETE", `/v1/workspaces/${w.workspaceID}/databases/${encodeURIComponent(name)}`);
      emit(format, r, () => process.stdout.write(`dropped database ${r.name}\n`));
    }));

  const user = ws.command("user").description("Database users in a workspace");
  user.command("list").argument("<workspace>").action(apiAction(async ({ client, format }, ref: string) => {
    const w = await resolveWorkspace(client, ref);
    const list = await client.get<Array<{ userName: string; canLogin: boolean; createdb: boolean; createrole: boolean; memberOf: string[]; auditLevel: string | null }>>(`/v1/workspaces/${w.workspaceID}/users`);
    emit(format, list, () => printTable(list, [
      { header: "USER", get: (u) => u.userName }, { header: "LOGIN", get: (u) => u.canLogin }, { header: "CREATEDB", get: (u) => u.createdb },
      { header: "CREATEROLE", get: (u) => u.createrole }, { header: "MEMBER OF", get: (u) => u.memberOf.join(",") },
      { header: "AUDIT", get: (u) => u.auditLevel ?? "(group's)" },
    ]));
  }));
  user.command("update").description("Set a database user's password (--password-file) or its own statement audit level (--audit-level LEVEL, or 'group' for the group's)")
    .argument("<workspace>").argument("<name>").option("--password-file <file>").option("--audit-level <level>")
    .action(apiAction(async ({ client, format }, ref: string, name: string, opts: { passwordFile?: string; auditLevel?: string }) => {
      const w = await resolveWorkspace(client, ref);
      const body: Record<string, unknown> = {};
      if (opts.passwordFile !== undefined) body["password"] = password({ passwordFile: opts.passwordFile });
      if (opts.auditLevel !== undefined) body["auditLevel"] = opts.auditLevel === "group" ? null : opts.auditLevel;
      if (Object.keys(body).length === 0) throw usageError("nothing to change", "pass --password-file or --audit-level");
      const { body: r } = await client.call<{ userName: string }>("PATCH", `/v1/workspaces/${w.workspaceID}/users/${encodeURIComponent(name)}`, { body });
      emit(format, r, () => process.stdout.write(`updated database user ${r.userName}\n`));
    }));
  user.command("create").description("Create a database user (password generated and shown once unless --password-file)")
    .argument("<workspace>").argument("<name>").option("--password-file <file>").option("--createdb").option("--createrole").option("--grant <roles>", "comma-separated roles to grant")
    .action(apiAction(async ({ client, format }, ref: string, name: string, opts: { passwordFile?: string; createdb?: boolean; createrole?: boolean; grant?: string }) => {
      const w = await resolveWorkspace(client, ref);
      const body: Record<string, unknown> = { userName: name };
      if (opts.passwordFile !== undefined) body["password"] = password({ passwordFile: opts.passwordFile });
      if (opts.createdb) body["createdb"] = true;
      if (opts.createrole) body["createrole"] = true;
      if (opts.grant) body["grantRoles"] = ranges(opts.grant);
      const { body: r } = await client.call<{ userName: string; password?: string }>("POST", `/v1/workspaces/${w.workspaceID}/users`, { body });
      emit(format, r, () => {
        process.stdout.write(`created database user ${r.userName}\n`);
        if (r.password) process.stdout.write(`password (shown once): ${r.password}\n`);
      });
    }));
  user.command("drop").argument("<workspace>").argument("<name>")
    .action(apiAction(async ({ client, format }, ref: string, name: string) => {
      const w = await resolveWorkspace(client, ref);
      const { body: r } = await client.call<{ userName: string }>("DELETE", `/v1/workspaces/${w.workspaceID}/users/${encodeURIComponent(name)}`);
      emit(format, r, () => process.stdout.write(`dropped database user ${r.userName}\n`));
    }));

  program.command("connect").description("Open psql on a workspace over verified TLS: with no -U and no password, as your own database user with a short-lived credential (POST /v1/workspaces/{id}/credentials); otherwise with PGPASSWORD or --password-file")
    .argument("<workspace>", "ID or name")
    .option("-U, --user <name>", "database user (default: your own, with a short-lived credential; admin when a password is given)").option("-d, --database <name>", "database", "postgres")
    .option("--ca-file <file>", "CA certificate (default: the one saved at login)").option("--hostaddr <ip>", "gateway address (default: the API's)")
    .option("--password-file <file>")
    .option("--print", "print the connection string instead of running psql")
    .action(apiAction(async (ctx, ref: string, opts: { user?: string; database: string; caFile?: string; hostaddr?: string; passwordFile?: string; print?: boolean }) => {
      const w = await resolveWorkspace(ctx.client, ref);
      const c = await connectionOf(ctx, w, opts);
      const { user, pw } = await loginFor(ctx, w.workspaceID, opts);
      const conninfo = `host=${c.host} hostaddr=${c.hostaddr} port=${c.port} user=${conninfoValue(user)} dbname=${conninfoValue(opts.database)} sslmode=verify-full sslrootcert=${conninfoValue(c.caFile)}`;
      if (opts.print) {
        process.stdout.write(conninfo + "\n");
        return;
      }
      const code = await new Promise<number>((resolve, reject) => {
        const child = spawn("psql", [conninfo], { stdio: "inherit", env: { ...process.env, ...(pw !== undefined ? { PGPASSWORD: pw } : {}) } });
        child.on("error", (err) => reject(new CliError(EXIT.USAGE, "ERR_CLI_USAGE", `cannot run psql: ${err.message}`, { hint: "install postgresql-client (./bin/parhelion up installs it)" })));
        child.on("exit", (c2) => resolve(c2 ?? 1));
      });
      if (code !== 0) process.exitCode = code;
    }));

  program.command("sql").description("Run one SQL statement on a workspace and print the result (as your own database user with a short-lived credential, or -U with PGPASSWORD or --password-file)")
    .argument("<workspace>", "ID or name").argument("<statement>")
    .option("-U, --user <name>", "database user (default: your own, with a short-lived credential; admin when a password is given)").option("-d, --database <name>", "database", "postgres")
    .option("--ca-file <file>").option("--hostaddr <ip>").option("--password-file <file>")
    .action(apiAction(async (ctx, ref: string, statement: string, opts: { user?: string; database: string; caFile?: string; hostaddr?: string; passwordFile?: string }) => {
      const w = await resolveWorkspace(ctx.client, ref);
      const c = await connectionOf(ctx, w, opts);
      const { user, pw } = await loginFor(ctx, w.workspaceID, opts);
      if (pw === undefined) throw usageError(`no password for database user ${user}`, "set PGPASSWORD or pass --password-file (or leave out -U to use a short-lived credential of your own)");
      const { default: pg } = await import("pg");
      const client = new pg.Client({
        host: c.hostaddr, port: c.port, user, database: opts.database, password: pw,
        ssl: { ca: readFileSync(c.caFile, "utf8"), servername: c.host, rejectUnauthorized: true },
      });
      client.on("error", () => undefined);
      try {
        await client.connect();
        const r = await client.query({ text: statement, rowMode: "array" });
        const results = Array.isArray(r) ? r : [r];
        const last = results.at(-1)!;
        const cols = last.fields.map((f: { name: string }) => f.name);
        const rows = (last.rows as unknown[][]).map((row) => Object.fromEntries(cols.map((n: string, i: number) => [n, row[i]])));
        emit(ctx.format, { command: last.command, rowCount: last.rowCount, rows }, () => {
          if (cols.length > 0) printTable(rows, cols.map((n: string) => ({ header: n, get: (x: Record<string, unknown>) => x[n] })));
          else process.stdout.write(`${last.command}${last.rowCount !== null ? ` ${last.rowCount}` : ""}\n`);
        });
      } catch (err) {
        const e = err as { code?: string; message: string };
        throw new CliError(EXIT.REJECTED, e.code ? `SQLSTATE_${e.code}` : "ERR_SQL", e.message);
      } finally {
        await client.end().catch(() => undefined);
      }
    }));
}

/** Polls a workspace until it reaches `state` (or FAILED), for --wait. */
async function waitFor(client: ApiClient, id: string, state: string, timeoutMs = 120_000): Promise<Workspace> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const w = await client.get<Workspace>(`/v1/workspaces/${id}`);
    if (w.state === state) return w;
    if (w.state === "FAILED") throw new CliError(EXIT.UNAVAILABLE, "ERR_ENGINE", `workspace ${id} FAILED: ${w.stateReason ?? "see the server log"}`);
    if (Date.now() > deadline) throw new CliError(EXIT.UNAVAILABLE, "ERR_TIMEOUT", `workspace ${id} is still ${w.state}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
