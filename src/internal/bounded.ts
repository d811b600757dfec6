/**
 * A store call with a deadline that holds anywhere, even in a finalizer or
 * an uninterruptible region, where a plain `Effect.timeout` would wait for
 * the call it gave up on: the call runs interruptibly in a fiber of its own,
 * and is disconnected, because interrupting a query on a dead link can take
 * as long as the link stays dead.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import { StoreError } from "../Errors.js"

export const bounded = (operation: string, duration: Duration.Duration) =>
<A, E>(effect: Effect.Effect<A, E>): Effect.Effect<A, E | StoreError> =>
  effect.pipe(
    Effect.disconnect,
    Effect.timeoutFail({
      duration,
      onTimeout: () => new StoreError({ operation, cause: new Error(`no answer within ${Duration.format(duration)}`) })
    }),
    Effect.interruptible,
    Effect.forkDaemon,
    Effect.flatMap(Fiber.join)
  )
