/**
 * Getting started, step 2: a producer. It needs only the store.
 *
 *   DATABASE_URL=postgres://… npx tsx examples/getting-started/send.ts
 */
import { NodeRuntime } from "@effect/platform-node"
import { Effect } from "effect"
import { PgTaskStore } from "../../src/index.js"
import { sendWelcomeEmail } from "./tasks.js"

const program = Effect.gen(function*() {
  const id = yield* sendWelcomeEmail.send(
    { userId: "u_1", email: "ada@example.com" },
    { idempotencyKey: "welcome:u_1" } // sending again returns the same task
  )
  yield* Effect.logInfo(`enqueued task ${id}`)
})

program.pipe(Effect.provide(PgTaskStore.layerConfig), NodeRuntime.runMain)
