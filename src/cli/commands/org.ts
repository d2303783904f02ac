import type { Command } from "commander";
import { apiAction } from "../context.js";
import { emit, printRecord, printTable } from "../output.js";
import type { Organization, RoleDefinition, WhoAmI } from "../types.js";

/** `org show`, `whoami`, `role list`. */
export function registerOrg(program: Command): void {
  const org = program.command("org").description("The organization");
  org.command("show").description("Show the organization you are signed in to (GET /v1/organizations/current)")
    .action(apiAction(async ({ client, format }) => {
      const o = await client.get<Organization>("/v1/organizations/current");
      emit(format, o, () => printRecord({ ...o }, ["orgID", "name", "createdAt"]));
    }));

  program.command("whoami").description("Show who the saved credential is: user or API key, and its roles")
    .action(apiAction(async ({ client, format }) => {
      const w = await client.get<WhoAmI>("/v1/auth/whoami");
      emit(format, w, () => printRecord({ ...w, url: client.target.url }, ["kind", "email", "userID", "apiKeyID", "orgID", "roles", "url"]));
    }));

  const role = program.command("role").description("Role definitions");
  role.command("list").description("List the roles of a resource type (GET /v1/roles/{resourceType})")
    .argument("<resourceType>", "Organization, Cluster or Team")
    .action(apiAction(async ({ client, format }, resourceType: string) => {
      const roles = await client.get<RoleDefinition[]>(`/v1/roles/${encodeURIComponent(resourceType)}`);
      emit(format, roles, () => printTable(roles, [
        { header: "ROLE", get: (r) => r.role },
        { header: "INHERITS", get: (r) => r.inherits.map((i) => `${i.resourceType}/${i.role}`) },
        { header: "DESCRIPTION", get: (r) => r.description },
        { header: "PERMISSIONS", get: (r) => r.permissions.join(" ") },
      ]));
    }));
}
