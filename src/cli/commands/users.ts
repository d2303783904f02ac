import { Option, type Command } from "commander";
import { ORG_ROLES } from "../../identity/types.js";
import { apiAction, resolveUserId } from "../context.js";
import { usageError } from "../errors.js";
import { promptHidden, readStdinLines } from "../input.js";
import { emit, note, printRecord, printTable } from "../output.js";
import type { IdentityRole, Invitation, User } from "../types.js";

interface Row { id: string; email: string; name: string; status: string; created: string }

/** `user list|invite|remove|roles|set-password`. */
export function registerUsers(program: Command): void {
  const user = program.command("user").description("Users and invitations");

  user.command("list").description("List the organization's users and its pending invitations")
    .addHelpText("after", "\nJSON output: {\"users\": <GET /v1/users>, \"invitations\": <GET /v1/invitations?state=Pending>}, every page.")
    .action(apiAction(async ({ client, format }) => {
      const users = await client.listAll<User>("/v1/users");
      const invitations = await client.listAll<Invitation>("/v1/invitations", { state: "Pending" });
      emit(format, { users, invitations }, () => {
        const rows: Row[] = [
          ...users.map((u) => ({ id: u.userID, email: u.email, name: `${u.firstName} ${u.lastName}`.trim(), status: "active", created: u.createdAt })),
          ...invitations.map((i) => ({ id: i.invitationID, email: i.email, name: "", status: i.expired ? "invitation expired" : `invited (${i.role})`, created: i.createdAt })),
        ];
        printTable(rows, [
          { header: "ID", get: (r) => r.id }, { header: "EMAIL", get: (r) => r.email }, { header: "NAME", get: (r) => r.name },
          { header: "STATUS", get: (r) => r.status }, { header: "CREATED", get: (r) => r.created },
        ]);
      });
    }));

  user.command("invite").description("Invite a person by email; prints the single-use invitation token once")
    .argument("<email>", "their email address")
    .addOption(new Option("--role <role>", "organization role granted on acceptance").choices(ORG_ROLES).default("Member"))
    .option("--team <teamID...>", "teams they join on acceptance")
    .option("--message <text>", "a note stored with the invitation")
    .action(apiAction(async ({ client, format }, email: string, opts: { role: string; team?: string[]; message?: string }) => {
      const { body: inv } = await client.call<Invitation>("POST", "/v1/invitations", {
        body: { email, role: opts.role, ...(opts.team ? { teamIDs: opts.team } : {}), ...(opts.message !== undefined ? { message: opts.message } : {}) },
      });
      emit(format, inv, () => printRecord({ ...inv }, ["invitationID", "email", "role", "teamIDs", "expiresAt", "token"]));
      note(`parhelion: the invitation token is shown only now: hand it to ${email} over a private channel; they accept it with \`parhelion invitation accept\` (it prompts for the token and a password), then sign in with \`parhelion login --email ${email}\`.`);
    }));

  user.command("remove").description("Remove a user from the organization and end their sessions")
    .argument("<user>", "user ID or email")
    .action(apiAction(async ({ client, format }, ref: string) => {
      const id = await resolveUserId(client, ref);
      const { body } = await client.call<{ userID: string }>("DELETE", `/v1/users/${id}`);
      emit(format, body, () => process.stdout.write(`removed user ${id}\n`));
    }));

  user.command("roles").description("List the roles a user holds, directly and through teams")
    .argument("<user>", "user ID or email")
    .option("--resource-type <type>", "only roles on this resource type")
    .action(apiAction(async ({ client, format }, ref: string, opts: { resourceType?: string }) => {
      const id = await resolveUserId(client, ref);
      const roles = await client.get<IdentityRole[]>(`/v1/users/${id}/identityRoles`, { resourceType: opts.resourceType });
      emit(format, roles, () => printTable(roles, [
        { header: "ROLE", get: (r) => r.role }, { header: "RESOURCE TYPE", get: (r) => r.resourceType },
        { header: "RESOURCE ID", get: (r) => r.resourceID }, { header: "VIA TEAM", get: (r) => r.viaTeamID },
      ]));
    }));

  user.command("set-password").description("Change your own password (the user the credential belongs to)")
    .option("--current", "also send the current password (needed once a password is set; always needed when signed in with a session)")
    .option("--password-stdin", "read the new password from stdin instead of prompting (with --current: current password on line 1, new on line 2)")
    .action(apiAction(async ({ client, format }, opts: { current?: boolean; passwordStdin?: boolean }) => {
      // A session proves who you are with a password, so the server requires the current one: ask for it.
      const session = client.target.credential?.kind === "session";
      const withCurrent = opts.current === true || session;
      let currentPassword: string | undefined;
      let newPassword: string;
      if (opts.passwordStdin) {
        if (session && !opts.current) throw usageError("signed in with a session, --current is required", "give the current password on line 1 and the new one on line 2 with --current --password-stdin");
        const lines = await readStdinLines(withCurrent ? 2 : 1);
        if (withCurrent) currentPassword = lines[0];
        newPassword = lines[withCurrent ? 1 : 0] ?? "";
      } else {
        if (!process.stdin.isTTY) throw usageError("stdin is not a terminal", "use --password-stdin to pipe the password in");
        if (withCurrent) currentPassword = await promptHidden("Current password: ");
        newPassword = await promptHidden("New password: ");
        const again = await promptHidden("Repeat new password: ");
        if (again !== newPassword) throw usageError("the passwords do not match");
      }
      if (!newPassword) throw usageError("the new password is empty");
      if (withCurrent && !currentPassword) throw usageError("the current password is empty");
      const { body } = await client.call<{ userID: string }>("POST", "/v1/auth/password", { body: { newPassword, ...(currentPassword !== undefined ? { currentPassword } : {}) } });
      emit(format, body, () => process.stdout.write(`password changed for user ${body.userID}; the user's other sessions have ended\n`));
    }));
}
