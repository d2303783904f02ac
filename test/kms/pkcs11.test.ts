import { test, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import * as graphene from "graphene-pk11";
import { Pkcs11KeyProvider } from "../../src/kms/pkcs11.js";
import { ParhelionError } from "../../src/lib/errors.js";
import { SOFTHSM_MODULE, createTestToken } from "../support/softhsm.js";
import { rejectsOpaque } from "./helpers.js";

const tok = createTestToken("kms-pkcs11");
const opened: Pkcs11KeyProvider[] = [];
after(async () => {
  for (const p of opened) await p.close();
  tok.cleanup();
});

function open(keyLabel = "parhelion-root", pin = tok.pin): Pkcs11KeyProvider {
  const p = Pkcs11KeyProvider.open({ module: SOFTHSM_MODULE, token: tok.token, keyLabel, pin });
  opened.push(p);
  return p;
}

const ctx = { purpose: "parhelion-org-kek", keyId: "kek-1", organizationId: "o1" };

/** Reads the root key's attributes through a session of its own. */
function inspect(label: string): { extractable: boolean; sensitive: boolean; count: number } {
  const mod = graphene.Module.load(SOFTHSM_MODULE, "inspect");
  mod.initialize();
  try {
    const slot = mod.getSlots(true).items(0);
    const s = slot.open(graphene.SessionFlag.SERIAL_SESSION);
    try {
      s.login(tok.pin, graphene.UserType.USER);
    } catch (err) {
      if (!/ALREADY_LOGGED_IN/.test((err as Error).message)) throw err;
    }
    const found = s.find({ class: graphene.ObjectClass.SECRET_KEY, label });
    const k = found.items(0).toType<graphene.SecretKey>();
    const out = { extractable: k.getAttribute({ extractable: null }).extractable as boolean, sensitive: k.getAttribute({ sensitive: null }).sensitive as boolean, count: found.length };
    s.close();
    return out;
  } finally {
    // The module stays initialized while the providers use it (graphene shares the library's state).
  }
}

test("a wrong PIN, an unknown token or a missing module is a configuration error that never shows the PIN", () => {
  const wrong = "0000" + randomBytes(4).toString("hex");
  // First in the file: while no session of this process is logged in, so the token really checks the PIN.
  assert.throws(() => open("parhelion-root", wrong), (e: unknown) => e instanceof ParhelionError && e.code === "ERR_CONFIG" && /CKR_PIN_INCORRECT/.test(e.message) && !e.message.includes(wrong));
  assert.throws(() => Pkcs11KeyProvider.open({ module: SOFTHSM_MODULE, token: "no-such-token", keyLabel: "k", pin: tok.pin }), (e: unknown) => e instanceof ParhelionError && e.code === "ERR_CONFIG" && /no PKCS#11 token labelled "no-such-token"/.test(e.message));
  assert.throws(() => Pkcs11KeyProvider.open({ module: "/nonexistent/libpkcs11.so", token: tok.token, keyLabel: "k", pin: tok.pin }), (e: unknown) => e instanceof ParhelionError && e.code === "ERR_CONFIG" && /cannot load the PKCS#11 module/.test(e.message));
});

test("makes a sensitive, non-extractable AES-256 root key on the token on first open and finds it again", async () => {
  const p = open();
  assert.equal(p.created, true);
  const a = inspect("parhelion-root");
  assert.deepEqual(a, { extractable: false, sensitive: true, count: 1 });
  const d = p.describe();
  assert.equal(d.provider, "pkcs11");
  assert.match(d.keyId, /^pkcs11:kms-pkcs11\/parhelion-root#[0-9a-f]{32}$/);
  const key = randomBytes(32);
  const wrapped = await p.wrap(key, ctx);
  assert.ok(!wrapped.includes(key));
  const again = open();
  assert.equal(again.created, false);
  assert.equal(again.describe().keyId, d.keyId);
  assert.deepEqual(await again.unwrap(wrapped, ctx), key);
  assert.deepEqual(await p.health(), { ok: true, detail: "ok" });
});

test("tampered blobs, another context and another HSM key give the one opaque error", async () => {
  const p = open();
  const other = open("another-root");
  assert.notEqual(other.describe().keyId, p.describe().keyId);
  const wrapped = await p.wrap(randomBytes(32), ctx);
  await rejectsOpaque(() => p.unwrap(wrapped, { ...ctx, organizationId: "o2" }), "context");
  await rejectsOpaque(() => other.unwrap(wrapped, ctx), "another key");
  for (let i = 0; i < wrapped.length; i++) {
    const bad = Buffer.from(wrapped);
    bad[i] = (bad[i] ?? 0) ^ 0x01;
    await rejectsOpaque(() => p.unwrap(bad, ctx), `byte ${i}`);
  }
});

test("a root key removed from the HSM gives the same opaque error, and health says so", async () => {
  const p = open("doomed-root");
  const wrapped = await p.wrap(randomBytes(32), ctx);
  const mod = graphene.Module.load(SOFTHSM_MODULE, "remover");
  mod.initialize();
  const s = mod.getSlots(true).items(0).open(graphene.SessionFlag.SERIAL_SESSION | graphene.SessionFlag.RW_SESSION);
  assert.equal(s.destroy({ class: graphene.ObjectClass.SECRET_KEY, label: "doomed-root" }), 1);
  s.close();
  await rejectsOpaque(() => p.unwrap(wrapped, ctx), "missing key");
  const h = await p.health();
  assert.equal(h.ok, false);
  assert.match(h.detail, /^CKR_[A-Z_]+$/, "the PKCS#11 return code, nothing more");
});


test("a wrong PIN is refused while this process is already logged in to the token (the token itself does not check it then)", () => {
  const p = open();
  assert.deepEqual(inspect("parhelion-root").count, 1);
  const wrong = "1111" + randomBytes(4).toString("hex");
  assert.throws(() => open("parhelion-root", wrong), (e: unknown) => e instanceof ParhelionError && e.code === "ERR_CONFIG" && /CKR_PIN_INCORRECT/.test(e.message) && !e.message.includes(wrong));
  assert.equal(open().describe().keyId, p.describe().keyId, "the right PIN still opens it");
});
