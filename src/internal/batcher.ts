/**
 * Gathers calls made by many fibers at about the same time into one batch:
 * each caller waits for its own answer, the batch runs as one round trip.
 * A runner starts a batch as soon as its previous one is done, so a lone call
 * is never delayed, and under load the batches grow by themselves.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"

interface Pending<I, A, E> {
  readonly item: I
  readonly answer: Deferred.Deferred<A, E>
}

/**
 * `run` receives the items of one batch and answers each with an `Exit`, in
 * order. A failure of the whole batch fails every caller in it.
 */
export const make = <I, A, E>(
  run: (items: ReadonlyArray<I>) => Effect.Effect<ReadonlyArray<Exit.Exit<A, E>>, E>,
  options: {
    readonly maxBatch: number
    /** Batches in flight at once: more overlap round trips, fewer make bigger batches. */
    readonly concurrency: number
  }
): Effect.Effect<(item: I) => Effect.Effect<A, E>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const queue = yield* Effect.acquireRelease(Queue.unbounded<Pending<I, A, E>>(), Queue.shutdown)
    const runner = Queue.takeBetween(queue, 1, options.maxBatch).pipe(
      Effect.flatMap((chunk) => {
        const batch = Array.from(chunk)
        return run(batch.map((pending) => pending.item)).pipe(
          Effect.exit,
          Effect.flatMap((exit) =>
            Effect.forEach(batch, (pending, index) =>
              Deferred.done(
                pending.answer,
                Exit.isSuccess(exit)
                  ? exit.value[index] ?? Exit.die(new Error("batch gave no answer"))
                  : Exit.failCause(exit.cause)
              ), { discard: true })
          )
        )
      }),
      Effect.forever
    )
    yield* Effect.forkScoped(Effect.all(Array.from({ length: options.concurrency }, () => runner), { concurrency: "unbounded" }))
    return (item: I) =>
      Effect.flatMap(Deferred.make<A, E>(), (answer) =>
        Effect.zipRight(Queue.offer(queue, { item, answer }), Deferred.await(answer)))
  })
