/**
 * The code blocks of docs/concepts.md, typechecked with the rest of the
 * repository (`npm run typecheck`). In your project, import from "hyrex".
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Context, Data, Duration, Effect, Schedule, Schema } from "effect"
import { Backoff, Idempotency, Registry, Task, TaskContext, Worker } from "../../src/index.js"

class NotFound extends Data.TaggedError("NotFound")<{ readonly invoiceId: string }> {}
class Billing extends Context.Tag("example/Billing")<Billing, {
  readonly load: (invoiceId: string) => Effect.Effect<{ readonly amountCents: number }, NotFound>
  readonly charge: (invoiceId: string, idempotencyKey: string) => Effect.Effect<{ readonly chargeId: string }>
  readonly markPaid: (invoiceId: string, chargeId: string) => Effect.Effect<void>
}>() {}

// --- Tasks -------------------------------------------------------------------

export const processInvoice = Task.make("process_invoice", {
  payload: Schema.Struct({ invoiceId: Schema.String }),
  result: Schema.Struct({ chargeId: Schema.String }), // stored as the task's result
  queue: "invoices", // default "default"
  maxRetries: 5, // retries after the first attempt; default 3
  retryBackoff: Backoff.exponential({ base: "2 seconds", max: "5 minutes" }), // default Backoff.exponential()
  timeout: "5 minutes", // per attempt; default none
  priority: 0, // higher first; default 0
  handler: ({ invoiceId }) =>
    Effect.gen(function*() {
      const billing = yield* Billing
      const ctx = yield* TaskContext.TaskContext
      // An invoice that does not exist will not appear on a retry: stop now.
      yield* billing.load(invoiceId).pipe(Effect.catchTag("NotFound", (error) => Task.failPermanently(error)))
      const { chargeId } = yield* Idempotency.once(
        `charge:${invoiceId}`,
        billing.charge(invoiceId, ctx.idempotencyKey("charge")),
        { schema: Schema.Struct({ chargeId: Schema.String }) }
      )
      yield* billing.markPaid(invoiceId, chargeId)
      return { chargeId }
    })
})

export const parseDocument = Task.make("parse_document", {
  payload: Schema.Struct({ uri: Schema.String }),
  queue: "documents",
  maxConcurrency: 1, // at most one attempt at a time across every worker
  handler: ({ uri }) => Effect.logInfo(`parsing ${uri}`)
})

export const registry = Registry.make(processInvoice, parseDocument)

// --- Backoff -------------------------------------------------------------------

export const backoffs = [
  Backoff.exponential({ base: "500 millis", factor: 3, max: "1 minute", jitter: 0 }),
  Backoff.fixed("30 seconds"),
  Backoff.none,
  (attempt: number) => Duration.seconds(2 ** attempt),
  // A schedule that ends stops the retries: at most 2 here, whatever maxRetries says.
  Schedule.exponential("1 second").pipe(Schedule.compose(Schedule.recurs(2)))
] satisfies ReadonlyArray<Backoff.BackoffInput>

// --- Sending -------------------------------------------------------------------

export const sending = Effect.gen(function*() {
  const id = yield* processInvoice.send({ invoiceId: "inv_1" }, {
    idempotencyKey: "inv_1", // a second send with this key returns the first task's id
    delay: "10 minutes", // due 10 minutes from now (database clock)
    priority: 5 // overrides the task's priority for this send
  })
  const ids = yield* parseDocument.sendBatch(
    [{ uri: "s3://docs/a.pdf" }, { uri: "s3://docs/b.pdf" }],
    { idempotencyKey: (payload) => payload.uri } // one statement, all or nothing
  )
  // By name, with an untyped payload (from an HTTP body, a CLI …):
  const other = yield* Registry.send(registry, "parse_document", { uri: "s3://docs/c.pdf" })
  return [id, ...ids, other]
})

// In your own transaction: with PgTaskStore.layer() on your SqlClient, the task
// is committed (or rolled back) with the order.
export const placeOrder = (orderId: string, invoiceId: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql.withTransaction(Effect.gen(function*() {
      yield* sql`INSERT INTO orders (id, invoice_id) VALUES (${orderId}, ${invoiceId})`
      return yield* processInvoice.send({ invoiceId }, { idempotencyKey: invoiceId })
    })))

// --- Workers -------------------------------------------------------------------

export const documentsOnly = Worker.run(registry, { queues: ["documents"], concurrency: 4 })
