import type { Command } from "commander";
import { apiAction, resolveUserId, type Ctx } from "../context.js";
import { usageError } from "../errors.js";
import { emit, printTable } from "../output.js";
import type { Organization, ResourceRoleView } from "../types.js";

interface Target { org?: boolean; team?: string; group?: string }

/** The accessControls path of --org, --team ID or --group ID (exactly one). */
async function accessPath({ client }: Ctx, t: Target): Promise<{ path: string; label: string }> {
  if ([Boolean(t.org), t.team !== undefined, t.group !== undefined].filter(Boolean).length !== 1) throw usageError("give exactly one of --org, --team ID and --group ID");
  if (t.group !== undefined) return { path: `/v1/workspaceGroups/${encodeURIComponent(t.group)}/accessControls`, label: `workspace group ${t.group}` };
  if (t.team !== undefined) return { path: `/v1/teams/${encodeURIComponent(t.team)}/accessControls`, label: `team ${t.team}` };
  const org = await client.get<Organization>("/v1/organizations/current");
  return { path: `/v1/organizations/${org.orgID}/accessControls`, label: `organization ${org.name}` };
}

/** `access show|grant|revoke` on the organization or a team (PATCH .../accessControls). */
export function registerAccess(program: Command): void {
  const access = program.command("access").description("Who holds which role on the organization or a team");

  access.command("show").description("Show the roles on the organization or a team and who holds them")
    .option("--org", "the organization")
    .option("--team <teamID>", "a team")
    .option("--group <workspaceGroupID>", "a workspace group (roles Owner, Writer, Reader)")
    .action(apiAction(async (ctx, opts: Target) => {
      const { path } = await accessPath(ctx, opts);
      const views = await ctx.client.get<ResourceRoleView[]>(path);
      emit(ctx.format, views, () => printTable(views, [
        { header: "ROLE", get: (v) => v.role }, { header: "USERS", get: (v) => v.users.map((u) => u.email) }, { header: "TEAMS", get: (v) => v.teams.map((t) => t.name) },
      ]));
    }));

  for (const [verb, field] of [["grant", "grants"], ["revoke", "revokes"]] as const) {
    access.command(verb).description(`${verb === "grant" ? "Grant" : "Revoke"} a role on the organization or a team`)
      .option("--org", "on the organization")
      .option("--team <teamID>", "on a team")
      .option("--group <workspaceGroupID>", "on a workspace group")
      .requiredOption("--role <role>", "role name (`parhelion role list Organization|Team`)")
      .option("--user <user...>", `users ${verb === "grant" ? "receiving" : "losing"} the role (ID or email)`)
      .option("--team-member <teamID...>", `teams ${verb === "grant" ? "receiving" : "losing"} the role`)
      .action(apiAction(async (ctx, opts: Target & { role: string; user?: string[]; teamMember?: string[] }) => {
        if (!opts.user?.length && !opts.teamMember?.length) throw usageError(`name who ${verb === "grant" ? "receives" : "loses"} the role: --user and/or --team-member`);
        const { path, label } = await accessPath(ctx, opts);
        const users = opts.user ? await Promise.all(opts.user.map((u) => resolveUserId(ctx.client, u))) : undefined;
        const rg = { role: opts.role, ...(users ? { users } : {}), ...(opts.teamMember ? { teams: opts.teamMember } : {}) };
        const { body } = await ctx.client.call<{ resourceID: string }>("PATCH", path, { body: { [field]: [rg] } });
        const who = [users?.length ? `${users.length} user(s)` : "", opts.teamMember?.length ? `${opts.teamMember.length} team(s)` : ""].filter(Boolean).join(" and ");
        emit(ctx.format, body, () => process.stdout.write(`${verb === "grant" ? "granted" : "revoked"} ${opts.role} on ${label} ${verb === "grant" ? "to" : "from"} ${who}\n`));
      }));
  }
}
