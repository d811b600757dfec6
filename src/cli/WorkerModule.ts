/**
 * Loading the module a worker runs: a JavaScript or TypeScript file that
 * exports a registry (`export const registry = Registry.make(...)`, or as
 * its default export), and optionally a `layer` providing what its handlers
 * need.
 *
 * @since 0.1.0
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { existsSync } from "node:fs"
import { resolve } from "node:path"
import { pathToFileURL } from "node:url"
import type * as Registry from "../Registry.js"
import * as Task from "../Task.js"
import type { TaskStore } from "../TaskStore.js"
import { CliError, rootMessage } from "./CliError.js"

/** What a worker module provides. */
export interface WorkerModule {
  readonly path: string
  readonly registry: Registry.Registry<Task.Any>
  /**
   * The module's `layer` export: services its handlers need. It may itself
   * use the worker's `TaskStore` and `SqlClient`; anything else it needs is
   * missing at run time (only its shape is checked).
   */
  readonly layer: Layer.Layer<unknown, unknown, TaskStore | SqlClient.SqlClient> | undefined
}

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null

/** Whether a value is a registry made with `Registry.make` (checked by shape: it may come from another copy of hyrex). */
export const isRegistry = (u: unknown): u is Registry.Registry<Task.Any> =>
  isRecord(u) &&
  u["tasks"] instanceof Map &&
  Array.isArray(u["queues"]) &&
  Array.from(u["tasks"].values()).every(Task.isTask)

/** Imports `path` (relative to the working directory) and finds its registry. */
export const load = (path: string): Effect.Effect<WorkerModule, CliError> =>
  Effect.gen(function*() {
    const file = resolve(path)
    if (!existsSync(file)) return yield* new CliError({ message: `module not found: ${path}` })
    const module: unknown = yield* Effect.tryPromise({
      try: () => import(pathToFileURL(file).href),
      catch: (cause) => new CliError({ message: `cannot load ${path}: ${rootMessage(cause)}` })
    })
    if (!isRecord(module)) return yield* new CliError({ message: `cannot load ${path}: it is not a module` })
    if (module["registry"] !== undefined && !isRegistry(module["registry"])) {
      return yield* new CliError({ message: `the \`registry\` export of ${path} is not a registry made with Registry.make` })
    }
    const registry = [module["registry"], module["default"]].find(isRegistry)
    if (registry === undefined) {
      const tasks = Object.entries(module).filter(([, value]) => Task.isTask(value)).map(([name]) => name)
      return yield* new CliError({
        message: `${path} exports no registry: add \`export const registry = Registry.make(...)\` (or a default export)${
          tasks.length > 0 ? `; it exports the tasks ${tasks.join(", ")}` : ""
        }`
      })
    }
    if (registry.tasks.size === 0) return yield* new CliError({ message: `the registry of ${path} has no tasks` })
    const layer = module["layer"]
    if (layer !== undefined && !Layer.isLayer(layer)) {
      return yield* new CliError({ message: `${path} exports \`layer\`, but it is not an Effect Layer` })
    }
    return {
      path,
      registry,
      layer: layer === undefined ? undefined : (layer as Layer.Layer<unknown, unknown, TaskStore | SqlClient.SqlClient>)
    }
  })
