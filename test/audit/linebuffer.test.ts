import { test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID, generateKeyPairSync } from "node:crypto";
import { checkpointLine, GENESIS, LineBuffer, recordLine, type StreamHead } from "../../src/audit/stream/format.js";

test("LineBuffer writes the bytes of recordLine and checkpointLine joined by newlines, with the same heads", () => {
  const stream = randomUUID();
  const at = "2026-11-28T07:30:00.123Z";
  const records = [`{"a":1}`, JSON.stringify({ text: "ünïcödé ✓ \u{1F600} \"quoted\" \\ back" }), JSON.stringify({ big: "x".repeat(70_000) }), `{}`];
  const { privateKey } = generateKeyPairSync("ed25519");
  let head: StreamHead = { seq: 41, hash: GENESIS.replace(/0/g, "a") };
  let ref = head;
  const expected: string[] = [];
  const buf = new LineBuffer();
  for (const r of records) {
    head = buf.record(stream, head, at, r);
    const l = recordLine(stream, ref, at, r);
    expected.push(l.line);
    ref = l.head;
    assert.deepEqual(head, ref);
  }
  const cp = checkpointLine(stream, head, new Date(at), { keyId: "k1", privateKey }, "9");
  buf.line(cp.line);
  expected.push(cp.line);
  assert.equal(buf.count, expected.length);
  assert.ok(buf.bytes().equals(Buffer.from(expected.join("\n"), "utf8")), "the same bytes (the buffer grew past its first 64 KiB)");
  assert.deepEqual(buf.lines(), expected);
  assert.deepEqual(new LineBuffer().lines(), []);
});
