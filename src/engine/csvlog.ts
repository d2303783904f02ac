import { hash } from "node:crypto";
import { closeSync, existsSync, fstatSync, openSync, readSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import type { Logger } from "../log/logger.js";
import { CsvRecords } from "../audit/pgaudit.js";
import { readAt } from "../lib/files.js";

/** Bytes read per poll at most (a backlog is read over several polls, so one server never holds the loop). */
const READ_BYTES = 1024 * 1024;
/** Bytes at the start of a file whose hash identifies it when its inode changed (a copy: a group's re-key). */
const PRINT_BYTES = 4096;

interface Current {
  fd: number;
  ino: number;
  path: string;
  offset: number;
  /** SHA-256 (hex) of the file's first `printBytes` bytes, once it has any. */
  print: string | null;
  printBytes: number;
}

/** Hex SHA-256 of the first `n` bytes of an open file, or null when it has fewer. */
function fingerprint(fd: number, n: number): string | null {
  if (n <= 0) return null;
  const b = readAt(fd, 0, n);
  return b.length < n ? null : hash("sha256", b, "hex");
}

/**
 * Follows a PostgreSQL server's csvlog file (`<dir>/postgres.csv`, written by its logging collector) and hands
 * over every whole CSV record, in order, exactly once across server restarts and — up to the last saved
 * position — across restarts of parhelion:
 *
 * - it reads from an open descriptor, so a server restart (the new collector appends to the same file) or a
 *   rotation (below) loses nothing; a record cut at the end of what is written waits for the rest;
 * - the position (inode, offset, and a hash of the file's first 4 KiB) is saved to `<file>.pos` after each read
 *   that consumed records (written to a temporary file and renamed), so a new parhelion resumes where the last one
 *   stopped — in the same file, or in a copy of it (a group's re-key copies its volume's files: new inodes, same
 *   bytes), never in another file;
 * - past `rotateBytes` consumed, the file is renamed to `<file>.1` (and each companion, the collector's text
 *   log, to `<name>.1`, replacing the previous one) and `rotate()` asks the collector to reopen
 *   (`pg_rotate_logfile()`); `<file>.1` is read to its end and removed once the collector writes the new
 *   file. If the request fails it is repeated; meanwhile the renamed file is still followed. The log files stay
 *   where the server writes them (its directory, 0700, service user), mode 0600.
 *
 * Records it could not keep (over 64 MiB) are counted in `dropped` and logged, never skipped silently.
 */
export class CsvlogTailer {
  private current: Current | null = null;
  private readonly buf = Buffer.allocUnsafe(READ_BYTES);
  private readonly csv = new CsvRecords();
  private timer: NodeJS.Timeout | undefined;
  private readonly old: string;
  private readonly posFile: string;
  /** When the renamed file was seen complete (the collector writes the new one). */
  private drainedAt = 0;
  private rotateRequestedAt = 0;
  private rotating = false;
  private reportedDrops = 0;

  constructor(
    private readonly o: {
      file: string;
      logger: Logger;
      onRecords: (records: string[][]) => void;
      /** Asks the collector to reopen its file (pg_rotate_logfile()); rejects when the server cannot be asked. */
      rotate: () => Promise<void>;
      rotateBytes?: number;
      pollMs?: number;
      /** Files the collector writes beside it (its text log): renamed to `<name>.1` at each rotation too, replacing the previous one. */
      companions?: readonly string[];
    },
  ) {
    this.old = `${o.file}.1`;
    this.posFile = `${o.file}.pos`;
  }

  /** Starts following (polling every pollMs, 100 by default). */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.poll(), this.o.pollMs ?? 100);
    this.timer.unref();
    this.poll();
  }

  /** Reads what is written so far and stops. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.poll();
    if (this.current) closeSync(this.current.fd);
    this.current = null;
  }

  /** Reads everything written so far (the poll's work; tests call it to skip the wait). */
  poll(): void {
    try {
      this.step();
    } catch (err) {
      this.o.logger.error({ err: { message: (err as Error).message }, file: this.o.file }, "reading the server's csvlog failed; retrying");
    }
    if (this.csv.dropped > this.reportedDrops) {
      this.o.logger.error({ dropped: this.csv.dropped - this.reportedDrops, file: this.o.file }, "csvlog records over 64 MiB were dropped");
      this.reportedDrops = this.csv.dropped;
    }
  }

  private step(): void {
    if (!this.current && !this.open()) return;
    for (let rounds = 0; rounds < 8; rounds++) {
      const cur = this.current!;
      const consumed = this.read(cur);
      if (cur.path === this.old) {
        // Rotated: the collector writes the new file once it reopened; read the old one to its end first.
        if (existsSync(this.o.file)) {
          if (consumed > 0) continue;
          if (this.drainedAt === 0) this.drainedAt = Date.now();
          if (Date.now() - this.drainedAt < 500) return; // a last record may still be on its way to the old file
          closeSync(cur.fd);
          unlinkSync(this.old);
          this.current = null;
          this.drainedAt = 0;
          if (!this.open()) return;
          continue;
        }
        if (Date.now() - this.rotateRequestedAt > 10_000) this.requestRotation();
        return;
      }
      if (consumed > READ_BYTES - 4) continue; // more to read
      // A new file at the path (the server removed or replaced it): finish this one, then follow the new.
      const now = this.statIno(this.o.file);
      if (now !== null && now !== cur.ino) {
        closeSync(cur.fd);
        this.current = null;
        if (!this.open()) return;
        continue;
      }
      if (cur.offset >= (this.o.rotateBytes ?? 16 * 1024 * 1024) && !existsSync(this.old)) {
        renameSync(this.o.file, this.old);
        cur.path = this.old;
        for (const c of this.o.companions ?? []) {
          try {
            renameSync(c, `${c}.1`);
          } catch {
            // not written yet
          }
        }
        this.savePosition();
        this.requestRotation();
      }
      return;
    }
  }

  private statIno(path: string): number | null {
    try {
      return statSync(path).ino;
    } catch {
      return null;
    }
  }

  /** Opens the renamed file left from before (if any), else the file; resumes at the saved position when the inode matches. */
  private open(): boolean {
    const path = existsSync(this.old) ? this.old : this.o.file;
    let fd: number;
    try {
      fd = openSync(path, "r");
    } catch {
      return false; // not written yet
    }
    const { ino, size } = fstatSync(fd);
    let offset = 0;
    try {
      const pos = JSON.parse(readFileSync(this.posFile, "utf8")) as { ino?: unknown; offset?: unknown; print?: unknown; printBytes?: unknown };
      const at = typeof pos.offset === "number" && Number.isSafeInteger(pos.offset) && pos.offset >= 0 ? pos.offset : null;
      if (at !== null && pos.ino === ino) offset = at;
      else if (at !== null && typeof pos.print === "string" && typeof pos.printBytes === "number" && pos.printBytes > 0 && pos.printBytes <= PRINT_BYTES &&
        size >= Math.max(at, pos.printBytes) && fingerprint(fd, pos.printBytes) === pos.print) {
        offset = at; // the same bytes under a new inode: a copy of the file
        this.o.logger.info({ file: path, offset }, "following a copy of the server's csvlog from the saved position");
      }
    } catch {
      // no saved position: from the start
    }
    this.current = { fd, ino, path, offset, print: null, printBytes: 0 };
    return true;
  }

  /** Reads up to READ_BYTES from the current file and hands over the records completed; answers the bytes consumed. */
  private read(cur: Current): number {
    const buf = this.buf;
    const n = readSync(cur.fd, buf, 0, READ_BYTES, cur.offset);
    const k = n <= 0 ? 0 : utf8Prefix(buf, n); // a character cut by the writer waits for its last bytes
    if (k === 0) return 0;
    cur.offset += k;
    const records = this.csv.push(buf.toString("utf8", 0, k));
    if (records.length > 0) {
      this.savePosition();
      this.o.onRecords(records);
    }
    return k;
  }

  /** Saves the position of the end of the last whole record (a partial one is read again after a restart). */
  private savePosition(): void {
    const cur = this.current;
    if (!cur) return;
    if (cur.printBytes < PRINT_BYTES && cur.offset > cur.printBytes) {
      // Hashed again until it covers its 4 KiB: a few times per file.
      const n = Math.min(PRINT_BYTES, cur.offset);
      cur.print = fingerprint(cur.fd, n);
      cur.printBytes = cur.print === null ? 0 : n;
    }
    const tmp = `${this.posFile}.tmp`;
    writeFileSync(tmp, JSON.stringify({ ino: cur.ino, offset: cur.offset - this.csv.tailBytes, ...(cur.print !== null ? { print: cur.print, printBytes: cur.printBytes } : {}) }), { mode: 0o600 });
    renameSync(tmp, this.posFile);
  }

  private requestRotation(): void {
    if (this.rotating) return;
    this.rotating = true;
    this.rotateRequestedAt = Date.now();
    this.o.rotate().catch((err: unknown) => {
      this.o.logger.warn({ err: { message: (err as Error).message }, file: this.o.file }, "could not ask the server to reopen its csvlog; retrying in 10 s");
    }).finally(() => {
      this.rotating = false;
    });
  }
}

/** The length of the longest prefix of buf[0, n) that ends on a UTF-8 character boundary. */
export function utf8Prefix(buf: Buffer, n: number): number {
  let i = n - 1;
  let cont = 0;
  while (i >= 0 && cont < 3 && (buf[i]! & 0xc0) === 0x80) {
    i--;
    cont++;
  }
  if (i < 0) return 0;
  const lead = buf[i]!;
  const need = lead < 0x80 ? 1 : lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
  return cont + 1 >= need ? n : i;
}
