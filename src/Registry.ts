/**
 * The set of tasks a worker can run, by name.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import { DuplicateTaskName, PayloadError, type StoreError, UnknownTask } from "./Errors.js"
import type * as Task from "./Task.js"
import type { SendOptions } from "./Task.js"
import type { TaskStore } from "./TaskStore.js"

/** A registry of tasks. */
export interface Registry<in out Tasks extends Task.Any> {
  readonly tasks: ReadonlyMap<string, Tasks>
  /** Every queue some task of the registry runs on. */
  readonly queues: ReadonlyArray<string>
}

/** The services the handlers of a registry need. */
export type Requirements<Reg> = Reg extends Registry<infer Tasks> ? Task.Requirements<Tasks> : never

/**
 * Collects tasks into a registry. Throws `DuplicateTaskName` when two tasks
 * share a name.
 *
 * @example
 * ```ts
 * export const registry = Registry.make(processInvoice, parseDocument)
 * ```
 */
export const make = <const Tasks extends ReadonlyArray<Task.Any>>(...tasks: Tasks): Registry<Tasks[number]> => {
  const byName = new Map<string, Tasks[number]>()
  for (const task of tasks) {
    if (byName.has(task.name)) throw new DuplicateTaskName({ name: task.name })
    byName.set(task.name, task)
  }
  return {
    tasks: byName,
    queues: Array.from(new Set(tasks.map((task) => task.queue))).sort()
  }
}

/** The task with this name, if registered. */
export const get = <Tasks extends Task.Any>(registry: Registry<Tasks>, name: string): Option.Option<Tasks> =>
  Option.fromNullable(registry.tasks.get(name))

/**
 * Sends a task by name with an untyped payload (from a CLI, an HTTP body …):
 * unknown names fail with `UnknownTask`, payloads are decoded with the task's
 * Schema and fail with `PayloadError`.
 */
export const send = <Tasks extends Task.Any>(
  registry: Registry<Tasks>,
  name: string,
  payload: unknown,
  options?: SendOptions
): Effect.Effect<string, UnknownTask | PayloadError | StoreError, TaskStore> =>
  Option.match(get(registry, name), {
    onNone: () => Effect.fail(new UnknownTask({ name, known: Array.from(registry.tasks.keys()) })),
    onSome: (task) =>
      task.decodePayload(payload).pipe(
        Effect.mapError((error) =>
          new PayloadError({ taskName: name, issue: ParseResult.TreeFormatter.formatErrorSync(error) })
        ),
        Effect.flatMap((decoded) => task.send(decoded, options))
      )
  })
