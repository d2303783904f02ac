/** Polls `cond` every `everyMs` until it holds; throws naming `what` after `ms`. For effects that land just after the answer a test reads. */
export async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 20_000, everyMs = 50): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
