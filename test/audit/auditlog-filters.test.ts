import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { sql } from "kysely";
import { startTestStore } from "../support/pg.js";
import { createAuditLog, type AuditEvent, type AuditLog, type AuditQuery } from "../../src/audit/index.js";
import { exportAuditLogs, listAuditLogs, type AuditExportRecord } from "../../src/audit/query.js";
import { chainHash, GENESIS_HASH } from "../../src/audit/chain.js";
import { ParhelionError } from "../../src/lib/errors.js";
import { silentLogger, ORG_A, ORG_B } from "./helpers.js";

// Both planes in one log, shaped as the API (route.ts) and the gateway (gateway/server.ts#audit) record them.
const U_ADA = "aaaaaaaa-0000-4000-8000-00000000000a";
const U_BOB = "aaaaaaaa-0000-4000-8000-00000000000b";
const KEY = "aaaaaaaa-0000-4000-8000-0000000000cc";
const G1 = "bbbbbbbb-0000-4000-8000-000000000001";
const G2 = "bbbbbbbb-0000-4000-8000-000000000002";
const W1 = "cccccccc-0000-4000-8000-000000000001"; // in G1
const W2 = "cccccccc-0000-4000-8000-000000000002"; // in G1
const W3 = "cccccccc-0000-4000-8000-000000000003"; // in G2
const W9 = "cccccccc-0000-4000-8000-000000000009"; // ORG_B's
const GROUP_OF: Record<string, string> = { [W1]: G1, [W2]: G1, [W3]: G2 };
const BASE = Date.UTC(2024, 2, 1);
const N = 2400;

interface Written {
  e: AuditEvent;
  seq: number;
  createdAt: number;
}

const gw = (type: string, result: AuditEvent["result"], orgId: string, ws: string, user: string, attrs: Record<string, unknown>): AuditEvent => ({
  type, result, source: "Gateway", orgId, actor: { type: "databaseUser" }, resource: { type: "Workspace", id: ws }, sourceIp: "198.51.100.4", reason: `${type} ${user}`,
  attributes: { databaseUser: user, ...attrs },
});
const stmt = (orgId: string, ws: string, user: string, classes: string[]): AuditEvent =>
  gw("DatabaseStatement", "SUCCESS", orgId, ws, user, { workspaceGroupID: GROUP_OF[ws] ?? G1, database: "postgres", sessionID: "s", protocol: "simple", statement: "select $1", statementClasses: classes, commands: classes.map(() => "SelectStmt") });

/** The i-th record: twelve kinds in turn, one a minute. */
function kind(i: number): AuditEvent {
  switch (i % 13) {
    case 0: return { type: "Login", source: "Portal", result: "SUCCESS", orgId: ORG_A, actor: { type: "user", id: U_ADA, email: "ada@example.com" }, resource: { type: "Organization", id: ORG_A }, reason: "signed in" };
    case 1: return { type: "AuthFailure", source: "API", result: "DENIED", orgId: null, actor: { type: "anonymous", email: "Ada@Example.COM" }, reason: "bad password" };
    case 2: return { type: "WorkspaceCreate", source: "API", result: "SUCCESS", orgId: ORG_A, actor: { type: "apiKey", id: KEY }, resource: { type: "Workspace", id: W1.toUpperCase() }, reason: "created" };
    case 3: return { type: "WorkspaceGroupUpdate", source: "Portal", result: "DENIED", orgId: ORG_A, actor: { type: "user", id: U_BOB, email: "bob@example.com" }, resource: { type: "WorkspaceGroup", id: G1 }, reason: "forbidden" };
    case 4: return gw("DatabaseLoginSuccess", "SUCCESS", ORG_A, W1, "app", { workspaceGroupID: G1, database: "postgres", sessionID: "s" });
    case 5: return stmt(ORG_A, W1, "app", ["READ"]);
    case 6: return stmt(ORG_A, W2, "Reporter", ["WRITE", "READ"]);
    case 7: return stmt(ORG_A, W3, "app", ["DDL"]);
    case 8: return gw("DatabaseLoginFailure", "DENIED", ORG_A, W3, "ada@example.com", { workspaceGroupID: G2, database: "postgres" });
    case 9: return gw("DatabaseCancel", "SUCCESS", ORG_A, W2, "app", { sessionID: "s" }); // no workspaceGroupID, as server.ts#cancel
    case 10: return { type: "GatewayFirewallDeny", source: "Gateway", result: "DENIED", orgId: null, actor: { type: "anonymous" }, resource: { type: "WorkspaceGroup", id: G2 }, reason: "firewall" };
    case 11: return stmt(ORG_B, W9, "app", ["READ"]);
    default: return i % 2 === 0 ? stmt(ORG_A, W1, "app", []) : { type: "Maintenance", source: "System", result: "FAILURE", orgId: null, actor: { type: "system" }, reason: "vacuum failed" };
  }
}

let store: Awaited<ReturnType<typeof startTestStore>>;
let audit: AuditLog;
const written: Written[] = [];

before(async () => {
  store = await startTestStore();
  const db = store.db;
  await sql`insert into organizations (id, name) values (${ORG_A}, 'a'), (${ORG_B}, 'b')`.execute(db);
  await sql`insert into regions (id, name, provider) values ('dddddddd-0000-4000-8000-000000000001', 'local', 'local')`.execute(db);
  for (const g of [G1, G2]) {
    await sql`insert into workspace_groups (id, org_id, name, region_id, firewall_ranges, admin_verifier, state)
      values (${g}, ${ORG_A}, ${g}, 'dddddddd-0000-4000-8000-000000000001', '{}', 'x', 'ACTIVE')`.execute(db);
  }
  for (const [w, g] of Object.entries(GROUP_OF)) {
    await sql`insert into workspaces (id, org_id, group_id, name, size, desired_state, state) values (${w}, ${ORG_A}, ${g}, ${w}, 'S-00', 'ACTIVE', 'ACTIVE')`.execute(db);
  }
  let now = BASE;
  const writer = createAuditLog({ db, logger: silentLogger(), clock: () => new Date(now), lingerMs: 0 });
  const done: Array<Promise<boolean>> = [];
  for (let i = 0; i < N; i++) {
    now = BASE + i * 60_000;
    const e = kind(i);
    written.push({ e, seq: i + 1, createdAt: now });
    done.push(writer.record(e));
  }
  assert.ok((await Promise.all(done)).every(Boolean));
  await writer.close();
  audit = createAuditLog({ db, logger: silentLogger() });
});
after(async () => {
  await audit?.close();
  await store?.stop();
});

/** The documented semantics (DESIGN.md, "Listing"), written out plainly: the oracle the store must agree with. */
function matches(w: Written, q: Omit<AuditQuery, "orgId">): boolean {
  const { e } = w;
  const anyOf = (v: string | undefined, x: string) => v === undefined || v.split(",").includes(x);
  if (e.orgId !== ORG_A && e.orgId !== null) return false;
  if (q.startDate !== undefined && w.createdAt < Date.parse(q.startDate)) return false;
  if (q.endDate !== undefined && w.createdAt > Date.parse(q.endDate)) return false;
  if (!anyOf(q.type, e.type) || !anyOf(q.source, e.source) || !anyOf(q.result, e.result)) return false;
  const attrs = e.attributes ?? {};
  if (q.class !== undefined) {
    const classes = (attrs["statementClasses"] ?? []) as string[];
    if (e.type !== "DatabaseStatement" || !classes.some((c) => q.class!.split(",").includes(c))) return false;
  }
  if (q.user !== undefined) {
    const byId = /^[0-9a-f-]{36}$/i.test(q.user);
    const ok = byId ? e.actor.id?.toLowerCase() === q.user.toLowerCase() : e.actor.email?.toLowerCase() === q.user.toLowerCase() || attrs["databaseUser"] === q.user;
    if (!ok) return false;
  }
  const res = e.resource ? { type: e.resource.type, id: e.resource.id.toLowerCase() } : null;
  if (q.workspaceID !== undefined && !(res?.type === "Workspace" && res.id === q.workspaceID.toLowerCase())) return false;
  if (q.workspaceGroupID !== undefined) {
    const g = q.workspaceGroupID.toLowerCase();
    const ok = (res?.type === "WorkspaceGroup" && res.id === g) || attrs["workspaceGroupID"] === g || (res?.type === "Workspace" && GROUP_OF[res.id] === g);
    if (!ok) return false;
  }
  return true;
}

const expected = (q: Omit<AuditQuery, "orgId">): number[] => written.filter((w) => matches(w, q)).map((w) => w.seq).reverse();

/** Every page of a listing, as seqs; checks each page's size and that the token stops. */
async function listAll(q: Omit<AuditQuery, "orgId" | "nextToken">, opts: { firstWindow?: bigint } = {}): Promise<number[]> {
  const out: number[] = [];
  let nextToken: string | undefined;
  let pages = 0;
  do {
    const page = await listAuditLogs(store.db, { orgId: ORG_A, ...q, ...(nextToken ? { nextToken } : {}) }, opts);
    assert.ok(page.auditLogs.length <= (q.limit ?? 100));
    out.push(...page.auditLogs.map((l) => Number(l.seq)));
    nextToken = page.nextToken;
    assert.ok(++pages <= N, "paging does not end");
  } while (nextToken);
  return out;
}

const mid = (i: number) => new Date(BASE + i * 60_000).toISOString();
const QUERIES: Array<Omit<AuditQuery, "orgId">> = [
  {},
  { result: "DENIED" },
  { result: "DENIED,FAILURE" },
  { type: "DatabaseStatement" },
  { type: "DatabaseLoginSuccess,DatabaseLoginFailure" },
  { source: "Gateway" },
  { source: "API,Portal" },
  { class: "READ" },
  { class: "DDL" },
  { class: "WRITE,DDL" },
  { class: "ROLE" },
  { user: U_ADA },
  { user: U_ADA.toUpperCase() },
  { user: KEY },
  { user: "ADA@example.com" },
  { user: "ada@example.com" },
  { user: "app" },
  { user: "Reporter" },
  { workspaceID: W1 },
  { workspaceID: W2.toUpperCase() },
  { workspaceGroupID: G1 },
  { workspaceGroupID: G2 },
  { startDate: mid(100), endDate: mid(700) },
  { startDate: mid(2000) },
  { endDate: mid(30) },
  { class: "READ", user: "app", workspaceGroupID: G1 },
  { class: "READ", startDate: mid(500), endDate: mid(900), source: "Gateway", result: "SUCCESS" },
  { user: "ada@example.com", result: "DENIED", startDate: mid(1000) },
  { workspaceID: W3, type: "DatabaseLoginFailure", user: "ada@example.com" },
  { type: "Login", class: "READ" },
];

test("each filter narrows to exactly the documented matches, alone and combined, newest first", async () => {
  for (const q of QUERIES) {
    const want = expected(q);
    const got = await listAll({ ...q, limit: 1000 });
    assert.deepEqual(got, want, JSON.stringify(q));
  }
  // The oracle itself is not vacuous: spot checks of what the filters mean.
  assert.equal(expected({}).length, N - Math.floor((N - 12) / 13) - 1); // everything but ORG_B's (kind 11)
  assert.equal(expected({ class: "ROLE" }).length, 0);
  assert.equal(expected({ type: "Login", class: "READ" }).length, 0);
  const kindOf = (q: Omit<AuditQuery, "orgId">) => new Set(expected(q).map((s) => (s - 1) % 13));
  assert.deepEqual(kindOf({ class: "READ" }), new Set([5, 6])); // a multi-statement WRITE+READ record counts for READ
  assert.deepEqual(kindOf({ class: "DDL" }), new Set([7]));
  assert.deepEqual(kindOf({ user: "ADA@example.com" }), new Set([0, 1])); // e-mails in any case, the anonymous attempt included
  assert.deepEqual(kindOf({ user: "ada@example.com" }), new Set([0, 1, 8])); // ... and the database user of that exact name
  assert.deepEqual(kindOf({ user: "Reporter" }), new Set([6]));
  assert.deepEqual(kindOf({ user: "app" }), new Set([4, 5, 7, 9, 12]));
  assert.deepEqual(kindOf({ workspaceID: W1 }), new Set([2, 4, 5, 12])); // the API's upper-case id too
  assert.deepEqual(kindOf({ workspaceGroupID: G1 }), new Set([2, 3, 4, 5, 6, 9, 12])); // the cancel has no group attribute
  assert.deepEqual(kindOf({ workspaceGroupID: G2 }), new Set([7, 8, 10])); // the org-less firewall deny included
  assert.deepEqual(await listAll({ user: "reporter" }), []); // database user names are exact
});

test("paging through a filtered set returns every match exactly once, however small the page or the first window", async () => {
  for (const q of [{ class: "READ" }, { workspaceGroupID: G2 }, { user: "ada@example.com" }, { result: "FAILURE", startDate: mid(300), endDate: mid(2100) }, { endDate: mid(40) }]) {
    const want = expected(q);
    assert.ok(want.length > 0);
    for (const [limit, firstWindow] of [[1, undefined], [7, undefined], [7, 1n], [3, 5n], [50, 13n], [1000, 2n]] as const) {
      const got = await listAll({ ...q, limit }, firstWindow === undefined ? {} : { firstWindow });
      assert.deepEqual(got, want, `${JSON.stringify(q)} limit ${limit} window ${firstWindow}`);
    }
  }
});

test("the store's AuditLog lists with the new filters and names a bad one", async () => {
  const page = await audit.list({ orgId: ORG_A, class: "DDL", limit: 5 });
  assert.deepEqual(page.auditLogs.map((l) => Number(l.seq)), expected({ class: "DDL" }).slice(0, 5));
  assert.ok(page.nextToken);
  const ddl = page.auditLogs[0]!;
  assert.equal(ddl.type, "DatabaseStatement");
  assert.equal(ddl.source, "Gateway");
  assert.equal(ddl.userType, "Customer");
  assert.equal(ddl.resourceID, W3);
  assert.deepEqual(ddl.attributes["statementClasses"], ["DDL"]);
  await assert.rejects(audit.list({ orgId: ORG_A, class: "SELECT" }), (err: unknown) => err instanceof ParhelionError && err.code === "ERR_VALIDATION" && err.details?.parameter === "class");
});

function rejects(q: Omit<AuditQuery, "orgId">, parameter: string, run: (q: AuditQuery) => Promise<unknown> = (x) => listAuditLogs(store.db, x)) {
  return assert.rejects(run({ orgId: ORG_A, ...q }), (err: unknown) => {
    assert.ok(err instanceof ParhelionError, String(err));
    assert.equal(err.code, "ERR_VALIDATION");
    assert.equal(err.details?.parameter, parameter);
    assert.match(err.message, new RegExp(`^${parameter} `));
    return true;
  }, `${parameter}: ${JSON.stringify(q)}`);
}

test("bad filter values are ERR_VALIDATION naming the parameter, and change nothing", async () => {
  const before = await store.db.selectFrom("audit_log").select((eb) => eb.fn.countAll<string>().as("n")).executeTakeFirstOrThrow();
  for (const c of ["read", "SELECT", "READ;DROP TABLE audit_log", "READ,", ",READ", "", "READ,,DDL", "READ' OR '1'='1"]) await rejects({ class: c }, "class");
  for (const r of ["success", "OK", "DENIED' OR '1'='1", "SUCCESS,", "DENIED;--"]) await rejects({ result: r }, "result");
  await rejects({ source: "Gateway,Web" }, "source");
  for (const id of ["not-a-uuid", "1 or 1=1", "cccccccc-0000-4000-8000-00000000000", `{${W1}}`, `${W1}'--`, "", W1 + "0"]) {
    await rejects({ workspaceID: id }, "workspaceID");
    await rejects({ workspaceGroupID: id }, "workspaceGroupID");
  }
  for (const u of ["", "x".repeat(257), "a\u0000b", "app\n", "\u007f"]) await rejects({ user: u }, "user");
  for (const t of ["", "Login,,Logout", "x".repeat(257), Array.from({ length: 21 }, (_, i) => `T${i}`).join(","), "Login\r\n"]) await rejects({ type: t }, "type");
  await rejects({ user: 42 as never }, "user");
  await rejects({ class: ["READ"] as never }, "class");
  // Free text is a bound parameter: SQL and LIKE metacharacters match nothing (and nothing else happens).
  for (const u of ["x' OR '1'='1", "app' --", "%", "_pp", "app%", "\\", "'; drop table audit_log; --"]) {
    assert.deepEqual(await listAll({ user: u }), [], u);
  }
  assert.deepEqual(await listAll({ type: "DatabaseStatement' OR '1'='1" }), []);
  const after = await store.db.selectFrom("audit_log").select((eb) => eb.fn.countAll<string>().as("n")).executeTakeFirstOrThrow();
  assert.equal(after.n, before.n);
  const v = await audit.verify();
  assert.equal(v.ok, true);
  assert.equal(v.checked, N);
});

async function collect(it: AsyncIterable<AuditExportRecord>): Promise<AuditExportRecord[]> {
  const out: AuditExportRecord[] = [];
  for await (const r of it) out.push(r);
  return out;
}

test("export yields every matching record oldest first, with fields that re-compute its hash", async () => {
  const all = await collect(await exportAuditLogs(store.db, { orgId: ORG_A }, { pageSize: 97 }));
  assert.deepEqual(all.map((r) => Number(r.seq)), expected({}).reverse());
  assert.ok(all.length > 2000);
  let prev: AuditExportRecord | undefined;
  for (const r of all) {
    const fields = {
      seq: r.seq, id: r.auditID, orgId: r.orgID, createdAt: r.createdAt, type: r.type, source: r.source, result: r.result, actorType: r.actorType,
      actorId: r.userID, actorEmail: r.userEmail, resourceType: r.resourceType, resourceId: r.resourceID, sourceIp: r.sourceIP, requestId: r.requestID,
      reason: r.reason, attributes: r.attributes,
    };
    assert.equal(chainHash(Buffer.from(r.prevHash, "hex"), fields).toString("hex"), r.hash, `seq ${r.seq}`);
    if (r.seq === "1") assert.equal(r.prevHash, GENESIS_HASH.toString("hex"));
    if (prev && Number(prev.seq) + 1 === Number(r.seq)) assert.equal(r.prevHash, prev.hash, `seq ${r.seq} links to ${prev.seq}`);
    prev = r;
  }
  assert.ok(all.some((r) => r.actorType === "databaseUser") && all.some((r) => r.actorType === "user"));
  assert.ok(all.every((r) => r.orgID === ORG_A || r.orgID === null));

  for (const q of [{ class: "READ" }, { workspaceGroupID: G1, result: "SUCCESS" }, { startDate: mid(1234), endDate: mid(1300) }, { user: "ada@example.com" }, { class: "ROLE" }]) {
    for (const opts of [{}, { pageSize: 1, firstWindow: 3n }, { pageSize: 10, firstWindow: 1n }]) {
      const got = await collect(await exportAuditLogs(store.db, { orgId: ORG_A, ...q }, opts));
      assert.deepEqual(got.map((r) => Number(r.seq)), expected(q).reverse(), `${JSON.stringify(q)} ${JSON.stringify(opts, (_k, v) => (typeof v === "bigint" ? String(v) : v))}`);
    }
  }
  // A cap stops after that many, the oldest.
  const capped = await collect(await audit.export({ orgId: ORG_A, type: "DatabaseStatement", limit: 25 }));
  assert.deepEqual(capped.map((r) => Number(r.seq)), expected({ type: "DatabaseStatement" }).reverse().slice(0, 25));
});

test("an export is a cut as of its start: records written while it runs are left out", async () => {
  const it = await exportAuditLogs(store.db, { orgId: ORG_A, source: "System" }, { pageSize: 5 });
  const writer = createAuditLog({ db: store.db, logger: silentLogger(), lingerMs: 0 });
  try {
    assert.equal(await writer.record({ type: "Maintenance", source: "System", result: "FAILURE", orgId: null, actor: { type: "system" }, reason: "late" }), true);
    const got = await collect(it);
    assert.deepEqual(got.map((r) => Number(r.seq)), expected({ source: "System" }).reverse());
    assert.ok(got.every((r) => r.reason !== "late"));
    const later = await collect(await exportAuditLogs(store.db, { orgId: ORG_A, source: "System" }));
    assert.equal(later.at(-1)?.reason, "late");
  } finally {
    await writer.close();
    await sql`delete from audit_log where reason = 'late'`.execute(store.db);
  }
});

test("export refuses a bad filter, a nextToken and a bad cap before streaming anything", async () => {
  const run = (q: AuditQuery) => exportAuditLogs(store.db, q);
  await rejects({ class: "DML" }, "class", run);
  await rejects({ workspaceID: "1; select 1" }, "workspaceID", run);
  await rejects({ nextToken: "MTA" } as never, "nextToken", run);
  for (const limit of [0, -1, 1.5, 1_000_000_001, "5" as never]) await rejects({ limit }, "limit", run);
  await rejects({ startDate: "2024-03-02", endDate: "2024-03-01" }, "startDate", run);
});
