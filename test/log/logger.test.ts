import { test } from "node:test";
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { createLogger } from "../../src/log/logger.js";

test("credential fields are redacted from every log line", async () => {
  const out: string[] = [];
  const sink = new PassThrough();
  sink.on("data", (c: Buffer) => out.push(c.toString()));
  const log = createLogger({ level: "info", destination: sink as never });
  log.info({ password: "hunter2-pw", body: { password: "p2", newPassword: "p3", currentPassword: "p4", token: "t1", apiKey: "k1", adminPassword: "a1" }, req: { headers: { authorization: "Bearer phk_secret", cookie: "parhelion_session=abc", "x-csrf-token": "csrf1" } } }, "hello");
  await new Promise((r) => setImmediate(r));
  const line = out.join("");
  assert.match(line, /"msg":"hello"/);
  for (const secret of ["hunter2-pw", "p2", "p3", "p4", "t1", "k1", "a1", "phk_secret", "parhelion_session=abc", "csrf1"]) {
    assert.ok(!line.includes(`"${secret}"`) && !line.includes(secret + '"'), `${secret} leaked: ${line}`);
  }
  assert.match(line, /\[redacted\]/);
});
