/**
 * A store call with a deadline that holds anywhere, even in a finalizer or
 * an uninterruptible region, where a plain `Effect.timeout` would wait for
 * the call it gave up on: the call runs interruptibly in a fiber of its own,
 * and is disconnected, because interrupting a query on a dead link can take
 * as long as the link stays dead.
 *
 * The same as `Effect.timeoutFail` over `Effect.disconnect` in a daemon
 * fiber, at a fraction of the cost: those take five fibers a call (about
 * 100 µs, more than the rest of the worker's part of a claim that finds one
 * task). Here the call is one fiber and the deadline a timer of the clock's
 * scheduler; under another clock (a `TestClock`) the deadline is a sleeping
 * fiber, so the clock moves it.
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as DefaultServices from "effect/DefaultServices"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import { StoreError } from "../Errors.js"

/** Runs a task once the deadline passes; answers how to cancel it. */
type Deadline = (onExpiry: () => void) => () => void

/** Effect's own clock, which sleeps on a plain timer. */
const liveClock = Context.get(DefaultServices.liveServices, Clock.Clock)

/** The longest delay a timer takes; past it, as for Effect's clock, the deadline never comes. */
const maxTimerMillis = 2 ** 31 - 1

const timer = (duration: Duration.Duration): Deadline => (onExpiry) => {
  const millis = Duration.toMillis(duration)
  if (millis > maxTimerMillis) return () => {}
  const handle = setTimeout(onExpiry, millis)
  return () => clearTimeout(handle)
}

const deadlineOn = (clock: Clock.Clock, duration: Duration.Duration): Effect.Effect<Deadline> =>
  clock === liveClock
    ? Effect.succeed(timer(duration))
    : Effect.map(Effect.forkDaemon(Effect.interruptible(clock.sleep(duration))), (sleeper) => (onExpiry) => {
      sleeper.addObserver((exit) => {
        if (Exit.isSuccess(exit)) onExpiry()
      })
      return () => sleeper.unsafeInterruptAsFork(FiberId.none)
    })

export const bounded = (operation: string, duration: Duration.Duration) =>
<A, E>(effect: Effect.Effect<A, E>): Effect.Effect<A, E | StoreError> =>
  Effect.clockWith((clock) =>
    Effect.flatMap(Effect.forkDaemon(Effect.interruptible(effect)), (call) =>
      Effect.flatMap(deadlineOn(clock, duration), (deadline) =>
        Effect.async<A, E | StoreError>((resume) => {
          let settled = false
          let cancel = () => {}
          const settle = (result: Effect.Effect<A, E | StoreError>) => {
            if (settled) return
            settled = true
            cancel()
            resume(result)
          }
          cancel = deadline(() => {
            call.unsafeInterruptAsFork(FiberId.none)
            settle(Effect.fail(new StoreError({ operation, cause: new Error(`no answer within ${Duration.format(duration)}`) })))
          })
          call.addObserver(settle)
          // The caller gave up (interrupted): so does the call, unawaited.
          return Effect.sync(() => {
            settled = true
            cancel()
            call.unsafeInterruptAsFork(FiberId.none)
          })
        }))))
