import { mkdtempSync, chmodSync, readFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Agent, request } from "undici";
import { loadConfig } from "../../src/config/load.js";
import { createLogger } from "../../src/log/logger.js";
import { startPlatform, type Platform } from "../../src/platform.js";
import type { Clock } from "../../src/identity/types.js";
import { cleanupRoot } from "../volumes/helpers.js";

export interface TestPlatform {
  platform: Platform;
  dataDir: string;
  apiUrl: string;
  caPem: string;
  ownerKey: string;
  /** An HTTPS client trusting only the platform's CA. */
  call(method: string, path: string, opts?: { key?: string | null; body?: unknown; headers?: Record<string, string>; rawBody?: string }): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: any; text: string }>;
  stop(): Promise<void>;
}

/** Starts a whole control plane (embedded store, TLS, API on port 0) in a temporary data dir. */
export async function startTestPlatform(opts: { env?: Record<string, string>; clock?: Clock; logDestination?: NodeJS.WritableStream } = {}): Promise<TestPlatform> {
  const dataDir = mkdtempSync(join(tmpdir(), "parhelion-test-"));
  chmodSync(dataDir, 0o711);
  const config = loadConfig({ flags: { dataDir, apiPort: 0, gatewayPort: 0 }, env: opts.env ?? {}, cwd: dataDir });
  const logger = createLogger({ level: "info", destination: (opts.logDestination ?? { write: () => true }) as never });
  let platform: Platform;
  try {
    platform = await startPlatform({ config, logger, ...(opts.clock ? { clock: opts.clock } : {}) });
  } catch (err) {
    await cleanupRoot(dataDir);
    throw err;
  }
  const caPem = readFileSync(join(dataDir, "tls", "ca.crt"), "utf8");
  // Empty when another process on the same (external) store bootstrapped the organization.
  const keyFile = join(dataDir, "bootstrap", "owner-api-key");
  const ownerKey = existsSync(keyFile) ? readFileSync(keyFile, "utf8").trim() : "";
  const agent = new Agent({ connect: { ca: caPem }, pipelining: 0 });
  return {
    platform, dataDir, apiUrl: platform.apiUrl, caPem, ownerKey,
    async call(method, path, o = {}) {
      const headers: Record<string, string> = { ...(o.headers ?? {}) };
      const key = o.key === undefined ? ownerKey : o.key;
      if (key !== null) headers["authorization"] = `Bearer ${key}`;
      let body: string | undefined = o.rawBody;
      if (o.body !== undefined) {
        body = JSON.stringify(o.body);
        headers["content-type"] ??= "application/json";
      }
      const res = await request(platform.apiUrl + path, { method: method as never, headers, body, dispatcher: agent });
      const text = await res.body.text();
      let parsed: unknown = undefined;
      try {
        parsed = text ? JSON.parse(text) : undefined;
      } catch {
        parsed = undefined;
      }
      return { status: res.statusCode, headers: res.headers as never, body: parsed, text };
    },
    async stop() {
      await agent.close().catch(() => undefined);
      try {
        await platform.stop();
      } finally {
        // The encrypted volumes (the workspace groups' and the metadata store's, all under <dataDir>/volumes): platform.stop
        // unmounts them; whatever a failure left is unmounted here.
        await cleanupRoot(dataDir);
      }
    },
  };
}
