/**
 * The deadline of store calls: it holds in uninterruptible regions, moves
 * with a TestClock, and never waits for the call it gave up on.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as TestClock from "effect/TestClock"
import * as TestServices from "effect/TestServices"
import { StoreError } from "../src/Errors.js"
import { bounded } from "../src/internal/bounded.js"

const withDeadline = bounded("probe", Duration.seconds(5))

/**
 * A call that never answers and, once told to stop, takes until `release`
 * to do so; `stopping` waits until it was told.
 */
const makeWedged = Effect.gen(function*() {
  const released = yield* Deferred.make<void>()
  const interrupted = yield* Deferred.make<void>()
  return {
    call: Effect.never.pipe(
      Effect.onInterrupt(() => Effect.zipRight(Deferred.succeed(interrupted, undefined), Deferred.await(released)))
    ),
    stopping: Deferred.await(interrupted),
    release: Deferred.succeed(released, undefined)
  }
})

describe("bounded", () => {
  it.effect("answers what the call answers, success or failure", () =>
    Effect.gen(function*() {
      expect(yield* withDeadline(Effect.succeed(1))).toBe(1)
      expect(yield* withDeadline(Effect.fail("no")).pipe(Effect.flip)).toBe("no")
      const async = Effect.async<number>((resume) => {
        setTimeout(() => resume(Effect.succeed(2)), 5)
      })
      expect(yield* withDeadline(async).pipe(TestServices.provideLive)).toBe(2)
    }))

  it.effect("fails with a StoreError when the deadline passes on the test clock, even uninterruptibly", () =>
    Effect.gen(function*() {
      const wedged = yield* makeWedged
      const fiber = yield* withDeadline(wedged.call).pipe(Effect.uninterruptible, Effect.flip, Effect.fork)
      yield* TestClock.adjust(Duration.seconds(4))
      expect(fiber.unsafePoll()).toBeNull()
      yield* TestClock.adjust(Duration.seconds(1))
      const error = yield* Fiber.join(fiber)
      expect(error).toBeInstanceOf(StoreError)
      expect(error).toMatchObject({ operation: "probe" })
      // The call was told to stop, and its deadline did not wait for it to end.
      yield* wedged.stopping
      yield* wedged.release
    }))

  it.live("keeps to the deadline on the live clock", () =>
    Effect.gen(function*() {
      const wedged = yield* makeWedged
      const error = yield* bounded("probe", Duration.millis(20))(wedged.call).pipe(Effect.uninterruptible, Effect.flip)
      expect(error).toBeInstanceOf(StoreError)
      yield* wedged.stopping
      yield* wedged.release
    }))

  it.effect("an interrupted caller does not wait for the call to stop", () =>
    Effect.gen(function*() {
      const wedged = yield* makeWedged
      const fiber = yield* withDeadline(wedged.call).pipe(Effect.fork)
      yield* Effect.yieldNow()
      const exit = yield* Fiber.interrupt(fiber)
      expect(Exit.isInterrupted(exit)).toBe(true)
      yield* wedged.stopping
      yield* wedged.release
    }))

  it.effect("a call that answered leaves no deadline behind", () =>
    Effect.gen(function*() {
      yield* withDeadline(Effect.succeed(1))
      yield* withDeadline(Effect.fail("no")).pipe(Effect.ignore)
      yield* Effect.yieldNow()
      expect(Chunk.toReadonlyArray(yield* TestClock.sleeps())).toEqual([])
    }))
})
