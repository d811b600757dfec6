/**
 * Rules every store shares, so the in-memory and the Postgres store cannot
 * drift apart on them.
 */

/** The delay after failed attempt `attempt` (1-based): the stored backoff, its last entry past the end. */
export const retryDelay = (backoff: ReadonlyArray<number>, attempt: number): number =>
  backoff.length === 0 ? 0 : backoff[Math.min(attempt, backoff.length) - 1] ?? 0
