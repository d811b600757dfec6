/**
 * docs/concepts.md, "Sending in your own transaction": with `PgTaskStore.layer`
 * on the application's own `SqlClient`, a `send` inside `sql.withTransaction`
 * commits or rolls back with the application's writes.
 */
import { describe, expect, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { Data, Effect, Layer, Option, Schema } from "effect"
import { PgTaskStore, Task, TaskStore } from "../../src/index.js"
import * as TestDatabase from "../utils/TestDatabase.js"

const sendReceipt = Task.make("send_receipt", {
  payload: Schema.Struct({ orderId: Schema.String }),
  handler: () => Effect.void
})

/** Rolls the order back after the task was sent. */
class Abort extends Data.TaggedError("Abort")<{ readonly taskId: string }> {}

// PGlite's socket multiplexer mixes up answers to concurrent connections: one there.
const kind = await Effect.runPromise(TestDatabase.kind)

/** The application's own SqlClient, and the store on it. */
const AppLive = PgTaskStore.layer().pipe(
  Layer.provideMerge(TestDatabase.layerWith({ maxConnections: kind === "embedded" ? 1 : 2 }))
)

describe("sending in your own transaction", () => {
  it.scopedLive("a send commits and rolls back with the transaction it runs in", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const store = yield* TaskStore.TaskStore
      yield* sql`CREATE TABLE orders (id text PRIMARY KEY)`

      const placeOrder = (orderId: string, fail: boolean) =>
        sql.withTransaction(Effect.gen(function*() {
          yield* sql`INSERT INTO orders (id) VALUES (${orderId})`
          const taskId = yield* sendReceipt.send({ orderId })
          if (fail) return yield* new Abort({ taskId })
          return taskId
        }))

      const committed = yield* placeOrder("o_1", false)
      const rolledBack = yield* placeOrder("o_2", true).pipe(Effect.catchTag("Abort", ({ taskId }) => Effect.succeed(taskId)))

      expect(Option.isSome(yield* store.getTask(committed))).toBe(true)
      expect(Option.isNone(yield* store.getTask(rolledBack))).toBe(true)
      expect(yield* sql<{ readonly id: string }>`SELECT id FROM orders ORDER BY id`).toEqual([{ id: "o_1" }])
    }).pipe(Effect.provide(AppLive)), 60_000)
})
