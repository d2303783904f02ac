import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { sql } from "kysely";
import { Secret } from "otpauth";
import { startTestStore } from "../support/pg.js";
import type { Db } from "../../src/store/db.js";
import { Keyring, LocalKeyProvider, KEY_CACHE_SECONDS, attachKeyring, columnPurpose, encryptLegacySecrets, keyringOf, openColumn, sealColumn, type KeyProvider } from "../../src/kms/index.js";
import { envelopeKeyId } from "../../src/kms/envelope.js";
import { createUser } from "../../src/identity/users.js";
import { beginTotpEnrollment } from "../../src/identity/mfa.js";
import { putSsoConfig } from "../../src/identity/sso.js";
import { makeOrg, email } from "../identity/helpers.js";
import { rejectsOpaque } from "./helpers.js";

/** A provider that counts unwraps and can be switched off, as a disabled HSM or KMS key would be. */
class Switchable implements KeyProvider {
  unwraps = 0;
  enabled = true;
  constructor(private readonly inner: KeyProvider) {}
  wrap(key: Buffer, ctx: Record<string, string>) {
    return this.inner.wrap(key, ctx);
  }
  async unwrap(w: Buffer, ctx: Record<string, string>) {
    this.unwraps++;
    if (!this.enabled) throw new Error("disabled");
    return this.inner.unwrap(w, ctx);
  }
  describe() {
    return this.inner.describe();
  }
  health() {
    return this.inner.health();
  }
  close() {
    return this.inner.close();
  }
}

/** Every row of every table of the store as text (what pg_dump would write, bytea in hex). */
async function dumpStore(db: Db): Promise<string> {
  const tables = await sql<{ table_name: string }>`SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'`.execute(db);
  const out: string[] = [];
  for (const { table_name } of tables.rows) {
    const rows = await sql<{ t: string }>`SELECT t::text AS t FROM ${sql.table(table_name)} t`.execute(db);
    out.push(...rows.rows.map((r) => `${table_name}: ${r.t}`));
  }
  return out.join("\n");
}

describe("key hierarchy on a real metadata store", () => {
  let store: Awaited<ReturnType<typeof startTestStore>>;
  let db: Db;
  let orgA: string;
  let orgB: string;

  before(async () => {
    store = await startTestStore();
    db = store.db;
    orgA = await makeOrg(db, "a");
    orgB = await makeOrg(db, "b");
  });
  after(async () => {
    await store?.stop();
  });

  test("root -> organization KEK -> data key: rows hold wrapped keys only, each naming what wrapped it", async () => {
    const keyring = keyringOf(db);
    const env = await keyring.seal(orgA, "t.c:1", Buffer.from("hello"));
    assert.equal((await keyring.open("t.c:1", env)).toString(), "hello");
    const rows = await db.selectFrom("kms_keys").selectAll().where("org_id", "=", orgA).orderBy("created_at").execute();
    const kek = rows.find((r) => r.kind === "org-kek");
    const dek = rows.find((r) => r.kind === "org-data");
    assert.ok(kek && dek);
    assert.equal(kek.wrapped_by, keyring.provider.describe().keyId);
    assert.equal(kek.provider, "local");
    assert.equal(dek.wrapped_by, kek.id);
    assert.equal(envelopeKeyId(env), dek.id);
    assert.equal(envelopeKeyId(dek.wrapped), kek.id);
    const dataKey = await keyring.dataKey(dek.id);
    assert.equal(dataKey.length, 32);
    assert.ok(!(await dumpStore(db)).includes(dataKey.toString("hex")), "the data key is in the store in clear");
    // One KEK and one metadata key per organization, however many secrets.
    await keyring.seal(orgA, "t.c:2", Buffer.from("again"));
    assert.equal((await db.selectFrom("kms_keys").select("id").where("org_id", "=", orgA).execute()).length, 2);
    // A KEK never opens data, even an envelope relabelled with its id.
    const relabelled = Buffer.concat([Buffer.from([1, kek.id.length]), Buffer.from(kek.id), env.subarray(2 + dek.id.length)]);
    await rejectsOpaque(() => keyring.open("t.c:1", relabelled), "KEK as data key");
  });

  test("organizations have their own keys: another organization's key id, an unknown key id and another row give the same error", async () => {
    const keyring = keyringOf(db);
    const a = await keyring.seal(orgA, "t.c:1", Buffer.from("for a"));
    const b = await keyring.seal(orgB, "t.c:1", Buffer.from("for b"));
    assert.notEqual(envelopeKeyId(a), envelopeKeyId(b));
    const idB = envelopeKeyId(b);
    const swapped = Buffer.concat([Buffer.from([1, idB.length]), Buffer.from(idB), a.subarray(2 + envelopeKeyId(a).length)]);
    await rejectsOpaque(() => keyring.open("t.c:1", swapped), "another organization's key id");
    const unknown = `dek-${randomUUID()}`;
    const missing = Buffer.concat([Buffer.from([1, unknown.length]), Buffer.from(unknown), a.subarray(2 + envelopeKeyId(a).length)]);
    await rejectsOpaque(() => keyring.open("t.c:1", missing), "unknown key id");
    await rejectsOpaque(() => keyring.open("t.c:2", a), "another row");
    await rejectsOpaque(() => keyring.open("t.c:1", Buffer.from("JBSWY3DPEHPK3PXP")), "plaintext");
  });

  test("a different root key opens nothing, with the same error", async () => {
    const env = await keyringOf(db).seal(orgA, "t.c:9", Buffer.from("x"));
    const other = new Keyring({ db, provider: LocalKeyProvider.open(join(store.pg.dir, "other-root.key")) });
    await rejectsOpaque(() => other.open("t.c:9", env));
  });

  test("a tampered wrapped data key or KEK in the store gives the same error to a fresh keyring", async () => {
    const provider = LocalKeyProvider.open(join(store.pg.dir, "keys", "root.key"));
    const env = await keyringOf(db).seal(orgB, "t.c:3", Buffer.from("y"));
    const dek = await db.selectFrom("kms_keys").selectAll().where("id", "=", envelopeKeyId(env)).executeTakeFirstOrThrow();
    const kek = await db.selectFrom("kms_keys").selectAll().where("id", "=", dek.wrapped_by).executeTakeFirstOrThrow();
    assert.equal((await new Keyring({ db, provider }).open("t.c:3", env)).toString(), "y");
    for (const row of [dek, kek]) {
      const bad = Buffer.from(row.wrapped);
      bad[bad.length - 1] = (bad[bad.length - 1] ?? 0) ^ 1;
      await db.updateTable("kms_keys").set({ wrapped: bad }).where("id", "=", row.id).execute();
      try {
        await rejectsOpaque(() => new Keyring({ db, provider }).open("t.c:3", env), `tampered ${row.kind}`);
      } finally {
        await db.updateTable("kms_keys").set({ wrapped: row.wrapped }).where("id", "=", row.id).execute();
      }
    }
  });

  test(`unwrapped keys are cached ${KEY_CACHE_SECONDS} s at most: a provider that stops unwrapping stops decryption within a minute`, async () => {
    let now = Date.parse("2030-01-01T00:00:00Z");
    const sw = new Switchable(LocalKeyProvider.open(join(store.pg.dir, "keys", "root.key")));
    const org = await makeOrg(db, "cache");
    const keyring = new Keyring({ db, provider: sw, now: () => now });
    const env = await keyring.seal(org, "t.c:1", Buffer.from("z"));
    const before = sw.unwraps;
    await keyring.open("t.c:1", env);
    await keyring.open("t.c:1", env);
    assert.equal(sw.unwraps, before, "a cached key was unwrapped again");
    sw.enabled = false;
    now += (KEY_CACHE_SECONDS - 1) * 1000;
    assert.equal((await keyring.open("t.c:1", env)).toString(), "z");
    now += 2000;
    await rejectsOpaque(() => keyring.open("t.c:1", env), "after the cache expired");
    sw.enabled = true;
    assert.equal((await keyring.open("t.c:1", env)).toString(), "z", "re-enabled");
  });

  test("two keyrings making an organization's first key at once end with one KEK and one data key", async () => {
    const org = await makeOrg(db, "race");
    const provider = LocalKeyProvider.open(join(store.pg.dir, "keys", "root.key"));
    const rings = [new Keyring({ db, provider }), new Keyring({ db, provider }), new Keyring({ db, provider })];
    const envs = await Promise.all(rings.map((k, i) => k.seal(org, `t.c:${i}`, Buffer.from(String(i)))));
    const rows = await db.selectFrom("kms_keys").select(["kind"]).where("org_id", "=", org).where("state", "=", "active").execute();
    assert.deepEqual(rows.map((r) => r.kind).sort(), ["org-data", "org-kek"]);
    for (const [i, env] of envs.entries()) assert.equal((await rings[(i + 1) % 3]!.open(`t.c:${i}`, env)).toString(), String(i));
  });

  test("a workspace group's data key is its own, stable, wrapped by its organization's KEK", async () => {
    const region = randomUUID();
    await db.insertInto("regions").values({ id: region, name: `r-${region.slice(0, 8)}`, provider: "local" }).execute();
    const group = randomUUID();
    await db.insertInto("workspace_groups").values({ id: group, org_id: orgA, name: "g", region_id: region, firewall_ranges: [], allow_all_traffic: false, admin_verifier: "x", tls_min_version: "1.2", update_window: null, expires_at: null, state: "ACTIVE", terminated_at: null }).execute();
    const k1 = await keyringOf(db).groupDataKey(orgA, group);
    const k2 = await keyringOf(db).groupDataKey(orgA, group);
    assert.equal(k1.id, k2.id);
    assert.deepEqual(k1.key, k2.key);
    const row = await db.selectFrom("kms_keys").selectAll().where("id", "=", k1.id).executeTakeFirstOrThrow();
    assert.equal(row.kind, "group-data");
    assert.equal(row.group_id, group);
    const kek = await db.selectFrom("kms_keys").select("id").where("org_id", "=", orgA).where("kind", "=", "org-kek").executeTakeFirstOrThrow();
    assert.equal(row.wrapped_by, kek.id);
  });

  test("a group's volume key: 64 bytes derived from its data key, the same on every call, another for another group, never stored", async () => {
    const region = randomUUID();
    await db.insertInto("regions").values({ id: region, name: `r-${region.slice(0, 8)}`, provider: "local" }).execute();
    const groups = [randomUUID(), randomUUID()];
    for (const id of groups) await db.insertInto("workspace_groups").values({ id, org_id: orgA, name: `g-${id.slice(0, 8)}`, region_id: region, firewall_ranges: [], allow_all_traffic: false, admin_verifier: "x", tls_min_version: "1.2", update_window: null, expires_at: null, state: "ACTIVE", terminated_at: null }).execute();
    const [a, b] = groups as [string, string];
    const v1 = await keyringOf(db).groupVolumeKey(orgA, a);
    const v2 = await keyringOf(db).groupVolumeKey(orgA, a);
    const other = await keyringOf(db).groupVolumeKey(orgA, b);
    assert.equal(v1.length, 64);
    assert.deepEqual(v1, v2);
    assert.notDeepEqual(v1, other);
    const data = await keyringOf(db).groupDataKey(orgA, a);
    assert.ok(!v1.includes(data.key), "the volume key is not the data key");
    v2.fill(0);
    assert.deepEqual(await keyringOf(db).groupVolumeKey(orgA, a), v1, "zeroing the caller's copy does not touch the keyring's");
    const dump = await dumpStore(db);
    assert.ok(!dump.includes(v1.toString("hex")) && !dump.includes(v1.toString("base64")), "the volume key is in the store");
  });

  test("canary: a TOTP secret and an SSO client secret written through parhelion never appear in the store's rows", async () => {
    const u = await createUser(db, { orgId: orgA, email: email("canary"), firstName: "", lastName: "", passwordHash: null });
    const totp = await beginTotpEnrollment(db, { userId: u.userID, email: u.email, issuer: "parhelion" });
    const clientSecret = `canary-client-secret-${randomUUID()}`;
    await putSsoConfig(db, orgA, { issuer: "https://idp.example.com", clientID: "parhelion", clientSecret, redirectURI: "https://127.0.0.1:9443/v1/auth/sso/callback" }, new Set(["Owner"]));
    const dump = await dumpStore(db);
    assert.ok(dump.includes(totp.factorID), "the dump misses the TOTP row (a broken scan proves nothing)");
    for (const s of [totp.secret, clientSecret]) {
      for (const form of [s, Buffer.from(s).toString("hex"), Buffer.from(s).toString("base64")]) assert.ok(!dump.includes(form), `found ${form.slice(0, 8)}... in the store`);
    }
    const raw = Secret.fromBase32(totp.secret).bytes;
    assert.ok(!dump.includes(Buffer.from(raw).toString("hex")), "the raw TOTP key is in the store");
    const row = await db.selectFrom("mfa_totp").select(["secret", "secret_enc"]).where("id", "=", totp.factorID).executeTakeFirstOrThrow();
    assert.equal(row.secret, null);
    assert.equal(await openColumn(db, "mfa_totp.secret", totp.factorID, row.secret_enc!), totp.secret);
    const sso = await db.selectFrom("sso_providers").select(["client_secret", "client_secret_enc"]).where("org_id", "=", orgA).executeTakeFirstOrThrow();
    assert.equal(sso.client_secret, null);
    assert.equal(await openColumn(db, "sso_providers.client_secret", orgA, sso.client_secret_enc!), clientSecret);
    // The secret of one row does not open as another's.
    await rejectsOpaque(() => openColumn(db, "mfa_totp.secret", randomUUID(), row.secret_enc!), "TOTP secret under another row id");
    await rejectsOpaque(() => openColumn(db, "sso_providers.client_secret", orgB, sso.client_secret_enc!), "client secret under another organization");
  });

  test("rows written in plaintext before 0007_keys are encrypted once; running the pass again changes nothing", async () => {
    const org = await makeOrg(db, "legacy");
    const users = await Promise.all([1, 2, 3].map(() => createUser(db, { orgId: org, email: email("legacy"), firstName: "", lastName: "", passwordHash: null })));
    const secrets = users.map(() => new Secret({ size: 20 }).base32);
    const ids = users.map(() => randomUUID());
    for (const [i, u] of users.entries()) {
      await db.insertInto("mfa_totp").values({ id: ids[i]!, user_id: u.userID, name: "legacy", secret: secrets[i]!, secret_enc: null, enroll_expires_at: null, confirmed_at: new Date(), last_used_step: null, last_used_at: null }).execute();
    }
    const legacyClientSecret = `legacy-secret-${randomUUID()}`;
    await db.insertInto("sso_providers").values({
      org_id: org, issuer: "https://idp.example.com", client_id: "c", client_secret: legacyClientSecret, client_secret_enc: null, redirect_uri: "https://x/v1/auth/sso/callback", ca_pem: null, scopes: ["openid"],
      email_claim: "email", groups_claim: "groups", first_name_claim: "given_name", last_name_claim: "family_name", jit: true, default_role: null, team_mappings: "[]", role_mappings: "[]", sso_only: false, break_glass_user_ids: [],
    }).execute();
    assert.ok((await dumpStore(db)).includes(legacyClientSecret), "the legacy row was not written in clear");
    const first = await encryptLegacySecrets(db);
    assert.ok(first.mfaTotp >= 3 && first.ssoProviders >= 1, JSON.stringify(first));
    const dump = await dumpStore(db);
    for (const s of [...secrets, legacyClientSecret]) assert.ok(!dump.includes(s), "a legacy secret is still in clear");
    for (const [i, id] of ids.entries()) {
      const row = await db.selectFrom("mfa_totp").select(["secret", "secret_enc"]).where("id", "=", id).executeTakeFirstOrThrow();
      assert.equal(row.secret, null);
      assert.equal(await openColumn(db, "mfa_totp.secret", id, row.secret_enc!), secrets[i]);
    }
    const sso = await db.selectFrom("sso_providers").select(["client_secret_enc"]).where("org_id", "=", org).executeTakeFirstOrThrow();
    assert.equal(await openColumn(db, "sso_providers.client_secret", org, sso.client_secret_enc!), legacyClientSecret);
    const encBefore = (await db.selectFrom("mfa_totp").select("secret_enc").where("id", "in", ids).orderBy("id").execute()).map((r) => r.secret_enc!.toString("hex"));
    assert.deepEqual(await encryptLegacySecrets(db), { mfaTotp: 0, ssoProviders: 0 });
    const encAfter = (await db.selectFrom("mfa_totp").select("secret_enc").where("id", "in", ids).orderBy("id").execute()).map((r) => r.secret_enc!.toString("hex"));
    assert.deepEqual(encAfter, encBefore, "a second pass re-encrypted");
  });

  test("a re-encryption pass interrupted half-way leaves each row plaintext or encrypted, and the next pass finishes", async () => {
    const { openDb } = await import("../../src/store/db.js");
    // Earlier tests' legacy rows are converted already; these two organizations' rows are the only plaintext ones.
    const orgs = [await makeOrg(db, "half-1"), await makeOrg(db, "half-2")];
    const ids: string[] = [];
    for (const org of orgs) {
      const u = await createUser(db, { orgId: org, email: email("half"), firstName: "", lastName: "", passwordHash: null });
      const id = randomUUID();
      ids.push(id);
      await db.insertInto("mfa_totp").values({ id, user_id: u.userID, name: "legacy", secret: new Secret({ size: 20 }).base32, secret_enc: null, enroll_expires_at: null, confirmed_at: new Date(), last_used_step: null, last_used_at: null }).execute();
    }
    const { db: other } = openDb({ connectionString: store.pg.connectionString, max: 2 });
    try {
      // A provider that wraps one organization's KEK, then fails (a crash, an HSM gone) before the second.
      const inner = LocalKeyProvider.open(join(store.pg.dir, "keys", "root.key"));
      let wraps = 0;
      const failing: KeyProvider = {
        wrap: async (k, c) => {
          if (++wraps > 1) throw new Error("gone");
          return inner.wrap(k, c);
        },
        unwrap: (w, c) => inner.unwrap(w, c), describe: () => inner.describe(), health: () => inner.health(), close: () => inner.close(),
      };
      attachKeyring(other, new Keyring({ db: other, provider: failing }));
      await rejectsOpaque(() => encryptLegacySecrets(other), "interrupted pass");
      const rows = await db.selectFrom("mfa_totp").select(["id", "secret", "secret_enc"]).where("id", "in", ids).execute();
      assert.equal(rows.filter((r) => r.secret === null && r.secret_enc !== null).length, 1, "exactly the first organization's row is encrypted");
      assert.equal(rows.filter((r) => r.secret !== null && r.secret_enc === null).length, 1, "the other row is still whole plaintext");
    } finally {
      await other.destroy();
    }
    const second = await encryptLegacySecrets(db);
    assert.equal(second.mfaTotp, 1);
    const after = await db.selectFrom("mfa_totp").select(["secret"]).where("id", "in", ids).execute();
    assert.ok(after.every((r) => r.secret === null));
  });

  test("the store refuses a row with both the plaintext and the encrypted secret, or neither", async () => {
    const u = await createUser(db, { orgId: orgA, email: email("both"), firstName: "", lastName: "", passwordHash: null });
    const id = randomUUID();
    const env = await sealColumn(db, orgA, "mfa_totp.secret", id, "JBSWY3DPEHPK3PXP");
    const base = { id, user_id: u.userID, name: "x", enroll_expires_at: null, confirmed_at: null, last_used_step: null, last_used_at: null };
    await assert.rejects(db.insertInto("mfa_totp").values({ ...base, secret: "JBSWY3DPEHPK3PXP", secret_enc: env }).execute(), /mfa_totp_secret_once/);
    await assert.rejects(db.insertInto("mfa_totp").values({ ...base, secret: null, secret_enc: null }).execute(), /mfa_totp_secret_once/);
    assert.equal(columnPurpose("mfa_totp.secret", id), `mfa_totp.secret:${id}`);
  });

  test("a store handle without a keyring refuses to seal (no silent plaintext)", async () => {
    const { openDb } = await import("../../src/store/db.js");
    const { db: bare } = openDb({ connectionString: store.pg.connectionString, max: 1 });
    try {
      await assert.rejects(sealColumn(bare, orgA, "mfa_totp.secret", randomUUID(), "x"), (e: Error & { code?: string }) => e.code === "ERR_INTERNAL");
      attachKeyring(bare, keyringOf(db));
      assert.ok(await sealColumn(bare, orgA, "mfa_totp.secret", randomUUID(), "x"));
    } finally {
      await bare.destroy();
    }
  });
});
