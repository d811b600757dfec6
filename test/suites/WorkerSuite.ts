/**
 * Worker semantics end to end through a store: `Worker.start` / `Worker.run`
 * with tasks sent by `Task.send`. Faults (a worker cut off from the store, a
 * partition, failing writes) are injected by wrapping the store
 * (`makeFaults`), never by reaching into a store's internals.
 */
import { describe, expect } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Tracer from "effect/Tracer"
import * as Backoff from "../../src/Backoff.js"
import * as Idempotency from "../../src/Idempotency.js"
import * as Registry from "../../src/Registry.js"
import * as Task from "../../src/Task.js"
import * as TaskContext from "../../src/TaskContext.js"
import { TaskStore } from "../../src/TaskStore.js"
import * as Worker from "../../src/Worker.js"
import {
  advance,
  advanceTo,
  awaitStatus,
  awaitTask,
  durations,
  eventually,
  getTask,
  makeFaults,
  makeTest,
  millis,
  startWorker,
  type StoreHarness,
  whileAdvancing,
  workerName,
  workerOptions
} from "../utils/StoreHarness.js"

const Empty = Schema.Struct({})

/** What handlers saw, in order. */
const makeLog = <A>() => {
  const entries: Array<A> = []
  return {
    entries,
    add: (entry: A) =>
      Effect.sync(() => {
        entries.push(entry)
      })
  }
}

/** Tracks how many handlers run at once. */
const makeGauge = () => {
  let active = 0
  let max = 0
  return {
    get max() {
      return max
    },
    around: <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      Effect.acquireUseRelease(
        Effect.sync(() => {
          active += 1
          max = Math.max(max, active)
        }),
        () => effect,
        () =>
          Effect.sync(() => {
            active -= 1
          })
      )
  }
}

interface Run {
  readonly taskId: string
  /** The worker's name (the `name` option), not its id. */
  readonly worker: string
  readonly attempt: number
  readonly leaseLosses: number
  /** When the handler started, on the worker's clock. */
  readonly at: number
}

/**
 * A tracer as an exporter would install: Effect's own spans, each handed to
 * `onSpan`. (Under Effect's built-in tracer, which exports nothing, a worker
 * makes no attempt spans.)
 */
const exportingTracer = (onSpan: (span: Tracer.Span) => void = () => {}) =>
  Effect.map(Effect.tracer, (native) =>
    Tracer.make({
      context: (f, fiber) => native.context(f, fiber),
      span: (...args) => {
        const span = native.span(...args)
        onSpan(span)
        return span
      }
    }))

const currentRun: Effect.Effect<Run, never, TaskContext.TaskContext> = Effect.gen(function*() {
  const ctx = yield* TaskContext.TaskContext
  return {
    taskId: ctx.taskId,
    worker: workerName(ctx.workerId),
    attempt: ctx.attempt,
    leaseLosses: ctx.leaseLosses,
    at: yield* Clock.currentTimeMillis
  }
})

export const workerSuite = (harness: StoreHarness): void => {
  const test = makeTest(harness)
  const d = durations(harness)
  const unit = millis(d.unit)
  const ttl = millis(d.leaseTtl)
  const testClock = harness.clock === "test-clock"

  describe(`Worker (${harness.name})`, () => {
    describe("running tasks", () => {
      test("a task runs and succeeds with the context of its attempt", () =>
        Effect.gen(function*() {
          const contexts = makeLog<TaskContext.TaskContextShape>()
          const task = Task.make("ctx.task", {
            payload: Schema.Struct({ failFirst: Schema.Boolean }),
            result: Schema.Struct({ key: Schema.String, attempt: Schema.Number }),
            queue: "ctx",
            maxRetries: 2,
            retryBackoff: Backoff.none,
            handler: ({ failFirst }) =>
              Effect.gen(function*() {
                const ctx = yield* TaskContext.TaskContext
                yield* contexts.add(ctx)
                if (failFirst && ctx.attempt === 1) return yield* Effect.fail(new Error("first attempt fails"))
                return { key: ctx.idempotencyKey("charge"), attempt: ctx.attempt }
              })
          })
          const worker = yield* startWorker(harness, Registry.make(task), { name: "ctx" })
          const plain = yield* task.send({ failFirst: false })
          const retried = yield* task.send({ failFirst: true })
          const plainDone = yield* awaitStatus(harness, plain, "succeeded")
          const retriedDone = yield* awaitStatus(harness, retried, "succeeded")

          expect(plainDone).toMatchObject({ attempt: 1, errors: [], leaseOwner: null })
          expect(plainDone.finishedAt).not.toBeNull()
          const ofPlain = contexts.entries.filter((ctx) => ctx.taskId === plain)
          const ofRetried = contexts.entries.filter((ctx) => ctx.taskId === retried)
          expect(ofPlain).toHaveLength(1)
          expect(ofPlain[0]).toMatchObject({
            taskId: plain,
            name: "ctx.task",
            queue: "ctx",
            attempt: 1,
            maxRetries: 2,
            workerId: worker.handle.id,
            leaseLosses: 0
          })
          expect(plainDone.result).toEqual({ key: ofPlain[0]!.idempotencyKey("charge"), attempt: 1 })

          expect(ofRetried.map((ctx) => ctx.attempt)).toEqual([1, 2])
          const [first, second] = ofRetried
          expect(first!.idempotencyKey("charge")).toBe(second!.idempotencyKey("charge"))
          expect(first!.idempotencyKey("charge")).not.toBe(first!.idempotencyKey("refund"))
          expect(first!.idempotencyKey("charge")).not.toBe(ofPlain[0]!.idempotencyKey("charge"))
          expect(retriedDone).toMatchObject({ attempt: 2, result: { key: first!.idempotencyKey("charge"), attempt: 2 } })
          expect(retriedDone.errors).toMatchObject([{ attempt: 1, kind: "error", message: "first attempt fails" }])
        }))

      test("an attempt's span links to the span that sent the task", () =>
        Effect.gen(function*() {
          const seen = makeLog<{ readonly name: string; readonly links: ReadonlyArray<string> }>()
          const task = Task.make("traced.task", {
            payload: Empty,
            handler: () =>
              Effect.flatMap(Effect.orDie(Effect.currentSpan), (span) =>
                seen.add({ name: span.name, links: span.links.map((link) => `${link.span.traceId}/${link.span.spanId}`) }))
          })
          // Started inside a span of the application: attempts still get spans of their own.
          yield* Effect.withSpan(startWorker(harness, Registry.make(task)), "application").pipe(
            Effect.withTracer(yield* exportingTracer())
          )
          const producer = yield* Effect.makeSpan("producer")
          const id = yield* task.send({}).pipe(Effect.withParentSpan(producer))
          yield* awaitStatus(harness, id, "succeeded")
          expect(seen.entries).toHaveLength(1)
          expect(seen.entries[0]!.name).toBe("hyrex.attempt")
          // The link points at the send span, a child of the producer's span: same trace.
          expect(seen.entries[0]!.links).toHaveLength(1)
          expect(seen.entries[0]!.links[0]).toMatch(new RegExp(`^${producer.traceId}/[0-9a-f]{16}$`))
        }))

      test("under Effect's built-in tracer, which exports nothing, attempts make no spans", () =>
        Effect.gen(function*() {
          const seen = makeLog<string>()
          const task = Task.make("untraced.task", {
            payload: Empty,
            handler: () =>
              Effect.flatMap(Effect.option(Effect.currentSpan), (span) => seen.add(span._tag === "Some" ? span.value.name : "none"))
          })
          yield* startWorker(harness, Registry.make(task))
          yield* awaitStatus(harness, yield* task.send({}), "succeeded")
          expect(seen.entries).toEqual(["none"])
        }))

      test("an attempt's span ends with the attempt's outcome", () =>
        Effect.gen(function*() {
          const spans: Array<Tracer.Span> = []
          const recording = yield* exportingTracer((span) => {
            if (span.name === "hyrex.attempt") spans.push(span)
          })
          const task = Task.make("span.outcome", {
            payload: Empty,
            maxRetries: 1,
            retryBackoff: Backoff.none,
            handler: () =>
              Effect.flatMap(TaskContext.TaskContext, (ctx) =>
                ctx.attempt === 1 ? Effect.fail(new Error("first attempt fails")) : Effect.void)
          })
          yield* Effect.withTracer(startWorker(harness, Registry.make(task)), recording)
          const id = yield* task.send({})
          yield* awaitStatus(harness, id, "succeeded")
          const outcomes = spans.map((span) =>
            span.status._tag === "Ended" ? [span.attributes.get("hyrex.attempt"), span.status.exit._tag] : ["open"]
          )
          expect(outcomes).toEqual([[1, "Failure"], [2, "Success"]])
        }))

      test("a worker serves only its queues", () =>
        Effect.gen(function*() {
          const onA = Task.make("on.a", { payload: Empty, queue: "a", handler: () => Effect.void })
          const onB = Task.make("on.b", { payload: Empty, queue: "b", handler: () => Effect.void })
          yield* startWorker(harness, Registry.make(onA, onB), { queues: ["a"] })
          const a = yield* onA.send({})
          const b = yield* onB.send({})
          yield* awaitStatus(harness, a, "succeeded")
          yield* advance(harness, d.unit)
          expect(yield* getTask(b)).toMatchObject({ status: "queued", attempt: 0 })
        }))

      test("Worker.run serves until interrupted, then deregisters", () =>
        Effect.gen(function*() {
          const task = Task.make("run.task", { payload: Empty, handler: () => Effect.void })
          const fiber = yield* Effect.fork(Worker.run(Registry.make(task), workerOptions(harness, { name: "runner" })))
          const id = yield* task.send({})
          yield* awaitStatus(harness, id, "succeeded")
          const store = yield* TaskStore
          const running = (yield* store.listWorkers).filter((worker) => worker.name === "runner")
          expect(running).toHaveLength(1)
          expect(running[0]).toMatchObject({ status: "running", queues: ["default"], concurrency: 10 })
          yield* whileAdvancing(harness, Fiber.interrupt(fiber))
          const stopped = (yield* store.listWorkers).filter((worker) => worker.name === "runner")
          expect(stopped.map((worker) => worker.status)).toEqual(["stopped"])
        }))
    })

    describe("retries and failures", () => {
      test("retries exactly as the backoff says, then the task is dead with its full history", () =>
        Effect.gen(function*() {
          const runs = makeLog<Run>()
          const backoff = (attempt: number) => attempt * unit
          const task = Task.make("flaky", {
            payload: Empty,
            queue: "retries",
            maxRetries: 2,
            retryBackoff: (attempt) => Duration.millis(backoff(attempt)),
            handler: () =>
              Effect.gen(function*() {
                const run = yield* currentRun
                yield* runs.add(run)
                return yield* Effect.fail(new Error(`boom ${run.attempt}`))
              })
          })
          const worker = yield* startWorker(harness, Registry.make(task), { name: "retrier" })
          const id = yield* task.send({})
          for (let attempt = 1; attempt <= 2; attempt++) {
            const failed = yield* awaitTask(harness, id, (task) => task.errors.length === attempt)
            const error = failed.errors[attempt - 1]!
            expect(failed.status === "queued" || failed.attempt > attempt).toBe(true)
            if (testClock) {
              expect(failed.status).toBe("queued")
              expect(failed.runAt.getTime() - error.at.getTime()).toBe(backoff(attempt))
              yield* advanceTo(harness, failed.runAt.getTime() - 1)
              expect(runs.entries).toHaveLength(attempt)
            }
            yield* eventually(harness, Effect.sync(() => expect(runs.entries).toHaveLength(attempt + 1)))
            expect(runs.entries[attempt]!.at).toBeGreaterThanOrEqual(
              error.at.getTime() + backoff(attempt) - millis(d.clockSlack)
            )
          }
          const dead = yield* awaitStatus(harness, id, "failed")
          expect(dead.attempt).toBe(3)
          expect(dead.errors.map((error) => [error.attempt, error.kind, error.message, error.worker])).toEqual([
            [1, "error", "boom 1", worker.handle.id],
            [2, "error", "boom 2", worker.handle.id],
            [3, "error", "boom 3", worker.handle.id]
          ])
          for (const error of dead.errors) expect(error.cause).toContain("boom")
          yield* advance(harness, Duration.millis(4 * unit))
          expect(runs.entries.map((run) => run.attempt)).toEqual([1, 2, 3])
        }))

      test("a permanent error ends the task failed after one attempt", () =>
        Effect.gen(function*() {
          const runs = makeLog<string>()
          const viaPermanent = Task.make("perm.wrap", {
            payload: Empty,
            maxRetries: 3,
            retryBackoff: Backoff.none,
            handler: () =>
              Effect.zipRight(runs.add("wrap"), Effect.fail(Task.permanent(new Error("no such invoice"))))
          })
          const viaFail = Task.make("perm.fail", {
            payload: Empty,
            maxRetries: 3,
            retryBackoff: Backoff.none,
            handler: () => Effect.zipRight(runs.add("fail"), Task.failPermanently("account closed"))
          })
          yield* startWorker(harness, Registry.make(viaPermanent, viaFail))
          const wrapped = yield* viaPermanent.send({})
          const failed = yield* viaFail.send({})
          const first = yield* awaitStatus(harness, wrapped, "failed")
          const second = yield* awaitStatus(harness, failed, "failed")
          expect(first.attempt).toBe(1)
          expect(first.errors).toHaveLength(1)
          expect(first.errors[0]).toMatchObject({ attempt: 1, kind: "permanent" })
          expect(first.errors[0]!.message).toContain("no such invoice")
          expect(second.attempt).toBe(1)
          expect(second.errors[0]).toMatchObject({ attempt: 1, kind: "permanent" })
          expect(second.errors[0]!.message).toContain("account closed")
          yield* advance(harness, d.unit)
          expect(runs.entries.sort()).toEqual(["fail", "wrap"])
        }))

      test("with retention 0, a task that succeeds is deleted by its completion; a failed one is kept", () =>
        Effect.gen(function*() {
          const runs = makeLog<number>()
          const task = Task.make("unkept.task", {
            payload: Schema.Struct({ failFirst: Schema.Boolean, permanent: Schema.Boolean }),
            maxRetries: 2,
            retryBackoff: Backoff.none,
            handler: ({ failFirst, permanent }) =>
              Effect.gen(function*() {
                const { attempt } = yield* TaskContext.TaskContext
                yield* runs.add(attempt)
                if (permanent) return yield* Task.failPermanently("no such account")
                if (failFirst && attempt === 1) return yield* Effect.fail(new Error("first attempt fails"))
              })
          })
          // Housekeeping (which would prune them too) does not run within the test.
          yield* startWorker(harness, Registry.make(task), { retention: 0, maintenanceInterval: "1 hour" })
          const store = yield* TaskStore
          const failed = yield* task.send({ failFirst: false, permanent: true })
          yield* awaitStatus(harness, failed, "failed")
          const retried = yield* task.send({ failFirst: true, permanent: false })
          const plain = yield* task.send({ failFirst: false, permanent: false })
          yield* eventually(
            harness,
            Effect.gen(function*() {
              expect(yield* store.getTask(plain)).toEqual(Option.none())
              expect(yield* store.getTask(retried)).toEqual(Option.none())
            })
          )
          // Each ran to its success exactly: deleted only then, not before.
          expect(runs.entries.sort()).toEqual([1, 1, 1, 2])
          expect(Option.getOrThrow(yield* store.getTask(failed))).toMatchObject({ status: "failed", attempt: 1 })
        }))

      test("a defect is recorded with kind defect and its pretty cause, and retried", () =>
        Effect.gen(function*() {
          const task = Task.make("defective", {
            payload: Empty,
            maxRetries: 1,
            retryBackoff: Backoff.none,
            handler: () => Effect.die(new Error("kaboom"))
          })
          yield* startWorker(harness, Registry.make(task))
          const id = yield* task.send({})
          const dead = yield* awaitStatus(harness, id, "failed")
          expect(dead.attempt).toBe(2)
          expect(dead.errors.map((error) => [error.attempt, error.kind, error.message])).toEqual([
            [1, "defect", "kaboom"],
            [2, "defect", "kaboom"]
          ])
          expect(dead.errors[0]!.cause).toContain("kaboom")
        }))

      test("an attempt that runs past the task's timeout fails with kind timeout", () =>
        Effect.gen(function*() {
          const interrupted = makeLog<number>()
          const task = Task.make("slowpoke", {
            payload: Empty,
            maxRetries: 1,
            retryBackoff: Backoff.none,
            timeout: d.unit,
            handler: () =>
              Effect.flatMap(TaskContext.TaskContext, (ctx) =>
                Effect.never.pipe(Effect.onInterrupt(() => interrupted.add(ctx.attempt))))
          })
          yield* startWorker(harness, Registry.make(task))
          const id = yield* task.send({})
          const dead = yield* awaitStatus(harness, id, "failed")
          expect(dead.errors.map((error) => [error.attempt, error.kind])).toEqual([[1, "timeout"], [2, "timeout"]])
          expect(dead.errors[0]!.message).toContain("timed out")
          expect(interrupted.entries).toEqual([1, 2])
        }))

      test("a stored payload that no longer decodes fails the task with kind decode; others still run", () =>
        Effect.gen(function*() {
          const seen = makeLog<number>()
          const task = Task.make("typed", {
            payload: Schema.Struct({ n: Schema.Number }),
            maxRetries: 3,
            retryBackoff: Backoff.none,
            handler: ({ n }) => seen.add(n)
          })
          const store = yield* TaskStore
          const [bad] = yield* store.enqueue([{
            name: "typed",
            queue: "default",
            payload: { n: "not a number" },
            priority: 0,
            maxRetries: 3,
            backoff: [0, 0, 0],
            delayMillis: 0
          }])
          const good = yield* task.send({ n: 7 })
          yield* startWorker(harness, Registry.make(task))
          const failed = yield* awaitStatus(harness, bad!, "failed")
          expect(failed.attempt).toBe(1)
          expect(failed.errors).toHaveLength(1)
          expect(failed.errors[0]).toMatchObject({ attempt: 1, kind: "decode" })
          yield* awaitStatus(harness, good, "succeeded")
          const after = yield* task.send({ n: 8 })
          yield* awaitStatus(harness, after, "succeeded")
          expect(seen.entries).toEqual([7, 8])
        }))
    })

    describe("leases", () => {
      test("heartbeats keep a long task alive: no takeover, exactly one execution", () =>
        Effect.gen(function*() {
          const runs = makeLog<Run>()
          const task = Task.make("long", {
            payload: Empty,
            result: Schema.String,
            retryBackoff: Backoff.none,
            handler: () =>
              Effect.gen(function*() {
                const run = yield* currentRun
                yield* runs.add(run)
                yield* Effect.sleep(Duration.millis(3 * ttl))
                return run.worker
              })
          })
          const registry = Registry.make(task)
          yield* startWorker(harness, registry, { name: "A" })
          const id = yield* task.send({})
          yield* eventually(harness, Effect.sync(() => expect(runs.entries).toHaveLength(1)))
          yield* startWorker(harness, registry, { name: "B" })
          const done = yield* awaitStatus(harness, id, "succeeded")
          expect(done).toMatchObject({ attempt: 1, leaseLosses: 0, errors: [], result: "A" })
          expect(runs.entries.map((run) => run.worker)).toEqual(["A"])
        }))

      test("registration counts as the first renewal: the first heartbeat comes one interval later, after the first claim", () =>
        Effect.gen(function*() {
          const inner = yield* TaskStore
          const calls = makeLog<readonly [call: string, at: number]>()
          const record = (call: string) => Effect.flatMap(Clock.currentTimeMillis, (at) => calls.add([call, at] as const))
          const store = TaskStore.of({
            ...inner,
            claim: (request) => Effect.zipRight(record("claim"), inner.claim(request)),
            heartbeat: (request) => Effect.zipRight(record("heartbeat"), inner.heartbeat(request))
          })
          const task = Task.make("beats", { payload: Empty, handler: () => Effect.void })
          const startedAt = yield* Clock.currentTimeMillis
          yield* startWorker(harness, Registry.make(task), {}, store)
          yield* eventually(harness, Effect.sync(() => expect(calls.entries.map(([call]) => call)).toContain("heartbeat")))
          const order = calls.entries.map(([call]) => call)
          expect(order.indexOf("claim")).toBeLessThan(order.indexOf("heartbeat"))
          // Exact on the test clock: nothing is renewed before one interval has passed.
          if (testClock) expect(calls.entries[order.indexOf("heartbeat")]![1] - startedAt).toBeGreaterThanOrEqual(millis(d.heartbeatInterval))
        }))

      test("housekeeping runs first at a random moment within the first interval, then once per interval", () =>
        Effect.gen(function*() {
          const inner = yield* TaskStore
          const log = makeLog<number>()
          const runs = log.entries
          const store = TaskStore.of({
            ...inner,
            maintenance: (options) => Effect.zipRight(Effect.flatMap(Clock.currentTimeMillis, log.add), inner.maintenance(options))
          })
          const interval = millis(d.unit) * 2
          const task = Task.make("housekeeping", { payload: Empty, handler: () => Effect.void })
          const startedAt = yield* Clock.currentTimeMillis
          // The draw, fixed: half way through the first interval.
          yield* startWorker(harness, Registry.make(task), { maintenanceInterval: interval }, store).pipe(
            Effect.withRandomFixed([0.5])
          )
          // Not at start, and not before its moment.
          yield* advance(harness, interval * 0.4)
          expect(runs).toEqual([])
          yield* eventually(harness, Effect.sync(() => expect(runs.length).toBeGreaterThanOrEqual(2)))
          expect(runs[0]! - startedAt).toBeGreaterThanOrEqual(interval * 0.5)
          expect(runs[1]! - runs[0]!).toBeGreaterThanOrEqual(interval)
          // Exact on the test clock.
          if (testClock) expect(runs.slice(0, 2).map((at) => at - startedAt)).toEqual([interval * 0.5, interval * 1.5])
        }))

      test("a worker cut off from the store stops claiming, fences itself, and another worker takes over", () =>
        Effect.gen(function*() {
          const faults = yield* makeFaults
          const events = makeLog<string>()
          const interruptedAt = makeLog<number>()
          const hang = Task.make("hang", {
            payload: Empty,
            result: Schema.String,
            retryBackoff: Backoff.none,
            handler: () =>
              Effect.gen(function*() {
                const run = yield* currentRun
                yield* events.add(`start ${run.worker} ${run.attempt}`)
                if (run.worker !== "A") return `${run.worker} after ${run.leaseLosses} lost lease(s)`
                return yield* Effect.never.pipe(Effect.onInterrupt(() =>
                  Effect.zipRight(
                    events.add(`interrupted ${run.worker} ${run.attempt}`),
                    Effect.flatMap(Clock.currentTimeMillis, interruptedAt.add)
                  )
                ))
              })
          })
          const side = Task.make("side", {
            payload: Empty,
            handler: () => Effect.flatMap(currentRun, (run) => events.add(`side ${run.worker}`))
          })
          const registry = Registry.make(hang, side)
          const a = yield* startWorker(harness, registry, { name: "A" }, faults.store)
          const id = yield* hang.send({})
          yield* awaitTask(harness, id, (task) => task.leaseOwner === a.handle.id)
          yield* startWorker(harness, registry, { name: "B" }, faults.store)
          expect(yield* a.handle.healthy).toBe(true)

          yield* faults.cutOff("A")
          yield* eventually(harness, Effect.map(a.handle.healthy, (healthy) => expect(healthy).toBe(false)))
          const expiry = (yield* getTask(id)).leaseExpiresAt!.getTime()

          // A no longer claims: new work goes to B although A has free slots.
          const sideId = yield* side.send({})
          yield* awaitStatus(harness, sideId, "succeeded")
          expect(events.entries.filter((event) => event.startsWith("side"))).toEqual(["side B"])

          const done = yield* awaitStatus(harness, id, "succeeded")
          expect(done).toMatchObject({ attempt: 2, result: "B after 1 lost lease(s)", leaseLosses: 1 })
          expect(done.errors).toHaveLength(1)
          expect(done.errors[0]).toMatchObject({ attempt: 1, kind: "lease_expired", worker: a.handle.id })
          // A stopped its attempt before B could start the next one.
          const interrupted = events.entries.indexOf("interrupted A 1")
          expect(interrupted).toBeGreaterThanOrEqual(0)
          expect(interrupted).toBeLessThan(events.entries.indexOf("start B 2"))
          if (testClock) expect(interruptedAt.entries[0]!).toBeLessThan(expiry)
          expect(yield* a.handle.inFlight).toEqual([])

          // Reconnected, A claims again and changes nothing of the finished task.
          yield* faults.restore("A")
          yield* eventually(harness, Effect.map(a.handle.healthy, (healthy) => expect(healthy).toBe(true)))
          yield* advance(harness, d.leaseTtl)
          expect(yield* getTask(id)).toMatchObject({ status: "succeeded", attempt: 2, result: done.result })
          expect((yield* faults.writes).filter((write) => write.lease.owner === a.handle.id)).toEqual([])
        }))

      test("a completion that lands after the lease was taken over is rejected", () =>
        Effect.gen(function*() {
          const faults = yield* makeFaults
          const task = Task.make("race", {
            payload: Empty,
            result: Schema.String,
            retryBackoff: Backoff.none,
            handler: () =>
              Effect.gen(function*() {
                const run = yield* currentRun
                // A's answer is held by a partition until after its lease expired.
                if (run.worker === "A") yield* faults.partition("A")
                return `${run.worker}:${run.attempt}`
              })
          })
          const registry = Registry.make(task)
          const a = yield* startWorker(harness, registry, { name: "A" }, faults.store)
          const id = yield* task.send({})
          yield* eventually(harness, Effect.map(a.handle.healthy, (healthy) => expect(healthy).toBe(false)))
          yield* startWorker(harness, registry, { name: "B" }, faults.store)
          const done = yield* awaitStatus(harness, id, "succeeded")
          expect(done).toMatchObject({ attempt: 2, result: "B:2", leaseLosses: 1 })

          yield* faults.restore("A")
          const stale = yield* eventually(
            harness,
            Effect.map(faults.writes, (writes) => {
              const fromA = writes.filter((write) => write.lease.owner === a.handle.id)
              expect(fromA).toHaveLength(1)
              return fromA[0]!
            })
          )
          expect(stale).toMatchObject({ op: "complete", lease: { taskId: id, attempt: 1 }, outcome: "LeaseLost" })
          expect(yield* getTask(id)).toMatchObject({ status: "succeeded", attempt: 2, result: "B:2" })
        }))

      test("a stale worker whose task was cancelled mid-run does not mark it succeeded", () =>
        Effect.gen(function*() {
          const faults = yield* makeFaults
          const release = yield* Deferred.make<void>()
          const started = makeLog<string>()
          const task = Task.make("cancel.race", {
            payload: Empty,
            handler: () => Effect.zipRight(started.add("started"), Deferred.await(release))
          })
          const worker = yield* startWorker(harness, Registry.make(task), { name: "A" }, faults.store)
          const id = yield* task.send({})
          yield* eventually(harness, Effect.sync(() => expect(started.entries).toEqual(["started"])))
          const store = yield* TaskStore
          yield* store.cancel(id)
          // The handler finishes before or after the worker notices: either way it must not commit.
          yield* Deferred.succeed(release, undefined)
          yield* eventually(harness, Effect.map(worker.handle.inFlight, (leases) => expect(leases).toEqual([])))
          yield* advance(harness, d.leaseTtl)
          expect(yield* getTask(id)).toMatchObject({ status: "cancelled" })
          const completes = (yield* faults.writes).filter((write) => write.op === "complete")
          expect(completes.every((write) => write.outcome === "LeaseLost")).toBe(true)
        }))

      test("cancelling a running task interrupts its handler at the next heartbeat; it stays cancelled", () =>
        Effect.gen(function*() {
          const interrupted = makeLog<string>()
          const hang = Task.make("cancel.hang", {
            payload: Empty,
            handler: () =>
              Effect.flatMap(TaskContext.TaskContext, (ctx) =>
                Effect.never.pipe(Effect.onInterrupt(() => interrupted.add(ctx.taskId))))
          })
          const quick = Task.make("cancel.quick", { payload: Empty, handler: () => Effect.void })
          const worker = yield* startWorker(harness, Registry.make(hang, quick))
          const id = yield* hang.send({})
          yield* awaitStatus(harness, id, "running")
          const store = yield* TaskStore
          yield* store.cancel(id)
          yield* eventually(harness, Effect.sync(() => expect(interrupted.entries).toEqual([id])))
          yield* eventually(harness, Effect.map(worker.handle.inFlight, (leases) => expect(leases).toEqual([])))
          yield* advance(harness, Duration.millis(2 * ttl))
          const task = yield* getTask(id)
          expect(task).toMatchObject({ status: "cancelled", attempt: 1, errors: [] })
          // The worker goes on with other work.
          const next = yield* quick.send({})
          yield* awaitStatus(harness, next, "succeeded")
        }))

      test("a task retried while its cancelled attempt still winds down runs once more, under renewed leases", () =>
        Effect.gen(function*() {
          const runs = makeLog<Run>()
          const windingDown = makeLog<number>()
          const task = Task.make("rewound", {
            payload: Empty,
            result: Schema.Number,
            retryBackoff: Backoff.none,
            handler: () =>
              Effect.gen(function*() {
                const run = yield* currentRun
                yield* runs.add(run)
                if (run.attempt === 1) {
                  // Cleaning up after the interruption takes a while.
                  return yield* Effect.never.pipe(Effect.onInterrupt(() =>
                    Effect.zipRight(windingDown.add(run.attempt), Effect.sleep(Duration.millis(ttl / 2)))
                  ))
                }
                yield* Effect.sleep(Duration.millis(3 * ttl))
                return run.attempt
              })
          })
          yield* startWorker(harness, Registry.make(task), { name: "solo" })
          const id = yield* task.send({})
          yield* eventually(harness, Effect.sync(() => expect(runs.entries).toHaveLength(1)))
          const store = yield* TaskStore
          yield* store.cancel(id)
          yield* eventually(harness, Effect.sync(() => expect(windingDown.entries).toEqual([1])))
          yield* store.retry(id)
          const done = yield* awaitTask(harness, id, (task) => task.status !== "queued" && task.status !== "running")
          expect(done).toMatchObject({ status: "succeeded", attempt: 2, leaseLosses: 0, errors: [], result: 2 })
          expect(runs.entries.map((run) => run.attempt)).toEqual([1, 2])
        }))

      test("a poison task whose lease always expires ends dead after maxRetries", () =>
        Effect.gen(function*() {
          const faults = yield* makeFaults
          const runs = makeLog<Run>()
          // Whoever runs it loses the store (as if the task wedged its process) and hangs.
          const poison = Task.make("poison", {
            payload: Empty,
            maxRetries: 2,
            retryBackoff: Backoff.none,
            handler: () =>
              Effect.gen(function*() {
                const run = yield* currentRun
                yield* runs.add(run)
                yield* faults.cutOff(run.worker)
                return yield* Effect.never
              })
          })
          const registry = Registry.make(poison)
          for (const name of ["p1", "p2", "p3", "p4"]) yield* startWorker(harness, registry, { name }, faults.store)
          const id = yield* poison.send({})
          const dead = yield* awaitStatus(harness, id, "failed")
          expect(dead).toMatchObject({ attempt: 3, leaseLosses: 3, leaseOwner: null })
          expect(dead.errors.map((error) => [error.attempt, error.kind])).toEqual([
            [1, "lease_expired"],
            [2, "lease_expired"],
            [3, "lease_expired"]
          ])
          expect(runs.entries.map((run) => run.attempt)).toEqual([1, 2, 3])
          expect(new Set(runs.entries.map((run) => run.worker)).size).toBe(3)
          yield* advance(harness, Duration.millis(3 * ttl))
          expect(runs.entries).toHaveLength(3)
          expect((yield* getTask(id)).status).toBe("failed")
        }))

      test("a store failure while recording a failed attempt is retried", () =>
        Effect.gen(function*() {
          const faults = yield* makeFaults
          const task = Task.make("fail.persisted", {
            payload: Empty,
            result: Schema.Number,
            maxRetries: 1,
            retryBackoff: Backoff.none,
            handler: () =>
              Effect.flatMap(currentRun, (run) =>
                run.attempt === 1 ? Effect.fail(new Error("first attempt fails")) : Effect.succeed(run.attempt))
          })
          yield* faults.failNext("fail", 2)
          yield* startWorker(harness, Registry.make(task), {}, faults.store)
          const id = yield* task.send({})
          const done = yield* awaitStatus(harness, id, "succeeded")
          expect(done).toMatchObject({ attempt: 2, result: 2, leaseLosses: 0 })
          expect(done.errors).toMatchObject([{ attempt: 1, kind: "error", message: "first attempt fails" }])
          const writes = yield* faults.writes
          expect(writes.map((write) => [write.op, write.outcome])).toEqual([["fail", "ok"], ["complete", "ok"]])
        }))

      test("a store failure during complete does not lose the outcome", () =>
        Effect.gen(function*() {
          const faults = yield* makeFaults
          const runs = makeLog<number>()
          const task = Task.make("persisted", {
            payload: Empty,
            result: Schema.String,
            handler: () => Effect.flatMap(currentRun, (run) => Effect.as(runs.add(run.attempt), "done"))
          })
          yield* faults.failNext("complete", 2)
          yield* startWorker(harness, Registry.make(task), {}, faults.store)
          const id = yield* task.send({})
          const done = yield* awaitStatus(harness, id, "succeeded")
          expect(done).toMatchObject({ attempt: 1, result: "done", errors: [] })
          expect(runs.entries).toEqual([1])
          const writes = yield* faults.writes
          expect(writes.map((write) => [write.op, write.outcome])).toEqual([["complete", "ok"]])
        }))
    })

    describe("drain", () => {
      test("stopping a worker lets an in-flight task finish within drainTimeout; nothing new is claimed", () =>
        Effect.gen(function*() {
          const runs = makeLog<string>()
          const task = Task.make("drain.quick", {
            payload: Empty,
            handler: () =>
              Effect.flatMap(TaskContext.TaskContext, (ctx) =>
                Effect.zipRight(runs.add(ctx.taskId), Effect.sleep(Duration.millis(unit / 2))))
          })
          const worker = yield* startWorker(harness, Registry.make(task), {
            name: "drainer",
            concurrency: 1,
            drainTimeout: Duration.millis(4 * unit)
          })
          const first = yield* task.send({})
          yield* eventually(harness, Effect.sync(() => expect(runs.entries).toEqual([first])))
          const second = yield* task.send({})
          yield* worker.stop
          expect(yield* getTask(first)).toMatchObject({ status: "succeeded", attempt: 1, errors: [] })
          expect(yield* getTask(second)).toMatchObject({ status: "queued", attempt: 0 })
          expect(runs.entries).toEqual([first])
          const store = yield* TaskStore
          const workers = yield* store.listWorkers
          expect(workers.find((w) => w.id === worker.handle.id)).toMatchObject({ status: "stopped" })
        }))

      test("a task still running at drainTimeout is released without charging its attempt", () =>
        Effect.gen(function*() {
          const runs = makeLog<Run>()
          const interrupted = makeLog<string>()
          const task = Task.make("drain.slow", {
            payload: Empty,
            result: Schema.String,
            maxRetries: 0,
            handler: () =>
              Effect.gen(function*() {
                const run = yield* currentRun
                yield* runs.add(run)
                if (run.worker !== "first") return run.worker
                return yield* Effect.never.pipe(Effect.onInterrupt(() => interrupted.add(run.worker)))
              })
          })
          const registry = Registry.make(task)
          const first = yield* startWorker(harness, registry, { name: "first", drainTimeout: d.unit })
          const id = yield* task.send({})
          yield* eventually(harness, Effect.sync(() => expect(runs.entries).toHaveLength(1)))
          yield* first.stop
          expect(interrupted.entries).toEqual(["first"])
          const released = yield* getTask(id)
          expect(released).toMatchObject({ status: "queued", leaseOwner: null, errors: [], leaseLosses: 0 })
          const store = yield* TaskStore
          expect((yield* store.listWorkers).find((w) => w.id === first.handle.id)).toMatchObject({ status: "stopped" })

          yield* startWorker(harness, registry, { name: "second" })
          const done = yield* awaitStatus(harness, id, "succeeded")
          // maxRetries 0: had the drain charged the attempt, there would be none left.
          expect(done).toMatchObject({ attempt: 1, result: "second", errors: [] })
          expect(runs.entries.map((run) => [run.worker, run.attempt])).toEqual([["first", 1], ["second", 1]])
        }))
    })

    describe("drain (continued)", () => {
      test("heartbeats keep running during a drain longer than the lease TTL", () =>
        Effect.gen(function*() {
          const runs = makeLog<Run>()
          const task = Task.make("drain.long", {
            payload: Empty,
            result: Schema.String,
            retryBackoff: Backoff.none,
            handler: () =>
              Effect.gen(function*() {
                const run = yield* currentRun
                yield* runs.add(run)
                yield* Effect.sleep(Duration.millis(2 * ttl))
                return run.worker
              })
          })
          const registry = Registry.make(task)
          const draining = yield* startWorker(harness, registry, {
            name: "draining",
            drainTimeout: Duration.millis(4 * ttl)
          })
          const id = yield* task.send({})
          yield* eventually(harness, Effect.sync(() => expect(runs.entries).toHaveLength(1)))
          yield* startWorker(harness, registry, { name: "standby" })
          yield* draining.stop
          const done = yield* getTask(id)
          expect(done).toMatchObject({ status: "succeeded", attempt: 1, leaseLosses: 0, errors: [], result: "draining" })
          expect(runs.entries.map((run) => run.worker)).toEqual(["draining"])
        }))

      test("a store failure while releasing at drain is retried", () =>
        Effect.gen(function*() {
          const faults = yield* makeFaults
          const task = Task.make("drain.release", {
            payload: Empty,
            maxRetries: 0,
            handler: () => Effect.never
          })
          const worker = yield* startWorker(harness, Registry.make(task), { name: "leaving" }, faults.store)
          const id = yield* task.send({})
          yield* awaitTask(harness, id, (task) => task.leaseOwner === worker.handle.id)
          yield* faults.failNext("release", 1)
          yield* worker.stop
          expect(yield* getTask(id)).toMatchObject({ status: "queued", leaseOwner: null, errors: [] })
          expect((yield* faults.writes).map((write) => [write.op, write.outcome])).toEqual([["release", "ok"]])
        }))

      test("stopping a worker while its claim is on the way loses no attempt", () =>
        Effect.gen(function*() {
          const faults = yield* makeFaults
          const runs = makeLog<Run>()
          const task = Task.make("claim.race", {
            payload: Empty,
            result: Schema.String,
            maxRetries: 0,
            handler: () => Effect.flatMap(currentRun, (run) => Effect.as(runs.add(run), run.worker))
          })
          const registry = Registry.make(task)
          // Slow, but well within the lease: the worker must wait for the answer, then give the task back.
          yield* faults.slowClaims("slow", Duration.millis(ttl / 2))
          const slow = yield* startWorker(harness, registry, { name: "slow" }, faults.store)
          const id = yield* task.send({})
          // Leased in the store while the answer is still on its way to the worker.
          yield* awaitTask(harness, id, (task) => task.leaseOwner === slow.handle.id)
          expect(runs.entries).toEqual([])
          yield* slow.stop
          yield* startWorker(harness, registry, { name: "next" })
          const done = yield* awaitTask(harness, id, (task) => task.status === "succeeded" || task.status === "failed")
          expect(done).toMatchObject({ status: "succeeded", attempt: 1, leaseLosses: 0, errors: [] })
          expect(runs.entries).toHaveLength(1)
        }))
    })

    describe("concurrency", () => {
      test("maxConcurrency holds across a fleet of workers", () =>
        Effect.gen(function*() {
          const gauge = makeGauge()
          const runs = makeLog<string>()
          const task = Task.make("exclusive", {
            payload: Schema.Struct({ n: Schema.Number }),
            maxConcurrency: 1,
            handler: ({ n }) =>
              gauge.around(Effect.zipRight(runs.add(`task ${n}`), Effect.sleep(Duration.millis(unit / 5))))
          })
          const registry = Registry.make(task)
          for (const name of ["f1", "f2", "f3"]) yield* startWorker(harness, registry, { name })
          const ids = yield* task.sendBatch([1, 2, 3, 4, 5].map((n) => ({ n })))
          for (const id of ids) yield* awaitStatus(harness, id, "succeeded")
          expect(gauge.max).toBe(1)
          expect(runs.entries.sort()).toEqual(["task 1", "task 2", "task 3", "task 4", "task 5"])
          for (const id of ids) expect((yield* getTask(id)).attempt).toBe(1)
        }))

      test("concurrency bounds one worker's in-flight tasks", () =>
        Effect.gen(function*() {
          const gauge = makeGauge()
          const task = Task.make("bounded", {
            payload: Schema.Struct({ n: Schema.Number }),
            handler: () => gauge.around(Effect.sleep(Duration.millis(unit / 5)))
          })
          const worker = yield* startWorker(harness, Registry.make(task), { concurrency: 2 })
          const ids = yield* task.sendBatch([1, 2, 3, 4, 5].map((n) => ({ n })))
          yield* eventually(harness, Effect.map(worker.handle.inFlight, (leases) => expect(leases).toHaveLength(2)))
          for (const id of ids) yield* awaitStatus(harness, id, "succeeded")
          expect(gauge.max).toBe(2)
        }))
    })

    describe("fairness and elasticity", () => {
      test("a flooded queue cannot starve a quiet one", () =>
        Effect.gen(function*() {
          const runs = makeLog<string>()
          const hold = Effect.sleep(Duration.millis(unit / 5))
          const flood = Task.make("fair.flood", {
            payload: Schema.Struct({ n: Schema.Number }),
            queue: "flood",
            handler: ({ n }) => Effect.zipRight(runs.add(`flood ${n}`), hold)
          })
          const quiet = Task.make("fair.quiet", {
            payload: Schema.Struct({ n: Schema.Number }),
            queue: "quiet",
            handler: ({ n }) => Effect.zipRight(runs.add(`quiet ${n}`), hold)
          })
          const floodIds = yield* flood.sendBatch(Array.from({ length: 30 }, (_, n) => ({ n })))
          const quietIds = yield* quiet.sendBatch([0, 1, 2].map((n) => ({ n })))
          yield* startWorker(harness, Registry.make(flood, quiet), { concurrency: 2 })
          for (const id of quietIds) yield* awaitStatus(harness, id, "succeeded")
          // Served in turns: the quiet queue's three tasks ran among the first
          // flood tasks, not after the thirty sent before them.
          const quietDoneAt = Math.max(...["quiet 0", "quiet 1", "quiet 2"].map((run) => runs.entries.indexOf(run)))
          expect(quietDoneAt).toBeLessThan(8)
          for (const id of floodIds) yield* awaitStatus(harness, id, "succeeded")
        }))

      test("a worker that joins a backlog takes work at once, and the backlog drains faster", () =>
        Effect.gen(function*() {
          const runs = makeLog<Run & { readonly finishedBefore: number }>()
          let finished = 0
          const task = Task.make("elastic.task", {
            payload: Schema.Struct({ n: Schema.Number }),
            handler: () =>
              Effect.flatMap(currentRun, (run) => runs.add({ ...run, finishedBefore: finished })).pipe(
                Effect.zipRight(Effect.sleep(Duration.millis(unit))),
                Effect.zipRight(Effect.sync(() => {
                  finished += 1
                }))
              )
          })
          const registry = Registry.make(task)
          const ids = yield* task.sendBatch(Array.from({ length: 12 }, (_, n) => ({ n })))
          yield* startWorker(harness, registry, { name: "first", concurrency: 2 })
          yield* eventually(harness, Effect.sync(() => expect(runs.entries.length).toBeGreaterThanOrEqual(2)))
          yield* startWorker(harness, registry, { name: "second", concurrency: 2 })
          for (const id of ids) yield* awaitStatus(harness, id, "succeeded")
          const ofSecond = runs.entries.filter((run) => run.worker === "second")
          // It claimed from the backlog at once, before the first worker's
          // tasks could free a slot, and took a share of what was left.
          expect(ofSecond[0]?.finishedBefore).toBe(0)
          expect(ofSecond.length).toBeGreaterThanOrEqual(4)
          for (const id of ids) expect((yield* getTask(id)).attempt).toBe(1)
        }))
    })

    describe("claiming ahead", () => {
      /**
       * A worker with one slot and a buffer of five, whose handlers it has
       * seen finish at once (so it claims ahead), holding a task that runs
       * until `release` and five more waiting in its buffer. `store`: the
       * store the worker uses, when not the harness's own.
       */
      const bufferedWorker = (name: string, store?: TaskStore["Type"]) =>
        Effect.gen(function*() {
          const release = yield* Deferred.make<void>()
          const runs = makeLog<Run & { readonly n: number }>()
          const task = Task.make("ahead.task", {
            payload: Schema.Struct({ n: Schema.Number }),
            handler: ({ n }) =>
              Effect.flatMap(currentRun, (run) => runs.add({ ...run, n })).pipe(
                Effect.zipRight(n === 0 ? Deferred.await(release) : Effect.void)
              )
          })
          const registry = Registry.make(task)
          const worker = yield* startWorker(harness, registry, {
            name,
            concurrency: 1,
            prefetch: 5,
            drainTimeout: Duration.millis(4 * unit)
          }, store)
          // One quick task first: until a handler has finished, nothing is claimed ahead.
          yield* awaitStatus(harness, yield* task.send({ n: -1 }), "succeeded")
          const [blocker, ...waiting] = yield* task.sendBatch([0, 1, 2, 3, 4, 5].map((n) => ({ n })))
          yield* eventually(harness, Effect.flatMap(worker.handle.buffered, (buffered) => Effect.sync(() => expect(buffered).toBe(5))))
          yield* eventually(harness, Effect.sync(() => expect(runs.entries.map((run) => run.n)).toEqual([-1, 0])))
          return { task, registry, worker, runs, blocker: blocker!, waiting, release: Deferred.succeed(release, undefined) }
        })

      test("a worker claims ahead into its buffer, holding leases on the waiting tasks, and runs them in turn", () =>
        Effect.gen(function*() {
          const { blocker, release, runs, waiting, worker } = yield* bufferedWorker("ahead")
          for (const id of waiting) {
            expect(yield* getTask(id)).toMatchObject({ status: "running", attempt: 1 })
            expect(workerName((yield* getTask(id)).leaseOwner!)).toBe("ahead")
          }
          expect(yield* worker.handle.inFlight).toHaveLength(1)
          yield* release
          for (const id of [blocker, ...waiting]) yield* awaitStatus(harness, id, "succeeded")
          expect(runs.entries.map((run) => run.n)).toEqual([-1, 0, 1, 2, 3, 4, 5])
          for (const id of waiting) expect(yield* getTask(id)).toMatchObject({ attempt: 1, errors: [] })
        }))

      test("stopping a worker gives its buffered tasks back at once, in one write, without charging an attempt", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const givenBack: Array<number> = []
          const spy = TaskStore.of({
            ...store,
            release: (lease) => Effect.zipRight(Effect.sync(() => givenBack.push(1)), store.release(lease)),
            releaseAll: (leases) => Effect.zipRight(Effect.sync(() => givenBack.push(leases.length)), store.releaseAll(leases))
          })
          const { blocker, registry, release, runs, waiting, worker } = yield* bufferedWorker("first", spy)
          const stopping = yield* Effect.fork(worker.stop)
          // Given back before the running task ends.
          for (const id of waiting) {
            yield* awaitTask(harness, id, (task) => task.status === "queued" && task.attempt === 0 && task.leaseOwner === null)
          }
          yield* release
          yield* Fiber.join(stopping)
          expect(givenBack).toEqual([5])
          expect(yield* getTask(blocker)).toMatchObject({ status: "succeeded", attempt: 1 })
          yield* startWorker(harness, registry, { name: "second" })
          for (const id of waiting) {
            expect(yield* awaitStatus(harness, id, "succeeded")).toMatchObject({ attempt: 1, errors: [], leaseLosses: 0 })
          }
          expect(runs.entries.filter((run) => run.n > 0).map((run) => run.worker)).toEqual(Array(5).fill("second"))
        }))

      test("buffered tasks still waiting a heartbeat later go back for other workers", () =>
        Effect.gen(function*() {
          const { registry, release, runs, waiting } = yield* bufferedWorker("busy")
          yield* startWorker(harness, registry, { name: "idle", concurrency: 5 })
          for (const id of waiting) {
            expect(yield* awaitStatus(harness, id, "succeeded")).toMatchObject({ attempt: 1, errors: [] })
          }
          // The busy worker was still running its long task all along.
          const ofWaiting = runs.entries.filter((run) => run.n > 0)
          expect(ofWaiting.map((run) => run.worker)).toEqual(Array(5).fill("idle"))
          yield* release
        }))

      test("a buffered task cancelled before it starts never runs", () =>
        Effect.gen(function*() {
          const { blocker, release, runs, waiting } = yield* bufferedWorker("ahead")
          const store = yield* TaskStore
          yield* store.cancel(waiting[0]!)
          // The next heartbeat finds the lease gone and drops the task.
          yield* advance(harness, d.heartbeatInterval)
          yield* advance(harness, d.heartbeatInterval)
          yield* release
          for (const id of [blocker, ...waiting.slice(1)]) yield* awaitStatus(harness, id, "succeeded")
          expect(yield* getTask(waiting[0]!)).toMatchObject({ status: "cancelled" })
          // (Buffered tasks may have gone back and been claimed again meanwhile, in another order.)
          expect(runs.entries.map((run) => run.n).sort()).toEqual([-1, 0, 2, 3, 4, 5])
        }))

      test("a claim that comes back full sends the next claim before its tasks start", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          type Event =
            | { readonly kind: "claim" }
            | { readonly kind: "claimed"; readonly ids: ReadonlyArray<string>; readonly full: boolean }
            | { readonly kind: "run"; readonly id: string }
          const events: Array<Event> = []
          const spy = TaskStore.of({
            ...store,
            claim: (request) =>
              Effect.suspend(() => {
                events.push({ kind: "claim" })
                return Effect.tap(store.claim(request), (claimed) =>
                  Effect.sync(() => {
                    const ids = claimed.map((task) => task.lease.taskId)
                    if (ids.length > 0) events.push({ kind: "claimed", ids, full: ids.length === request.max })
                  }))
              })
          })
          const task = Task.make("ahead.pipelined", {
            payload: Schema.Struct({ n: Schema.Number }),
            handler: () =>
              Effect.flatMap(TaskContext.TaskContext, (ctx) => Effect.sync(() => events.push({ kind: "run", id: ctx.taskId })))
          })
          yield* startWorker(harness, Registry.make(task), { concurrency: 2, prefetch: 10 }, spy)
          // Until a handler has finished, nothing is claimed ahead.
          yield* awaitStatus(harness, yield* task.send({ n: -1 }), "succeeded")
          const ids = yield* task.sendBatch(Array.from({ length: 40 }, (_, n) => ({ n })))
          for (const id of ids) yield* awaitStatus(harness, id, "succeeded")
          // Each task ran once, and some full claim had the next one on its way
          // before the first of its tasks started (Postgres prepares the next
          // batch while this one runs).
          const runs = events.flatMap((event) => event.kind === "run" ? [event.id] : [])
          expect(runs.filter((id) => ids.includes(id)).sort()).toEqual([...ids].sort())
          const overlapped = events.some((event, index) => {
            if (event.kind !== "claimed" || !event.full) return false
            const firstRun = events.findIndex((later, at) => at > index && later.kind === "run" && event.ids.includes(later.id))
            const nextClaim = events.findIndex((later, at) => at > index && later.kind === "claim")
            return nextClaim !== -1 && firstRun !== -1 && nextClaim < firstRun
          })
          expect(overlapped, JSON.stringify(events)).toBe(true)
        }))

      test("a claim takes at most 1,000 tasks, what one completion write carries", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const asked: Array<number> = []
          const written: Array<number> = []
          const spy = TaskStore.of({
            ...store,
            claim: (request) =>
              Effect.suspend(() => {
                asked.push(request.max)
                return store.claim(request)
              }),
            completeAll: (completions) =>
              Effect.suspend(() => {
                written.push(completions.length)
                return store.completeAll(completions)
              })
          })
          const task = Task.make("ahead.capped", { payload: Schema.Struct({ n: Schema.Number }), handler: () => Effect.void })
          // Claiming ahead with the default prefetch (40 × 50), half of the
          // slots and buffer would be 1,025 tasks.
          yield* startWorker(harness, Registry.make(task), { concurrency: 50 }, spy)
          yield* awaitStatus(harness, yield* task.send({ n: -1 }), "succeeded")
          yield* task.sendBatch(Array.from({ length: 2500 }, (_, n) => ({ n })))
          yield* eventually(
            harness,
            Effect.map(store.stats, (stats) => expect(stats.map((queue) => queue.succeeded)).toEqual([2501]))
          )
          expect(Math.max(...asked)).toBe(1000)
          expect(Math.max(...written)).toBeLessThanOrEqual(1000)
        }))

      test("completion writes go one at a time; completions that end meanwhile share the next one", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          const gate = yield* Deferred.make<void>()
          const writes: Array<number> = []
          let writing = 0
          let mostAtOnce = 0
          const spy = TaskStore.of({
            ...store,
            // Every write waits for the gate.
            completeAll: (completions) =>
              Effect.acquireUseRelease(
                Effect.sync(() => {
                  writes.push(completions.length)
                  writing += 1
                  mostAtOnce = Math.max(mostAtOnce, writing)
                }),
                () => Effect.zipRight(Deferred.await(gate), store.completeAll(completions)),
                () =>
                  Effect.sync(() => {
                    writing -= 1
                  })
              )
          })
          const runs = makeLog<number>()
          const task = Task.make("writes.serial", {
            payload: Schema.Struct({ n: Schema.Number }),
            handler: ({ n }) => runs.add(n)
          })
          yield* startWorker(harness, Registry.make(task), { concurrency: 10, prefetch: 0 }, spy)
          const first = yield* task.send({ n: 0 })
          yield* eventually(harness, Effect.sync(() => expect(writes).toEqual([1])))
          const rest = yield* task.sendBatch([1, 2, 3, 4, 5].map((n) => ({ n })))
          yield* eventually(harness, Effect.sync(() => expect(runs.entries).toHaveLength(6)))
          // The five have ended; their completions wait for the write on its way.
          yield* advance(harness, d.unit)
          expect(writes).toEqual([1])
          yield* Deferred.succeed(gate, undefined)
          for (const id of [first, ...rest]) yield* awaitStatus(harness, id, "succeeded")
          expect(writes).toEqual([1, 5])
          expect(mostAtOnce).toBe(1)
        }))

      test("once a claim comes back short, finished attempts send no claim until a wake-up", () =>
        Effect.gen(function*() {
          const store = yield* TaskStore
          let claims = 0
          const spy = TaskStore.of({
            ...store,
            claim: (request) =>
              Effect.suspend(() => {
                claims += 1
                return store.claim(request)
              })
          })
          const release = yield* Deferred.make<void>()
          const task = Task.make("ahead.drained", {
            payload: Schema.Struct({ n: Schema.Number }),
            handler: ({ n }) => n < 3 ? Deferred.await(release) : Effect.void
          })
          // No poll during the test: only wake-ups and finished attempts can trigger a claim.
          const worker = yield* startWorker(harness, Registry.make(task), { concurrency: 4, prefetch: 0, pollInterval: "1 hour" }, spy)
          const ids = yield* task.sendBatch([0, 1, 2].map((n) => ({ n })))
          for (const id of ids) yield* awaitStatus(harness, id, "running")
          // The claim that took the three asked for four: nothing more was due.
          const claimsBefore = claims
          yield* Deferred.succeed(release, undefined)
          for (const id of ids) yield* awaitStatus(harness, id, "succeeded")
          // Every write has landed and the worker let go of the leases.
          yield* eventually(harness, Effect.map(worker.handle.inFlight, (leases) => expect(leases).toEqual([])))
          expect(claims).toBe(claimsBefore)
          // A send still wakes the worker (where the store delivers wake-ups;
          // without them the next claim waits for the poll, an hour here).
          if (harness.wakeups === false) return
          yield* awaitStatus(harness, yield* task.send({ n: 3 }), "succeeded")
          expect(claims).toBeGreaterThan(claimsBefore)
        }))

      test("prefetch 0 claims only free slots", () =>
        Effect.gen(function*() {
          const release = yield* Deferred.make<void>()
          const task = Task.make("ahead.none", {
            payload: Schema.Struct({ n: Schema.Number }),
            handler: ({ n }) => n === 0 ? Deferred.await(release) : Effect.void
          })
          const worker = yield* startWorker(harness, Registry.make(task), { concurrency: 1, prefetch: 0 })
          yield* awaitStatus(harness, yield* task.send({ n: -1 }), "succeeded")
          const [blocker, ...waiting] = yield* task.sendBatch([0, 1, 2].map((n) => ({ n })))
          yield* awaitStatus(harness, blocker!, "running")
          yield* advance(harness, d.pollInterval)
          yield* advance(harness, d.pollInterval)
          expect(yield* worker.handle.buffered).toBe(0)
          for (const id of waiting) expect(yield* getTask(id)).toMatchObject({ status: "queued", attempt: 0 })
          yield* Deferred.succeed(release, undefined)
          for (const id of waiting) yield* awaitStatus(harness, id, "succeeded")
        }))
    })

    describe("idempotency", () => {
      test("Idempotency.once runs its effect once across retries", () =>
        Effect.gen(function*() {
          let charges = 0
          let notes = 0
          const seen = makeLog<{ readonly attempt: number; readonly charge: unknown; readonly noted: unknown }>()
          const Charge = Schema.Struct({ chargeId: Schema.String, amount: Schema.NumberFromString })
          const task = Task.make("idempotent", {
            payload: Schema.Struct({ invoice: Schema.String }),
            result: Schema.String,
            maxRetries: 2,
            retryBackoff: Backoff.none,
            handler: ({ invoice }) =>
              Effect.gen(function*() {
                const ctx = yield* TaskContext.TaskContext
                const charge = yield* Idempotency.once(
                  `charge:${invoice}`,
                  Effect.sync(() => {
                    charges += 1
                    return { chargeId: `ch_${charges}`, amount: 12.5 }
                  }),
                  { schema: Charge }
                )
                const noted = yield* Idempotency.once(
                  `note:${invoice}`,
                  Effect.sync(() => {
                    notes += 1
                    return "a value that is not kept"
                  })
                )
                yield* seen.add({ attempt: ctx.attempt, charge, noted })
                if (ctx.attempt === 1) return yield* Effect.fail(new Error("crashed after charging"))
                return charge.chargeId
              })
          })
          yield* startWorker(harness, Registry.make(task))
          const id = yield* task.send({ invoice: "inv_1" })
          const done = yield* awaitStatus(harness, id, "succeeded")
          expect(done).toMatchObject({ attempt: 2, result: "ch_1" })
          expect(charges).toBe(1)
          expect(notes).toBe(1)
          expect(seen.entries).toEqual([
            { attempt: 1, charge: { chargeId: "ch_1", amount: 12.5 }, noted: undefined },
            { attempt: 2, charge: { chargeId: "ch_1", amount: 12.5 }, noted: undefined }
          ])
          const store = yield* TaskStore
          expect(yield* store.getIdempotent("charge:inv_1")).toEqual(Option.some({ chargeId: "ch_1", amount: "12.5" }))
          expect(Option.isSome(yield* store.getIdempotent("note:inv_1"))).toBe(true)
        }))
    })
  })
}
