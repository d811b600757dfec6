import { describe, expect, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import * as Backoff from "../src/Backoff.js"

const millisOf = (backoff: Backoff.Backoff, retries: number) =>
  Effect.map(backoff.delays(retries), (delays) => delays.map(Duration.toMillis))

describe("Backoff", () => {
  it.effect("exponential without jitter grows by its factor and is capped at max", () =>
    Effect.gen(function*() {
      const backoff = Backoff.exponential({ base: "1 second", factor: 2, max: "5 seconds", jitter: 0 })
      expect(yield* millisOf(backoff, 5)).toEqual([1000, 2000, 4000, 5000, 5000])
      expect(yield* millisOf(Backoff.exponential({ base: "500 millis", factor: 3, jitter: 0 }), 3)).toEqual([
        500,
        1500,
        4500
      ])
    }))

  it.effect("exponential defaults: 1 s doubling, ±20 % jitter, capped at 10 minutes", () =>
    Effect.gen(function*() {
      const delays = yield* millisOf(Backoff.exponential(), 12)
      expect(delays).toHaveLength(12)
      delays.forEach((delay, index) => {
        const nominal = 1000 * 2 ** index
        expect(delay).toBeGreaterThanOrEqual(Math.min(600_000, Math.floor(nominal * 0.8)))
        expect(delay).toBeLessThanOrEqual(Math.min(600_000, Math.ceil(nominal * 1.2)))
      })
      // 2^11 s * 0.8 is far above the cap.
      expect(delays[11]).toBe(600_000)
      expect(Backoff.defaultPolicy._tag).toBe("Backoff")
    }))

  it.effect("jitter spreads the delays but never past max", () =>
    Effect.gen(function*() {
      const delays = yield* millisOf(Backoff.exponential({ base: "10 seconds", factor: 1, jitter: 0.5, max: "12 seconds" }), 50)
      for (const delay of delays) {
        expect(delay).toBeGreaterThanOrEqual(5000)
        expect(delay).toBeLessThanOrEqual(12_000)
      }
      expect(new Set(delays).size).toBeGreaterThan(1)
    }))

  it.effect("delaysOf gives each task of a send its own jittered delays, within bounds", () =>
    Effect.gen(function*() {
      const backoff = Backoff.exponential({ base: "1 second", factor: 2, max: "1 minute", jitter: 0.5 })
      const all = yield* backoff.delaysOf(200, 3)
      expect(all).toHaveLength(200)
      for (const delays of all) {
        expect(delays).toHaveLength(3)
        delays.forEach((delay, index) => {
          expect(delay).toBeGreaterThanOrEqual(0.5 * 1000 * 2 ** index)
          expect(delay).toBeLessThanOrEqual(1.5 * 1000 * 2 ** index)
        })
      }
      // Spread, not one draw shared by all.
      expect(new Set(all.map((delays) => delays[0])).size).toBeGreaterThan(100)
      const low = all.filter((delays) => delays[0]! < 1000).length
      expect(low).toBeGreaterThan(60)
      expect(low).toBeLessThan(140)
    }))

  it.effect("delaysOf of a policy without randomness is the same list for every task", () =>
    Effect.gen(function*() {
      expect(yield* Backoff.fixed("2 seconds").delaysOf(3, 2)).toEqual([[2000, 2000], [2000, 2000], [2000, 2000]])
      expect(yield* Backoff.fromFunction((attempt) => Duration.seconds(attempt)).delaysOf(2, 3)).toEqual([
        [1000, 2000, 3000],
        [1000, 2000, 3000]
      ])
      expect(yield* Backoff.exponential({ jitter: 0 }).delaysOf(2, 2)).toEqual([[1000, 2000], [1000, 2000]])
    }))

  it.effect("jitter outside [0, 1] is clamped", () =>
    Effect.gen(function*() {
      expect(yield* millisOf(Backoff.exponential({ base: "1 second", factor: 1, jitter: -3 }), 3)).toEqual([1000, 1000, 1000])
      const wide = yield* millisOf(Backoff.exponential({ base: "1 second", factor: 1, jitter: 7 }), 30)
      for (const delay of wide) {
        expect(delay).toBeGreaterThanOrEqual(0)
        expect(delay).toBeLessThanOrEqual(2000)
      }
    }))

  it.effect("fixed repeats one delay; none retries at once", () =>
    Effect.gen(function*() {
      expect(yield* millisOf(Backoff.fixed("2 seconds"), 3)).toEqual([2000, 2000, 2000])
      expect(yield* millisOf(Backoff.none, 2)).toEqual([0, 0])
    }))

  it.effect("fromFunction gets the 1-based number of the failed attempt", () =>
    Effect.gen(function*() {
      const seen: Array<number> = []
      const backoff = Backoff.fromFunction((attempt) => {
        seen.push(attempt)
        return Duration.seconds(attempt * 10)
      })
      expect(yield* millisOf(backoff, 3)).toEqual([10_000, 20_000, 30_000])
      expect(seen).toEqual([1, 2, 3])
    }))

  it.effect("fromSchedule uses the schedule's delays in order", () =>
    Effect.gen(function*() {
      expect(yield* millisOf(Backoff.fromSchedule(Schedule.spaced("1 second")), 3)).toEqual([1000, 1000, 1000])
      expect(yield* millisOf(Backoff.fromSchedule(Schedule.exponential("1 second")), 4)).toEqual([1000, 2000, 4000, 8000])
      expect(yield* millisOf(Backoff.fromSchedule(Schedule.fibonacci("1 second")), 5)).toEqual([1000, 1000, 2000, 3000, 5000])
    }))

  it.effect("a schedule that ends stops the retries early", () =>
    Effect.gen(function*() {
      const twice = Schedule.intersect(Schedule.spaced("1 second"), Schedule.recurs(2))
      expect(yield* millisOf(Backoff.fromSchedule(twice), 5)).toEqual([1000, 1000])
      expect(yield* millisOf(Backoff.fromSchedule(twice), 1)).toEqual([1000])
      expect(yield* millisOf(Backoff.fromSchedule(Schedule.recurs(0)), 5)).toEqual([])
    }))

  it.effect("from accepts a Backoff, a function or a Schedule", () =>
    Effect.gen(function*() {
      const fixed = Backoff.fixed("3 seconds")
      expect(Backoff.from(fixed)).toBe(fixed)
      expect(yield* millisOf(Backoff.from((attempt) => Duration.millis(attempt)), 3)).toEqual([1, 2, 3])
      expect(yield* millisOf(Backoff.from(Schedule.spaced("4 seconds")), 2)).toEqual([4000, 4000])
    }))

  it.effect("zero retries give no delays", () =>
    Effect.gen(function*() {
      for (const backoff of [Backoff.exponential(), Backoff.fixed("1 second"), Backoff.none, Backoff.fromSchedule(Schedule.spaced("1 second"))]) {
        expect(yield* backoff.delays(0)).toEqual([])
      }
    }))
})
