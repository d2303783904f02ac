/**
 * HMAC-SHA-256 (RFC 2104) from two one-shot `crypto.hash` calls. Node's `createHmac` costs ~36 µs a call on
 * these hosts (turning the key into a KeyObject and back dominates), this ~10 µs: SCRAM runs two or three HMACs
 * on every new gateway session. Same bytes as `createHmac("sha256", key).update(data).digest()` (tested).
 */
import { hash } from "node:crypto";

const BLOCK = 64;

export function hmacSha256(key: Buffer, data: Buffer | string): Buffer {
  const k = key.length > BLOCK ? hash("sha256", key, "buffer") : key;
  const body = typeof data === "string" ? Buffer.from(data, "utf8") : data;
  const inner = Buffer.allocUnsafe(BLOCK + body.length);
  const outer = Buffer.allocUnsafe(BLOCK + 32);
  for (let i = 0; i < BLOCK; i++) {
    const b = i < k.length ? k[i]! : 0;
    inner[i] = b ^ 0x36;
    outer[i] = b ^ 0x5c;
  }
  body.copy(inner, BLOCK);
  hash("sha256", inner, "buffer").copy(outer, BLOCK);
  return hash("sha256", outer, "buffer");
}
