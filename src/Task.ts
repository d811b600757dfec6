/**
 * A task definition: a name, a payload Schema, a handler Effect and the
 * policies that govern its execution (queue, retries, backoff, timeout,
 * priority, fleet-wide concurrency).
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as Backoff from "./Backoff.js"
import { ConfigurationError, PayloadError, PermanentError, type StoreError } from "./Errors.js"
import * as TraceParent from "./internal/traceParent.js"
import { type EnqueueRequest, TaskStore } from "./TaskStore.js"

/** @internal */
export const TypeId: unique symbol = Symbol.for("hyrex/Task")

/** Options of `Task.make`. */
export interface TaskOptions<A, I, Out, OutI, E, R> {
  /** Validates the payload on `send` and decodes it for the handler. */
  readonly payload: Schema.Schema<A, I, never>
  /** The work. Fail with `Task.permanent(cause)` to skip the remaining retries. */
  readonly handler: (payload: A) => Effect.Effect<Out, E, R>
  /** Encodes the handler's result for storage; without it no result is kept. */
  readonly result?: Schema.Schema<Out, OutI, never> | undefined
  /** Queue name. Default `"default"`. */
  readonly queue?: string | undefined
  /** Retries after the first attempt. Default 3. */
  readonly maxRetries?: number | undefined
  /** Delay before each retry. Default `Backoff.exponential()`. */
  readonly retryBackoff?: Backoff.BackoffInput | undefined
  /** Bound of one attempt; an attempt that runs longer fails with `TaskTimeout`. */
  readonly timeout?: Duration.DurationInput | undefined
  /** Higher runs first. Default 0. */
  readonly priority?: number | undefined
  /** At most this many attempts run at once across every worker sharing the store. */
  readonly maxConcurrency?: number | undefined
}

/** Options of one `send`. */
export interface SendOptions {
  /** A second send with the same key (for this task name) returns the first task's id and enqueues nothing. */
  readonly idempotencyKey?: string | undefined
  /** Run no earlier than this long from now. */
  readonly delay?: Duration.DurationInput | undefined
  /** Overrides the task's priority for this send. */
  readonly priority?: number | undefined
}

/** Options of `sendBatch`. */
export interface SendBatchOptions<A> {
  readonly idempotencyKey?: ((payload: A, index: number) => string) | undefined
  readonly delay?: Duration.DurationInput | undefined
  readonly priority?: number | undefined
}

/**
 * A task definition.
 *
 * @example
 * ```ts
 * const processInvoice = Task.make("process_invoice", {
 *   payload: Schema.Struct({ invoiceId: Schema.String }),
 *   maxRetries: 5,
 *   handler: ({ invoiceId }) => charge(invoiceId)
 * })
 * const id = yield* processInvoice.send({ invoiceId: "inv_1" })
 * ```
 */
export interface Task<out Name extends string, in out A, out E, out R> {
  readonly [TypeId]: typeof TypeId
  readonly name: Name
  readonly queue: string
  readonly priority: number
  readonly maxRetries: number
  readonly backoff: Backoff.Backoff
  readonly timeout: Duration.Duration | undefined
  readonly maxConcurrency: number | undefined
  /** Validates and encodes a payload for storage. */
  readonly encodePayload: (payload: A) => Effect.Effect<unknown, ParseResult.ParseError>
  /** Decodes a stored payload for the handler. */
  readonly decodePayload: (stored: unknown) => Effect.Effect<A, ParseResult.ParseError>
  readonly handler: (payload: A) => Effect.Effect<unknown, E, R>
  /** Encodes a handler's result for storage (`undefined` when the task keeps no result). */
  readonly encodeResult: (result: unknown) => Effect.Effect<unknown, ParseResult.ParseError>
  /** Enqueues one task; fails with `PayloadError` (nothing enqueued) when the payload does not match. */
  readonly send: (payload: A, options?: SendOptions) => Effect.Effect<string, PayloadError | StoreError, TaskStore>
  /** Enqueues many tasks in one store call; all or none. */
  readonly sendBatch: (
    payloads: Iterable<A>,
    options?: SendBatchOptions<A>
  ) => Effect.Effect<ReadonlyArray<string>, PayloadError | StoreError, TaskStore>
}

/** Any task. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Any = Task<string, any, any, any>

/** The services a task's handler needs. */
export type Requirements<T> = T extends Task<string, infer _A, infer _E, infer R> ? R : never

/** The errors a task's handler can fail with. */
export type Errors<T> = T extends Task<string, infer _A, infer E, infer _R> ? E : never

/** The payload a task accepts. */
export type Payload<T> = T extends Task<string, infer A, infer _E, infer _R> ? A : never

/** Defaults of a task's options. */
export const defaults = {
  queue: "default",
  maxRetries: 3,
  priority: 0
} as const

const check = (ok: boolean, option: string, issue: string) => {
  if (!ok) throw new ConfigurationError({ option, issue })
}

/**
 * Defines a task. Throws `ConfigurationError` for an option out of range, so a
 * bad definition fails when the module loads, not when a task runs.
 */
export const make = <const Name extends string, A, I, Out, OutI, E = never, R = never>(
  name: Name,
  options: TaskOptions<A, I, Out, OutI, E, R>
): Task<Name, A, E, R> => {
  const queue = options.queue ?? defaults.queue
  const maxRetries = options.maxRetries ?? defaults.maxRetries
  const priority = options.priority ?? defaults.priority
  const timeout = options.timeout === undefined ? undefined : Duration.decode(options.timeout)
  check(name.trim().length > 0, "name", "a task needs a non-empty name")
  check(queue.trim().length > 0, `${name}.queue`, "a queue needs a non-empty name")
  check(Number.isInteger(maxRetries) && maxRetries >= 0 && maxRetries <= 1000, `${name}.maxRetries`, "must be an integer from 0 to 1000")
  check(Number.isInteger(priority), `${name}.priority`, "must be an integer")
  check(timeout === undefined || Duration.greaterThan(timeout, Duration.zero), `${name}.timeout`, "must be positive")
  check(
    options.maxConcurrency === undefined || (Number.isInteger(options.maxConcurrency) && options.maxConcurrency > 0),
    `${name}.maxConcurrency`,
    "must be a positive integer"
  )
  const backoff = Backoff.from(options.retryBackoff ?? Backoff.defaultPolicy)
  // Synchronous (an Either is an Effect): a send of thousands must not cost an Effect per payload.
  const encodePayload = Schema.encodeEither(options.payload)
  const decodePayload = Schema.decodeUnknown(options.payload)
  const resultSchema = options.result
  const encodeResult = resultSchema === undefined
    ? () => Effect.succeed(undefined)
    : (result: unknown) => Effect.flatMap(Schema.validate(resultSchema)(result), Schema.encode(resultSchema))

  const sendBatch = (payloads: Iterable<A>, batch: SendBatchOptions<A> = {}) =>
    Effect.gen(function*() {
      const store = yield* TaskStore
      const traceParent = yield* TraceParent.current
      const delayMillis = batch.delay === undefined ? 0 : Math.max(0, Duration.toMillis(batch.delay))
      const all = Array.from(payloads)
      // The first invalid payload fails the send; nothing is enqueued.
      const encoded: Array<unknown> = []
      for (const payload of all) {
        const result = encodePayload(payload)
        if (Either.isLeft(result)) {
          return yield* new PayloadError({ taskName: name, issue: ParseResult.TreeFormatter.formatErrorSync(result.left) })
        }
        encoded.push(result.right)
      }
      const backoffs = yield* backoff.delaysOf(all.length, maxRetries)
      const requests = all.map((payload, index): EnqueueRequest => ({
        name,
        queue,
        payload: encoded[index],
        priority: batch.priority ?? priority,
        maxRetries: backoffs[index]!.length,
        backoff: backoffs[index]!,
        delayMillis,
        idempotencyKey: batch.idempotencyKey?.(payload, index),
        traceParent
      }))
      return requests.length === 0 ? [] : yield* store.enqueue(requests)
    }).pipe(Effect.withSpan("hyrex.send", { captureStackTrace: false, attributes: { "hyrex.task": name, "hyrex.queue": queue } }))

  return {
    [TypeId]: TypeId,
    name,
    queue,
    priority,
    maxRetries,
    backoff,
    timeout,
    maxConcurrency: options.maxConcurrency,
    encodePayload,
    decodePayload,
    handler: options.handler,
    encodeResult,
    sendBatch,
    send: (payload, send = {}) =>
      Effect.map(
        sendBatch([payload], {
          delay: send.delay,
          priority: send.priority,
          idempotencyKey: send.idempotencyKey === undefined ? undefined : () => send.idempotencyKey!
        }),
        (ids) => ids[0]!
      )
  }
}

/** Wraps a cause as a permanent failure: the task ends `failed` without further retries. */
export const permanent = (cause: unknown): PermanentError => new PermanentError({ cause })

/** Fails the handler permanently. */
export const failPermanently = (cause: unknown): Effect.Effect<never, PermanentError> => Effect.fail(permanent(cause))

/** Whether a value is a task definition. */
export const isTask = (u: unknown): u is Any => typeof u === "object" && u !== null && TypeId in u
