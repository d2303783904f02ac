import { z } from "zod";
import { defineRoute } from "../route.js";
import { Id, Email, Name, PageQuery, pagedList } from "../schemas.js";
import { ParhelionError } from "../../lib/errors.js";
import { ORG_ROLES } from "../../identity/types.js";
import { acceptInvitation, createInvitation, getInvitation, listInvitations, revokeInvitation } from "../../identity/index.js";
import { grantOrgRole } from "../../rbac/accessControls.js";

const Invitation = z.object({
  invitationID: Id, email: z.string(), state: z.enum(["Pending", "Accepted", "Refused", "Revoked"]), teamIDs: z.array(Id),
  message: z.string().nullable(), createdAt: z.string(), actedAt: z.string().nullable(), expiresAt: z.string(), expired: z.boolean(), role: z.enum(ORG_ROLES),
});
const InvParams = z.object({ invitationID: Id }).strict();

export const invitationRoutes = [
  defineRoute({
    method: "POST", path: "/v1/invitations", operationId: "createInvitation", tag: "Invitations", auditType: "UserInvite",
    summary: "Invites a person by email. The answer carries the single-use token once; hand it to them.", access: "invitations:write",
    body: z.object({ email: Email, teamIDs: z.array(Id).max(100).optional(), role: z.enum(ORG_ROLES).default("Member").describe("parhelion: organization role granted on acceptance."), message: z.string().max(2000).optional() }).strict(),
    response: Invitation.extend({ token: z.string() }),
    handler: async ({ body, principal, grants, services, audit }) => {
      if (body.role === "Owner" && !grants.orgRoles.has("Owner")) throw new ParhelionError("ERR_FORBIDDEN", "only an Owner invites an Owner");
      if (body.teamIDs && body.teamIDs.length > 0) {
        const n = await services.db.selectFrom("teams").select("id").where("org_id", "=", principal!.orgId).where("id", "in", body.teamIDs).execute();
        if (n.length !== new Set(body.teamIDs).size) throw new ParhelionError("ERR_NOT_FOUND", "one or more teams do not exist");
      }
      const r = await createInvitation(services.db, { orgId: principal!.orgId, email: body.email, role: body.role, teamIDs: body.teamIDs ?? [], message: body.message, createdBy: principal!.userId, ttlSeconds: services.settings.invitationTtlSeconds }, services.clock);
      audit.resource = { type: "Invitation", id: r.invitation.invitationID };
      audit.attributes = { email: body.email, role: body.role, teamIDs: body.teamIDs ?? [] };
      return { ...r.invitation, token: r.token };
    },
  }),
  defineRoute({
    method: "GET", path: "/v1/invitations", operationId: "listInvitations", tag: "Invitations",
    summary: "Invitations, newest first.", access: "invitations:read",
    query: z.object({ ...PageQuery, state: z.enum(["Pending", "Accepted", "Refused", "Revoked"]).optional() }).strict(), response: z.array(Invitation),
    handler: async ({ query, principal, services, reply }) => {
      return pagedList(query, reply, (page) => listInvitations(services.db, principal!.orgId, { ...page, state: query.state }, services.clock), (i) => i.invitationID);
    },
  }),
  defineRoute({
    method: "GET", path: "/v1/invitations/{invitationID}", operationId: "getInvitation", tag: "Invitations",
    summary: "One invitation.", access: "invitations:read", params: InvParams, response: Invitation,
    handler: async ({ params, principal, services }) => getInvitation(services.db, principal!.orgId, params.invitationID, services.clock),
  }),
  defineRoute({
    method: "DELETE", path: "/v1/invitations/{invitationID}", operationId: "revokeInvitation", tag: "Invitations", auditType: "InvitationRevoke",
    summary: "Revokes a pending invitation.", access: "invitations:write", params: InvParams, response: z.object({ invitationID: Id }),
    handler: async ({ params, principal, services, audit }) => {
      audit.resource = { type: "Invitation", id: params.invitationID };
      await revokeInvitation(services.db, principal!.orgId, params.invitationID, services.clock);
      return { invitationID: params.invitationID };
    },
  }),
  defineRoute({
    method: "POST", path: "/v1/auth/invitations/accept", operationId: "acceptInvitation", tag: "Authentication", auditType: "InvitationAccept",
    summary: "Accepts an invitation with its token and sets the new user's password.", access: "public",
    body: z.object({ token: z.string().min(1).max(256), password: z.string().min(1).max(1024), firstName: Name.optional(), lastName: Name.optional() }).strict(),
    response: z.object({ userID: Id, orgID: Id, email: z.string() }), status: 201,
    handler: async ({ body, services, req, audit }) => {
      const ip = req.socket.remoteAddress ?? req.ip;
      services.throttle.check({ source: ip });
      try {
        const r = await acceptInvitation(services.db, { token: body.token, password: body.password, firstName: body.firstName ?? "", lastName: body.lastName ?? "" }, services.clock, async (trx, user, inv) => {
          await grantOrgRole(trx, inv.orgId, user.userID, inv.role, null);
          if (inv.teamIDs.length > 0) {
            await trx.insertInto("team_members").values(inv.teamIDs.map((t) => ({ team_id: t, member_type: "user" as const, member_id: user.userID }))).onConflict((oc) => oc.doNothing()).execute();
          }
        });
        audit.actor = { type: "user", id: r.user.userID, email: r.user.email };
        audit.orgId = r.orgId;
        audit.resource = { type: "User", id: r.user.userID };
        return { userID: r.user.userID, orgID: r.orgId, email: r.user.email };
      } catch (err) {
        if (err instanceof ParhelionError && err.code === "ERR_INVITATION_INVALID") services.throttle.recordFailure({ source: ip });
        throw err;
      }
    },
  }),
];
