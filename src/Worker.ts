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
 * - Claims take the free slots plus a buffer of tasks claimed ahead
 *   (`prefetch`), sized to about 100 ms of work at the recent handler run
 *   time, half of that room per claim: a claim that comes back full sends
 *   the next before its batch runs; one that comes back short means nothing
 *   more is due, and the next waits for a wake-up or the poll. Buffered
 *   tasks are leased and renewed like running ones; one still waiting a
 *   heartbeat later is given back for other workers.
 * - Interrupting the worker drains it: no more claims, the buffer is given
 *   back, in-flight tasks get `drainTimeout` to finish, stragglers are
 *   interrupted and released without charging an attempt, and the worker
 *   deregisters.
 *
 * @example
 * ```ts
 * const WorkerLive = Worker.layer(registry, { concurrency: 16, leaseTtl: "15 seconds" })
 * Layer.launch(WorkerLive.pipe(Layer.provide(PgTaskStore.layerFromUrl(url)))).pipe(NodeRuntime.runMain)
 * ```
 *
 * @since 0.1.0
 */
import * as Arr from "effect/Array"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberHandle from "effect/FiberHandle"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as Random from "effect/Random"
import * as Runtime from "effect/Runtime"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Tracer from "effect/Tracer"
import * as Stream from "effect/Stream"
import * as os from "node:os"
import { type ConfigurationError, DecodeError, LeaseLost, StoreError, TaskTimeout } from "./Errors.js"
import * as AttemptFailure from "./internal/attemptFailure.js"
import * as AttemptFork from "./internal/attemptFork.js"
import * as TraceParent from "./internal/traceParent.js"
import { bounded } from "./internal/bounded.js"
import * as Metrics from "./Metrics.js"
import type * as Registry from "./Registry.js"
import type * as Task from "./Task.js"
import * as TaskContext from "./TaskContext.js"
import { type ClaimedTask, type Lease, TaskStore } from "./TaskStore.js"
import * as Prefetch from "./internal/prefetch.js"
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

/** A lease this worker holds: a task waiting in the buffer, running, or settling. */
interface Held {
  /** The claimed task, its lease included. */
  readonly claimed: ClaimedTask
  /** When the claim returned, on the worker's clock. */
  readonly claimedAt: number
  stop: StopReason | undefined
  /** Whether the task left the buffer and its attempt started. */
  started: boolean
  fiber: Fiber.RuntimeFiber<unknown, unknown> | undefined
}

/** What a started worker exposes, mainly for tests and operators. */
export interface WorkerHandle {
  readonly id: string
  readonly config: WorkerConfig.WorkerConfig
  /** Leases of the tasks running now (or settling), not of those waiting in the buffer. */
  readonly inFlight: Effect.Effect<ReadonlyArray<Lease>>
  /** Claimed tasks waiting in memory for a free slot. */
  readonly buffered: Effect.Effect<number>
  /** Whether the last lease renewal succeeded (a fenced worker claims nothing). */
  readonly healthy: Effect.Effect<boolean>
}

/** The services a worker needs: the store and whatever its handlers need. */
export type Requirements<Tasks extends Task.Any> =
  | TaskStore
  | Exclude<Task.Requirements<Tasks>, TaskContext.TaskContext>

const leaseKey = (lease: Lease) => `${lease.taskId}:${lease.attempt}`

/**
 * Leases a completion write carries at most, and tasks a claim takes at
 * most, so that a claimed batch of short tasks is recorded by one write.
 * Postgres spends about half a millisecond per statement whatever its size:
 * a write of 1,000 costs 8 µs per task there, one of 100 twice that.
 */
const completionBatch = 1000

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

    /** Every lease this worker holds: buffered, running and settling tasks. */
    const held = new Map<string, Held>()
    /** Claimed tasks waiting for a free slot, oldest first. */
    let buffer: Array<Held> = []
    const prefetch = Prefetch.make(config.concurrency, config.prefetch)
    let accepting = true
    /**
     * The last claim came back with fewer tasks than it asked for: nothing
     * more was due. Until a wake-up (a send, a retry, a task given back) or
     * the poll says otherwise, a finished attempt does not trigger a claim:
     * after a burst, each of those would scan for nothing.
     */
    let drained = true
    /** Leases held at most: the buffer, running handlers, and as many attempts still settling. */
    const maxHeld = 2 * (config.concurrency + config.prefetch)
    const clock = yield* Effect.clock
    /** Handlers running now. */
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

    // The hot path (starting an attempt, noticing its end, queueing its
    // completion) is plain code run by the attempt's observer: with short
    // tasks, every Effect spent around a handler is throughput lost. Each
    // attempt still runs as a fiber of its own, under this runtime, and
    // everything that talks to the store is an Effect.
    const runtime = Runtime.make({
      context,
      fiberRefs: (yield* Effect.runtime<never>()).fiberRefs,
      runtimeFlags: Runtime.defaultRuntimeFlags
    })
    const runFork = Runtime.runFork(runtime)
    const forkAttempt = AttemptFork.make(runtime)

    const wake = yield* Queue.sliding<void>(1)
    /** A wake-up is queued and not yet taken: no need for another. */
    let wakePending = false
    const wakeClaimer = () => {
      if (wakePending) return
      wakePending = true
      wake.unsafeOffer(undefined)
    }
    const signal = Effect.sync(wakeClaimer)

    // Resolved once a stopping worker holds no lease any more.
    const released = yield* Deferred.make<void>()
    /** The lease is settled (or given up): the worker no longer holds it. */
    const forget = (entry: Held) => {
      if (!held.delete(leaseKey(entry.claimed.lease))) return
      if (entry.started) Metrics.inFlightNow(-1)
      // A worker near its cap of held leases may be waiting for this to claim
      // again; and a task with a maxConcurrency frees its slot in the store
      // only now, so tasks its limit held back may be claimable.
      if ((!drained || limits[entry.claimed.name] !== undefined) && wantsClaim()) wakeClaimer()
      if (!accepting && held.size === 0) Deferred.unsafeDone(released, Exit.void)
    }

    const unbuffer = (entries: ReadonlyArray<Held>) => {
      const leaving = new Set(entries)
      buffer = buffer.filter((entry) => !leaving.has(entry))
    }

    // A buffered task has no fiber: stopping it takes it out of the buffer,
    // and the lease expires (a fenced or lost lease has nothing to write).
    const stop = (entry: Held, reason: StopReason) =>
      Effect.suspend(() => {
        entry.stop ??= reason
        if (entry.fiber !== undefined) return Fiber.interruptFork(entry.fiber)
        if (entry.started) return Effect.void
        unbuffer([entry])
        forget(entry)
        return Effect.void
      })

    // --- self-fencing -------------------------------------------------------

    const fenceAll = Effect.suspend(() => {
      healthy = false
      if (held.size === 0) return Effect.void
      return Effect.logError(`could not renew leases in time; interrupting ${held.size} task(s)`).pipe(
        Effect.zipRight(Effect.forEach(Array.from(held.values()), (entry) => stop(entry, "fenced"), { discard: true })),
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

    // --- writes that must land ------------------------------------------------

    // A store outage must not lose the outcome: retry the write until it lands,
    // every lease it carries is gone, or the lease would have expired anyway.
    // Each call is bounded so a write on a dead link cannot hold up shutdown:
    // completions by the store, per batch, the rarer writes here.
    const writeRetries = Schedule.exponential("100 millis").pipe(
      Schedule.either(Schedule.spaced("2 seconds")),
      Schedule.upTo(config.leaseTtl)
    )
    // A fenced or lost attempt has nothing left to write.
    const worthWriting = (entry: Held) => entry.stop !== "fenced" && entry.stop !== "lost"
    const worthRetrying = (entries: ReadonlyArray<Held>) => (error: unknown) =>
      error instanceof StoreError && entries.some(worthWriting)
    // Retrying only starts once a write failed.
    const persist = <A, E>(entries: ReadonlyArray<Held>, write: Effect.Effect<A, E | StoreError>) =>
      Effect.catchIf(write, worthRetrying(entries), () =>
        Effect.retry(Effect.delay(write, "100 millis"), { schedule: writeRetries, while: worthRetrying(entries) }))
    // The whole loop, retries included, within one lease's time.
    const persistBounded = <A, E>(entry: Held, write: Effect.Effect<A, E | StoreError>) =>
      bounded("settle", config.leaseTtl)(persist([entry], write))

    const annotated = (entry: Held) =>
      Effect.annotateLogs({ taskId: entry.claimed.lease.taskId, task: entry.claimed.name, attempt: entry.claimed.lease.attempt })

    // Tasks that never started go back to the queue without a charged
    // attempt, `completionBatch` to a write.
    const releaseAll = (entries: ReadonlyArray<Held>) =>
      Effect.forEach(Arr.chunksOf(entries, completionBatch), (batch) =>
        bounded("release", config.leaseTtl)(
          persist(batch, store.releaseAll(batch.map((entry) => entry.claimed.lease)))
        ).pipe(
          Effect.flatMap((released) => {
            const lost = released.filter((ok) => !ok).length
            return lost === 0 ? Effect.void : Effect.logDebug(`${lost} buffered task(s) were no longer held`)
          }),
          Effect.catchAll((error) =>
            Effect.logWarning(
              `could not give back ${batch.length} task(s); their leases will expire and other workers will run them`,
              error
            )
          ),
          Effect.ensuring(Effect.sync(() => batch.forEach(forget)))
        ), { discard: true })

    // --- heartbeat ----------------------------------------------------------

    /** When the last successful renewal started: buffered tasks older than that wait too long. */
    let lastBeatAt = registeredAt
    const beat = Effect.gen(function*() {
      const startedAt = yield* Clock.currentTimeMillis
      const leases = Array.from(held.values(), (entry) => entry.claimed.lease)
      const renewed = yield* store.heartbeat({ workerId: id, leases, leaseTtlMillis }).pipe(
        bounded("heartbeat", config.heartbeatInterval)
      )
      if (!healthy) {
        // Wake-ups that came while unhealthy were dropped: claim at once.
        healthy = true
        yield* Effect.logInfo("lease renewals succeed again; claiming resumes")
        yield* signal
      }
      yield* armFence(startedAt)
      yield* Metrics.incrementBy(Metrics.leaseRenewals, renewed.length)
      const kept = new Set(renewed.map(leaseKey))
      for (const lease of leases) {
        const entry = held.get(leaseKey(lease))
        if (kept.has(leaseKey(lease)) || entry === undefined) continue
        yield* Effect.logWarning("lease lost; interrupting the task").pipe(
          Effect.annotateLogs({ taskId: lease.taskId, attempt: lease.attempt })
        )
        yield* Metrics.increment(Metrics.leasesLost)
        yield* stop(entry, "lost")
      }
      // Rebalancing: a task still buffered since before the previous renewal
      // waits behind long-running ones; another worker may have a free slot.
      const stale = buffer.filter((entry) => entry.claimedAt < lastBeatAt)
      lastBeatAt = startedAt
      if (stale.length > 0) {
        // Not claimed right back: nothing ahead until a handler finishes.
        prefetch.reset()
        unbuffer(stale)
        yield* Effect.logDebug(`giving back ${stale.length} buffered task(s) that waited past a heartbeat`)
        yield* releaseAll(stale)
      }
    })
    yield* beat.pipe(
      Effect.catchAll((error) =>
        Effect.suspend(() => {
          healthy = false
          return Effect.logWarning("lease renewal failed; not claiming until it succeeds", error)
        })
      ),
      // The first beat one interval after registration, which renewed
      // nothing but counts as the first renewal: at once it would only take
      // the connection the first claim could have had.
      Effect.schedule(Schedule.spaced(config.heartbeatInterval)),
      Effect.forkScoped,
      Effect.interruptible
    )

    // --- running one attempt -------------------------------------------------

    const runHandler = (claimed: ClaimedTask): Effect.Effect<unknown, unknown, TaskContext.TaskContext> => {
      const task = registry.tasks.get(claimed.name)!
      const handler: Effect.Effect<unknown, unknown, Task.Requirements<Tasks>> = Effect.flatMap(
        Effect.mapError(task.decodePayload(claimed.payload), (error) =>
          new DecodeError({ what: `payload of task ${claimed.lease.taskId} (${claimed.name})`, issue: error.message })),
        task.handler
      )
      const bounded = task.timeout === undefined ? handler : Effect.timeoutFail(handler, {
        duration: task.timeout,
        onTimeout: () => new TaskTimeout({ taskName: task.name, timeoutMillis: Duration.toMillis(task.timeout!) })
      })
      return Effect.flatMap(bounded, task.encodeResult) as Effect.Effect<unknown, unknown, TaskContext.TaskContext>
    }

    const attemptSpan = (claimed: ClaimedTask): AttemptFork.SpanOptions => ({
      name: "hyrex.attempt",
      links: TraceParent.links(claimed.traceParent),
      attributes: {
        "hyrex.task": claimed.name,
        "hyrex.task_id": claimed.lease.taskId,
        "hyrex.attempt": claimed.lease.attempt,
        "hyrex.queue": claimed.queue,
        "hyrex.worker": id
      }
    })

    const attemptOptions = (
      claimed: ClaimedTask
    ): AttemptFork.AttemptOptions<TaskContext.TaskContext, TaskContext.TaskContextShape> => ({
      tag: TaskContext.TaskContext,
      service: TaskContext.make({
        taskId: claimed.lease.taskId,
        name: claimed.name,
        queue: claimed.queue,
        attempt: claimed.lease.attempt,
        maxRetries: claimed.maxRetries,
        workerId: id,
        leaseLosses: claimed.leaseLosses
      }),
      annotations: { taskId: claimed.lease.taskId, task: claimed.name, attempt: claimed.lease.attempt },
      span: forkAttempt.tracing ? attemptSpan(claimed) : undefined
    })

    // Successful attempts are recorded in batches: at most `completionBatch`
    // leases a write, one write at a time. A lone completion is written as
    // soon as the code that ended it has run, and completions that arrive
    // while a write is on its way share the next one. Writes side by side
    // would take a session each and the CPU the claims beside them need; one
    // keeps up, since a write of a batch costs Postgres less than the claim
    // of it, and when it cannot, the leases held waiting for it bound the
    // claims (`maxHeld`).
    const completions: Array<{ readonly entry: Held; readonly result: unknown }> = []
    let writing = false
    // A worker that keeps no finished task deletes each as it succeeds.
    const completeOptions = { deleteSucceeded: Duration.isZero(config.retention) }
    const writeCompletions = (batch: ReadonlyArray<{ readonly entry: Held; readonly result: unknown }>) => {
      const entries = batch.map(({ entry }) => entry)
      const written = store.completeAll(batch.map(({ entry, result }) => ({ lease: entry.claimed.lease, result })), completeOptions)
      return persist(entries, written).pipe(
        Effect.flatMap((recorded) => {
          const lost = entries.filter((_, index) => !recorded[index])
          Metrics.succeededNow(entries.length - lost.length)
          return Effect.forEach(lost, (entry) =>
            Effect.logWarning("lease lost before the attempt settled; result discarded").pipe(
              Effect.zipRight(Metrics.increment(Metrics.leasesLost)),
              annotated(entry)
            ), { discard: true })
        }),
        Effect.catchAll((error) =>
          Effect.forEach(entries, (entry) =>
            Effect.logError("could not record the attempt; its lease will expire and the task will run again", error)
              .pipe(annotated(entry)), { discard: true })
        ),
        Effect.ensuring(Effect.sync(() => entries.forEach(forget)))
      )
    }
    const flushCompletions = () => {
      if (writing || completions.length === 0) return
      writing = true
      runFork(writeCompletions(completions.splice(0, completionBatch))).addObserver(() => {
        writing = false
        flushCompletions()
      })
    }
    // Completions of attempts that end in one go (a claimed batch of short
    // handlers runs without a pause) are written together: the flush waits
    // for the current run of code to finish, not for a timer.
    let flushQueued = false
    const queueFlush = () => {
      if (flushQueued) return
      flushQueued = true
      queueMicrotask(() => {
        flushQueued = false
        flushCompletions()
      })
    }

    // Failures, and attempts stopped by the worker, are rarer: one write each.
    const settleFailure = (entry: Held, cause: Cause.Cause<unknown>): Effect.Effect<void, LeaseLost | StoreError> => {
      const lease = entry.claimed.lease
      if (Cause.isInterruptedOnly(cause) && entry.stop !== undefined) {
        return entry.stop === "drain"
          ? persistBounded(entry, store.release(lease)).pipe(Effect.zipRight(Effect.logInfo("released at shutdown")))
          : Effect.logWarning(`attempt stopped (${entry.stop === "lost" ? "lease lost" : "self-fenced"}); result discarded`)
      }
      const failure = AttemptFailure.fromCause(cause)
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
    const settleFailureLogged = (entry: Held, cause: Cause.Cause<unknown>) =>
      settleFailure(entry, cause).pipe(
        Effect.catchAll((error) =>
          error instanceof LeaseLost
            ? Effect.logWarning("lease lost before the attempt settled; result discarded").pipe(
              Effect.zipRight(Metrics.increment(Metrics.leasesLost))
            )
            : Effect.logError("could not record the attempt; its lease will expire and the task will run again", error)
        ),
        annotated(entry),
        Effect.ensuring(Effect.sync(() => forget(entry)))
      )

    // The slot is free once the handler is done: the next buffered task
    // starts, and the next claim overlaps this attempt's write (its lease is
    // still held, and renewed, until the write lands).
    const attemptEnded = (entry: Held, startedAt: number, exit: Exit.Exit<unknown, unknown>) => {
      handlers -= 1
      // The ended fiber (its context, refs and exit) must not live on with
      // the lease until the write lands: it would outlive young-generation GC.
      entry.fiber = undefined
      const ranMillis = Math.max(0, clock.unsafeCurrentTimeMillis() - startedAt)
      prefetch.ran(ranMillis)
      Metrics.attemptRan(ranMillis)
      if (Exit.isSuccess(exit)) {
        completions.push({ entry, result: exit.value })
        queueFlush()
      } else {
        runFork(settleFailureLogged(entry, exit.cause))
      }
      startBuffered()
      if (!drained && wantsClaim()) wakeClaimer()
    }

    // Only the handler is interruptible; whatever its end, the observer
    // settles the attempt. The span covers the handler, so its status is the
    // attempt's outcome.
    const launch = (entry: Held) => {
      const claimed = entry.claimed
      const startedAt = clock.unsafeCurrentTimeMillis()
      Metrics.attemptStarted(Math.max(0, startedAt - claimed.dueAt.getTime()))
      Metrics.inFlightNow(1)
      entry.started = true
      const fiber = forkAttempt.fork(
        Effect.interruptible(runHandler(claimed)),
        attemptOptions(claimed),
        (exit) => attemptEnded(entry, startedAt, exit)
      )
      // A handler with no async step has ended (and been settled) by now.
      if (fiber.unsafePoll() === null) entry.fiber = fiber
    }

    /**
     * Starts buffered tasks while slots are free. A handler that needs no
     * async step ends inside `launch`, and its observer calls this again: that
     * call returns at once and this loop takes the freed slot, so the stack
     * stays flat however many such tasks the buffer holds.
     */
    let starting = false
    const startBuffered = () => {
      if (starting) return
      starting = true
      try {
        while (accepting && buffer.length > 0 && handlers < config.concurrency) {
          handlers += 1
          launch(buffer.shift()!)
        }
      } finally {
        starting = false
      }
    }

    // --- claiming ----------------------------------------------------------

    /** Tasks to claim now: free slots plus the room left in the buffer. */
    const claimable = () =>
      Math.min(config.concurrency - handlers + prefetch.target() - buffer.length, maxHeld - held.size)
    // Claiming ahead, a claim takes at most half of the slots and buffer:
    // when it comes back full there is still room for the next one, which
    // goes out before the batch runs (see `claimOnce`). And at most what one
    // completion write carries: a larger batch would take a second, small
    // write.
    const claimSize = () => {
      const target = prefetch.target()
      const size = target === 0 ? claimable() : Math.min(claimable(), Math.ceil((config.concurrency + target) / 2))
      return Math.min(size, completionBatch)
    }
    // Claims overlap the work of the buffer, and take at least a quarter of
    // it at a time: few, large claims, and a buffer that does not run dry.
    const wantsClaim = () => accepting && healthy && claimable() >= Math.max(1, prefetch.target() / 4)

    // Uninterruptible from the claim to the buffer: tasks the store leased to
    // this worker are always either buffered, started or given back.
    const claimOnce = Effect.gen(function*() {
      if (!wantsClaim()) return
      const free = claimSize()
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
      drained = claimed.length < free
      if (claimed.length === 0) return
      yield* Metrics.incrementBy(Metrics.claimed, claimed.length)
      yield* Metrics.incrementBy(Metrics.takeovers, claimed.filter((task) => task.takeover).length)
      const claimedAt = clock.unsafeCurrentTimeMillis()
      const entries = claimed.map((task): Held => ({
        claimed: task,
        claimedAt,
        stop: undefined,
        started: false,
        fiber: undefined
      }))
      for (const entry of entries) held.set(leaseKey(entry.claimed.lease), entry)
      if (!accepting) {
        // Shutdown began while the claim was on the way.
        yield* releaseAll(entries)
        return
      }
      buffer.push(...entries)
      if (claimed.length < free) return startBuffered()
      // A full batch suggests more work is waiting: the next claim goes out
      // first, and this batch starts once it is on its way (after the
      // microtasks that send it), so Postgres prepares the next batch while
      // this one runs instead of after it.
      wakeClaimer()
      setImmediate(startBuffered)
    }).pipe(Effect.uninterruptible)
    const idle = Effect.ensuring(
      Queue.take(wake),
      Effect.sync(() => {
        wakePending = false
      })
    )
    const claimLoop = Effect.forever(Effect.zipRight(claimOnce, idle))
    // Polling, for what no wake-up announces (delayed tasks, retries after a
    // backoff, expired leases, notifications lost while reconnecting): a
    // wake-up every pollInterval, from a fiber of its own, so that waiting
    // for a wake-up is a plain take, with no timer to start and cancel.
    yield* signal.pipe(
      Effect.repeat(Schedule.spaced(config.pollInterval)),
      Effect.forkScoped,
      Effect.interruptible
    )

    yield* store.wakeups.pipe(
      Stream.filter((queue) => config.queues.includes(queue)),
      Stream.runForEach(() => signal),
      Effect.forkScoped,
      Effect.interruptible
    )

    // --- drain -------------------------------------------------------------

    // Finalizers run uninterruptibly and a timeout there could never cancel
    // its loser, so the bounded wait runs in a fiber of its own.
    const drain = Effect.gen(function*() {
      accepting = false
      if (buffer.length > 0) {
        const waiting = buffer
        buffer = []
        yield* Effect.logInfo(`giving back ${waiting.length} buffered task(s)`)
        yield* releaseAll(waiting)
      }
      if (held.size === 0) return
      yield* Effect.logInfo(`draining ${held.size} task(s) for up to ${Duration.format(config.drainTimeout)}`)
      const waited = yield* Deferred.await(released).pipe(
        Effect.timeout(config.drainTimeout),
        Effect.option,
        Effect.interruptible,
        Effect.forkDaemon,
        Effect.flatMap(Fiber.join)
      )
      if (waited._tag === "Some") return
      yield* Effect.logWarning(`drain timeout: releasing ${handlers} task(s)`)
      yield* Effect.forEach(Array.from(held.values()), (entry) => stop(entry, "drain"), { discard: true })
      yield* Deferred.await(released)
    })
    yield* Effect.addFinalizer(() => drain)

    yield* claimLoop.pipe(Effect.forkScoped, Effect.interruptible)
    // Housekeeping, first at a random moment within the first interval (a
    // draw of Effect's `Random`), then once per interval: workers started
    // together (a deploy, a scale-out) spread their runs instead of queuing
    // for the maintenance lock at once, and a starting worker's first claims
    // keep the CPU and the pool to themselves (run at start, it cost a
    // 10,000-task burn-down about 9 %). Nothing waits for it: claims take
    // over expired leases themselves.
    const maintenance = store.maintenance({
      retentionMillis: Duration.toMillis(config.retention),
      workerTimeoutMillis: Duration.toMillis(config.workerTimeout)
    }).pipe(
      bounded("maintenance", config.leaseTtl),
      Effect.catchAll((error) => Effect.logWarning("maintenance failed", error))
    )
    yield* Random.next.pipe(
      Effect.flatMap((fraction) => Effect.sleep(Duration.times(config.maintenanceInterval, fraction))),
      Effect.zipRight(Effect.repeat(maintenance, Schedule.spaced(config.maintenanceInterval))),
      Effect.forkScoped,
      Effect.interruptible
    )
    yield* Effect.addFinalizer(() => Effect.sync(() => {
      accepting = false
    }))
    yield* Effect.logInfo(`worker started on ${config.queues.join(", ")} (concurrency ${config.concurrency})`)

    return {
      id,
      config,
      inFlight: Effect.sync(() =>
        Array.from(held.values()).filter((entry) => entry.started).map((entry) => entry.claimed.lease)
      ),
      buffered: Effect.sync(() => buffer.length),
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
