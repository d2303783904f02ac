import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fc from "fast-check";
import { canonicalJson, canonicalRecord, chainHash, chainObject, GENESIS_HASH, type ChainFields } from "../../src/audit/chain.js";
import { normalizeEvent, normalizeAttributes, cleanText, MAX_ATTRIBUTES_BYTES } from "../../src/audit/event.js";
import { ParhelionError } from "../../src/lib/errors.js";
import { ev } from "./helpers.js";

const FIELDS: ChainFields = {
  seq: "1",
  id: "00000000-0000-4000-8000-000000000001",
  orgId: "11111111-1111-4111-8111-111111111111",
  createdAt: "2024-05-01T12:00:00.123Z",
  type: "Login",
  source: "Portal",
  result: "SUCCESS",
  actorType: "user",
  actorId: "33333333-3333-4333-8333-333333333333",
  actorEmail: "ada@example.com",
  resourceType: null,
  resourceId: null,
  sourceIp: "192.0.2.7",
  requestId: "req-1",
  reason: "signed in \u00e9",
  attributes: { z: [1, 2.5, { b: true, a: null }], a: "x\ny" },
};

// The exact bytes DESIGN.md documents for this record; an external verifier must produce the same.
const CANONICAL =
  '{"actorEmail":"ada@example.com","actorId":"33333333-3333-4333-8333-333333333333","actorType":"user",' +
  '"attributes":{"a":"x\\ny","z":[1,2.5,{"a":null,"b":true}]},"createdAt":"2024-05-01T12:00:00.123Z",' +
  '"id":"00000000-0000-4000-8000-000000000001","orgId":"11111111-1111-4111-8111-111111111111",' +
  '"reason":"signed in \u00e9","requestId":"req-1","resourceId":null,"resourceType":null,"result":"SUCCESS",' +
  '"seq":"1","source":"Portal","sourceIp":"192.0.2.7","type":"Login","v":1}';

test("the canonical encoding of a record is the documented byte string", () => {
  assert.equal(canonicalJson(chainObject(FIELDS)), CANONICAL);
});

test("hash = SHA-256(prev_hash || canonical JSON), genesis prev_hash is 32 zero bytes", () => {
  assert.equal(GENESIS_HASH.length, 32);
  assert.ok(GENESIS_HASH.every((b) => b === 0));
  const want = createHash("sha256").update(Buffer.alloc(32)).update(Buffer.from(CANONICAL, "utf8")).digest();
  assert.deepEqual(chainHash(GENESIS_HASH, FIELDS), want);
  // Pinned (also computed independently with Python's hashlib) so a change of the encoding cannot go unnoticed.
  assert.equal(chainHash(GENESIS_HASH, FIELDS).toString("hex"), "223f093a6c6e4f6d143d2240246a7be78a895acc90fcc1647f49be78022b5578");
});

test("every hashed field changes the hash", () => {
  const base = chainHash(GENESIS_HASH, FIELDS).toString("hex");
  for (const k of Object.keys(FIELDS) as Array<keyof ChainFields>) {
    const changed = { ...FIELDS, [k]: k === "attributes" ? { a: "x\ny", z: [1] } : "changed" } as ChainFields;
    assert.notEqual(chainHash(GENESIS_HASH, changed).toString("hex"), base, `field ${k} is not covered`);
  }
  const otherPrev = Buffer.alloc(32, 1);
  assert.notEqual(chainHash(otherPrev, FIELDS).toString("hex"), base, "prev_hash is not covered");
});

test("canonicalJson sorts keys by UTF-16 code units, recursively, without whitespace", () => {
  assert.equal(canonicalJson({ b: 1, a: { d: [3, { y: 1, x: 2 }], c: "" }, B: false, "\u00e9": 0, "\ud83d\ude00": 1 }), '{"B":false,"a":{"c":"","d":[3,{"x":2,"y":1}]},"b":1,"\u00e9":0,"\ud83d\ude00":1}');
  assert.equal(canonicalJson([1e21, -0, 0.1, 1.5e-7]), "[1e+21,0,0.1,1.5e-7]");
  assert.equal(canonicalJson("\u0001\"\\"), '"\\u0001\\"\\\\"');
  assert.throws(() => canonicalJson({ a: undefined }), TypeError);
  assert.throws(() => canonicalJson(Number.NaN), TypeError);
  assert.throws(() => canonicalJson(1n), TypeError);
});

test("normalization replaces NUL and lone surrogates so attacker text cannot make a record unstorable", () => {
  assert.equal(cleanText("a\u0000b\ud800c\udc00"), "a\ufffdb\ufffdc\ufffd");
  assert.equal(cleanText("ok \ud83d\ude00"), "ok \ud83d\ude00");
  assert.equal(cleanText("x".repeat(5000)).length, 4096);
  const { event } = normalizeEvent(ev({ actor: { type: "anonymous", email: "evil\u0000@x" }, attributes: { "k\u0000": "v\ud800" } }), "00000000-0000-4000-8000-000000000001", new Date());
  assert.equal(event.actorEmail, "evil\ufffd@x");
  assert.deepEqual(event.attributes, { "k\ufffd": "v\ufffd" });
});

test("normalization lower-cases UUIDs and fills absent optionals with null", () => {
  const { event } = normalizeEvent(
    { type: "X", source: "System", result: "FAILURE", orgId: "AAAAAAAA-AAAA-4AAA-8AAA-AAAAAAAAAAAA", actor: { type: "system" }, reason: "r" },
    "00000000-0000-4000-8000-000000000001",
    new Date(0),
  );
  assert.equal(event.orgId, "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa");
  assert.equal(event.actorId, null);
  assert.equal(event.resourceType, null);
  assert.deepEqual(event.attributes, {});
});

test("a broken caller contract throws ERR_VALIDATION naming the field", () => {
  const cases: Array<[Parameters<typeof ev>[0], string]> = [
    [{ source: "Web" as never }, "source"],
    [{ result: "OK" as never }, "result"],
    [{ orgId: "not-a-uuid" }, "orgId"],
    [{ actor: { type: "user", id: "42" } }, "actor.id"],
    [{ actor: { type: "robot" as never } }, "actor.type"],
    [{ type: "" }, "type"],
    [{ reason: 5 as never }, "reason"],
  ];
  for (const [over, field] of cases) {
    assert.throws(
      () => normalizeEvent(ev(over), "00000000-0000-4000-8000-000000000001", new Date()),
      (err: unknown) => err instanceof ParhelionError && err.code === "ERR_VALIDATION" && err.details?.field === field,
      field,
    );
  }
});

test("attributes that cannot be stored are replaced by a marker instead of losing the record", () => {
  const circular: Record<string, unknown> = {};
  circular.self = circular;
  assert.deepEqual(normalizeAttributes(circular).value, { attributesDropped: "not serialisable" });
  assert.deepEqual(normalizeAttributes({ n: 1n }).value, { attributesDropped: "not serialisable" });
  assert.match(String(normalizeAttributes({ big: "x".repeat(MAX_ATTRIBUTES_BYTES) }).value.attributesDropped), /^too large/);
  let deep: unknown = 1;
  for (let i = 0; i < 40; i++) deep = { d: deep };
  assert.deepEqual(normalizeAttributes(deep).value, { attributesDropped: "nested too deeply" });
  const ok = normalizeAttributes({ when: new Date(0), u: undefined, nan: Number.NaN });
  assert.deepEqual(ok.value, { when: "1970-01-01T00:00:00.000Z", nan: null });
  assert.equal(ok.warning, undefined);
});

test("the fast record encoder equals the generic canonical encoding (property)", () => {
  const text = fc.string({ unit: "grapheme", maxLength: 20 });
  const nullable = fc.option(text, { nil: null });
  const json = fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.parse(JSON.stringify(v)) as unknown);
  const fields = fc.record({
    seq: fc.bigInt({ min: 1n, max: 2n ** 62n }).map(String),
    id: fc.uuid(),
    orgId: fc.option(fc.uuid(), { nil: null }),
    createdAt: fc.date({ noInvalidDate: true, min: new Date(0), max: new Date(253402300799999) }).map((d) => d.toISOString()),
    type: text,
    source: text,
    result: text,
    actorType: text,
    actorId: fc.option(fc.uuid(), { nil: null }),
    actorEmail: nullable,
    resourceType: nullable,
    resourceId: nullable,
    sourceIp: nullable,
    requestId: nullable,
    reason: text,
    attributes: fc.dictionary(text, json),
  });
  fc.assert(fc.property(fields, (f) => canonicalRecord(f) === canonicalJson(chainObject(f))), { numRuns: 500 });
});
