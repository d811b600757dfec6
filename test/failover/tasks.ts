/**
 * The tasks the fail-over worker processes run. Every handler records its
 * execution in the side-effect table `executions` (created by the test, see
 * {@link createExecutionsTable}), in the same database as the store, so the
 * test can tell what really ran, where, and whether it finished:
 *
 * - `started_at` is written before the work, `finished_at` after it (a row
 *   without `finished_at` is an execution that never completed);
 * - `interrupted_at` is written, best effort, when the worker interrupted the
 *   handler (its log line `execution interrupted` is the reliable record).
 *
 * Handlers also log `execution started` / `finished` / `interrupted` (JSON
 * lines on stdout, with the worker's `taskId`/`attempt`/`worker` annotations)
 * with the worker's own timestamp: during a network partition the database
 * cannot see what the cut-off worker does, its stdout can.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Backoff from "../../src/Backoff.js"
import * as Registry from "../../src/Registry.js"
import * as Task from "../../src/Task.js"
import * as TaskContext from "../../src/TaskContext.js"

/** Retries of every fail-over task: enough for a task to survive several faults in one scenario. */
export const MAX_RETRIES = 5

/** Retries of the poison task: it ends `failed` after `POISON_MAX_RETRIES + 1` attempts. */
export const POISON_MAX_RETRIES = 2

/** Backoff of every fail-over task: short, so takeovers are quick. */
export const BACKOFF = Duration.millis(200)

/** The side-effect table. One row per (task, attempt, worker): retried inserts cannot duplicate it. */
export const createExecutionsTable = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`
    CREATE TABLE IF NOT EXISTS executions (
      id bigserial PRIMARY KEY,
      task_id bigint NOT NULL,
      task_name text NOT NULL,
      attempt integer NOT NULL,
      worker_id text NOT NULL,
      pid integer NOT NULL,
      started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
      finished_at timestamptz,
      interrupted_at timestamptz,
      UNIQUE (task_id, attempt, worker_id)
    )`
})

/** What a succeeded task stores as its result: who committed it. */
export const Outcome = Schema.Struct({
  worker: Schema.String,
  attempt: Schema.Number,
  pid: Schema.Number
})
export type Outcome = typeof Outcome.Type

// The side-effect writes must not fail the attempt when the database blips
// (a Postgres restart): a handler failure would be charged as an attempt and
// muddle the "one execution per lease" accounting. They retry until they land
// or the worker interrupts the handler.
const persistently = <A, E, R>(write: Effect.Effect<A, E, R>) =>
  write.pipe(Effect.retry(Schedule.spaced("200 millis").pipe(Schedule.upTo("60 seconds"))))

const recordStart = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const ctx = yield* TaskContext.TaskContext
  yield* Effect.logInfo("execution started")
  yield* persistently(sql`
    INSERT INTO executions (task_id, task_name, attempt, worker_id, pid)
    VALUES (${ctx.taskId}, ${ctx.name}, ${ctx.attempt}, ${ctx.workerId}, ${process.pid})
    ON CONFLICT (task_id, attempt, worker_id) DO NOTHING`)
  return ctx
})

const recordFinish = (ctx: TaskContext.TaskContextShape) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* persistently(sql`
      UPDATE executions SET finished_at = clock_timestamp()
      WHERE task_id = ${ctx.taskId} AND attempt = ${ctx.attempt} AND worker_id = ${ctx.workerId}`)
    yield* Effect.logInfo("execution finished")
    return { worker: ctx.workerId, attempt: ctx.attempt, pid: process.pid }
  })

// Logged at once; the database write is forked and bounded, so a worker cut
// off from the database is not held up by it (and the write may land late,
// after the link heals — it is only a diagnostic).
const onInterrupted = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.onInterrupt(self, () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const ctx = yield* TaskContext.TaskContext
      yield* Effect.logWarning("execution interrupted")
      yield* sql`
        UPDATE executions SET interrupted_at = clock_timestamp()
        WHERE task_id = ${ctx.taskId} AND attempt = ${ctx.attempt} AND worker_id = ${ctx.workerId}`.pipe(
        Effect.timeout("2 seconds"),
        Effect.ignore,
        Effect.forkDaemon
      )
    }))

/**
 * Works for `ms` milliseconds (`retryMs` on attempts after the first, so a
 * taken-over task can be quicker than the original).
 */
export const sleep = Task.make("sleep", {
  payload: Schema.Struct({ ms: Schema.Number, retryMs: Schema.optional(Schema.Number) }),
  result: Outcome,
  maxRetries: MAX_RETRIES,
  retryBackoff: Backoff.fixed(BACKOFF),
  handler: ({ ms, retryMs }) =>
    Effect.gen(function*() {
      const ctx = yield* recordStart
      yield* Effect.sleep(Duration.millis(ctx.attempt > 1 && retryMs !== undefined ? retryMs : ms))
      return yield* recordFinish(ctx)
    }).pipe(onInterrupted)
})

/** Kills the process running it, every time (after its start is recorded). */
export const poison = Task.make("poison", {
  payload: Schema.Struct({}),
  result: Outcome,
  maxRetries: POISON_MAX_RETRIES,
  retryBackoff: Backoff.fixed(BACKOFF),
  handler: () =>
    Effect.gen(function*() {
      yield* recordStart
      yield* Effect.logWarning("poison: killing this process")
      yield* Effect.sync(() => process.kill(process.pid, "SIGKILL"))
      return yield* Effect.never
    })
})

/** The signal a `fatal` task waits for before it kills its process. */
export const FATAL_TRIGGER = "SIGUSR2"

const allocateUntilOom = (): never => {
  // JS arrays of doubles live on the V8 heap (Buffers would not): the heap
  // limit is hit within a few hundred MB, and the event loop is blocked
  // meanwhile, as in a real runaway allocation.
  const hog: Array<Array<number>> = []
  for (;;) hog.push(new Array<number>(1_000_000).fill(Math.random()))
}

/**
 * Dies hard on its first attempt once the process receives {@link FATAL_TRIGGER}:
 * `exit` calls `process.exit(137)` (what an evicted container reports), `alloc`
 * allocates until V8 runs out of heap. Later attempts work `ms` and succeed.
 */
export const fatal = Task.make("fatal", {
  payload: Schema.Struct({ mode: Schema.Literal("exit", "alloc"), ms: Schema.Number }),
  result: Outcome,
  maxRetries: MAX_RETRIES,
  retryBackoff: Backoff.fixed(BACKOFF),
  handler: ({ mode, ms }) =>
    Effect.gen(function*() {
      const ctx = yield* TaskContext.TaskContext
      if (ctx.attempt === 1) {
        // Listen before the start is visible, so the trigger can never be missed.
        const triggered = new Promise<void>((resolve) => process.once(FATAL_TRIGGER, () => resolve()))
        yield* recordStart
        yield* Effect.promise(() => triggered)
        yield* Effect.logWarning(`fatal: ${mode === "exit" ? "process.exit(137)" : "allocating until out of memory"}`)
        return yield* Effect.sync(() => mode === "exit" ? process.exit(137) : allocateUntilOom())
      }
      yield* recordStart
      yield* Effect.sleep(Duration.millis(ms))
      return yield* recordFinish(ctx)
    }).pipe(onInterrupted)
})

/** Everything a fail-over worker can run. */
export const registry = Registry.make(sleep, poison, fatal)
