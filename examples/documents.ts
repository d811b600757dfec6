/**
 * Documents: parse uploaded documents; the worker module of `hyrex demo`.
 *
 *   hyrex worker examples/documents.ts    # runs parse_document and process_invoice
 *   hyrex worker examples/documents.ts --queues documents
 *
 * Parsing takes 100–300 ms and yields a page count, stored as the task's
 * result. The registry also holds the invoice task (examples/invoice.ts), so
 * one worker process serves both queues.
 */
import { Effect, Random, Schema } from "effect"
import { Backoff, Registry, Task } from "../src/index.js"
import { recorded } from "./executions.js"
import { processInvoice } from "./invoice.js"

export const parseDocument = Task.make("parse_document", {
  payload: Schema.Struct({ uri: Schema.String }),
  result: Schema.Struct({ pages: Schema.Int }),
  queue: "documents",
  retryBackoff: Backoff.exponential({ base: "500 millis", max: "5 seconds" }),
  timeout: "1 minute",
  handler: ({ uri }) =>
    recorded(Effect.gen(function*() {
      const millis = yield* Random.nextIntBetween(100, 301)
      yield* Effect.sleep(millis)
      return { pages: 1 + (uri.length + millis) % 40 }
    }))
})

export const registry = Registry.make(parseDocument, processInvoice)
