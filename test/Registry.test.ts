import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { DuplicateTaskName } from "../src/Errors.js"
import * as MemoryTaskStore from "../src/MemoryTaskStore.js"
import * as Registry from "../src/Registry.js"
import * as Task from "../src/Task.js"
import { TaskStore } from "../src/TaskStore.js"

const charge = Task.make("charge", {
  payload: Schema.Struct({ invoiceId: Schema.String, amount: Schema.NumberFromString }),
  queue: "billing",
  handler: () => Effect.void
})
const parse = Task.make("parse", { payload: Schema.Struct({ uri: Schema.String }), queue: "documents", handler: () => Effect.void })
const index = Task.make("index", { payload: Schema.Struct({ uri: Schema.String }), queue: "documents", handler: () => Effect.void })

const allTasks = Effect.flatMap(TaskStore, (store) => store.listTasks({}))

describe("Registry", () => {
  it("collects tasks by name, with the sorted set of their queues", () => {
    const registry = Registry.make(parse, charge, index)
    expect(Array.from(registry.tasks.keys()).sort()).toEqual(["charge", "index", "parse"])
    expect(registry.queues).toEqual(["billing", "documents"])
    expect(Registry.get(registry, "charge")).toEqual(Option.some(charge))
    expect(Registry.get(registry, "nope")).toEqual(Option.none())
  })

  it("two tasks with one name throw DuplicateTaskName", () => {
    const twin = Task.make("charge", { payload: Schema.Struct({}), handler: () => Effect.void })
    let thrown: unknown
    try {
      Registry.make(charge, parse, twin)
    } catch (error) {
      thrown = error
    }
    expect(thrown).toBeInstanceOf(DuplicateTaskName)
    expect(thrown).toMatchObject({ name: "charge" })
  })

  it.scoped("send by name decodes the payload and enqueues the task", () =>
    Effect.gen(function*() {
      const registry = Registry.make(charge, parse)
      const id = yield* Registry.send(registry, "charge", { invoiceId: "inv_1", amount: "12" }, { idempotencyKey: "inv_1" })
      const again = yield* Registry.send(registry, "charge", { invoiceId: "inv_1", amount: "12" }, { idempotencyKey: "inv_1" })
      expect(again).toBe(id)
      const tasks = yield* allTasks
      expect(tasks).toHaveLength(1)
      expect(tasks[0]).toMatchObject({ id, name: "charge", queue: "billing", payload: { invoiceId: "inv_1", amount: "12" } })
    }).pipe(Effect.provide(MemoryTaskStore.layer)))

  it.scoped("send with an unknown name fails with UnknownTask and enqueues nothing", () =>
    Effect.gen(function*() {
      const registry = Registry.make(charge, parse)
      const error = yield* Effect.flip(Registry.send(registry, "refund", {}))
      expect(error).toMatchObject({ _tag: "UnknownTask", name: "refund" })
      if (error._tag === "UnknownTask") expect([...error.known].sort()).toEqual(["charge", "parse"])
      expect(yield* allTasks).toEqual([])
    }).pipe(Effect.provide(MemoryTaskStore.layer)))

  it.scoped("send with a payload that does not decode fails with PayloadError and enqueues nothing", () =>
    Effect.gen(function*() {
      const registry = Registry.make(charge)
      for (const payload of [{ invoiceId: "inv_1", amount: "twelve" }, { invoiceId: 1, amount: "1" }, null, "inv_1"]) {
        const error = yield* Effect.flip(Registry.send(registry, "charge", payload))
        expect(error).toMatchObject({ _tag: "PayloadError", taskName: "charge" })
      }
      expect(yield* allTasks).toEqual([])
    }).pipe(Effect.provide(MemoryTaskStore.layer)))
})
