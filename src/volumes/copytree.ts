/**
 * Copies a directory tree between two encrypted directories of one volume (a re-key): contents pass through this
 * process's memory only (one buffer, zeroed at the end), never a temporary file; each file and directory is
 * fsynced; owner, mode and modification time are kept. Regular files, directories and symbolic links only
 * (PostgreSQL's data directory has nothing else; sockets and FIFOs hold no data and are skipped).
 */
import { chmod, chown, lchown, lstat, lutimes, mkdir, open, readdir, readlink, symlink, utimes } from "node:fs/promises";
import { join } from "node:path";
import { ParhelionError } from "../lib/errors.js";

/** Size of the copy buffer (and of a progress step). */
const CHUNK = 1024 * 1024;

export interface TreeSize {
  bytes: number;
  files: number;
}

/** The bytes of regular files (and their count) below dir. */
export async function measureTree(dir: string): Promise<TreeSize> {
  const out: TreeSize = { bytes: 0, files: 0 };
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) {
        out.bytes += (await lstat(p)).size;
        out.files += 1;
      }
    }
  };
  await walk(dir);
  return out;
}

/** fsyncs a file or directory (a directory: so the names in it survive a power loss). */
export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Copies what is below `from` into `to` (an existing, empty directory), fsyncing every file and directory.
 * `progress` is called with the bytes copied so far after each chunk; `signal` stops the copy between chunks
 * (the partial copy is the caller's to remove).
 */
export async function copyTree(from: string, to: string, o: { progress: (bytes: number) => void; signal?: AbortSignal | undefined; skipped?: (path: string) => void }): Promise<number> {
  const buf = Buffer.allocUnsafe(CHUNK);
  let copied = 0;
  const check = () => {
    if (o.signal?.aborted) throw new ParhelionError("ERR_VOLUME", "the copy was stopped", { cause: o.signal.reason });
  };
  const copyFile = async (src: string, dst: string, mode: number): Promise<void> => {
    const r = await open(src, "r");
    try {
      const w = await open(dst, "wx", mode & 0o7777);
      try {
        let pos = 0;
        for (;;) {
          check();
          const { bytesRead } = await r.read(buf, 0, CHUNK, pos);
          if (bytesRead === 0) break;
          let off = 0;
          while (off < bytesRead) {
            const { bytesWritten } = await w.write(buf, off, bytesRead - off, pos + off);
            off += bytesWritten;
          }
          pos += bytesRead;
          copied += bytesRead;
          o.progress(copied);
        }
        await w.sync();
      } finally {
        await w.close();
      }
    } finally {
      await r.close();
    }
  };
  const walk = async (src: string, dst: string): Promise<void> => {
    for (const e of await readdir(src, { withFileTypes: true })) {
      check();
      const s = join(src, e.name);
      const d = join(dst, e.name);
      const st = await lstat(s);
      if (st.isDirectory()) {
        await mkdir(d, { mode: 0o700 });
        await walk(s, d);
        await chown(d, st.uid, st.gid);
        await chmod(d, st.mode & 0o7777);
        await utimes(d, st.atime, st.mtime);
        await fsyncPath(d);
      } else if (st.isFile()) {
        await copyFile(s, d, st.mode);
        await chown(d, st.uid, st.gid);
        await chmod(d, st.mode & 0o7777);
        await utimes(d, st.atime, st.mtime);
      } else if (st.isSymbolicLink()) {
        await symlink(await readlink(s), d);
        await lchown(d, st.uid, st.gid);
        await lutimes(d, st.atime, st.mtime);
      } else {
        o.skipped?.(s);
      }
    }
  };
  try {
    await walk(from, to);
    await fsyncPath(to);
  } finally {
    buf.fill(0);
  }
  return copied;
}
