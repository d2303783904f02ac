/*
 * parhelion_guard: restrictions a parhelion workspace needs and PostgreSQL 15 does not make, for every
 * session whose session user is not a superuser (the workspace's admin role and the roles it creates).
 *
 * 1. PostgreSQL 15 lets a role with CREATEROLE grant membership in any non-superuser role, itself
 *    included, so CREATEROLE reaches pg_execute_server_program (COPY ... PROGRAM: a shell as the server's
 *    OS user), pg_read_server_files and pg_write_server_files (any file the server can read or write).
 *    The guard refuses every membership change into those roles, and into any role that is a superuser
 *    or a member of one of them: GRANT/REVOKE role, CREATE ROLE ... IN ROLE/IN GROUP, ALTER GROUP ...
 *    ADD/DROP USER. Renaming, altering, dropping or commenting on such a role is refused too.
 *    parhelion_token_login is guarded the same way: pg_hba.conf lets its members in without a password
 *    (the gateway has verified their token), so only parhelion may change who is one.
 * 2. Superuser roles (the platform's own parhelion_system above all) cannot be given memberships.
 * 3. CREATE EXTENSION is limited to the names in parhelion_guard.extensions (PGC_SIGHUP: only the
 *    server's configuration sets it; parhelion writes it on the postmaster's command line). Extensions
 *    installed by CASCADE are checked as well, when their pg_extension row is created.
 *
 * 4. Every statement that can change what a login checks (CREATE/ALTER/DROP ROLE, GRANT/REVOKE of a role,
 *    renaming a role) sends NOTIFY parhelion_roles, delivered at commit and dropped on rollback, for every
 *    session, parhelion's own included: the gateway caches login information and forgets it when notified.
 *
 * 5. pgaudit writes a line for every statement it audits. parhelion's gateway records the statements its
 *    clients send itself (with their outcome) and reads only pgaudit's lines of statements run inside
 *    functions and DO blocks (SUBSTATEMENT_ID > 1) from the server's log, so pgaudit's own lines of
 *    top-level statements are not written: an emit_log_hook drops them, which spares every audited
 *    statement a log line. A top-level statement's line is SUBSTATEMENT_ID 1, or, when pgaudit numbered
 *    another line first (the inner query of CREATE TABLE AS or EXECUTE, the procedure of a CALL), the line
 *    whose statement is the client's query string itself; a FUNCTION EXECUTE line quotes its caller's text
 *    and is kept. Only lines raised by pgaudit's log_audit_event (the C location, which SQL cannot forge)
 *    are touched.
 *
 * Exempt from 1-3: sessions whose session user is a superuser and that currently run as one (parhelion itself).
 * Code that runs as a superuser on behalf of a non-superuser session (a trusted extension's script,
 * a SECURITY DEFINER function) is not exempt.
 *
 * Loaded only through shared_preload_libraries.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_extension.h"
#include "commands/async.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/varlena.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static char *guard_extensions = NULL;
static ProcessUtility_hook_type prev_utility_hook = NULL;
static object_access_hook_type prev_object_access_hook = NULL;
static emit_log_hook_type prev_emit_log_hook = NULL;

/* pg_hba.conf admits its members without a password (the gateway has verified their token). */
#define TOKEN_LOGIN_ROLE "parhelion_token_login"

#define GUARDED_ROLES_DETAIL \
	"In a parhelion workspace no role other than the platform's may hold superuser rights or " \
	"membership in pg_execute_server_program, pg_read_server_files or pg_write_server_files, and only " \
	"parhelion makes roles members of parhelion_token_login."

static bool
guard_exempt(void)
{
	return superuser() && superuser_arg(GetSessionUserId());
}

/* A role whose membership would give server program or file access, or superuser rights. */
static bool
is_guarded_role(Oid roleid)
{
	if (!OidIsValid(roleid))
		return false;
	if (roleid == BOOTSTRAP_SUPERUSERID ||
		roleid == ROLE_PG_EXECUTE_SERVER_PROGRAM ||
		roleid == ROLE_PG_READ_SERVER_FILES ||
		roleid == ROLE_PG_WRITE_SERVER_FILES ||
		roleid == get_role_oid(TOKEN_LOGIN_ROLE, true))
		return true;
	/* true for superusers too, and through any chain of memberships, inherited or not */
	return is_member_of_role(roleid, ROLE_PG_EXECUTE_SERVER_PROGRAM) ||
		is_member_of_role(roleid, ROLE_PG_READ_SERVER_FILES) ||
		is_member_of_role(roleid, ROLE_PG_WRITE_SERVER_FILES);
}

static Oid
rolespec_oid(const RoleSpec *spec)
{
	if (spec == NULL || spec->roletype == ROLESPEC_PUBLIC)
		return InvalidOid;
	return get_rolespec_oid(spec, true);
}

static const char *
rolespec_name(const RoleSpec *spec)
{
	if (spec == NULL)
		return "?";
	if (spec->roletype == ROLESPEC_CSTRING)
		return spec->rolename;
	return get_rolespec_name(spec);
}

static void
deny_role(const char *action, const char *rolename)
{
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied to %s role \"%s\"", action, rolename),
			 errdetail(GUARDED_ROLES_DETAIL)));
}

static void
check_guarded_spec(const RoleSpec *spec, const char *action)
{
	if (is_guarded_role(rolespec_oid(spec)))
		deny_role(action, rolespec_name(spec));
}

/* Members to add to a role: none may be a superuser (that would change parhelion_system). */
static void
check_new_members(List *members)
{
	ListCell   *lc;

	foreach(lc, members)
	{
		RoleSpec   *spec = lfirst_node(RoleSpec, lc);
		Oid			oid = rolespec_oid(spec);

		if (OidIsValid(oid) && superuser_arg(oid))
			deny_role("change the memberships of", rolespec_name(spec));
	}
}

static bool
extension_allowed(const char *name)
{
	char	   *raw;
	List	   *names;
	ListCell   *lc;
	bool		ok = false;

	if (guard_extensions == NULL || guard_extensions[0] == '\0')
		return false;
	raw = pstrdup(guard_extensions);
	if (!SplitGUCList(raw, ',', &names))
		return false;			/* unparsable list: allow nothing */
	foreach(lc, names)
	{
		if (strcmp((const char *) lfirst(lc), name) == 0)
		{
			ok = true;
			break;
		}
	}
	list_free(names);
	pfree(raw);
	return ok;
}

static void
deny_extension(const char *name)
{
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("extension \"%s\" is not allowed in this workspace", name),
			 errdetail("Allowed extensions: %s.", guard_extensions && guard_extensions[0] ? guard_extensions : "none")));
}

static void
check_statement(Node *stmt)
{
	ListCell   *lc;

	switch (nodeTag(stmt))
	{
		case T_GrantRoleStmt:
			{
				GrantRoleStmt *s = (GrantRoleStmt *) stmt;

				foreach(lc, s->granted_roles)
				{
					AccessPriv *priv = lfirst_node(AccessPriv, lc);

					if (priv->priv_name && is_guarded_role(get_role_oid(priv->priv_name, true)))
						deny_role(s->is_grant ? "grant" : "revoke", priv->priv_name);
				}
				check_new_members(s->grantee_roles);
				break;
			}
		case T_CreateRoleStmt:
			{
				CreateRoleStmt *s = (CreateRoleStmt *) stmt;

				foreach(lc, s->options)
				{
					DefElem    *opt = lfirst_node(DefElem, lc);

					if (strcmp(opt->defname, "addroleto") == 0)
					{
						ListCell   *r;

						foreach(r, (List *) opt->arg)
							check_guarded_spec(lfirst_node(RoleSpec, r), "grant");
					}
					else if (strcmp(opt->defname, "rolemembers") == 0 ||
							 strcmp(opt->defname, "adminmembers") == 0)
						check_new_members((List *) opt->arg);
				}
				break;
			}
		case T_AlterRoleStmt:
			{
				AlterRoleStmt *s = (AlterRoleStmt *) stmt;

				check_guarded_spec(s->role, "alter");
				foreach(lc, s->options)
				{
					DefElem    *opt = lfirst_node(DefElem, lc);

					if (strcmp(opt->defname, "rolemembers") == 0)
						check_new_members((List *) opt->arg);
				}
				break;
			}
		case T_AlterRoleSetStmt:
			{
				AlterRoleSetStmt *s = (AlterRoleSetStmt *) stmt;

				if (s->role != NULL)
					check_guarded_spec(s->role, "alter");
				break;
			}
		case T_DropRoleStmt:
			foreach(lc, ((DropRoleStmt *) stmt)->roles)
				check_guarded_spec(lfirst_node(RoleSpec, lc), "drop");
			break;
		case T_RenameStmt:
			{
				RenameStmt *s = (RenameStmt *) stmt;

				if (s->renameType == OBJECT_ROLE && s->subname &&
					is_guarded_role(get_role_oid(s->subname, true)))
					deny_role("rename", s->subname);
				break;
			}
		case T_CommentStmt:
			{
				CommentStmt *s = (CommentStmt *) stmt;

				if (s->objtype == OBJECT_ROLE && s->object && IsA(s->object, String) &&
					is_guarded_role(get_role_oid(strVal(s->object), true)))
					deny_role("comment on", strVal(s->object));
				break;
			}
		case T_CreateExtensionStmt:
			{
				CreateExtensionStmt *s = (CreateExtensionStmt *) stmt;

				if (!extension_allowed(s->extname))
					deny_extension(s->extname);
				break;
			}
		default:
			break;
	}
}

/* Statements after which a login may check something else: a verifier, LOGIN, VALID UNTIL, a name. */
static bool
changes_logins(Node *stmt)
{
	switch (nodeTag(stmt))
	{
		case T_CreateRoleStmt:
		case T_AlterRoleStmt:
		case T_DropRoleStmt:
		case T_GrantRoleStmt:	/* membership in parhelion_token_login changes how a role logs in */
			return true;
		case T_RenameStmt:
			return ((RenameStmt *) stmt)->renameType == OBJECT_ROLE;
		default:
			return false;
	}
}

static void
guard_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
			  ProcessUtilityContext context, ParamListInfo params,
			  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	if (!guard_exempt())
		check_statement(pstmt->utilityStmt);
	if (changes_logins(pstmt->utilityStmt))
		Async_Notify("parhelion_roles", NULL);
	if (prev_utility_hook)
		prev_utility_hook(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
}

/*
 * The name of an extension whose pg_extension row the current command has just inserted: SnapshotSelf
 * sees the current command's own changes, which an MVCC catalog snapshot would not yet.
 */
static char *
new_extension_name(Oid extId)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	char	   *name = NULL;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(extId));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, SnapshotSelf, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
		name = pstrdup(NameStr(((Form_pg_extension) GETSTRUCT(tup))->extname));
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return name;
}

static void
guard_object_access(ObjectAccessType access, Oid classId, Oid objectId, int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);
	if (access == OAT_POST_CREATE && classId == ExtensionRelationId && !guard_exempt())
	{
		char	   *name = new_extension_name(objectId);

		if (name == NULL || !extension_allowed(name))
			deny_extension(name ? name : "?");
	}
}

/*
 * Steps over one field of pgaudit's CSV (append_valid_csv: quoted, with "" for a quote, when it holds a comma,
 * quote or line break) and the comma after it. With `compare` not NULL, also answers whether the field's value is
 * exactly that string. NULL when the line ends first.
 */
static const char *
csv_field(const char *m, const char *compare, bool *equal)
{
	bool		same = compare != NULL;

	if (*m == '"')
	{
		m++;
		for (;;)
		{
			if (*m == '\0')
				return NULL;
			if (*m == '"')
			{
				if (m[1] != '"')
					break;
				m++;
			}
			if (same && *compare++ != *m)
				same = false;
			m++;
		}
		m++;
	}
	else
		for (; *m != ',' && *m != '\0'; m++)
			if (same && *compare++ != *m)
				same = false;
	if (same && *compare != '\0')
		same = false;
	if (equal)
		*equal = same;
	if (*m != ',')
		return NULL;
	return m + 1;
}

/*
 * pgaudit's line of a top-level statement: "AUDIT: SESSION,<statement id>,1,..." (or OBJECT), or a line other than
 * a FUNCTION EXECUTE whose statement field is the client's query string (debug_query_string).
 */
static bool
is_top_level_audit_line(const char *m)
{
	bool		execute;
	bool		function;
	bool		client_text;

	if (strncmp(m, "AUDIT: SESSION,", 15) == 0)
		m += 15;
	else if (strncmp(m, "AUDIT: OBJECT,", 14) == 0)
		m += 14;
	else
		return false;
	if (*m < '0' || *m > '9')
		return false;
	while (*m >= '0' && *m <= '9')
		m++;
	if (strncmp(m, ",1,", 3) == 0)
		return true;
	if (debug_query_string == NULL || *m != ',')
		return false;
	/* the substatement id, then class, command, object type, object name, statement */
	m = csv_field(m + 1, NULL, NULL);
	if (m == NULL || (m = csv_field(m, "FUNCTION", &function)) == NULL || (m = csv_field(m, "EXECUTE", &execute)) == NULL)
		return false;
	if (function && execute)
		return false;
	if ((m = csv_field(m, NULL, NULL)) == NULL || (m = csv_field(m, NULL, NULL)) == NULL)
		return false;
	return csv_field(m, debug_query_string, &client_text) != NULL && client_text;
}

static void
guard_emit_log(ErrorData *edata)
{
	if (edata->output_to_server && (edata->elevel == LOG || edata->elevel == LOG_SERVER_ONLY) && edata->message != NULL &&
		edata->funcname != NULL && strcmp(edata->funcname, "log_audit_event") == 0 &&
		edata->filename != NULL && strcmp(edata->filename, "pgaudit.c") == 0 &&
		is_top_level_audit_line(edata->message))
		edata->output_to_server = false;
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("parhelion_guard must be loaded through shared_preload_libraries")));

	DefineCustomStringVariable("parhelion_guard.extensions",
							   "Extensions that non-superusers may create (comma-separated names).",
							   "Set by parhelion on the server's command line; superusers are not restricted.",
							   &guard_extensions,
							   "",
							   PGC_SIGHUP,
							   GUC_LIST_INPUT,
							   NULL, NULL, NULL);
	MarkGUCPrefixReserved("parhelion_guard");

	prev_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = guard_utility;
	prev_object_access_hook = object_access_hook;
	object_access_hook = guard_object_access;
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = guard_emit_log;
}
