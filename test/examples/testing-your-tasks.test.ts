/**
 * Testing your tasks: the runnable examples of docs/testing.md.
 *
 * Everything runs on `MemoryTaskStore` under `TestClock` (the default clock
 * of `it.effect` / `it.scoped`): leases, heartbeats, backoffs and delays take
 * no real time, so a test that waits out a 15 s lease runs in milliseconds.
 * In your project, import from "hyrex" instead of "../../src/index.js".
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Context, Data, Effect, Layer, Option, Schema, TestClock } from "effect"
import {
  Backoff,
  Idempotency,
  MemoryTaskStore,
  Registry,
  StoreError,
  Task,
  TaskContext,
  TaskStore,
  Worker
} from "../../src/index.js"

// --- the code under test ---------------------------------------------------

/** The payment provider did not answer. */
class ProviderDown extends Data.TaggedError("ProviderDown")<{ readonly invoiceId: string }> {}

/** A service the handler needs: a payment provider. */
class PaymentProvider extends Context.Tag("example/PaymentProvider")<PaymentProvider, {
  readonly charge: (invoiceId: string, idempotencyKey: string) => Effect.Effect<string, ProviderDown>
}>() {}

const processInvoice = Task.make("process_invoice", {
  payload: Schema.Struct({ invoiceId: Schema.String }),
  result: Schema.Struct({ chargeId: Schema.String }),
  queue: "invoices",
  maxRetries: 3,
  retryBackoff: Backoff.fixed("10 seconds"),
  handler: ({ invoiceId }) =>
    Effect.gen(function*() {
      const ctx = yield* TaskContext.TaskContext
      const provider = yield* PaymentProvider
      // Once the charge is recorded, a retry or a takeover does not charge again.
      const chargeId = yield* Idempotency.once(
        `charge:${invoiceId}`,
        provider.charge(invoiceId, ctx.idempotencyKey("charge")),
        { schema: Schema.String }
      )
      return { chargeId }
    })
})

const registry = Registry.make(processInvoice)

// --- test helpers --------------------------------------------------------------

/** A fake provider that fails its first `failures` calls and records every charge. */
const fakeProvider = (failures: number) => {
  const charges: Array<{ readonly invoiceId: string; readonly key: string }> = []
  let calls = 0
  const layer = Layer.succeed(PaymentProvider, {
    charge: (invoiceId, key) =>
      Effect.suspend(() => {
        calls += 1
        if (calls <= failures) return Effect.fail(new ProviderDown({ invoiceId }))
        charges.push({ invoiceId, key })
        return Effect.succeed(`ch_${charges.length}`)
      })
  })
  return { charges, layer }
}

/**
 * Moves the TestClock forward in small steps until the task satisfies
 * `done`: every worker fiber (claims, heartbeats, handlers) runs as time
 * passes. Gives up after `limit` of simulated time.
 */
const waitFor = (id: string, done: (task: TaskStore.TaskInfo) => boolean, limit = 120) =>
  Effect.gen(function*() {
    const store = yield* TaskStore.TaskStore
    for (let second = 0; second <= limit; second++) {
      const task = yield* store.getTask(id)
      if (Option.isSome(task) && done(task.value)) return task.value
      yield* TestClock.adjust("1 second")
    }
    return yield* Effect.dieMessage(`task ${id} did not get there within ${limit} s of test time`)
  })

const isOver = (task: TaskStore.TaskInfo) => task.status !== "queued" && task.status !== "running"

// --- tests -----------------------------------------------------------------------

describe("testing your tasks", () => {
  // A handler is an Effect: run it alone, with the services it needs.
  it.effect("a handler on its own", () =>
    Effect.gen(function*() {
      const provider = fakeProvider(0)
      const ctx = TaskContext.make({
        taskId: "1",
        name: processInvoice.name,
        queue: processInvoice.queue,
        attempt: 1,
        maxRetries: 3,
        workerId: "test",
        leaseLosses: 0
      })
      const result = yield* processInvoice.handler({ invoiceId: "inv_1" }).pipe(
        Effect.provideService(TaskContext.TaskContext, ctx),
        Effect.provide(provider.layer)
      )
      expect(result).toEqual({ chargeId: "ch_1" })
      expect(provider.charges).toEqual([{ invoiceId: "inv_1", key: "hyrex:process_invoice:1:charge" }])
    }).pipe(Effect.provide(MemoryTaskStore.layer)))

  // A worker in the test: send, let time pass, look at what the store recorded.
  it.scoped("a failed attempt is retried after its stored backoff", () =>
    Effect.gen(function*() {
      const provider = fakeProvider(1)
      yield* Worker.start(registry).pipe(Effect.provide(provider.layer))
      const id = yield* processInvoice.send({ invoiceId: "inv_2" })

      const retrying = yield* waitFor(id, (task) => task.errors.length === 1)
      expect(retrying).toMatchObject({ status: "queued", attempt: 1 })
      expect(retrying.errors[0]).toMatchObject({ attempt: 1, kind: "error" })
      // The next run time is the failure plus the stored backoff (10 s) …
      expect(retrying.runAt.getTime() - retrying.errors[0]!.at.getTime()).toBe(10_000)

      // … and nothing runs before it.
      const now = yield* Clock.currentTimeMillis
      yield* TestClock.adjust(retrying.runAt.getTime() - now - 1)
      expect(provider.charges).toEqual([])
      // … then the second attempt runs and succeeds.
      const done = yield* waitFor(id, isOver)
      expect(done).toMatchObject({ status: "succeeded", attempt: 2, result: { chargeId: "ch_1" } })
      expect(provider.charges).toHaveLength(1)
    }).pipe(Effect.provide(MemoryTaskStore.layer)))

  it.scoped("a delayed task waits for its time", () =>
    Effect.gen(function*() {
      const provider = fakeProvider(0)
      const id = yield* processInvoice.send({ invoiceId: "inv_3" }, { delay: "1 hour" })
      // No worker yet: moving the clock by an hour costs nothing.
      yield* TestClock.adjust("59 minutes")
      yield* Worker.start(registry).pipe(Effect.provide(provider.layer))
      yield* TestClock.adjust("30 seconds")
      expect(provider.charges).toEqual([])
      const done = yield* waitFor(id, isOver)
      expect(done.status).toBe("succeeded")
      expect(provider.charges).toHaveLength(1)
    }).pipe(Effect.provide(MemoryTaskStore.layer)))

  // Workers sharing one MemoryTaskStore behave like processes sharing one
  // database. A worker whose heartbeats fail (cut off from the database)
  // fences itself; another worker takes the task over once the lease has
  // expired and the backoff has passed, and `Idempotency.once` keeps the
  // charge single.
  it.scoped("a worker cut off from the store loses the task to another, which does not charge twice", () =>
    Effect.gen(function*() {
      const store = yield* TaskStore.TaskStore
      const provider = fakeProvider(0)
      let cut = false
      // The store as the doomed worker sees it: heartbeats fail once `cut` is set.
      const flaky = TaskStore.TaskStore.of({
        ...store,
        heartbeat: (request) =>
          cut ? Effect.fail(new StoreError({ operation: "heartbeat", cause: new Error("network down") })) : store.heartbeat(request)
      })
      // A slow handler: it charges, then takes two minutes more.
      const slow = Task.make("process_invoice", {
        payload: Schema.Struct({ invoiceId: Schema.String }),
        queue: "invoices",
        retryBackoff: Backoff.fixed("10 seconds"),
        handler: ({ invoiceId }) =>
          Effect.gen(function*() {
            const ctx = yield* TaskContext.TaskContext
            const provider = yield* PaymentProvider
            yield* Idempotency.once(`charge:${invoiceId}`, provider.charge(invoiceId, ctx.idempotencyKey("charge")))
            if (ctx.attempt === 1) yield* Effect.sleep("2 minutes")
          })
      })
      const workers = Registry.make(slow)

      yield* Worker.start(workers, { name: "doomed" }).pipe(
        Effect.provideService(TaskStore.TaskStore, flaky),
        Effect.provide(provider.layer)
      )
      const id = yield* slow.send({ invoiceId: "inv_4" })
      yield* waitFor(id, () => provider.charges.length === 1)
      cut = true
      yield* Worker.start(workers, { name: "healthy" }).pipe(Effect.provide(provider.layer))

      const done = yield* waitFor(id, isOver)
      expect(done).toMatchObject({ status: "succeeded", attempt: 2, leaseLosses: 1 })
      expect(done.errors.map((error) => error.kind)).toEqual(["lease_expired"])
      expect(provider.charges).toHaveLength(1)
    }).pipe(Effect.provide(MemoryTaskStore.layer)))
})
