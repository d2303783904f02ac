import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { Agent, request } from "undici";
import { volumeStoreDataDir } from "../../src/volumes/store.js";

const MAIN = join(process.cwd(), "dist/src/cli/main.js");

/** Runs `parhelion up` on a data dir as a child process (port 0 everywhere), collecting its output. */
export function startUp(dataDir: string, env: Record<string, string> = {}): { child: ChildProcess; output: () => string } {
  let out = "";
  const child = spawn(process.execPath, [MAIN, "up", "--data-dir", dataDir, "--api-port", "0", "--gateway-port", "0", "--log-format", "json"], {
    env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", HOME: dataDir, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout!.on("data", (c: Buffer) => (out += c.toString()));
  child.stderr!.on("data", (c: Buffer) => (out += c.toString()));
  return { child, output: () => out };
}

/** Waits for a runtime.json newer than `since` and GET /healthz = 200. */
export async function waitHealthy(dataDir: string, since: number, output: () => string, timeoutMs = 60_000, seen: number[] = []): Promise<{ apiUrl: string; agent: Agent }> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const rt = join(dataDir, "runtime.json");
    if (existsSync(rt) && statSync(rt).mtimeMs >= since) {
      const { apiUrl } = JSON.parse(readFileSync(rt, "utf8")) as { apiUrl: string };
      const agent = new Agent({ connect: { ca: readFileSync(join(dataDir, "tls", "ca.crt")) } });
      try {
        const r = await request(`${apiUrl}/healthz`, { dispatcher: agent });
        await r.body.text();
        seen.push(r.statusCode);
        if (r.statusCode === 200) return { apiUrl, agent };
      } catch {
        /* not yet */
      }
      await agent.close();
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`parhelion up did not become healthy:\n${output()}`);
}

/** The metadata store's postmaster pid from its lock file. */
export function postmasterPid(dataDir: string): number | null {
  const f = join(volumeStoreDataDir(dataDir), "postmaster.pid");
  if (!existsSync(f)) return null;
  return Number(readFileSync(f, "utf8").split("\n")[0]);
}

/** Running, not a zombie (in a container nobody may reap an orphan's exit). */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/^\d+ \(.*\) Z/.test(stat);
  } catch {
    return false;
  }
}

