/**
 * Invoices: charge each invoice exactly once, retry a flaky payment provider.
 *
 *   hyrex worker examples/invoice.ts      # runs process_invoice on queue "invoices"
 *
 * The handler talks to a (simulated) payment provider for 100–300 ms.
 * Invoices whose id ends in 0 hit a provider timeout on their first attempt
 * and succeed on the retry, after a short backoff. The charge runs inside
 * `Idempotency.once`, so a retry or a fail-over never charges twice, and the
 * provider is given `ctx.idempotencyKey("charge")`, the same on every
 * attempt of the task.
 */
import { Data, Effect, Random, Schema } from "effect"
import { Backoff, Idempotency, Registry, Task, TaskContext } from "../src/index.js"
import { recorded } from "./executions.js"

/** The provider did not answer in time. */
export class ProviderTimeout extends Data.TaggedError("ProviderTimeout")<{ readonly invoiceId: string }> {
  override get message() {
    return `payment provider timed out charging invoice ${this.invoiceId}`
  }
}

/** What a charge returns, stored as the task's result. */
export const Charge = Schema.Struct({ chargeId: Schema.String, amountCents: Schema.Int })

const talkToProvider = Effect.flatMap(Random.nextIntBetween(100, 301), (millis) => Effect.sleep(millis))

export const processInvoice = Task.make("process_invoice", {
  payload: Schema.Struct({ invoiceId: Schema.String, amountCents: Schema.Int }),
  result: Charge,
  queue: "invoices",
  maxRetries: 5,
  retryBackoff: Backoff.exponential({ base: "500 millis", max: "5 seconds" }),
  timeout: "30 seconds",
  handler: ({ amountCents, invoiceId }) =>
    recorded(Effect.gen(function*() {
      const ctx = yield* TaskContext.TaskContext
      yield* talkToProvider
      if (invoiceId.endsWith("0") && ctx.attempt === 1) return yield* new ProviderTimeout({ invoiceId })
      return yield* Idempotency.once(
        `charge:${invoiceId}`,
        Effect.succeed({ chargeId: ctx.idempotencyKey("charge"), amountCents }),
        { schema: Charge }
      )
    }))
})

export const registry = Registry.make(processInvoice)
