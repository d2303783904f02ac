import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { runCli, startSignedInPlatform, type SignedInPlatform } from "./helpers.js";

// `parhelion audit list` with the new filters and `parhelion audit export`, as a subprocess against a real platform.
let sp: SignedInPlatform;
let env: Record<string, string>;
const WS = randomUUID();
const ROWS = 2000;

before(async () => {
  sp = await startSignedInPlatform("parhelion-cli-audit-export-");
  env = { PARHELION_HOME: sp.home };
  const done: Array<Promise<boolean>> = [];
  for (let i = 0; i < ROWS; i++) {
    done.push(sp.tp.platform.audit.record({
      type: i % 25 === 0 ? "DatabaseLoginFailure" : "DatabaseStatement", source: "Gateway", result: i % 25 === 0 ? "DENIED" : "SUCCESS", orgId: (await orgId()),
      actor: { type: "databaseUser" }, resource: { type: "Workspace", id: WS }, reason: `stmt ${i}`,
      attributes: { databaseUser: i % 2 === 0 ? "app" : "etl", workspaceGroupID: randomUUID(), statementClasses: i % 25 === 0 ? undefined : [i % 4 === 0 ? "WRITE" : "READ"], statement: "select $1" },
    }));
  }
  assert.ok((await Promise.all(done)).every(Boolean));
});
after(async () => {
  await sp?.stop();
});

let org: string | undefined;
async function orgId(): Promise<string> {
  org ??= (await sp.tp.call("GET", "/v1/auth/whoami")).body.orgID as string;
  return org;
}

const expectedReasons = (f: (i: number) => boolean) => Array.from({ length: ROWS }, (_, i) => i).filter(f).map((i) => `stmt ${i}`);
const isRead = (i: number) => i % 25 !== 0 && i % 4 !== 0;

test("audit export --out writes every match as NDJSON, oldest first, to a new 0600 file", async () => {
  const out = join(sp.dir.path, "reads.ndjson");
  const r = await runCli(["audit", "export", "--out", out, "--source", "Gateway", "--class", "READ", "--workspace", WS], { env });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "");
  assert.equal(statSync(out).mode & 0o777, 0o600);
  const lines = readFileSync(out, "utf8").trimEnd().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((l) => l.reason), expectedReasons(isRead));
  assert.ok(lines.every((l) => l.type === "DatabaseStatement" && l.attributes.statementClasses[0] === "READ" && /^[0-9a-f]{64}$/.test(l.hash)));
  assert.match(r.stderr, new RegExp(`wrote ${lines.length} audit records to `));
  // No partial file is left behind.
  assert.deepEqual(readdirSync(sp.dir.path).filter((n) => n.includes("partial")), []);
});

test("audit export replaces an existing file only when complete, and makes it 0600", async () => {
  const out = join(sp.dir.path, "existing.ndjson");
  writeFileSync(out, "old\n", { mode: 0o644 });
  const ok = await runCli(["audit", "export", "--out", out, "--result", "DENIED", "--user", "app"], { env });
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(statSync(out).mode & 0o777, 0o600);
  const lines = readFileSync(out, "utf8").trimEnd().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((l) => l.reason), expectedReasons((i) => i % 25 === 0 && i % 2 === 0));

  // A refused export (bad filter) leaves the file as it was.
  writeFileSync(out, "keep\n", { mode: 0o600 });
  const bad = await runCli(["audit", "export", "--out", out, "--class", "DML"], { env });
  assert.equal(bad.code, 6, bad.stderr);
  assert.match(bad.stderr, /ERR_VALIDATION/);
  assert.match(bad.stderr, /class must be one of READ, WRITE, FUNCTION, ROLE, DDL, MISC/);
  assert.equal(readFileSync(out, "utf8"), "keep\n");
  assert.deepEqual(readdirSync(sp.dir.path).filter((n) => n.includes("partial")), []);
});

test("audit export to stdout streams NDJSON; --limit caps it", async () => {
  const r = await runCli(["audit", "export", "--type", "DatabaseStatement", "--limit", "7"], { env });
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((l) => l.reason), expectedReasons((i) => i % 25 !== 0).slice(0, 7));
  assert.ok(lines.every((l) => l.actorType === "databaseUser" && typeof l.prevHash === "string"));
});

test("audit export needs auditLogs:read: a Member key exits 4 and writes nothing", async () => {
  const key = await sp.tp.call("POST", "/v1/apiKeys", { body: { name: "cli-member", role: "Member", expiresAt: new Date(Date.now() + 86_400_000).toISOString() } });
  assert.equal(key.status, 201, key.text);
  const out = join(sp.dir.path, "member.ndjson");
  const memberEnv = { PARHELION_HOME: join(sp.dir.path, "nobody"), PARHELION_API_URL: sp.tp.apiUrl, PARHELION_API_KEY: key.body.key, PARHELION_CA_FILE: join(sp.tp.dataDir, "tls", "ca.crt") };
  const r = await runCli(["audit", "export", "--out", out], { env: memberEnv });
  assert.equal(r.code, 4, r.stderr);
  assert.match(r.stderr, /ERR_FORBIDDEN/);
  assert.equal(existsSync(out), false);
});

test("audit list takes the new filters; a malformed ID is a usage error before any request", async () => {
  const r = await runCli(["audit", "list", "--all", "--output", "json", "--result", "DENIED", "--user", "etl", "--workspace", WS, "--source", "Gateway"], { env });
  assert.equal(r.code, 0, r.stderr);
  const got = JSON.parse(r.stdout).auditLogs.map((l: { reason: string }) => l.reason);
  assert.deepEqual(got, expectedReasons((i) => i % 25 === 0 && i % 2 === 1).reverse());
  const table = await runCli(["audit", "list", "--output", "table", "--class", "WRITE", "--limit", "3", "--user", "app"], { env });
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, /^SEQ\s+TIME\s+TYPE/);
  assert.equal(table.stdout.match(/DatabaseStatement\s+SUCCESS\s+Gateway\s+db:app/g)?.length, 3);
  assert.match(table.stderr, /more records: add --all/);
  for (const args of [["--workspace", "my-db"], ["--group", "1 or 1=1"]]) {
    const bad = await runCli(["audit", "list", ...args], { env });
    assert.equal(bad.code, 2, `${args.join(" ")}: ${bad.stderr}`);
    assert.match(bad.stderr, /must be a (workspace|workspace group) ID/);
  }
});

test("an export that breaks off midway exits 7 and leaves the file as it was", async () => {
  const audit = sp.tp.platform.audit as { export: typeof sp.tp.platform.audit.export };
  const some: unknown[] = [];
  for await (const r of await sp.tp.platform.audit.export({ orgId: await orgId(), limit: 500 })) some.push(r);
  const out = join(sp.dir.path, "broken.ndjson");
  writeFileSync(out, "previous export\n", { mode: 0o600 });
  audit.export = async () => (async function* () {
    yield* some;
    throw new Error("connection to the store lost");
  })() as never;
  try {
    const r = await runCli(["audit", "export", "--out", out], { env });
    assert.equal(r.code, 7, r.stderr);
    assert.match(r.stderr, /the export stopped before its end/);
    assert.equal(readFileSync(out, "utf8"), "previous export\n");
    assert.deepEqual(readdirSync(sp.dir.path).filter((n) => n.includes("partial")), []);
  } finally {
    delete (audit as { export?: unknown }).export;
  }
});
