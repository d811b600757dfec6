/**
 * What the store-parameterized suites (`test/suites/*`) need from a store,
 * and the helpers they share.
 *
 * One test body runs in two modes:
 *
 * - `"test-clock"` (memory store): time only moves when a test calls
 *   {@link advance}, so leases, backoffs and drains take no real time and
 *   durations can be realistic.
 * - `"live"` (Postgres): real time, the database's `now()`; durations are
 *   short so the whole run stays within a couple of minutes.
 *
 * Tests never assert on how long something took: they wait with
 * {@link eventually} (bounded by simulated time in test-clock mode and by real
 * time in live mode) and then assert on behaviour and on times the store
 * recorded.
 */
import { it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import { type ConfigurationError, StoreError } from "../../src/Errors.js"
import type * as Registry from "../../src/Registry.js"
import type * as Task from "../../src/Task.js"
import { type Lease, type TaskInfo, TaskStore } from "../../src/TaskStore.js"
import * as Worker from "../../src/Worker.js"

/** A store under test. */
export interface StoreHarness {
  readonly name: string
  /** A fresh, empty store for each test. */
  readonly layer: Layer.Layer<TaskStore, unknown>
  /** "test-clock": time only moves with TestClock.adjust (memory store). "live": real time (Postgres: the database's now()). */
  readonly clock: "test-clock" | "live"
  /** Overrides of the durations {@link durations} picks for `clock`. */
  readonly durations?: Partial<Durations> | undefined
  /**
   * Whether a send wakes an idle worker at once (the store's `wakeups`).
   * Default true; false on the embedded Postgres, whose single session does
   * not deliver a NOTIFY to the listening connection: workers there find
   * new tasks by polling.
   */
  readonly wakeups?: boolean | undefined
}

/** The durations a test body uses, chosen per clock mode so one body fits both. */
export interface Durations {
  /** Lease TTL of workers and of direct claims. */
  readonly leaseTtl: Duration.Duration
  /** Heartbeat interval of workers (with the default fence margin of `leaseTtl / 10` it must stay below `0.9 * leaseTtl`). */
  readonly heartbeatInterval: Duration.Duration
  /** Poll interval of workers. */
  readonly pollInterval: Duration.Duration
  /** A generic unit for backoffs, delays and handler run times: long against one store round trip. */
  readonly unit: Duration.Duration
  /** How far {@link eventually} and {@link whileAdvancing} move time between two tries. */
  readonly step: Duration.Duration
  /** How long {@link eventually} keeps trying: simulated time in test-clock mode, real time in live mode. */
  readonly patience: Duration.Duration
  /** Tolerance between two instants the store computed from one clock reading (exact in memory; Postgres rounds µs to ms). */
  readonly precision: Duration.Duration
  /** Tolerance between an instant of the worker's clock and one of the store's clock (the same host clock in live mode). */
  readonly clockSlack: Duration.Duration
}

/** Realistic durations: simulated time costs nothing. */
export const testClockDurations: Durations = {
  leaseTtl: Duration.seconds(10),
  heartbeatInterval: Duration.seconds(3),
  pollInterval: Duration.seconds(1),
  unit: Duration.seconds(10),
  step: Duration.seconds(1),
  patience: Duration.minutes(3),
  precision: Duration.zero,
  clockSlack: Duration.zero
}

/** Short durations: every second here is a real second of the Postgres run. */
export const liveDurations: Durations = {
  leaseTtl: Duration.millis(1500),
  heartbeatInterval: Duration.millis(400),
  pollInterval: Duration.millis(100),
  unit: Duration.millis(500),
  step: Duration.millis(25),
  patience: Duration.seconds(15),
  precision: Duration.millis(2),
  clockSlack: Duration.millis(200)
}

/** The durations of a harness: the defaults of its clock mode, with its overrides. */
export const durations = (harness: StoreHarness): Durations => ({
  ...(harness.clock === "live" ? liveDurations : testClockDurations),
  ...harness.durations
})

/** Milliseconds of a duration, for the store API (which speaks milliseconds). */
export const millis = (duration: Duration.DurationInput): number => Duration.toMillis(duration)

// ---------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------

/** The current time of the clock the store and the workers use. */
export const now: Effect.Effect<number> = Clock.currentTimeMillis

/**
 * Lets forked fibers (workers, heartbeats, handlers) run without moving
 * simulated time. `TestClock.adjust(0)` waits until every fiber is suspended.
 */
export const settle = (harness: StoreHarness): Effect.Effect<void> =>
  harness.clock === "live"
    ? Effect.yieldNow()
    : Effect.zipRight(Effect.repeatN(Effect.yieldNow(), 4), TestClock.adjust(Duration.zero))

/**
 * Moves time forward by `duration`: `TestClock.adjust` (which wakes sleepers
 * in order, letting each react) in test-clock mode, a real sleep in live mode.
 */
export const advance = (harness: StoreHarness, duration: Duration.DurationInput): Effect.Effect<void> =>
  harness.clock === "live"
    ? Effect.sleep(duration)
    : Effect.zipRight(TestClock.adjust(duration), settle(harness))

/** Moves time forward to `at` (a time of {@link now}); does nothing if it has passed. */
export const advanceTo = (harness: StoreHarness, at: number): Effect.Effect<void> =>
  Effect.flatMap(now, (current) => at > current ? advance(harness, Duration.millis(at - current)) : Effect.void)

/** Options of {@link eventually}. */
export interface EventuallyOptions {
  /** Default: `durations(harness).patience`. */
  readonly timeout?: Duration.DurationInput | undefined
  /** Default: `durations(harness).step`. */
  readonly step?: Duration.DurationInput | undefined
}

/**
 * Runs `check` until it succeeds (an `expect` that throws counts as a
 * failure), moving time in small steps in between. Gives up with the last
 * failure once `timeout` has passed on the harness's clock, so a test can
 * never hang and never depends on how fast things happen.
 */
export const eventually = <A, E, R>(
  harness: StoreHarness,
  check: Effect.Effect<A, E, R>,
  options: EventuallyOptions = {}
): Effect.Effect<A, E, R> => {
  const d = durations(harness)
  const timeout = millis(options.timeout ?? d.patience)
  const step = options.step ?? d.step
  return Effect.flatMap(now, (startedAt) => {
    const attempt: Effect.Effect<A, E, R> = Effect.catchAllCause(check, (cause) =>
      Cause.isInterruptedOnly(cause)
        ? Effect.failCause(cause)
        : Effect.flatMap(now, (current) =>
          current - startedAt >= timeout
            ? Effect.failCause(cause)
            : Effect.zipRight(advance(harness, step), Effect.suspend(() => attempt))))
    return attempt
  })
}

/** Waits (see {@link eventually}) until `predicate` holds for the task, and returns it. */
export const awaitTask = (
  harness: StoreHarness,
  taskId: string,
  predicate: (task: TaskInfo) => boolean,
  options: EventuallyOptions = {}
): Effect.Effect<TaskInfo, unknown, TaskStore> =>
  eventually(
    harness,
    Effect.flatMap(getTask(taskId), (task) =>
      predicate(task)
        ? Effect.succeed(task)
        : Effect.fail(new Error(`task ${taskId} is ${task.status} (attempt ${task.attempt}, owner ${task.leaseOwner})`))),
    options
  )

/** Waits until the task has the status, and returns it. */
export const awaitStatus = (
  harness: StoreHarness,
  taskId: string,
  status: TaskInfo["status"],
  options: EventuallyOptions = {}
): Effect.Effect<TaskInfo, unknown, TaskStore> => awaitTask(harness, taskId, (task) => task.status === status, options)

/**
 * Runs `effect` to its end while moving time (test-clock mode), for effects
 * that wait on the clock themselves: closing a worker's scope (its drain
 * waits up to `drainTimeout`), a retried write. Bounded like {@link eventually}.
 */
export const whileAdvancing = <A, E, R>(harness: StoreHarness, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  harness.clock === "live"
    ? effect
    : Effect.gen(function*() {
      const d = durations(harness)
      const fiber = yield* Effect.fork(effect)
      const startedAt = yield* now
      while (true) {
        yield* settle(harness)
        const exit = yield* Fiber.poll(fiber)
        if (Option.isSome(exit)) return yield* exit.value
        if ((yield* now) - startedAt >= millis(d.patience)) {
          yield* Fiber.interrupt(fiber)
          return yield* Effect.dieMessage(`did not finish within ${Duration.format(d.patience)} of simulated time`)
        }
        yield* advance(harness, d.step)
      }
    })

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/**
 * Builds a fresh store for `body`. The body runs in a scope of its own that
 * is closed (while time moves, so that workers can drain) before the store
 * is released: no worker outlives the store it talks to.
 */
export const withStore = <A, E>(
  harness: StoreHarness,
  body: Effect.Effect<A, E, TaskStore | Scope.Scope>
): Effect.Effect<A, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const context = yield* Layer.build(harness.layer)
    const inner = yield* Scope.make()
    const exit = yield* body.pipe(Scope.extend(inner), Effect.provide(context), Effect.exit)
    yield* whileAdvancing(harness, Scope.close(inner, exit))
    return yield* exit
  })

/** The body of a suite test: it gets a fresh store and a scope. */
export type TestBody = () => Effect.Effect<unknown, unknown, TaskStore | Scope.Scope>

/**
 * Registers a test that gets a fresh store: `it.scoped` (TestClock) in
 * test-clock mode, `it.scopedLive` (real clock) in live mode.
 */
export const makeTest = (harness: StoreHarness) => (name: string, body: TestBody, timeout?: number): void => {
  if (harness.clock === "live") {
    it.scopedLive(name, () => withStore(harness, body()), timeout)
  } else {
    it.scoped(name, () => withStore(harness, body()), timeout)
  }
}

// ---------------------------------------------------------------------------
// Store access
// ---------------------------------------------------------------------------

/** The task with this id; dies if there is none. */
export const getTask = (taskId: string): Effect.Effect<TaskInfo, unknown, TaskStore> =>
  Effect.flatMap(TaskStore, (store) => store.getTask(taskId)).pipe(
    Effect.flatMap(Option.match({
      onNone: () => Effect.dieMessage(`no task ${taskId}`),
      onSome: Effect.succeed
    }))
  )

// ---------------------------------------------------------------------------
// Workers
// ---------------------------------------------------------------------------

/** Worker options sized for the harness; `overrides` win. */
export const workerOptions = (harness: StoreHarness, overrides: Worker.WorkerOptions = {}): Worker.WorkerOptions => {
  const d = durations(harness)
  return {
    leaseTtl: d.leaseTtl,
    heartbeatInterval: d.heartbeatInterval,
    pollInterval: d.pollInterval,
    drainTimeout: d.unit,
    ...overrides
  }
}

/** A worker started by {@link startWorker}. */
export interface RunningWorker {
  readonly handle: Worker.WorkerHandle
  /** Closes the worker's scope (drains it) while time moves; waits until it is stopped. */
  readonly stop: Effect.Effect<void>
}

/**
 * Starts a worker in a scope of its own (a child of the current scope) with
 * {@link workerOptions}, on `store` when given (e.g. `faults.store`).
 */
export const startWorker = <Tasks extends Task.Any>(
  harness: StoreHarness,
  registry: Registry.Registry<Tasks>,
  options: Worker.WorkerOptions = {},
  store?: TaskStore["Type"]
): Effect.Effect<RunningWorker, ConfigurationError | StoreError, Scope.Scope | Worker.Requirements<Tasks>> =>
  Effect.gen(function*() {
    const parent = yield* Effect.scope
    const scope = yield* Scope.fork(parent, ExecutionStrategy.sequential)
    const started = Worker.start(registry, workerOptions(harness, options))
    const handle = yield* Scope.extend(
      store === undefined ? started : Effect.provideService(started, TaskStore, store),
      scope
    )
    return { handle, stop: whileAdvancing(harness, Scope.close(scope, Exit.void)) }
  })

/** The worker name in a worker id (`name/xxxxxxxx`). */
export const workerName = (workerId: string): string => workerId.slice(0, workerId.lastIndexOf("/"))

// ---------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------

/** A fenced write as it reached the store through {@link Faults}. */
export interface WriteRecord {
  readonly op: "complete" | "fail" | "release"
  readonly lease: Lease
  /** `"ok"`, or the tag of the error the store answered with. */
  readonly outcome: string
}

/**
 * A store wrapper that injects faults per worker, by worker name (the `name`
 * option of the worker). Workers started on `faults.store` share the
 * underlying store with everything else in the test.
 */
export interface Faults {
  readonly store: TaskStore["Type"]
  /**
   * The worker can no longer renew or settle: `heartbeat`, `complete`, `fail`,
   * `release` and `deregisterWorker` fail with `StoreError`. Its claims still
   * reach the store, so a test sees that the worker stops claiming by itself.
   */
  readonly cutOff: (name: string) => Effect.Effect<void>
  /**
   * Every call of the worker waits (packets held by a partition) until
   * `restore`, then reaches the store, even if the worker gave up on it.
   */
  readonly partition: (name: string) => Effect.Effect<void>
  /** Ends the fault of the worker; held calls proceed. */
  readonly restore: (name: string) => Effect.Effect<void>
  /** The next `count` calls of `op` (any worker) fail with `StoreError` without reaching the store. */
  readonly failNext: (op: WriteRecord["op"], count: number) => Effect.Effect<void>
  /**
   * The answers to the worker's claims arrive `delay` after the store made
   * them (a slow network): the tasks are leased while the worker still waits.
   */
  readonly slowClaims: (name: string, delay: Duration.DurationInput) => Effect.Effect<void>
  /** Every fenced write that reached the underlying store, in order. */
  readonly writes: Effect.Effect<ReadonlyArray<WriteRecord>>
}

interface Fault {
  readonly mode: "cut-off" | "partition"
  readonly restored: Deferred.Deferred<void>
}

/** Wraps the current store; see {@link Faults}. */
export const makeFaults: Effect.Effect<Faults, never, TaskStore> = Effect.gen(function*() {
  const inner = yield* TaskStore
  const faults = new Map<string, Fault>()
  const writes: Array<WriteRecord> = []
  const failing: Record<WriteRecord["op"], number> = { complete: 0, fail: 0, release: 0 }
  const claimDelays = new Map<string, Duration.Duration>()

  const faultOf = (workerId: string) => faults.get(workerName(workerId))
  const refused = (operation: string, workerId: string) =>
    new StoreError({ operation, cause: new Error(`worker ${workerId} is cut off from the store (test fault)`) })
  /** `call` as seen by worker `workerId`; `essential` calls are the ones a cut-off worker cannot make. */
  const through = <A, E>(operation: string, workerId: string, essential: boolean, call: Effect.Effect<A, E>) =>
    Effect.suspend((): Effect.Effect<A, E | StoreError> => {
      const fault = faultOf(workerId)
      if (fault === undefined) return call
      // Like a packet already on the wire: the call reaches the store after the
      // heal even if the worker stopped waiting for its answer.
      if (fault.mode === "partition") {
        return Effect.flatMap(Effect.forkDaemon(Effect.zipRight(Deferred.await(fault.restored), call)), Fiber.join)
      }
      return essential ? Effect.fail(refused(operation, workerId)) : call
    })
  /** A fenced write: injected failures first, then the worker's fault, then the store; what reached it is recorded. */
  const write = <A, E extends { readonly _tag: string }>(op: WriteRecord["op"], lease: Lease, call: Effect.Effect<A, E>) =>
    Effect.suspend((): Effect.Effect<A, E | StoreError> => {
      if (failing[op] > 0) {
        failing[op] -= 1
        return Effect.fail(new StoreError({ operation: op, cause: new Error("injected failure (test fault)") }))
      }
      return through(op, lease.owner, true, recorded(op, lease, call))
    })
  const recorded = <A, E extends { readonly _tag: string }>(op: WriteRecord["op"], lease: Lease, call: Effect.Effect<A, E>) =>
    Effect.onExit(call, (exit) =>
      Effect.sync(() => {
        writes.push({
          op,
          lease,
          outcome: Exit.isSuccess(exit)
            ? "ok"
            : Option.match(Cause.failureOption(exit.cause), { onNone: () => "defect", onSome: (error) => error._tag })
        })
      }))

  /** A batch is one write: an injected failure fails all of it; what reached the store is recorded per lease. */
  const batchWrite = (
    op: "complete" | "release",
    leases: ReadonlyArray<Lease>,
    call: Effect.Effect<ReadonlyArray<boolean>, StoreError>
  ) =>
    Effect.suspend(() => {
      if (failing[op] > 0) {
        failing[op] -= 1
        return Effect.fail(new StoreError({ operation: op, cause: new Error("injected failure (test fault)") }))
      }
      return through(
        op,
        leases[0]?.owner ?? "",
        true,
        Effect.tap(call, (done) =>
          Effect.sync(() => {
            leases.forEach((lease, index) => writes.push({ op, lease, outcome: done[index] ? "ok" : "LeaseLost" }))
          }))
      )
    })

  const store = TaskStore.of({
    ...inner,
    claim: (request) =>
      through(
        "claim",
        request.workerId,
        false,
        Effect.tap(inner.claim(request), () => {
          const delay = claimDelays.get(workerName(request.workerId))
          return delay === undefined ? Effect.void : Effect.sleep(delay)
        })
      ),
    heartbeat: (request) => through("heartbeat", request.workerId, true, inner.heartbeat(request)),
    complete: (lease, result) => write("complete", lease, inner.complete(lease, result)),
    completeAll: (completions) =>
      batchWrite("complete", completions.map(({ lease }) => lease), inner.completeAll(completions)),
    fail: (lease, failure) => write("fail", lease, inner.fail(lease, failure)),
    release: (lease) => write("release", lease, inner.release(lease)),
    releaseAll: (leases) => batchWrite("release", leases, inner.releaseAll(leases)),
    registerWorker: (worker) => through("registerWorker", worker.id, false, inner.registerWorker(worker)),
    deregisterWorker: (workerId) => through("deregisterWorker", workerId, true, inner.deregisterWorker(workerId))
  })

  const inject = (name: string, mode: Fault["mode"]) =>
    Effect.flatMap(Deferred.make<void>(), (restored) =>
      Effect.sync(() => {
        faults.set(name, { mode, restored })
      }))

  return {
    store,
    cutOff: (name) => inject(name, "cut-off"),
    partition: (name) => inject(name, "partition"),
    restore: (name) =>
      Effect.suspend(() => {
        const fault = faults.get(name)
        faults.delete(name)
        return fault === undefined ? Effect.void : Effect.asVoid(Deferred.succeed(fault.restored, undefined))
      }),
    failNext: (op, count) =>
      Effect.sync(() => {
        failing[op] = count
      }),
    slowClaims: (name, delay) =>
      Effect.sync(() => {
        claimDelays.set(name, Duration.decode(delay))
      }),
    writes: Effect.sync(() => [...writes])
  }
})
