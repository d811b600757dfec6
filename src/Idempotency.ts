/**
 * Idempotency for side effects inside handlers: once an effect's success is
 * recorded for a key, `once` never runs it again for that key, across
 * retries and fail-overs, and returns the stored result instead. An attempt
 * that dies between the effect's success and the record runs it again: pass
 * `TaskContext.idempotencyKey(step)` to the external system for those.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import { DecodeError, type StoreError } from "./Errors.js"
import { TaskContext } from "./TaskContext.js"
import { TaskStore } from "./TaskStore.js"

/** Options of `once`. */
export interface OnceOptions<A, I> {
  /** Encodes the result for storage and decodes it on later calls. */
  readonly schema: Schema.Schema<A, I, never>
}

/**
 * Runs `effect` unless a result for `key` is already stored. With a `schema`
 * the result is stored and returned on every later call; without one, only
 * the fact that the effect succeeded is stored and `once` returns `void`.
 *
 * Keys are global to the store: choose them so that the same side effect
 * always gets the same key (`charge:${invoiceId}`). The first result stored
 * wins, so two racing attempts (bounded duplication during a fail-over) agree
 * on one result afterwards.
 *
 * @example
 * ```ts
 * const charge = yield* Idempotency.once(`charge:${invoiceId}`, chargeCustomer(invoiceId), {
 *   schema: Schema.Struct({ chargeId: Schema.String })
 * })
 * ```
 */
export const once: {
  <A, I, E, R>(
    key: string,
    effect: Effect.Effect<A, E, R>,
    options: OnceOptions<A, I>
  ): Effect.Effect<A, E | StoreError | DecodeError, R | TaskStore>
  <A, E, R>(key: string, effect: Effect.Effect<A, E, R>): Effect.Effect<void, E | StoreError, R | TaskStore>
} = <A, I, E, R>(
  key: string,
  effect: Effect.Effect<A, E, R>,
  options?: OnceOptions<A, I>
): Effect.Effect<A | void, E | StoreError | DecodeError, R | TaskStore> =>
  Effect.gen(function*() {
    const store = yield* TaskStore
    const decode = (stored: unknown) =>
      options === undefined
        ? Effect.void
        : Schema.decodeUnknown(options.schema)(stored).pipe(
          Effect.mapError((error) =>
            new DecodeError({
              what: `idempotent result of "${key}"`,
              issue: ParseResult.TreeFormatter.formatErrorSync(error)
            })
          )
        )
    const existing = yield* store.getIdempotent(key)
    if (Option.isSome(existing)) return yield* decode(existing.value)
    const result = yield* effect
    const encoded = options === undefined
      ? null
      : yield* Schema.encode(options.schema)(result).pipe(
        Effect.mapError((error) =>
          new DecodeError({
            what: `result of "${key}" (it does not encode with its schema)`,
            issue: ParseResult.TreeFormatter.formatErrorSync(error)
          })
        )
      )
    const taskId = Option.map(yield* Effect.serviceOption(TaskContext), (ctx) => ctx.taskId)
    const stored = yield* store.putIdempotent(key, encoded, Option.getOrUndefined(taskId))
    return yield* decode(stored)
  })
