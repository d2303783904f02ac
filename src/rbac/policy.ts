import type { OrgRole, Principal } from "../identity/types.js";
import { permissionsOf, type Permission, type ResourceType } from "./roles.js";

export interface ResourceRef {
  type: ResourceType;
  id: string;
}

/** What a principal holds: organization roles and roles on single resources. */
export interface EffectiveGrants {
  orgRoles: ReadonlySet<OrgRole>;
  /** key: `${type}:${id}` */
  resourceRoles: ReadonlyMap<string, ReadonlySet<string>>;
}

export const NO_GRANTS: EffectiveGrants = { orgRoles: new Set(), resourceRoles: new Map() };

export type Decision = { allow: true } | { allow: false; reason: string };

/**
 * The one policy function: may `grants` do `permission` (on `resource`, when the action targets one)?
 * Organization roles apply everywhere in the organization; a resource role applies to that resource.
 */
export function authorize(principal: Principal | null, grants: EffectiveGrants, permission: Permission, resource?: ResourceRef): Decision {
  if (principal === null) return { allow: false, reason: "unauthenticated" };
  for (const role of grants.orgRoles) {
    if (permissionsOf("Organization", role).includes(permission)) return { allow: true };
  }
  if (resource !== undefined && resource.type !== "Organization") {
    const roles = grants.resourceRoles.get(`${resource.type}:${resource.id}`);
    for (const role of roles ?? []) {
      if (permissionsOf(resource.type, role).includes(permission)) return { allow: true };
    }
  }
  return { allow: false, reason: `missing permission ${permission}` };
}

/**
 * Which resources of a type a list may show: all of them (`"all"`) when an organization role grants the
 * permission, otherwise the ids the principal holds it on through resource roles (possibly none).
 */
export function visibleResources(principal: Principal | null, grants: EffectiveGrants, permission: Permission, type: ResourceType): "all" | string[] {
  if (principal === null) return [];
  for (const role of grants.orgRoles) if (permissionsOf("Organization", role).includes(permission)) return "all";
  const ids: string[] = [];
  for (const [key, roles] of grants.resourceRoles) {
    const sep = key.indexOf(":");
    if (key.slice(0, sep) !== type) continue;
    for (const role of roles) {
      if (permissionsOf(type, role).includes(permission)) {
        ids.push(key.slice(sep + 1));
        break;
      }
    }
  }
  return ids;
}
