import { describe, expect, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Tracer from "effect/Tracer"
import * as Backoff from "../src/Backoff.js"
import { ConfigurationError, PermanentError } from "../src/Errors.js"
import * as MemoryTaskStore from "../src/MemoryTaskStore.js"
import * as Task from "../src/Task.js"
import { TaskStore } from "../src/TaskStore.js"

const Invoice = Schema.Struct({ invoiceId: Schema.String, amount: Schema.NumberFromString })
const PositiveN = Schema.Struct({ n: Schema.Number.pipe(Schema.positive()) })

const invoiceTask = (options: Partial<Task.TaskOptions<typeof Invoice.Type, typeof Invoice.Encoded, void, void, never, never>> = {}) =>
  Task.make("process_invoice", { payload: Invoice, handler: () => Effect.void, ...options })

/** The ConfigurationError `f` throws. */
const configurationError = (f: () => unknown): ConfigurationError => {
  try {
    f()
  } catch (error) {
    if (error instanceof ConfigurationError) return error
    throw error
  }
  throw new Error("expected a ConfigurationError to be thrown")
}

const allTasks = Effect.flatMap(TaskStore, (store) => store.listTasks({}))
const taskInfo = (id: string) =>
  Effect.flatMap(TaskStore, (store) => store.getTask(id)).pipe(Effect.map(Option.getOrThrow))

describe("Task", () => {
  describe("make", () => {
    it("applies the defaults", () => {
      const task = invoiceTask()
      expect(task.name).toBe("process_invoice")
      expect(task.queue).toBe("default")
      expect(task.maxRetries).toBe(3)
      expect(task.priority).toBe(0)
      expect(task.timeout).toBeUndefined()
      expect(task.maxConcurrency).toBeUndefined()
      expect(task.backoff).toBe(Backoff.defaultPolicy)
      expect(Task.isTask(task)).toBe(true)
      expect(Task.isTask({ name: "process_invoice" })).toBe(false)
      expect(Task.isTask(null)).toBe(false)
    })

    it("keeps the given options", () => {
      const task = invoiceTask({ queue: "billing", maxRetries: 0, priority: -2, timeout: "5 seconds", maxConcurrency: 4 })
      expect(task).toMatchObject({ queue: "billing", maxRetries: 0, priority: -2, maxConcurrency: 4 })
      expect(Duration.toMillis(task.timeout!)).toBe(5000)
    })

    it.each([
      ["an empty name", () => Task.make("  ", { payload: Invoice, handler: () => Effect.void }), "name"],
      ["an empty queue", () => invoiceTask({ queue: "" }), "process_invoice.queue"],
      ["negative maxRetries", () => invoiceTask({ maxRetries: -1 }), "process_invoice.maxRetries"],
      ["fractional maxRetries", () => invoiceTask({ maxRetries: 1.5 }), "process_invoice.maxRetries"],
      ["maxRetries above 1000", () => invoiceTask({ maxRetries: 1001 }), "process_invoice.maxRetries"],
      ["fractional priority", () => invoiceTask({ priority: 0.5 }), "process_invoice.priority"],
      ["a zero timeout", () => invoiceTask({ timeout: 0 }), "process_invoice.timeout"],
      ["maxConcurrency 0", () => invoiceTask({ maxConcurrency: 0 }), "process_invoice.maxConcurrency"],
      ["fractional maxConcurrency", () => invoiceTask({ maxConcurrency: 2.5 }), "process_invoice.maxConcurrency"]
    ] as const)("throws ConfigurationError for %s", (_, make, option) => {
      expect(configurationError(make).option).toBe(option)
    })
  })

  describe("send", () => {
    it.scoped("validates, encodes and enqueues the payload with the task's policies", () =>
      Effect.gen(function*() {
        const task = invoiceTask({ queue: "billing", priority: 3, maxRetries: 2, retryBackoff: Backoff.none })
        const id = yield* task.send({ invoiceId: "inv_1", amount: 12.5 })
        const info = yield* taskInfo(id)
        expect(info).toMatchObject({
          name: "process_invoice",
          queue: "billing",
          status: "queued",
          priority: 3,
          maxRetries: 2,
          attempt: 0,
          payload: { invoiceId: "inv_1", amount: "12.5" },
          idempotencyKey: null
        })
        expect(info.runAt.getTime()).toBe(info.createdAt.getTime())
      }).pipe(Effect.provide(MemoryTaskStore.layer)))

    it.scoped("stores the send span's traceparent when the send is part of a trace, and nothing otherwise", () =>
      Effect.gen(function*() {
        const inner = yield* TaskStore
        const sent: Array<string | undefined> = []
        const store = TaskStore.of({
          ...inner,
          enqueue: (requests) => {
            for (const request of requests) sent.push(request.traceParent)
            return inner.enqueue(requests)
          }
        })
        const task = Task.make("traced", { payload: Schema.Struct({}), handler: () => Effect.void })
        const send = task.send({}).pipe(Effect.provideService(TaskStore, store))
        // Effect's built-in tracer and no span of the caller: no trace anything could see.
        yield* send
        // The caller's span, even one nobody exports: the send span is its child.
        const caller = yield* Effect.makeSpan("caller")
        yield* send.pipe(Effect.withParentSpan(caller))
        // A tracer that exports spans: the send span itself is worth linking to.
        const exported = yield* Effect.map(Effect.tracer, (native) =>
          Tracer.make({ span: (...args) => native.span(...args), context: (f, fiber) => native.context(f, fiber) }))
        yield* send.pipe(Effect.withTracer(exported))

        const traceParent = /^00-([0-9a-f]{32})-[0-9a-f]{16}-01$/
        expect(sent[0]).toBeUndefined()
        expect(sent[1]).toMatch(traceParent)
        expect(traceParent.exec(sent[1]!)![1]).toBe(caller.traceId)
        expect(sent[2]).toMatch(traceParent)
      }).pipe(Effect.provide(MemoryTaskStore.layer)))

    it.scoped("an invalid payload fails with PayloadError and enqueues nothing", () =>
      Effect.gen(function*() {
        const task = Task.make("positive", { payload: PositiveN, handler: () => Effect.void })
        const error = yield* Effect.flip(task.send({ n: -1 }))
        expect(error._tag).toBe("PayloadError")
        if (error._tag === "PayloadError") {
          expect(error.taskName).toBe("positive")
          expect(error.issue).toContain("positive")
        }
        expect(yield* allTasks).toEqual([])
      }).pipe(Effect.provide(MemoryTaskStore.layer)))

    it.scoped("delay schedules the task and priority overrides the task's", () =>
      Effect.gen(function*() {
        const task = invoiceTask({ priority: 1 })
        const id = yield* task.send({ invoiceId: "inv_1", amount: 1 }, { delay: "1 minute", priority: 9 })
        const info = yield* taskInfo(id)
        expect(info.runAt.getTime() - info.createdAt.getTime()).toBe(60_000)
        expect(info.priority).toBe(9)
      }).pipe(Effect.provide(MemoryTaskStore.layer)))

    it.scoped("a second send with the same idempotency key returns the first id and enqueues nothing", () =>
      Effect.gen(function*() {
        const task = invoiceTask()
        const first = yield* task.send({ invoiceId: "inv_1", amount: 1 }, { idempotencyKey: "inv_1" })
        const again = yield* task.send({ invoiceId: "inv_1", amount: 2 }, { idempotencyKey: "inv_1" })
        const other = yield* task.send({ invoiceId: "inv_2", amount: 2 }, { idempotencyKey: "inv_2" })
        expect(again).toBe(first)
        expect(other).not.toBe(first)
        expect(yield* allTasks).toHaveLength(2)
        expect((yield* taskInfo(first)).payload).toEqual({ invoiceId: "inv_1", amount: "1" })
      }).pipe(Effect.provide(MemoryTaskStore.layer)))

    it.scoped("stores the backoff's retries: a schedule that ends early leaves fewer retries", () =>
      Effect.gen(function*() {
        const task = invoiceTask({
          maxRetries: 5,
          retryBackoff: Schedule.intersect(Schedule.spaced("1 second"), Schedule.recurs(2))
        })
        const id = yield* task.send({ invoiceId: "inv_1", amount: 1 })
        expect((yield* taskInfo(id)).maxRetries).toBe(2)
      }).pipe(Effect.provide(MemoryTaskStore.layer)))
  })

  describe("sendBatch", () => {
    it.scoped("enqueues every payload, in order", () =>
      Effect.gen(function*() {
        const task = invoiceTask()
        const ids = yield* task.sendBatch([
          { invoiceId: "a", amount: 1 },
          { invoiceId: "b", amount: 2 },
          { invoiceId: "c", amount: 3 }
        ])
        expect(ids).toHaveLength(3)
        expect(new Set(ids).size).toBe(3)
        const payloads = yield* Effect.forEach(ids, (id) => Effect.map(taskInfo(id), (info) => info.payload))
        expect(payloads).toEqual([
          { invoiceId: "a", amount: "1" },
          { invoiceId: "b", amount: "2" },
          { invoiceId: "c", amount: "3" }
        ])
        expect(yield* task.sendBatch([])).toEqual([])
        expect(yield* allTasks).toHaveLength(3)
      }).pipe(Effect.provide(MemoryTaskStore.layer)))

    it.scoped("is all or none: one invalid payload enqueues nothing", () =>
      Effect.gen(function*() {
        const task = Task.make("positive", { payload: PositiveN, handler: () => Effect.void })
        const error = yield* Effect.flip(task.sendBatch([{ n: 1 }, { n: 2 }, { n: 0 }]))
        expect(error._tag).toBe("PayloadError")
        expect(yield* allTasks).toEqual([])
      }).pipe(Effect.provide(MemoryTaskStore.layer)))

    it.scoped("derives an idempotency key per payload", () =>
      Effect.gen(function*() {
        const task = invoiceTask()
        const options = { idempotencyKey: (payload: typeof Invoice.Type) => `invoice:${payload.invoiceId}` }
        const first = yield* task.sendBatch([{ invoiceId: "a", amount: 1 }, { invoiceId: "b", amount: 1 }], options)
        const second = yield* task.sendBatch([{ invoiceId: "b", amount: 1 }, { invoiceId: "c", amount: 1 }], options)
        expect(second[0]).toBe(first[1])
        expect(second[1]).not.toBe(first[0])
        expect(yield* allTasks).toHaveLength(3)
        expect((yield* taskInfo(first[0]!)).idempotencyKey).toBe("invoice:a")
      }).pipe(Effect.provide(MemoryTaskStore.layer)))
  })

  describe("results and permanent failures", () => {
    it.effect("encodeResult keeps nothing without a result schema, and encodes with one", () =>
      Effect.gen(function*() {
        expect(yield* invoiceTask().encodeResult({ any: "thing" })).toBeUndefined()
        const withResult = Task.make("with_result", {
          payload: Invoice,
          result: Schema.Struct({ total: Schema.NumberFromString }),
          handler: () => Effect.succeed({ total: 3 })
        })
        expect(yield* withResult.encodeResult({ total: 3 })).toEqual({ total: "3" })
        expect((yield* Effect.flip(withResult.encodeResult({ total: "not a number" })))._tag).toBe("ParseError")
      }))

    it.effect("permanent and failPermanently wrap the cause in a PermanentError", () =>
      Effect.gen(function*() {
        const cause = new Error("no such invoice")
        const error = Task.permanent(cause)
        expect(error).toBeInstanceOf(PermanentError)
        expect(error.cause).toBe(cause)
        expect(error.message).toContain("no such invoice")
        const failed = yield* Effect.flip(Task.failPermanently("account closed"))
        expect(failed).toBeInstanceOf(PermanentError)
        expect(failed.cause).toBe("account closed")
      }))
  })
})
