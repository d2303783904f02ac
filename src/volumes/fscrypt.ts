/**
 * The kernel's native file encryption (fscrypt v2) through parhelion-fscrypt (engine/fscrypt), the helper
 * the bootstrap installs: it does the ioctls; keys reach it on stdin only.
 */
import { ParhelionError } from "../lib/errors.js";
import { run } from "./exec.js";

/** Where bin/bootstrap.sh installs the helper. */
export const FSCRYPT_HELPER = "/usr/local/lib/parhelion/parhelion-fscrypt";

/** A v2 master key is 64 bytes (FSCRYPT_MAX_KEY_SIZE); its identifier is 16 bytes, derived from it by the kernel. */
export const VOLUME_KEY_BYTES = 64;

export type KeyStatus = "present" | "absent" | "incompletely-removed" | "unknown";

export interface PolicyStatus {
  /** "v2" with the fields below, "none" for a directory without a policy, "v1"/"unsupported" otherwise. */
  policy: "v2" | "v1" | "none" | "unsupported";
  contents?: string;
  filenames?: string;
  padding?: number;
  identifier?: string;
  key?: KeyStatus;
}

const ID_RE = /^[0-9a-f]{32}$/;

export class Fscrypt {
  constructor(private readonly helper: string = FSCRYPT_HELPER) {}

  private fail(what: string, r: { code: number | null; signal: NodeJS.Signals | null; stderr: string }): ParhelionError {
    return new ParhelionError("ERR_VOLUME", `${what} failed (parhelion-fscrypt exit ${r.code ?? r.signal}): ${r.stderr.trim()}`);
  }

  /** Adds a 64-byte master key to the filesystem mounted at mountPoint; answers its identifier (hex). */
  async addKey(mountPoint: string, key: Uint8Array): Promise<string> {
    if (key.length !== VOLUME_KEY_BYTES) throw new ParhelionError("ERR_VOLUME", `a volume key is ${VOLUME_KEY_BYTES} bytes, not ${key.length}`);
    const r = await run(this.helper, ["add-key", mountPoint], { stdin: key });
    const id = r.stdout.trim();
    if (r.code !== 0 || !ID_RE.test(id)) throw this.fail("adding the volume key", r);
    return id;
  }

  /** Sets the v2 policy (AES-256-XTS contents, AES-256-CTS names, padding 32) on an empty directory; the same policy again is a no-op. */
  async setPolicy(dir: string, identifier: string): Promise<void> {
    if (!ID_RE.test(identifier)) throw new ParhelionError("ERR_VOLUME", "a key identifier is 32 lower-case hex digits");
    const r = await run(this.helper, ["set-policy", dir, identifier]);
    if (r.code !== 0) throw this.fail(`setting the encryption policy on ${dir}`, r);
  }

  /**
   * Removes the key (every user's claim) from the filesystem: files not in use become unreadable at once;
   * "busy" means some were open and stay readable until closed (calling again retries); "absent" means the
   * key was not there.
   */
  async removeKey(mountPoint: string, identifier: string): Promise<"removed" | "busy" | "absent"> {
    if (!ID_RE.test(identifier)) throw new ParhelionError("ERR_VOLUME", "a key identifier is 32 lower-case hex digits");
    const r = await run(this.helper, ["remove-key", mountPoint, identifier]);
    if (r.code === 3) return "absent";
    const out = r.stdout.trim();
    if (r.code !== 0 || (out !== "removed" && out !== "busy")) throw this.fail("removing the volume key", r);
    return out;
  }

  /** The directory's encryption policy and whether its key is on the filesystem. */
  async status(dir: string): Promise<PolicyStatus> {
    const r = await run(this.helper, ["status", dir]);
    if (r.code !== 0) throw this.fail(`reading the encryption status of ${dir}`, r);
    const kv = new Map(r.stdout.trim().split("\n").map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)] as const));
    const policy = kv.get("policy");
    if (policy !== "v2" && policy !== "v1" && policy !== "none" && policy !== "unsupported") throw this.fail("reading the encryption status", r);
    if (policy !== "v2") return { policy };
    const key = kv.get("key");
    return {
      policy,
      contents: kv.get("contents") ?? "",
      filenames: kv.get("filenames") ?? "",
      padding: Number(kv.get("padding")),
      identifier: kv.get("identifier") ?? "",
      key: key === "present" || key === "absent" || key === "incompletely-removed" ? key : "unknown",
    };
  }
}
