/**
 * A worker claims tasks from the store, runs their handlers under leases it
 * keeps renewed, and settles every attempt with a fenced write.
 *
 * - One heartbeat fiber renews all in-flight leases per beat, with one store
 *   call. A lease missing from the answer was lost: that task is interrupted
 *   at once and its result discarded.
 * - When renewals fail the worker stops claiming, and when the last
 *   successful renewal is about to run out it interrupts its own tasks
 *   (self-fencing): only the side that can refresh leases keeps ownership.
 * - Interrupting the worker drains it: no more claims, in-flight tasks get
 *   `drainTimeout` to finish, stragglers are interrupted and released
 *   without charging an attempt, and the worker deregisters.
 *
 * @example
 * ```ts
 * const WorkerLive = Worker.layer(registry, { concurrency: 16, leaseTtl: "15 seconds" })
 * Layer.launch(WorkerLive.pipe(Layer.provide(PgTaskStore.layerFromUrl(url)))).pipe(NodeRuntime.runMain)
 * ```
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberHandle from "effect/FiberHandle"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Tracer from "effect/Tracer"
import * as Stream from "effect/Stream"
import * as os from "node:os"
import { type ConfigurationError, DecodeError, LeaseLost, StoreError, TaskTimeout } from "./Errors.js"
import * as AttemptFailure from "./internal/attemptFailure.js"
import * as TraceParent from "./internal/traceParent.js"
import { bounded } from "./internal/bounded.js"
import * as Metrics from "./Metrics.js"
import type * as Registry from "./Registry.js"
import type * as Task from "./Task.js"
import * as TaskContext from "./TaskContext.js"
import { type ClaimedTask, type Lease, TaskStore } from "./TaskStore.js"
import * as WorkerConfig from "./WorkerConfig.js"

export type { WorkerOptions } from "./WorkerConfig.js"

/** Why the worker interrupted a task: decides how its attempt is settled. */
type StopReason =
  /** Shutdown after `drainTimeout`: release the lease, charge nothing. */
  | "drain"
  /** The store says the lease is gone: write nothing. */
  | "lost"
  /** The worker could not renew in time: write nothing, the lease expires. */
  | "fenced"

interface InFlight {
  readonly lease: Lease
  stop: StopReason | undefined
  fiber: Fiber.RuntimeFiber<void, never> | undefined
}

/** What a started worker exposes, mainly for tests and operators. */
export interface WorkerHandle {
  readonly id: string
  readonly config: WorkerConfig.WorkerConfig
  /** Leases of the tasks running now. */
  readonly inFlight: Effect.Effect<ReadonlyArray<Lease>>
  /** Whether the last lease renewal succeeded (a fenced worker claims nothing). */
  readonly healthy: Effect.Effect<boolean>
}

/** The services a worker needs: the store and whatever its handlers need. */
export type Requirements<Tasks extends Task.Any> =
  | TaskStore
  | Exclude<Task.Requirements<Tasks>, TaskContext.TaskContext>

const leaseKey = (lease: Lease) => `${lease.taskId}:${lease.attempt}`

/**
 * Starts a worker in the current scope and returns at once. Closing the scope
 * drains it.
 */
export const start = <Tasks extends Task.Any>(
  registry: Registry.Registry<Tasks>,
  options: WorkerConfig.WorkerOptions = {}
): Effect.Effect<WorkerHandle, ConfigurationError | StoreError, Scope.Scope | Requirements<Tasks>> =>
  Effect.gen(function*() {
    const config = yield* WorkerConfig.resolve(options, registry.queues)
    const store = yield* TaskStore
    // Without the caller's span: each attempt's span is its own.
    const context = Context.omit(Tracer.ParentSpan)(yield* Effect.context<Requirements<Tasks>>()) as Context.Context<
      Requirements<Tasks>
    >
    const id = `${config.name}/${crypto.randomUUID().slice(0, 8)}`
    const leaseTtlMillis = Duration.toMillis(config.leaseTtl)
    const tasks = Array.from(registry.tasks.values()).filter((task) => config.queues.includes(task.queue))
    const names = tasks.map((task) => task.name)
    const limits: Record<string, number> = {}
    for (const task of tasks) if (task.maxConcurrency !== undefined) limits[task.name] = task.maxConcurrency

    const running = new Map<string, InFlight>()
    let accepting = true
    /** Leases held at most: running handlers and attempts still settling. */
    const maxHeld = 2 * config.concurrency
    const clock = yield* Effect.clock
    /** Handlers running now; `running` also holds attempts still settling. */
    let handlers = 0
    let turn = 0
    let healthy = true

    yield* Effect.annotateLogsScoped({ worker: id })

    // Registration counts as the first renewal: the fence clock starts here.
    const registeredAt = yield* Clock.currentTimeMillis
    yield* store.registerWorker({
      id,
      name: config.name,
      host: os.hostname(),
      pid: process.pid,
      queues: config.queues,
      concurrency: config.concurrency
    })
    yield* Effect.addFinalizer(() =>
      store.deregisterWorker(id).pipe(
        bounded("deregisterWorker", config.heartbeatInterval),
        Effect.tap(() => Effect.logInfo("worker stopped")),
        Effect.catchAll((error) => Effect.logWarning("could not deregister; the row will be marked dead", error))
      )
    )

    const wake = yield* Queue.sliding<void>(1)
    const signal = Queue.offer(wake, undefined)

    const stop = (entry: InFlight, reason: StopReason) => {
      entry.stop ??= reason
      return entry.fiber === undefined ? Effect.void : Fiber.interruptFork(entry.fiber)
    }

    const taskFibers = yield* FiberSet.make<void, never>()

    // --- self-fencing -------------------------------------------------------

    const fenceAll = Effect.suspend(() => {
      healthy = false
      if (running.size === 0) return Effect.void
      return Effect.logError(`could not renew leases in time; interrupting ${running.size} task(s)`).pipe(
        Effect.zipRight(Effect.forEach(running.values(), (entry) => stop(entry, "fenced"), { discard: true })),
        Effect.zipRight(Metrics.increment(Metrics.selfFenced))
      )
    })
    const fenceTimer = yield* FiberHandle.make<void, never>()
    const armFence = (renewalStartedAt: number) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        FiberHandle.run(
          fenceTimer,
          Effect.sleep(Duration.millis(Math.max(0, renewalStartedAt + leaseTtlMillis - Duration.toMillis(config.fenceMargin) - now))).pipe(
            Effect.zipRight(fenceAll)
          )
        ))
    yield* armFence(registeredAt)

    // --- heartbeat ----------------------------------------------------------

    const beat = Effect.gen(function*() {
      const startedAt = yield* Clock.currentTimeMillis
      const leases = Array.from(running.values(), (entry) => entry.lease)
      const held = yield* store.heartbeat({ workerId: id, leases, leaseTtlMillis }).pipe(
        bounded("heartbeat", config.heartbeatInterval)
      )
      if (!healthy) {
        // Wake-ups that came while unhealthy were dropped: claim at once.
        healthy = true
        yield* Effect.logInfo("lease renewals succeed again; claiming resumes")
        yield* signal
      }
      yield* armFence(startedAt)
      yield* Metrics.incrementBy(Metrics.leaseRenewals, held.length)
      const kept = new Set(held.map(leaseKey))
      for (const lease of leases) {
        const entry = running.get(leaseKey(lease))
        if (kept.has(leaseKey(lease)) || entry === undefined) continue
        yield* Effect.logWarning("lease lost; interrupting the task").pipe(
          Effect.annotateLogs({ taskId: lease.taskId, attempt: lease.attempt })
        )
        yield* Metrics.increment(Metrics.leasesLost)
        yield* stop(entry, "lost")
      }
    })
    yield* beat.pipe(
      Effect.catchAll((error) =>
        Effect.suspend(() => {
          healthy = false
          return Effect.logWarning("lease renewal failed; not claiming until it succeeds", error)
        })
      ),
      Effect.repeat(Schedule.spaced(config.heartbeatInterval)),
      Effect.forkScoped,
      Effect.interruptible
    )

    // --- running one attempt -------------------------------------------------

    const runHandler = (claimed: ClaimedTask): Effect.Effect<unknown, unknown> => {
      const task = registry.tasks.get(claimed.name)!
      const ctx = TaskContext.make({
        taskId: claimed.lease.taskId,
        name: claimed.name,
        queue: claimed.queue,
        attempt: claimed.lease.attempt,
        maxRetries: claimed.maxRetries,
        workerId: id,
        leaseLosses: claimed.leaseLosses
      })
      const handler: Effect.Effect<unknown, unknown, Task.Requirements<Tasks>> = Effect.flatMap(
        Effect.mapError(task.decodePayload(claimed.payload), (error) =>
          new DecodeError({ what: `payload of task ${claimed.lease.taskId} (${claimed.name})`, issue: error.message })),
        task.handler
      )
      const bounded = task.timeout === undefined ? handler : Effect.timeoutFail(handler, {
        duration: task.timeout,
        onTimeout: () => new TaskTimeout({ taskName: task.name, timeoutMillis: Duration.toMillis(task.timeout!) })
      })
      return bounded.pipe(
        Effect.flatMap(task.encodeResult),
        Effect.provide(Context.add(context, TaskContext.TaskContext, ctx) as Context.Context<Task.Requirements<Tasks>>)
      )
    }

    // A store outage must not lose the outcome: retry the write until it lands,
    // the lease is gone, or the lease would have expired anyway. Each call is
    // bounded so a write on a dead link cannot hold up shutdown: completions
    // by the store, per batch (a bound per call costs more than a no-op
    // task), the rarer writes here.
    const writeRetries = Schedule.exponential("100 millis").pipe(
      Schedule.either(Schedule.spaced("2 seconds")),
      Schedule.upTo(config.leaseTtl)
    )
    // A fenced or lost attempt has nothing left to write.
    const worthRetrying = (entry: InFlight) => (error: unknown) =>
      error instanceof StoreError && entry.stop !== "fenced" && entry.stop !== "lost"
    // Retrying only starts once a write failed: a retry driver on every
    // successful completion costs more than a no-op task.
    const persist = <A, E>(entry: InFlight, write: Effect.Effect<A, E | StoreError>) =>
      Effect.catchIf(write, worthRetrying(entry), () =>
        Effect.retry(Effect.delay(write, "100 millis"), { schedule: writeRetries, while: worthRetrying(entry) }))
    // The whole loop, retries included, within one lease's time.
    const persistBounded = <A, E>(entry: InFlight, write: Effect.Effect<A, E | StoreError>) =>
      bounded("settle", config.leaseTtl)(persist(entry, write))

    const settle = (claimed: ClaimedTask, entry: InFlight, exit: Exit.Exit<unknown, unknown>) => {
      const lease = claimed.lease
      if (Exit.isSuccess(exit)) {
        return Effect.map(persist(entry, store.complete(lease, exit.value)), Metrics.succeededNow)
      }
      if (Cause.isInterruptedOnly(exit.cause) && entry.stop !== undefined) {
        return entry.stop === "drain"
          ? persistBounded(entry, store.release(lease)).pipe(Effect.zipRight(Effect.logInfo("released at shutdown")))
          : Effect.logWarning(`attempt stopped (${entry.stop === "lost" ? "lease lost" : "self-fenced"}); result discarded`)
      }
      const failure = AttemptFailure.fromCause(exit.cause)
      return persistBounded(entry, store.fail(lease, failure)).pipe(
        Effect.flatMap((outcome) =>
          outcome._tag === "Retrying"
            ? Effect.logInfo(`attempt failed (${failure.kind}): ${failure.message}; retry at ${outcome.runAt.toISOString()}`).pipe(
              Effect.zipRight(Metrics.increment(Metrics.retried))
            )
            : Effect.logWarning(`attempt failed (${failure.kind}): ${failure.message}; task is dead`).pipe(
              Effect.zipRight(Metrics.increment(Metrics.dead))
            )
        ),
        Effect.zipRight(Metrics.increment(Metrics.failed))
      )
    }

    const attemptSpan = (claimed: ClaimedTask) =>
      Effect.withSpan("hyrex.attempt", {
        // A stack trace per attempt costs more than a no-op handler.
        captureStackTrace: false,
        links: TraceParent.links(claimed.traceParent),
        attributes: {
          "hyrex.task": claimed.name,
          "hyrex.task_id": claimed.lease.taskId,
          "hyrex.attempt": claimed.lease.attempt,
          "hyrex.queue": claimed.queue,
          "hyrex.worker": id
        }
      })

    const execute = (claimed: ClaimedTask, entry: InFlight) =>
      Effect.gen(function*() {
        const startedAt = clock.unsafeCurrentTimeMillis()
        Metrics.attemptStarted(Math.max(0, startedAt - claimed.dueAt.getTime()))
        // Only the handler is interruptible; settling always runs to its end.
        // The span covers the handler, so its status is the attempt's outcome.
        const exit = yield* Effect.exit(Effect.interruptible(runHandler(claimed).pipe(attemptSpan(claimed))))
        // The slot is free once the handler is done: the next claim overlaps
        // this attempt's write (its lease is still held and renewed).
        handlers -= 1
        yield* signal
        Metrics.attemptRan(Math.max(0, clock.unsafeCurrentTimeMillis() - startedAt))
        yield* settle(claimed, entry, exit).pipe(
          Effect.catchAll((error) =>
            error instanceof LeaseLost
              ? Effect.logWarning("lease lost before the attempt settled; result discarded").pipe(
                Effect.zipRight(Metrics.increment(Metrics.leasesLost))
              )
              : Effect.logError("could not record the attempt; its lease will expire and the task will run again", error)
          )
        )
      }).pipe(
        Effect.ensuring(Effect.suspend(() => {
          // Only a worker at its cap of held leases waits for this to claim again.
          const wasFull = running.size >= maxHeld
          running.delete(leaseKey(claimed.lease))
          Metrics.inFlightNow(-1)
          return wasFull ? signal : Effect.void
        })),
        Effect.annotateLogs({ taskId: claimed.lease.taskId, task: claimed.name, attempt: claimed.lease.attempt })
      )

    // Forked from an uninterruptible region, the fiber starts uninterruptible:
    // an interruption that arrives before the handler begins still settles
    // the attempt (it is released, not lost). Must run uninterruptibly.
    const launch = (claimed: ClaimedTask) =>
      Effect.suspend(() => {
        const entry: InFlight = { lease: claimed.lease, stop: undefined, fiber: undefined }
        running.set(leaseKey(claimed.lease), entry)
        handlers += 1
        Metrics.inFlightNow(1)
        return Effect.flatMap(Effect.forkDaemon(execute(claimed, entry)), (fiber) => {
          entry.fiber = fiber
          return FiberSet.add(taskFibers, fiber)
        })
      })

    // --- claiming ----------------------------------------------------------

    // Uninterruptible from the claim to the launch: tasks the store leased to
    // this worker are always either started or given back.
    const claimOnce = Effect.gen(function*() {
      // Settling attempts hold leases but no slot; at most `concurrency` of them.
      const free = Math.min(config.concurrency - handlers, maxHeld - running.size)
      if (!accepting || !healthy || free <= 0) return
      // Rotated on every claim: when each claim takes only a few tasks,
      // every queue still gets its turn.
      turn = (turn + 1) % config.queues.length
      const claimed = yield* store.claim({
        workerId: id,
        queues: [...config.queues.slice(turn), ...config.queues.slice(0, turn)],
        names,
        limits,
        max: free,
        leaseTtlMillis
      }).pipe(
        // A store that hangs cannot hold up shutdown for longer than a lease
        // would last anyway.
        bounded("claim", config.leaseTtl),
        Effect.catchAll((error) => Effect.as(Effect.logWarning("claim failed; retrying at the next poll", error), []))
      )
      if (claimed.length === 0) return
      yield* Metrics.incrementBy(Metrics.claimed, claimed.length)
      yield* Metrics.incrementBy(Metrics.takeovers, claimed.filter((task) => task.takeover).length)
      if (!accepting) {
        // Shutdown began while the claim was on the way.
        yield* Effect.forEach(claimed, (task) => Effect.ignore(store.release(task.lease)), { discard: true })
        return
      }
      yield* Effect.forEach(claimed, launch, { discard: true })
      // A full batch suggests more work is waiting.
      if (claimed.length === free) yield* signal
    }).pipe(Effect.uninterruptible)
    const idle = Queue.take(wake).pipe(Effect.timeout(config.pollInterval), Effect.ignore)
    const claimLoop = Effect.forever(Effect.zipRight(claimOnce, idle))

    yield* store.wakeups.pipe(
      Stream.filter((queue) => config.queues.includes(queue)),
      Stream.runForEach(() => signal),
      Effect.forkScoped,
      Effect.interruptible
    )
    yield* store.maintenance({
      retentionMillis: Duration.toMillis(config.retention),
      workerTimeoutMillis: Duration.toMillis(config.workerTimeout)
    }).pipe(
      bounded("maintenance", config.leaseTtl),
      Effect.catchAll((error) => Effect.logWarning("maintenance failed", error)),
      Effect.repeat(Schedule.spaced(config.maintenanceInterval)),
      Effect.forkScoped,
      Effect.interruptible
    )

    // --- drain -------------------------------------------------------------

    // Finalizers run uninterruptibly and a timeout there could never cancel
    // its loser, so the bounded wait runs in a fiber of its own.
    const drain = Effect.gen(function*() {
      accepting = false
      if (running.size === 0) return
      yield* Effect.logInfo(`draining ${running.size} task(s) for up to ${Duration.format(config.drainTimeout)}`)
      const waited = yield* FiberSet.awaitEmpty(taskFibers).pipe(
        Effect.timeout(config.drainTimeout),
        Effect.option,
        Effect.interruptible,
        Effect.forkDaemon,
        Effect.flatMap(Fiber.join)
      )
      if (waited._tag === "Some") return
      yield* Effect.logWarning(`drain timeout: releasing ${running.size} task(s)`)
      // All at once (FiberSet.clear would interrupt them one after the other).
      yield* Effect.forEach(running.values(), (entry) => stop(entry, "drain"), { discard: true })
      yield* FiberSet.awaitEmpty(taskFibers)
    })
    yield* Effect.addFinalizer(() => drain)

    yield* claimLoop.pipe(Effect.forkScoped, Effect.interruptible)
    yield* Effect.addFinalizer(() => Effect.sync(() => {
      accepting = false
    }))
    yield* Effect.logInfo(`worker started on ${config.queues.join(", ")} (concurrency ${config.concurrency})`)

    return {
      id,
      config,
      inFlight: Effect.sync(() => Array.from(running.values(), (entry) => entry.lease)),
      healthy: Effect.sync(() => healthy)
    }
  })

/**
 * Runs a worker until interrupted; interruption drains it.
 *
 * @example
 * ```ts
 * Worker.run(registry, { concurrency: 16 }).pipe(
 *   Effect.provide(MemoryTaskStore.layer),
 *   NodeRuntime.runMain
 * )
 * ```
 */
export const run = <Tasks extends Task.Any>(
  registry: Registry.Registry<Tasks>,
  options: WorkerConfig.WorkerOptions = {}
): Effect.Effect<never, ConfigurationError | StoreError, Requirements<Tasks>> =>
  Effect.scoped(Effect.zipRight(start(registry, options), Effect.never))

/** A worker as a Layer: started when the layer is built, drained when it is released. */
export const layer = <Tasks extends Task.Any>(
  registry: Registry.Registry<Tasks>,
  options: WorkerConfig.WorkerOptions = {}
): Layer.Layer<never, ConfigurationError | StoreError, Requirements<Tasks>> =>
  Layer.scopedDiscard(start(registry, options))
