/**
 * Retry delays. A task's backoff is turned into a list of delays when the task
 * is sent and stored with it, so every retry's next run time is decided by
 * data in the store (the same for every worker, including after a
 * fail-over) and visible to operators.
 *
 * @since 0.1.0
 */
import * as Chunk from "effect/Chunk"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"

/**
 * A retry policy: the delay after each failed attempt.
 */
export interface Backoff {
  readonly _tag: "Backoff"
  /** The delays after failed attempts 1..retries, in order. */
  readonly delays: (retries: number) => Effect.Effect<ReadonlyArray<Duration.Duration>>
  /** The delays, in milliseconds, of `count` tasks sent together: each its own draw. */
  readonly delaysOf: (count: number, retries: number) => Effect.Effect<ReadonlyArray<ReadonlyArray<number>>>
}

/**
 * What a task's `retryBackoff` accepts: a `Backoff`, a function from the failed
 * attempt number (1-based) to a delay, or an Effect `Schedule` whose delays are
 * used in order (a schedule that ends stops the retries early).
 */
export type BackoffInput =
  | Backoff
  | ((attempt: number) => Duration.DurationInput)
  | Schedule.Schedule<unknown, unknown, never>

/** Options of `exponential`. */
export interface ExponentialOptions {
  /** Delay after the first failed attempt. */
  readonly base?: Duration.DurationInput
  /** Growth per attempt. */
  readonly factor?: number
  /** Upper bound of any delay, jitter included. */
  readonly max?: Duration.DurationInput
  /** Spread in [0, 1]: each delay is multiplied by a random factor in [1 - jitter, 1 + jitter]. */
  readonly jitter?: number
}

/** Defaults of `exponential`: 1 s, doubling, capped at 10 minutes, ±20 % jitter. */
export const exponentialDefaults = {
  base: Duration.seconds(1),
  factor: 2,
  max: Duration.minutes(10),
  jitter: 0.2
} as const

const toMillis = (delays: ReadonlyArray<Duration.Duration>) => delays.map(Duration.toMillis)

/** A policy whose every task draws its delays with `delays`. */
const make = (delays: Backoff["delays"]): Backoff => ({
  _tag: "Backoff",
  delays,
  delaysOf: (count, retries) => Effect.forEach(Array.from({ length: count }), () => Effect.map(delays(retries), toMillis))
})

/** A policy whose delays are the same for every task: computed once per send. */
const makeFixed = (delays: Backoff["delays"]): Backoff => ({
  _tag: "Backoff",
  delays,
  delaysOf: (count, retries) => Effect.map(delays(retries), (all) => Array(count).fill(toMillis(all)))
})

/** A small seeded generator (mulberry32): one draw from Effect's `Random` seeds a whole send. */
const seeded = (seed: number) => {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * Exponential backoff with jitter and a cap: `base * factor^(attempt - 1)`.
 *
 * @example
 * ```ts
 * Backoff.exponential({ base: "500 millis", factor: 3, max: "1 minute", jitter: 0 })
 * ```
 */
export const exponential = (options: ExponentialOptions = {}): Backoff => {
  const base = Duration.toMillis(options.base ?? exponentialDefaults.base)
  const factor = options.factor ?? exponentialDefaults.factor
  const max = Duration.toMillis(options.max ?? exponentialDefaults.max)
  const jitter = Math.min(1, Math.max(0, options.jitter ?? exponentialDefaults.jitter))
  const delay = (index: number, spread: number) => Math.round(Math.min(max, base * factor ** index * spread))
  const delays: Backoff["delays"] = (retries) =>
    Effect.forEach(Array.from({ length: retries }, (_, index) => index), (index) =>
      Effect.map(
        jitter === 0 ? Effect.succeed(1) : Random.nextRange(1 - jitter, 1 + jitter),
        (spread) => Duration.millis(delay(index, spread))
      ))
  if (jitter === 0) return makeFixed(delays)
  return {
    _tag: "Backoff",
    delays,
    // Every task its own jitter, from one draw of Effect's Random per send
    // (so TestRandom still makes them reproducible).
    delaysOf: (count, retries) =>
      Effect.map(Random.nextInt, (seed) => {
        const next = seeded(seed)
        return Array.from({ length: count }, () =>
          Array.from({ length: retries }, (_, index) => delay(index, 1 - jitter + 2 * jitter * next())))
      })
  }
}

/** The same delay after every failed attempt. */
export const fixed = (delay: Duration.DurationInput): Backoff =>
  makeFixed((retries) => Effect.succeed(Array.from({ length: retries }, () => Duration.decode(delay))))

/** Retry at once. */
export const none: Backoff = fixed(Duration.zero)

/** A delay computed from the failed attempt number (1-based). */
export const fromFunction = (f: (attempt: number) => Duration.DurationInput): Backoff =>
  make((retries) => Effect.sync(() => Array.from({ length: retries }, (_, index) => Duration.decode(f(index + 1)))))

/** The delays of a Schedule, in order. A schedule that ends stops the retries early. */
export const fromSchedule = (schedule: Schedule.Schedule<unknown, unknown, never>): Backoff =>
  make((retries) =>
    Effect.map(
      // `run` also emits the output of the step that ends the schedule: one
      // input more than needed tells an ended schedule from a running one.
      Schedule.run(Schedule.delays(schedule), 0, Array.from({ length: retries + 1 }, () => undefined)),
      (delays) => {
        const all = Chunk.toReadonlyArray(delays)
        return all.length > retries ? all.slice(0, retries) : all.slice(0, -1)
      }
    )
  )

/** The default policy of a task: `exponential()`. */
export const defaultPolicy: Backoff = exponential()

const isBackoff = (input: BackoffInput): input is Backoff =>
  typeof input === "object" && input !== null && "_tag" in input && input._tag === "Backoff"

/** Turns any accepted input into a `Backoff`. */
export const from = (input: BackoffInput): Backoff =>
  isBackoff(input)
    ? input
    : Schedule.isSchedule(input)
    ? fromSchedule(input)
    : fromFunction(input)
