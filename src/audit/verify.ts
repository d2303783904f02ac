import type { Db } from "../store/db.js";
import { chainHash, fieldsFromRow, GENESIS_HASH } from "./chain.js";
import type { VerifyProblem, VerifyResult } from "./types.js";

/** Rows read per query while walking the chain. */
export const VERIFY_BATCH = 2000;
/** Problems collected before verify stops collecting (it still walks to the head). */
export const MAX_VERIFY_PROBLEMS = 100;

interface Seen {
  seq: bigint;
  hash: Buffer;
  /** The row's hash re-computes and its prev_hash links to its predecessor. */
  sound: boolean;
}

/**
 * Walks the chain in seq order, a batch at a time, and re-computes every hash. Classifies what it finds
 * (see DESIGN.md, "Verification"):
 *   modified    the stored hash is not the hash of the row's fields
 *   deleted     seq numbers are missing (named)
 *   inserted    a row that is not part of the chain: its successor links past it; or it links back
 *               correctly, its successor does not link to it but the next one links to its successor
 *               (a row replaced by a forged one)
 *   broken-link a row's prev_hash is not its predecessor's hash, for no reason seen above
 */
export async function verifyChain(db: Db, opts: { batchSize?: number } = {}): Promise<VerifyResult> {
  const batchSize = opts.batchSize ?? VERIFY_BATCH;
  const problems: VerifyProblem[] = [];
  let truncated = false;
  const report = (p: VerifyProblem): void => {
    if (problems.length < MAX_VERIFY_PROBLEMS) problems.push(p);
    else truncated = true;
  };

  let checked = 0;
  let p: Seen | null = null; // previous row
  let pp: Seen | null = null; // the one before it
  let after: string | null = null;
  // A link failure that the next row explains: it links to r (p is the odd one) or not (r is).
  let suspect: { p: bigint; r: bigint } | null = null;
  let nextSuspect: { p: bigint; r: bigint } | null = null;
  for (;;) {
    let sel = db
      .selectFrom("audit_log")
      .select(["seq", "id", "org_id", "created_at", "type", "source", "result", "actor_type", "actor_id", "actor_email", "resource_type", "resource_id", "source_ip", "request_id", "reason", "attributes", "prev_hash", "hash"])
      .orderBy("seq", "asc")
      .limit(batchSize);
    if (after !== null) sel = sel.where("seq", ">", after);
    const rows = await sel.execute();
    if (rows.length === 0) break;

    for (const r of rows) {
      checked++;
      const seq = BigInt(r.seq);
      const found: VerifyProblem[] = [];
      let sound = true;
      let selfOk: boolean;
      try {
        selfOk = r.prev_hash.length === 32 && chainHash(r.prev_hash, fieldsFromRow(r)).equals(r.hash);
      } catch {
        selfOk = false;
      }
      if (!selfOk) {
        sound = false;
        found.push({ seq: r.seq, kind: "modified", detail: `seq ${r.seq}: stored hash does not match the hash of the row's fields` });
      }

      let linksToPrevious = false;
      const expected = p ? p.seq + 1n : 1n;
      if (seq > expected) {
        const last = seq - 1n;
        const range = last === expected ? `seq ${expected}` : `seq ${expected}..${last} (${last - expected + 1n} rows)`;
        found.push({ seq: expected.toString(), kind: "deleted", detail: `${range} missing before seq ${r.seq}` });
        // The link cannot be judged across a gap.
      } else if (seq < expected) {
        sound = false;
        found.push({ seq: r.seq, kind: "inserted", detail: `seq ${r.seq} is below the first sequence number 1` });
      } else if (r.prev_hash.equals(p ? p.hash : GENESIS_HASH)) {
        linksToPrevious = true;
      } else {
        sound = false;
        if (p && pp && r.prev_hash.equals(pp.hash)) {
          found.push({ seq: p.seq.toString(), kind: "inserted", detail: `seq ${p.seq} is not in the chain: seq ${r.seq} links to seq ${pp.seq}` });
        } else if (p && p.sound && selfOk) {
          // Either p was replaced by a forged row, or r's prev_hash was rewritten: the next row decides.
          nextSuspect = { p: p.seq, r: seq };
        } else {
          found.push({ seq: r.seq, kind: "broken-link", detail: p ? `prev_hash of seq ${r.seq} is not the hash of seq ${p.seq}` : `prev_hash of seq ${r.seq} is not the genesis hash` });
        }
      }

      if (suspect) {
        if (linksToPrevious) {
          report({ seq: suspect.p.toString(), kind: "inserted", detail: `seq ${suspect.p} links to its predecessor but seq ${suspect.r} does not link to it, while seq ${r.seq} links to seq ${suspect.r}: seq ${suspect.p} was inserted in place of the original row (or rewritten with a recomputed hash)` });
        } else {
          report({ seq: suspect.r.toString(), kind: "broken-link", detail: `prev_hash of seq ${suspect.r} is not the hash of seq ${suspect.p}` });
        }
      }
      suspect = nextSuspect;
      nextSuspect = null;
      for (const f of found) report(f);
      pp = p;
      p = { seq, hash: r.hash, sound };
    }
    after = rows[rows.length - 1]!.seq;
    if (rows.length < batchSize) break;
  }

  if (suspect) {
    report({ seq: suspect.r.toString(), kind: "broken-link", detail: `prev_hash of seq ${suspect.r} (the head) is not the hash of seq ${suspect.p}; either row may have been replaced` });
  }
  return {
    ok: problems.length === 0 && !truncated,
    checked,
    headSeq: p ? p.seq.toString() : null,
    headHash: p ? p.hash.toString("hex") : null,
    problems,
    truncated,
  };
}
