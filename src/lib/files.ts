import { readSync } from "node:fs";

/**
 * Up to `length` bytes of an open file from `position`, read until they are all in or the file ends (one
 * `readSync` may answer fewer bytes than asked): a shorter buffer means the file ended first.
 */
export function readAt(fd: number, position: number, length: number): Buffer {
  const buf = Buffer.allocUnsafeSlow(Math.max(0, length)); // its own memory, not the shared pool: it may hold a key
  let got = 0;
  while (got < buf.length) {
    const n = readSync(fd, buf, got, buf.length - got, position + got);
    if (n <= 0) break;
    got += n;
  }
  return got === buf.length ? buf : buf.subarray(0, got);
}
