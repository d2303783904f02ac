// Rough throughput of StoreAuditLog against a real store (not a test; run by hand):
//   node dist/bench/audit-throughput.js [records=50000] [concurrency=4000]
// Keeps `concurrency` record() calls in flight, as a busy API would.
import { startTestStore } from "../test/support/pg.js";
import { createAuditLog } from "../src/audit/index.js";
import { ev, silentLogger } from "../test/audit/helpers.js";

const total = Number(process.argv[2] ?? 50_000);
const inFlight = Number(process.argv[3] ?? 4_000);
const store = await startTestStore();
try {
  const audit = createAuditLog({ db: store.db, logger: silentLogger() });
  await audit.record(ev()); // warm up the pool
  let started = 0;
  let failed = 0;
  const t0 = process.hrtime.bigint();
  async function lane(): Promise<void> {
    while (started < total) {
      started++;
      if (!(await audit.record(ev({ attributes: { path: "/api/v1/orgs", status: 200, n: started } })))) failed++;
    }
  }
  await Promise.all(Array.from({ length: inFlight }, lane));
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  await audit.close();
  const v0 = process.hrtime.bigint();
  const v = await audit.verify();
  const vsecs = Number(process.hrtime.bigint() - v0) / 1e9;
  console.log(JSON.stringify({ records: total, inFlight, failed, seconds: +secs.toFixed(2), perSecond: Math.round(total / secs), verifyOk: v.ok, verifyChecked: v.checked, verifyPerSecond: Math.round(v.checked / vsecs) }));
} finally {
  await store.stop();
}
