import { test } from "node:test";
import assert from "node:assert/strict";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, statSync, writeSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CsvlogTailer, utf8Prefix } from "../../src/engine/csvlog.js";
import { createLogger } from "../../src/log/logger.js";

const logger = createLogger({ level: "silent" });

/** A directory, a writer appending to `<dir>/postgres.csv` like the collector, and a tailer collecting record ids. */
function setup(o: { rotateBytes?: number; rotate?: () => Promise<void> } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "csvlog-"));
  const file = join(dir, "postgres.csv");
  let fd = openSync(file, "a", 0o600);
  const got: string[] = [];
  const make = () => new CsvlogTailer({ file, logger, companions: [join(dir, "postgres.log")], onRecords: (rs) => got.push(...rs.map((r) => `${r[0]}|${r[1]}`)), rotate: o.rotate ?? (async () => undefined), rotateBytes: o.rotateBytes ?? 1 << 30, pollMs: 1_000_000 });
  return {
    dir, file, got, make,
    write: (s: string | Buffer) => void writeSync(fd, typeof s === "string" ? Buffer.from(s) : s),
    /** What the collector does on pg_rotate_logfile(): opens the file by name again. */
    reopen: () => {
      closeSync(fd);
      fd = openSync(file, "a", 0o600);
    },
    done: () => {
      closeSync(fd);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

test("records are handed over whole and once, whatever the writer's chunks: a record cut mid-field, a character cut mid-byte", () => {
  const x = setup();
  try {
    const t = x.make();
    t.start();
    x.write('1,"first\nline"\n2,zo');
    t.poll();
    assert.deepEqual(x.got, ["1|first\nline"]);
    const euro = Buffer.from("€");
    x.write(Buffer.concat([Buffer.from("ë"), euro.subarray(0, 1)]));
    t.poll();
    assert.deepEqual(x.got, ["1|first\nline"]);
    x.write(Buffer.concat([euro.subarray(1), Buffer.from("\n3,three\n")]));
    t.poll();
    assert.deepEqual(x.got, ["1|first\nline", "2|zoë€", "3|three"]);
    t.stop();
    assert.deepEqual(utf8Prefix(Buffer.from([0x61, 0xe2, 0x82]), 3), 1);
    assert.deepEqual(utf8Prefix(Buffer.from([0x61, 0xe2, 0x82, 0xac]), 4), 4);
  } finally {
    x.done();
  }
});

test("a new tailer (parhelion restarted) resumes after the last whole record: nothing twice, nothing lost, the position file 0600", () => {
  const x = setup();
  try {
    const a = x.make();
    a.start();
    x.write("1,one\n2,tw");
    a.poll();
    a.stop();
    assert.deepEqual(x.got, ["1|one"]);
    assert.equal(statSync(`${x.file}.pos`).mode & 0o777, 0o600);
    x.write("o\n3,three\n");
    const b = x.make();
    b.start();
    b.poll();
    b.stop();
    assert.deepEqual(x.got, ["1|one", "2|two", "3|three"]);
  } finally {
    x.done();
  }
});

test("a copy of the file under a new inode (a group's re-key) resumes at the saved position; another file with a stale position is read from its start", () => {
  const x = setup();
  try {
    const a = x.make();
    a.start();
    // More than the 4 KiB the position's hash covers, then a little more after it.
    for (let i = 1; i <= 200; i++) x.write(`${i},${"x".repeat(30)}\n`);
    a.poll();
    a.stop();
    assert.equal(x.got.length, 200);
    const pos = JSON.parse(readFileSync(`${x.file}.pos`, "utf8"));
    assert.equal(pos.printBytes, 4096);
    // The re-key's copy: the same bytes, a new inode, then the server appends.
    const bytes = readFileSync(x.file);
    const before = statSync(x.file).ino;
    rmSync(x.file);
    writeFileSync(`${x.file}.copy`, bytes, { mode: 0o600 });
    renameSync(`${x.file}.copy`, x.file);
    assert.notEqual(statSync(x.file).ino, before, "a new inode");
    x.reopen();
    x.write("201,after\n");
    const b = x.make();
    b.start();
    b.poll();
    b.stop();
    assert.deepEqual(x.got.slice(200), ["201|after"], "nothing read twice, nothing lost");
    // A different file at the path (its first bytes differ) with the old position saved: read from its start.
    // It is longer than the saved offset, so only the hash tells it from a copy.
    rmSync(x.file);
    writeFileSync(x.file, Array.from({ length: 300 }, (_, i) => `${i},${"y".repeat(30)}\n`).join(""), { mode: 0o600 });
    x.reopen();
    const c = x.make();
    c.start();
    c.poll();
    c.stop();
    assert.equal(x.got.length, 201 + 300);
    assert.equal(x.got[201], `0|${"y".repeat(30)}`);
  } finally {
    x.done();
  }
});

test("rotation: past rotateBytes the file is renamed and the collector asked to reopen; the old file is read to its end, then removed; the text log keeps one previous file", async () => {
  let asked = 0;
  const x = setup({ rotateBytes: 20, rotate: async () => void asked++ });
  try {
    writeFileSync(join(x.dir, "postgres.log"), "text log\n");
    const t = x.make();
    t.start();
    x.write("1,aaaaaaaaaaaaaaaaaaaaaaaa\n");
    t.poll();
    assert.equal(asked, 1);
    assert.ok(existsSync(`${x.file}.1`) && !existsSync(x.file));
    assert.equal(readFileSync(join(x.dir, "postgres.log.1"), "utf8"), "text log\n");
    x.write("2,still the old file until the collector reopens\n");
    t.poll();
    x.reopen();
    x.write("3,the new file\n");
    t.poll();
    assert.deepEqual(x.got.map((s) => s.slice(0, 1)), ["1", "2"], "the new file waits until the old one is surely complete");
    await new Promise((r) => setTimeout(r, 600));
    t.poll();
    assert.deepEqual(x.got.map((s) => s.slice(0, 1)), ["1", "2", "3"]);
    assert.ok(!existsSync(`${x.file}.1`), "the old file is removed once read");
    t.stop();
  } finally {
    x.done();
  }
});

test("a rotation request that fails is logged and repeated, and the renamed file is still followed meanwhile", () => {
  let asked = 0;
  const x = setup({ rotateBytes: 5, rotate: async () => {
    asked++;
    throw new Error("server restarting");
  } });
  try {
    const t = x.make();
    t.start();
    x.write("1,first\n");
    t.poll();
    x.write("2,second\n");
    t.poll();
    assert.deepEqual(x.got, ["1|first", "2|second"]);
    assert.equal(asked, 1, "asked again only after 10 s");
    t.stop();
  } finally {
    x.done();
  }
});

test("a file replaced under the tailer (a new inode at the path) is finished first, then the new one is followed from its start", () => {
  const x = setup();
  try {
    const t = x.make();
    t.start();
    x.write("1,one\n");
    t.poll();
    x.write("2,two\n");
    rmSync(x.file);
    x.reopen();
    x.write("3,three\n");
    t.poll();
    t.poll();
    assert.deepEqual(x.got, ["1|one", "2|two", "3|three"]);
    t.stop();
  } finally {
    x.done();
  }
});
