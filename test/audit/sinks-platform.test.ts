import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { startTestPlatform, type TestPlatform } from "../support/platform.js";
import { startWebhookServer } from "../support/webhook-server.js";
import { createTestWorkspace, gatewayClient } from "../support/workspaces.js";
import { verifyStream } from "../../src/audit/stream/format.js";
import { until } from "../support/wait.js";


async function keys(tp: TestPlatform): Promise<Map<string, string>> {
  const r = await tp.call("GET", "/v1/auditSigningKeys");
  assert.equal(r.status, 200, r.text);
  return new Map((r.body.keys as Array<{ keyID: string; publicKey: string }>).map((k) => [k.keyID, k.publicKey]));
}

async function exported(tp: TestPlatform, id: string): Promise<string[]> {
  const r = await tp.call("GET", `/v1/auditSinks/${id}/export`);
  assert.equal(r.status, 200, r.text);
  assert.match(String(r.headers["content-type"]), /application\/x-ndjson/);
  return r.text.split("\n").filter((l) => l.length > 0);
}

test("audit sinks through the API: a file sink's encrypted stream and a webhook's deliveries verify with the organization's key; bad input changes nothing; secrets never come back", async () => {
  const logs = new PassThrough();
  let logText = "";
  logs.on("data", (c: Buffer) => (logText += c.toString()));
  const tp = await startTestPlatform({ logDestination: logs });
  const secret = randomBytes(32).toString("base64url");
  const hook = await startWebhookServer(secret);
  try {
    // Bad input: each a typed 400 (or 404), and no sink appears.
    const bad: Array<[unknown, number, string]> = [
      [{ name: "x", type: "ftp" }, 400, "ERR_VALIDATION"],
      [{ name: "x", type: "webhook", config: { url: hook.url.replace("https:", "http:") }, secrets: { secret } }, 400, "ERR_VALIDATION"],
      [{ name: "x", type: "webhook", config: { url: hook.url } }, 400, "ERR_VALIDATION"],
      [{ name: "x", type: "file", config: { path: "/etc" } }, 400, "ERR_VALIDATION"],
      [{ name: "x", type: "file", settings: { checkpointEvery: 0 } }, 400, "ERR_VALIDATION"],
      [{ name: "x", type: "file", bogus: 1 }, 400, "ERR_UNKNOWN_FIELD"],
      [{ name: "x'; drop table audit_sinks; --", type: "file", workspaceGroupID: "00000000-0000-4000-8000-000000000000" }, 404, "ERR_NOT_FOUND"],
    ];
    for (const [body, status, code] of bad) {
      const r = await tp.call("POST", "/v1/auditSinks", { body });
      assert.equal(r.status, status, `${JSON.stringify(body)} -> ${r.text}`);
      assert.equal(r.body.code, code);
    }
    // Only the organization's default file sink, made at first start.
    const initial = (await tp.call("GET", "/v1/auditSinks")).body as Array<{ name: string; type: string; workspaceGroupID: string | null }>;
    assert.deepEqual(initial.map((x) => [x.name, x.type, x.workspaceGroupID]), [["default", "file", null]]);

    const file = await tp.call("POST", "/v1/auditSinks", { body: { name: "local", type: "file", settings: { checkpointSeconds: 1 } } });
    assert.equal(file.status, 201, file.text);
    assert.equal(file.status, 201, file.text);
    const web = await tp.call("POST", "/v1/auditSinks", { body: { name: "siem", type: "webhook", failMode: "open", config: { url: hook.url, caPem: hook.caPem }, secrets: { secret }, settings: { checkpointSeconds: 1 } } });
    assert.equal(web.status, 201, web.text);
    assert.deepEqual(web.body.secretsSet, ["secret"]);
    assert.equal(JSON.stringify(web.body).includes(secret), false, "the secret is never answered");
    const dup = await tp.call("POST", "/v1/auditSinks", { body: { name: "local", type: "file" } });
    assert.equal(dup.status, 409);

    // Activity: each request is a record; both sinks get them.
    for (let i = 0; i < 20; i++) assert.equal((await tp.call("GET", "/v1/organizations/current")).status, 200);
    await until("the webhook's delivery", () => hook.accepted.some((b) => b.body.toString().includes(`"type":"ApiRequest"`)));
    assert.ok(hook.accepted.every((b) => b.signatureValid), "every batch is signed with the sink's secret");
    // Each poll is itself a record: wait until both have sealed and delivered what was there before polling.
    const ids = [file.body.auditSinkID, web.body.auditSinkID] as string[];
    const heads = await Promise.all(ids.map(async (id) => (await tp.call("GET", `/v1/auditSinks/${id}`)).body.status.streamHead.seq as number));
    await until("both sealed", async () => {
      const s = await Promise.all(ids.map(async (id) => (await tp.call("GET", `/v1/auditSinks/${id}`)).body.status));
      return s.every((x, n) => x.sealedSeq >= heads[n]! && x.deliveredSeq >= heads[n]!);
    });
    const k = await keys(tp);

    // The head first: the export then reaches at least it (as `parhelion audit sink verify` does).
    const head = (await tp.call("GET", `/v1/auditSinks/${file.body.auditSinkID}`)).body.status.streamHead;
    const fileLines = await exported(tp, file.body.auditSinkID);
    const v = verifyStream(fileLines, { keys: k, head, fromStart: true });
    assert.equal(v.ok, true, JSON.stringify(v.problems));
    assert.ok(v.records >= 20);
    assert.ok(fileLines.some((l) => l.includes(`"type":"AuditSinkCreate"`) && l.includes(`"sinkName":"siem"`)), "the second sink's creation is in the first one's stream");

    const webLines = hook.accepted.flatMap((b) => b.body.toString().split("\n").filter((l) => l.length > 0));
    const wv = verifyStream(webLines, { keys: k, fromStart: true });
    assert.equal(wv.ok, true, JSON.stringify(wv.problems));
    assert.ok(wv.records >= 20);

    // Tampering with the export is caught and located.
    const tampered = [...fileLines];
    const i = tampered.findIndex((l) => l.includes(`"type":"ApiRequest"`));
    tampered[i] = tampered[i]!.replace(`"result":"SUCCESS"`, `"result":"DENIED"`);
    const tv = verifyStream(tampered, { keys: k, head, fromStart: true });
    assert.equal(tv.ok, false);
    assert.equal(tv.problems[0]?.kind, "modified");
    assert.equal(tv.problems[0]?.line, i + 1);

    // The file sink's files hold no plaintext.
    const dir = join(tp.dataDir, "audit", "sinks", file.body.auditSinkID);
    for (const f of readdirSync(dir).filter((n) => n.endsWith(".seg"))) {
      assert.equal(statSync(join(dir, f)).mode & 0o777, 0o600);
      assert.equal(readFileSync(join(dir, f)).includes("ApiRequest"), false);
    }

    // The webhook goes down: records wait in the spool; it returns and receives every one of them.
    hook.mode = 503;
    for (let j = 0; j < 10; j++) await tp.call("GET", "/v1/organizations/current");
    await until("down", async () => (await tp.call("GET", `/v1/auditSinks/${web.body.auditSinkID}`)).body.status.state === "down");
    const down = (await tp.call("GET", `/v1/auditSinks/${web.body.auditSinkID}`)).body.status;
    assert.ok(down.alerts.includes("down"));
    assert.ok(down.pending > 0);
    hook.mode = "ok";
    await until("recovered", async () => {
      const s = (await tp.call("GET", `/v1/auditSinks/${web.body.auditSinkID}`)).body.status;
      return s.state === "up" && s.pending === 0;
    }, 60_000);
    const after = hook.accepted.flatMap((b) => b.body.toString().split("\n").filter((l) => l.length > 0));
    const av = verifyStream(after, { keys: k, fromStart: true });
    assert.equal(av.ok, true, JSON.stringify(av.problems));
    const logsAfter = await tp.call("GET", "/v1/auditLogs?type=AuditSinkDown");
    assert.ok(logsAfter.body.auditLogs.length >= 1);

    // PATCH: settings and failMode change, the stream goes on; DELETE removes the sink and its files.
    const p = await tp.call("PATCH", `/v1/auditSinks/${web.body.auditSinkID}`, { body: { failMode: "closed", settings: { checkpointEvery: 100 } } });
    assert.equal(p.status, 200, p.text);
    assert.equal(p.body.failMode, "closed");
    assert.ok(p.body.status.streamHead.seq >= av.lastSeq!);
    const del = await tp.call("DELETE", `/v1/auditSinks/${file.body.auditSinkID}`);
    assert.equal(del.status, 200, del.text);
    assert.equal((await tp.call("GET", `/v1/auditSinks/${file.body.auditSinkID}`)).status, 404);
    assert.throws(() => readdirSync(dir));
    assert.equal(logText.includes(secret), false, "the webhook secret never reaches a log");
  } finally {
    await hook.close();
    await tp.stop();
  }
});

test("failMode open serves on while a sink is down; closed: while the required sink cannot record (the default file sink records on), the gateway refuses new sessions and ends a session at its next statement; service resumes when the sink records again", async () => {
  const tp = await startTestPlatform();
  const secret = randomBytes(32).toString("base64url");
  const hook = await startWebhookServer(secret);
  try {
    const ws = await createTestWorkspace(tp);
    const sink = await tp.call("POST", "/v1/auditSinks", { body: { name: "only", type: "webhook", failMode: "open", workspaceGroupID: ws.groupId, config: { url: hook.url, caPem: hook.caPem }, secrets: { secret } } });
    assert.equal(sink.status, 201, sink.text);

    // failMode open: the sink is down, the databases go on serving (and the alert is raised).
    hook.mode = 503;
    const c0 = gatewayClient(tp, ws);
    await c0.connect(); // its login record is one the sink cannot deliver
    await until("down", async () => (await tp.call("GET", `/v1/auditSinks/${sink.body.auditSinkID}`)).body.status.state === "down");
    assert.ok((await tp.call("GET", `/v1/auditSinks/${sink.body.auditSinkID}`)).body.status.alerts.includes("down"));
    const c1 = gatewayClient(tp, ws);
    await c1.connect();
    assert.equal((await c1.query("select 1 as one")).rows[0].one, 1);
    await c1.end();
    await c0.end();

    hook.mode = "ok";
    await until("up again", async () => (await tp.call("GET", `/v1/auditSinks/${sink.body.auditSinkID}`)).body.status.state === "up", 60_000);
    const p = await tp.call("PATCH", `/v1/auditSinks/${sink.body.auditSinkID}`, { body: { failMode: "closed" } });
    assert.equal(p.status, 200, p.text);
    const open = gatewayClient(tp, ws);
    await open.connect();
    assert.equal((await open.query("select 1 as one")).rows[0].one, 1);

    const c2 = gatewayClient(tp, ws);
    await c2.connect();
    hook.mode = 503;
    await c2.end(); // its disconnect record (in the group's scope) is one the sink cannot deliver
    await until("down", async () => (await tp.call("GET", `/v1/auditSinks/${sink.body.auditSinkID}`)).body.status.state === "down");
    const refused = gatewayClient(tp, ws);
    await assert.rejects(refused.connect(), (err: { code?: string; message?: string }) => err.code === "57P03" && /audit/.test(err.message ?? ""));
    await assert.rejects(open.query("select 2"), (err: { code?: string; message?: string }) => /audit/.test(err.message ?? "") || err.code === "57P03" || /terminated|closed/i.test(err.message ?? ""));
    await open.end().catch(() => undefined);
    // The gateway records the refusal as it answers; the record lands in the log a moment after the client hears.
    await until("the refusal is recorded", async () => {
      const denied = await tp.call("GET", "/v1/auditLogs?type=DatabaseLoginFailure");
      return denied.body.auditLogs.some((l: { reason: string }) => /failMode closed/.test(l.reason));
    });

    hook.mode = "ok";
    await until("recording again", async () => (await tp.call("GET", `/v1/auditSinks/${sink.body.auditSinkID}`)).body.status.state === "up", 60_000);
    const again = gatewayClient(tp, ws);
    await again.connect();
    assert.equal((await again.query("select 3 as three")).rows[0].three, 3);
    await again.end();
  } finally {
    await hook.close();
    await tp.stop();
  }
});
