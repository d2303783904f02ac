import type { Command } from "commander";
import { apiAction, isUuid } from "../context.js";
import { emit, printRecord, printTable } from "../output.js";
import type { Team } from "../types.js";

function splitMembers(refs: readonly string[]): { ids: string[]; emails: string[] } {
  return { ids: refs.filter(isUuid), emails: refs.filter((r) => !isUuid(r)) };
}

/** `team create|list|show|delete|add-member|remove-member`. */
export function registerTeams(program: Command): void {
  const team = program.command("team").description("Teams");

  team.command("create").description("Create a team")
    .argument("<name>", "team name")
    .option("--description <text>", "what the team is for")
    .action(apiAction(async ({ client, format }, name: string, opts: { description?: string }) => {
      const { body } = await client.call<{ teamID: string }>("POST", "/v1/teams", { body: { name, ...(opts.description !== undefined ? { description: opts.description } : {}) } });
      emit(format, body, () => process.stdout.write(`created team ${body.teamID}\n`));
    }));

  team.command("list").description("List the organization's teams")
    .action(apiAction(async ({ client, format }) => {
      const teams = await client.listAll<Team>("/v1/teams");
      emit(format, teams, () => printTable(teams, [
        { header: "TEAM ID", get: (t) => t.teamID }, { header: "NAME", get: (t) => t.name },
        { header: "MEMBERS", get: (t) => t.memberUsers.length + t.memberTeams.length }, { header: "DESCRIPTION", get: (t) => t.description },
      ]));
    }));

  team.command("show").description("Show a team and its members")
    .argument("<teamID>")
    .action(apiAction(async ({ client, format }, id: string) => {
      const t = await client.get<Team>(`/v1/teams/${encodeURIComponent(id)}`);
      emit(format, t, () => printRecord({ ...t, memberUsers: t.memberUsers.map((u) => u.email), memberTeams: t.memberTeams.map((m) => m.name) }, ["teamID", "name", "description", "createdAt", "memberUsers", "memberTeams"]));
    }));

  team.command("delete").description("Delete a team and every grant to it")
    .argument("<teamID>")
    .action(apiAction(async ({ client, format }, id: string) => {
      const { body } = await client.call<{ teamID: string }>("DELETE", `/v1/teams/${encodeURIComponent(id)}`);
      emit(format, body, () => process.stdout.write(`deleted team ${body.teamID}\n`));
    }));

  for (const [verb, add] of [["add-member", true], ["remove-member", false]] as const) {
    team.command(verb).description(`${add ? "Add users to" : "Remove users from"} a team`)
      .argument("<teamID>")
      .requiredOption("--user <email...>", "users by email (or user ID)")
      .action(apiAction(async ({ client, format }, id: string, opts: { user: string[] }) => {
        const { ids, emails } = splitMembers(opts.user);
        const body = add
          ? { ...(emails.length ? { addMemberUserEmails: emails } : {}), ...(ids.length ? { addMemberUserIDs: ids } : {}) }
          : { ...(emails.length ? { removeMemberUserEmails: emails } : {}), ...(ids.length ? { removeMemberUserIDs: ids } : {}) };
        const r = await client.call<{ teamID: string }>("PATCH", `/v1/teams/${encodeURIComponent(id)}`, { body });
        emit(format, r.body, () => process.stdout.write(`${add ? "added" : "removed"} ${opts.user.length} user(s) ${add ? "to" : "from"} team ${r.body.teamID}\n`));
      }));
  }
}
