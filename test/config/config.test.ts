import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig, describeConfig } from "../../src/config/load.js";
import { ParhelionError } from "../../src/lib/errors.js";

function withDir<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), "parhelion-cfg-"));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function configError(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => err instanceof ParhelionError && err.code === "ERR_CONFIG" && pattern.test(err.message));
}

test("defaults are loopback-only with the documented ports", () => {
  withDir((dir) => {
    const c = loadConfig({ env: {}, cwd: dir });
    assert.equal(c.host, "127.0.0.1");
    assert.equal(c.apiPort, 9443);
    assert.equal(c.gatewayPort, 5433);
    assert.equal(c.dataDir, join(dir, ".parhelion"));
    assert.equal(c.databaseUrl, undefined);
    assert.ok(Object.isFrozen(c));
  });
});

test("flags beat environment, environment beats the file", () => {
  withDir((dir) => {
    writeFileSync(join(dir, "parhelion.yaml"), "apiPort: 1111\ngatewayPort: 2222\nhost: 127.0.0.2\n");
    const c = loadConfig({ env: { PARHELION_API_PORT: "3333", PARHELION_GATEWAY_PORT: "4444" }, flags: { apiPort: "5555" }, cwd: dir });
    assert.equal(c.apiPort, 5555);
    assert.equal(c.gatewayPort, 4444);
    assert.equal(c.host, "127.0.0.2");
  });
});

test("an unknown key in the file is an error naming it", () => {
  withDir((dir) => {
    writeFileSync(join(dir, "parhelion.yaml"), "apiPortt: 1\n");
    configError(() => loadConfig({ env: {}, cwd: dir }), /unknown key "apiPortt"/);
  });
});

test("an unknown PARHELION_ environment variable is an error naming it", () => {
  withDir((dir) => configError(() => loadConfig({ env: { PARHELION_API_PROT: "1" }, cwd: dir }), /PARHELION_API_PROT/));
});

test("a secret in the file or on the command line is refused", () => {
  withDir((dir) => {
    writeFileSync(join(dir, "parhelion.yaml"), "databaseUrl: postgres://u:p@h/db\n");
    configError(() => loadConfig({ env: {}, cwd: dir }), /secret/);
    configError(() => loadConfig({ env: {}, cwd: dir, configFile: "/dev/null", flags: { databaseUrl: "postgres://x" } }), /secret/);
  });
});

test("the external store URL comes from the environment or a file", () => {
  withDir((dir) => {
    assert.equal(loadConfig({ env: { PARHELION_DATABASE_URL: "postgres://a@b/c" }, cwd: dir }).databaseUrl, "postgres://a@b/c");
    writeFileSync(join(dir, "url"), "postgres://x@y/z\n");
    assert.equal(loadConfig({ env: { PARHELION_DATABASE_URL_FILE: join(dir, "url") }, cwd: dir }).databaseUrl, "postgres://x@y/z");
    configError(() => loadConfig({ env: { PARHELION_DATABASE_URL_FILE: join(dir, "missing") }, cwd: dir }), /databaseUrlFile: cannot read/);
  });
});

test("wrong types and half-given pairs are errors naming the key", () => {
  withDir((dir) => {
    configError(() => loadConfig({ env: {}, cwd: dir, flags: { apiPort: "notanumber" } }), /apiPort/);
    configError(() => loadConfig({ env: {}, cwd: dir, flags: { apiPort: 70000 } }), /apiPort/);
    configError(() => loadConfig({ env: {}, cwd: dir, flags: { tlsCert: "/x.pem" } }), /tlsCert and tlsKey/);
  });
});

test("every key is described with its environment variable", () => {
  const d = describeConfig();
  assert.ok(d.length >= 10);
  for (const k of d) {
    assert.ok(k.description.length > 5, k.key);
    assert.match(k.env, /^PARHELION_[A-Z_]+$/);
  }
});
