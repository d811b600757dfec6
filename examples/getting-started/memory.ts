/**
 * Getting started without a database: producer and worker in one process on
 * the in-memory store (tasks are gone when the process exits).
 *
 *   npx tsx examples/getting-started/memory.ts
 */
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Option, Schedule } from "effect"
import { MemoryTaskStore, TaskStore, Worker } from "../../src/index.js"
import { registry, sendWelcomeEmail } from "./tasks.js"

const program = Effect.gen(function*() {
  yield* Worker.start(registry) // runs until the scope closes, then drains
  const id = yield* sendWelcomeEmail.send({ userId: "u_1", email: "ada@example.com" })
  const store = yield* TaskStore.TaskStore
  const task = yield* store.getTask(id).pipe(
    Effect.map(Option.getOrThrow),
    Effect.filterOrFail((task) => task.status === "succeeded"),
    Effect.retry(Schedule.spaced("100 millis"))
  )
  console.log(`task ${task.id}: ${task.status} after ${task.attempt} attempt(s)`)
})

program.pipe(Effect.scoped, Effect.provide(MemoryTaskStore.layer), NodeRuntime.runMain)
