/**
 * How long a test waits for a child process to come up (a node in a namespace, a CLI
 * bridge, a `fs-event-bridge` command): 1-2 s on an idle machine, over 15 s on a 2-core
 * machine shared with other suites. The wait ends as soon as the child is up, so only
 * a broken child costs this long. Tests that start children give themselves
 * CHILD_TEST_MS.
 */
export const CHILD_START_MS = 60_000;
/** Timeout of a test that starts child processes: their start, plus the test itself. */
export const CHILD_TEST_MS = 2 * CHILD_START_MS;

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Polls `probe` every 20 ms until it returns (or resolves to) a truthy value, and
 * returns that value. A probe that throws counts as "not yet"; its last error is
 * reported if time runs out.
 */
export async function until<T>(probe: () => T | Promise<T>, timeoutMs = 10_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value as NonNullable<T>;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`condition not reached within ${timeoutMs} ms${lastError ? `: ${(lastError as Error).message}` : ''}`);
    }
    await sleep(20);
  }
}
