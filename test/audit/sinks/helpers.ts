import assert from "node:assert/strict";
import { DeliveryError } from "../../../src/audit/stream/transport.js";

/** Asserts the delivery fails with a DeliveryError of the given retryability whose message matches. */
export async function rejectsDelivery(p: Promise<void>, retryable: boolean, message: RegExp): Promise<DeliveryError> {
  let caught: unknown;
  await assert.rejects(p, (err: unknown) => {
    caught = err;
    return true;
  });
  assert.ok(caught instanceof DeliveryError, `expected a DeliveryError, got ${String(caught)}`);
  assert.equal(caught.retryable, retryable, caught.message);
  assert.match(caught.message, message);
  return caught;
}
