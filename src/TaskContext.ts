/**
 * What a running handler knows about its attempt.
 *
 * @example
 * ```ts
 * const handler = (payload: Invoice) =>
 *   Effect.gen(function* () {
 *     const ctx = yield* TaskContext.TaskContext
 *     yield* chargeCustomer(payload, { idempotencyKey: ctx.idempotencyKey("charge") })
 *   })
 * ```
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"

/** The attempt a handler is running. */
export interface TaskContextShape {
  readonly taskId: string
  readonly name: string
  readonly queue: string
  /** 1-based; a retry or a takeover runs attempt 2, 3, … */
  readonly attempt: number
  readonly maxRetries: number
  /** The id of the worker running this attempt. */
  readonly workerId: string
  /** How many earlier attempts of this task lost their lease. */
  readonly leaseLosses: number
  /**
   * A key for an external API's idempotency header: the same for every attempt
   * of this task (retries and fail-overs), different per `step`.
   */
  readonly idempotencyKey: (step: string) => string
}

/** The service a handler reads its attempt from. */
export class TaskContext extends Context.Tag("hyrex/TaskContext")<TaskContext, TaskContextShape>() {}

const keysFor = (name: string, taskId: string) => (step: string) => `hyrex:${name}:${taskId}:${step}`

/** Builds the context of one attempt (once per attempt: kept to one object and one closure). */
export const make = (fields: Omit<TaskContextShape, "idempotencyKey">): TaskContextShape => ({
  taskId: fields.taskId,
  name: fields.name,
  queue: fields.queue,
  attempt: fields.attempt,
  maxRetries: fields.maxRetries,
  workerId: fields.workerId,
  leaseLosses: fields.leaseLosses,
  idempotencyKey: keysFor(fields.name, fields.taskId)
})
