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
 *    clients send itself (with their outcome) and reads from the server's log only pgaudit's lines of statements
 *    run inside functions, DO blocks, procedures and triggers, so pgaudit's lines of the client's own statements
 *    are kept out of the log:
 *    - a top-level SELECT's or DML's line is not even built: pgaudit builds it in its ExecutorCheckPerms_hook,
 *      which the guard takes out while such a statement starts (only when it is the hook the preloaded libraries
 *      left: one a library loaded later put in front is never skipped), and puts back for any statement started
 *      inside it (by a function that initial partition pruning calls, say);
 *    - an emit_log_hook drops the others: a line other than a FUNCTION EXECUTE (which quotes its caller's text)
 *      whose statement is the client's query string (debug_query_string), and, except while a top-level SELECT
 *      or DML is planned or runs, the line of SUBSTATEMENT_ID 1 (a utility statement's, or the line pgaudit
 *      numbers before it: the inner query of CREATE TABLE AS or EXECUTE, the procedure of a CALL). While a
 *      top-level SELECT or DML is planned or runs, the first line pgaudit numbers is a nested one (the EXECUTE of
 *      a function it calls, the first statement of a trigger it fires, of a function the planner folds) and is kept.
 *    Top-level is nesting depth 0, counted around the planner, the executor and ProcessUtility as
 *    pg_stat_statements does. Only lines raised by pgaudit's log_audit_event (the C location, which SQL cannot
 *    forge) are dropped.
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
#include "executor/executor.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "optimizer/planner.h"
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
static ExecutorStart_hook_type prev_executor_start_hook = NULL;
static ExecutorRun_hook_type prev_executor_run_hook = NULL;
static ExecutorFinish_hook_type prev_executor_finish_hook = NULL;
static planner_hook_type prev_planner_hook = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;

/*
 * How deep the backend is in the planner, the executor (start, run, finish) and ProcessUtility: 0 between the
 * client's statements, so a statement started at 0 is the client's own (simple protocol, a portal of the extended
 * protocol, a rule's extra query), one started deeper runs inside another.
 */
static int	nesting_level = 0;

/*
 * True while a top-level SELECT or DML is planned, or its executor starts, runs or finishes (see guard_emit_log):
 * only then, not from one statement to the next, since pgaudit's ProcessUtility hook (outside the guard's) logs a
 * DO block's line before the guard's hook is even called.
 */
static bool executor_top = false;

/*
 * ExecutorCheckPerms_hook as the guard found it (libraries loaded before it: normally none) and as the preloaded
 * libraries left it (pgaudit's, which calls the former), and whether the former stands in for the latter now.
 */
static ExecutorCheckPerms_hook_type own_check_perms_hook = NULL;
static ExecutorCheckPerms_hook_type audit_check_perms_hook = NULL;
static bool audit_checks_out = false;

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

/*
 * pgaudit builds the line of a SELECT or DML statement in its ExecutorCheckPerms_hook, called once as the
 * statement's executor starts (InitPlan). For a top-level statement the gateway records it itself and the line
 * would only be dropped (guard_emit_log): guard_executor_start takes pgaudit's hook out for the start of such a
 * statement. Statements started inside it (by a function that initial partition pruning calls, say) are nested
 * and must be checked and logged: the guard's executor and ProcessUtility hooks put pgaudit's hook back for their
 * own duration (ProcessUtility for COPY and ALTER TABLE's foreign key check, which call the hook themselves).
 */
static void
take_audit_checks_out(void)
{
	ExecutorCheckPerms_hook = own_check_perms_hook;
	audit_checks_out = true;
}

/* Puts pgaudit's ExecutorCheckPerms_hook back while it is out; answers whether it did. */
static bool
put_audit_checks_back(void)
{
	if (!audit_checks_out)
		return false;
	ExecutorCheckPerms_hook = audit_check_perms_hook;
	audit_checks_out = false;
	return true;
}

/*
 * One level deeper (the planner, the executor, ProcessUtility), and back. pgaudit's ExecutorCheckPerms_hook is put
 * back for the inner level when a top-level statement's start took it out; `executor`: a top-level SELECT's or DML's
 * planning or executor (executor_top, for guard_emit_log). Set before PG_TRY and not changed inside it.
 */
typedef struct GuardLevel
{
	bool		top;			/* entered at depth 0 */
	bool		marked;			/* set executor_top */
	bool		back;			/* put pgaudit's hook back for this level */
	bool		out;			/* took pgaudit's hook out for this level (guard_executor_start) */
} GuardLevel;

static GuardLevel
enter_level(bool executor)
{
	GuardLevel	level;

	level.top = nesting_level == 0;
	level.marked = level.top && executor;
	level.back = put_audit_checks_back();
	level.out = false;
	if (level.marked)
		executor_top = true;
	nesting_level++;
	return level;
}

static void
leave_level(GuardLevel level)
{
	nesting_level--;
	if (level.marked)
		executor_top = false;
	if (level.out)
		put_audit_checks_back();
	else if (level.back)
		take_audit_checks_out();
}

static void
guard_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
			  ProcessUtilityContext context, ParamListInfo params,
			  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	GuardLevel	level;

	if (!guard_exempt())
		check_statement(pstmt->utilityStmt);
	if (changes_logins(pstmt->utilityStmt))
		Async_Notify("parhelion_roles", NULL);
	level = enter_level(false);
	PG_TRY();
	{
		if (prev_utility_hook)
			prev_utility_hook(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	}
	PG_FINALLY();
	{
		leave_level(level);
	}
	PG_END_TRY();
}

static void
guard_executor_start(QueryDesc *queryDesc, int eflags)
{
	GuardLevel	level = enter_level(true);

	/*
	 * Only when the hook is still the one the preloaded libraries left: a hook a library loaded later (LOAD,
	 * session_preload_libraries) put in front of pgaudit's may check permissions, and must never be skipped.
	 * pgaudit then builds the line, and guard_emit_log drops it.
	 */
	if (level.top && audit_check_perms_hook != own_check_perms_hook && ExecutorCheckPerms_hook == audit_check_perms_hook)
	{
		take_audit_checks_out();
		level.out = true;
	}
	PG_TRY();
	{
		if (prev_executor_start_hook)
			prev_executor_start_hook(queryDesc, eflags);
		else
			standard_ExecutorStart(queryDesc, eflags);
	}
	PG_FINALLY();
	{
		leave_level(level);
	}
	PG_END_TRY();
}

static void
guard_executor_run(QueryDesc *queryDesc, ScanDirection direction, uint64 count, bool execute_once)
{
	GuardLevel	level = enter_level(true);

	PG_TRY();
	{
		if (prev_executor_run_hook)
			prev_executor_run_hook(queryDesc, direction, count, execute_once);
		else
			standard_ExecutorRun(queryDesc, direction, count, execute_once);
	}
	PG_FINALLY();
	{
		leave_level(level);
	}
	PG_END_TRY();
}

/* AFTER triggers (and a query's remaining data-modifying CTEs) run here. */
static void
guard_executor_finish(QueryDesc *queryDesc)
{
	GuardLevel	level = enter_level(true);

	PG_TRY();
	{
		if (prev_executor_finish_hook)
			prev_executor_finish_hook(queryDesc);
		else
			standard_ExecutorFinish(queryDesc);
	}
	PG_FINALLY();
	{
		leave_level(level);
	}
	PG_END_TRY();
}

/*
 * Counted so that a statement run while a top-level statement is planned (a function the planner folds or
 * estimates) is not taken for a top-level one. Only a SELECT or DML is planned at depth 0 (a utility statement's
 * inner query is planned inside ProcessUtility), and its own line is built later, as its executor starts: every
 * line pgaudit builds while it is planned is a nested statement's, the first one numbered 1 (see guard_emit_log).
 */
static PlannedStmt *
guard_planner(Query *parse, const char *query_string, int cursorOptions, ParamListInfo boundParams)
{
	PlannedStmt *result;
	GuardLevel	level = enter_level(true);

	PG_TRY();
	{
		if (prev_planner_hook)
			result = prev_planner_hook(parse, query_string, cursorOptions, boundParams);
		else
			result = standard_planner(parse, query_string, cursorOptions, boundParams);
	}
	PG_FINALLY();
	{
		leave_level(level);
	}
	PG_END_TRY();
	return result;
}

/*
 * Called once every library of shared_preload_libraries is loaded (in the postmaster, before it starts any
 * backend): ExecutorCheckPerms_hook is then pgaudit's. The guard asks for no shared memory.
 */
static void
guard_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	audit_check_perms_hook = ExecutorCheckPerms_hook;
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
 * pgaudit's line of a top-level statement: a line other than a FUNCTION EXECUTE whose statement field is the
 * client's query string (debug_query_string), or, with `first_is_top`, "AUDIT: SESSION,<statement id>,1,..."
 * (or OBJECT).
 */
static bool
is_top_level_audit_line(const char *m, bool first_is_top)
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
	if (first_is_top && strncmp(m, ",1,", 3) == 0)
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

/*
 * Drops pgaudit's lines of top-level statements. While a top-level SELECT or DML is planned or runs, pgaudit has
 * not built its line (guard_executor_start), so the first line it numbers (SUBSTATEMENT_ID 1) is a nested one: the
 * EXECUTE of a function the statement calls, a trigger's first statement, a statement of a function the planner
 * folds. Otherwise SUBSTATEMENT_ID 1 is the top-level statement's own line (or its inner query's, or its
 * procedure's).
 */
static void
guard_emit_log(ErrorData *edata)
{
	if (edata->output_to_server && (edata->elevel == LOG || edata->elevel == LOG_SERVER_ONLY) && edata->message != NULL &&
		edata->funcname != NULL && strcmp(edata->funcname, "log_audit_event") == 0 &&
		edata->filename != NULL && strcmp(edata->filename, "pgaudit.c") == 0 &&
		is_top_level_audit_line(edata->message, !executor_top))
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

	prev_executor_start_hook = ExecutorStart_hook;
	ExecutorStart_hook = guard_executor_start;
	prev_executor_run_hook = ExecutorRun_hook;
	ExecutorRun_hook = guard_executor_run;
	prev_executor_finish_hook = ExecutorFinish_hook;
	ExecutorFinish_hook = guard_executor_finish;
	prev_planner_hook = planner_hook;
	planner_hook = guard_planner;
	/* pgaudit, preloaded after the guard, installs its hook in front of this one */
	own_check_perms_hook = ExecutorCheckPerms_hook;
	audit_check_perms_hook = ExecutorCheckPerms_hook;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = guard_shmem_request;
}
