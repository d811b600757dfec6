/**
 * The quick start: two tasks, a producer and a worker in one process.
 *
 *   npm run example                      # in-memory store
 *   DATABASE_URL=postgres://… npm run example   # Postgres
 *
 * One invoice fails on its first attempt and is retried with backoff; the
 * charge inside it runs once thanks to `Idempotency.once`.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Duration, Effect, Option, Schedule, Schema } from "effect"
import { Backoff, Idempotency, MemoryTaskStore, PgTaskStore, Registry, Task, TaskContext, TaskStore, Worker } from "../src/index.js"

const charges = new Map<string, number>()

export const processInvoice = Task.make("process_invoice", {
  payload: Schema.Struct({ invoiceId: Schema.String }),
  queue: "invoices",
  maxRetries: 5,
  retryBackoff: Backoff.exponential({ base: "200 millis", jitter: 0 }),
  timeout: "30 seconds",
  handler: ({ invoiceId }) =>
    Effect.gen(function*() {
      const ctx = yield* TaskContext.TaskContext
      yield* Idempotency.once(`charge:${invoiceId}`, Effect.sync(() => charges.set(invoiceId, (charges.get(invoiceId) ?? 0) + 1)))
      if (invoiceId.startsWith("inv_2") && ctx.attempt === 1) {
        return yield* Effect.fail(new Error("payment provider timed out"))
      }
      yield* Effect.logInfo(`invoice ${invoiceId} paid on attempt ${ctx.attempt}`)
    })
})

export const parseDocument = Task.make("parse_document", {
  payload: Schema.Struct({ uri: Schema.String }),
  queue: "documents",
  maxConcurrency: 1,
  handler: ({ uri }) => Effect.logInfo(`parsed ${uri}`).pipe(Effect.delay(Duration.millis(50)))
})

export const registry = Registry.make(processInvoice, parseDocument)

const StoreLive = Option.match(Option.fromNullable(process.env.DATABASE_URL), {
  onNone: () => MemoryTaskStore.layer,
  onSome: (url) => PgTaskStore.layerFromUrl(url, { schema: "hyrex_quickstart" })
})

const main = Effect.gen(function*() {
  yield* Effect.logInfo(process.env.DATABASE_URL ? "using Postgres (DATABASE_URL)" : "using the in-memory store")
  const store = yield* TaskStore.TaskStore
  yield* Worker.start(registry, { concurrency: 4, pollInterval: "200 millis" })
  // Idempotency keys outlive a run in Postgres, so each run bills new invoices.
  const run = Date.now().toString(36)
  const invoices = yield* processInvoice.sendBatch(["inv_1", "inv_2", "inv_3"].map((id) => ({ invoiceId: `${id}-${run}` })))
  const documents = yield* parseDocument.sendBatch([{ uri: "s3://docs/a.pdf" }, { uri: "s3://docs/b.pdf" }])
  const ids = [...invoices, ...documents]
  // Wait until every task has ended.
  const tasks = yield* Effect.forEach(ids, (id) => Effect.map(store.getTask(id), Option.getOrThrow)).pipe(
    Effect.filterOrFail((all) => all.every((task) => task.status !== "queued" && task.status !== "running")),
    Effect.retry(Schedule.spaced("100 millis"))
  )
  for (const task of tasks) {
    console.log(`${task.name} ${task.id}: ${task.status} after ${task.attempt} attempt(s)`)
  }
  console.log(`charges: ${JSON.stringify(Object.fromEntries(charges))}`)
}).pipe(Effect.scoped)

NodeRuntime.runMain(main.pipe(Effect.provide(StoreLive)))
