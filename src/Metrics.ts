/**
 * The metrics a worker records, as Effect `Metric`s: export them with
 * `@effect/opentelemetry` or read them with `Metric.value`.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"

/** Tasks claimed (fresh and taken over). */
export const claimed = Metric.counter("hyrex_tasks_claimed", { description: "tasks claimed by workers", incremental: true })
/** Expired leases taken over by a claim. */
export const takeovers = Metric.counter("hyrex_takeovers", { description: "tasks claimed after another worker's lease expired", incremental: true })
/** Attempts that succeeded. */
export const succeeded = Metric.counter("hyrex_tasks_succeeded", { description: "attempts that succeeded", incremental: true })
/** Attempts that failed. */
export const failed = Metric.counter("hyrex_attempts_failed", { description: "attempts that failed", incremental: true })
/** Failed attempts that will be retried. */
export const retried = Metric.counter("hyrex_tasks_retried", { description: "failed attempts re-queued with backoff", incremental: true })
/** Tasks that failed for good. */
export const dead = Metric.counter("hyrex_tasks_dead", { description: "tasks that ended failed", incremental: true })
/** Leases renewed by heartbeats. */
export const leaseRenewals = Metric.counter("hyrex_lease_renewals", { description: "leases renewed by heartbeats", incremental: true })
/** Leases a worker found lost (taken over or cancelled). */
export const leasesLost = Metric.counter("hyrex_leases_lost", { description: "leases lost while running", incremental: true })
/** Times a worker interrupted its own tasks because it could not renew. */
export const selfFenced = Metric.counter("hyrex_self_fenced", { description: "self-fencing events", incremental: true })
/** Tasks in flight in this process. */
export const inFlightGauge = Metric.counter("hyrex_tasks_in_flight", {
  description: "tasks running in this process",
  incremental: false
})
/** Run time of attempts, in milliseconds. */
export const runTimeHistogram = Metric.histogram(
  "hyrex_attempt_duration_ms",
  MetricBoundaries.exponential({ start: 1, factor: 2, count: 22 }),
  "run time of attempts in milliseconds"
)
/** Time from a task being due to its attempt starting, in milliseconds. */
export const queueWaitHistogram = Metric.histogram(
  "hyrex_queue_wait_ms",
  MetricBoundaries.exponential({ start: 1, factor: 2, count: 22 }),
  "time from due to start in milliseconds"
)

// Updated directly (`unsafeUpdate` in one `Effect.sync`): a metric update as
// an Effect costs more than a no-op task's handler, and the worker makes
// several per attempt. Labels come from the metric itself.
const update = <Type, In, Out>(metric: Metric.Metric<Type, In, Out>, input: In) => metric.unsafeUpdate(input, [])

/** @internal */
export const increment = (counter: Metric.Metric.Counter<number>): Effect.Effect<void> =>
  Effect.sync(() => update(counter, 1))
/** @internal */
export const incrementBy = (counter: Metric.Metric.Counter<number>, amount: number): Effect.Effect<void> =>
  amount === 0 ? Effect.void : Effect.sync(() => update(counter, amount))
/** @internal An attempt started: its queue wait, and one more in flight. */
export const attemptStarted = (queueWaitMillis: number): void => {
  update(queueWaitHistogram, queueWaitMillis)
}
/** @internal An attempt's handler ended after `runMillis`. */
export const attemptRan = (runMillis: number): void => {
  update(runTimeHistogram, runMillis)
}
/** @internal One more (or fewer) attempt in flight, now. */
export const inFlightNow = (delta: number): void => {
  update(inFlightGauge, delta)
}
/** @internal Attempts that succeeded, now. */
export const succeededNow = (count: number): void => {
  if (count > 0) update(succeeded, count)
}
