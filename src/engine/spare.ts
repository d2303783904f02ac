import { existsSync, readdirSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { isAlive, runInitdb, syncDir, type ServiceAccount } from "./postgres.js";
import type { Logger } from "../log/logger.js";

const SPARE = ".spare";
const SCRATCH_PREFIX = ".spare.initdb-";

export interface SpareOptions {
  /** The engine's directory; the spare is `<dir>/.spare`. */
  dir: string;
  bin: string;
  account: ServiceAccount;
  superuser: string;
  logger: Logger;
}

/**
 * One pre-initialised data directory, so creating a workspace is a rename and a start instead of an
 * initdb (about a second here). initdb runs into `<dir>/.spare.initdb-<pid>` and is renamed to `.spare`
 * only when whole, so a crash at any point leaves a whole spare or none; scratch directories of dead
 * processes are discarded. Each workspace still gets its own initdb (its own system identifier).
 */
export class SparePool {
  private filling: Promise<void> | undefined;
  private abort: AbortController | undefined;
  private closed = false;

  constructor(private readonly opts: SpareOptions) {
    this.discardStaleScratch();
  }

  private get spare(): string {
    return join(this.opts.dir, SPARE);
  }

  private discardStaleScratch(): void {
    let names: string[] = [];
    try {
      names = readdirSync(this.opts.dir);
    } catch {
      return;
    }
    for (const name of names) {
      if (!name.startsWith(SCRATCH_PREFIX)) continue;
      const pid = Number(name.slice(SCRATCH_PREFIX.length));
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && isAlive(pid)) continue; // another live engine is filling it
      rmSync(join(this.opts.dir, name), { recursive: true, force: true });
    }
    if (existsSync(this.spare) && !existsSync(join(this.spare, "PG_VERSION"))) rmSync(this.spare, { recursive: true, force: true });
  }

  /** True when a whole spare is ready. */
  get ready(): boolean {
    return existsSync(join(this.spare, "PG_VERSION"));
  }

  /** Moves the spare to target (a data directory path that must not exist); false when there is none. */
  claim(target: string): boolean {
    if (this.closed || !this.ready) return false;
    try {
      renameSync(this.spare, target);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return false; // taken meanwhile
      throw err;
    }
    syncDir(this.opts.dir);
    return true;
  }

  /**
   * Moves a spare to target, waiting for one being made rather than starting a second initdb beside it;
   * false when there is none and none is being made.
   */
  async take(target: string): Promise<boolean> {
    if (this.claim(target)) return true;
    if (!this.filling) return false;
    await this.filling;
    return this.claim(target);
  }

  /** Starts making a spare in the background when there is none; resolves when that attempt ends. */
  fill(): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (this.filling) return this.filling;
    if (this.ready) return Promise.resolve();
    const scratch = join(this.opts.dir, `${SCRATCH_PREFIX}${process.pid}`);
    const abort = new AbortController();
    this.abort = abort;
    const p = (async () => {
      rmSync(scratch, { recursive: true, force: true });
      try {
        const t0 = Date.now();
        await runInitdb({ bin: this.opts.bin, account: this.opts.account, target: scratch, superuser: this.opts.superuser, errorCode: "ERR_ENGINE", signal: abort.signal });
        if (this.closed || this.ready) return;
        try {
          renameSync(scratch, this.spare);
        } catch (err) {
          // Another engine on the same directory made one first.
          if (!["ENOTEMPTY", "EEXIST"].includes((err as NodeJS.ErrnoException).code ?? "")) throw err;
        }
        syncDir(this.opts.dir);
        this.opts.logger.debug({ ms: Date.now() - t0 }, "spare workspace data directory ready");
      } catch (err) {
        if (!abort.signal.aborted) this.opts.logger.warn({ err: { message: (err as Error).message } }, "could not prepare a spare workspace data directory; creates will run initdb");
      } finally {
        // A killed initdb may still be writing as it dies (ENOTEMPTY): retry the removal a few times.
        rmSync(scratch, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
      }
    })().finally(() => {
      if (this.filling === p) this.filling = undefined;
      if (this.abort === abort) this.abort = undefined;
    });
    this.filling = p;
    return p;
  }

  /** Stops making a spare (an initdb in flight is killed and its scratch removed); the spare on disk stays. */
  async close(): Promise<void> {
    this.closed = true;
    this.abort?.abort();
    await this.filling;
  }
}
