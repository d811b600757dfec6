/**
 * The session a store keeps for its claims, on a real Postgres: statements
 * run on one session of the pool while it is kept, the pool serves the rest,
 * and the session goes back when idle, busy or broken. Each statement asks
 * which session ran it (`pg_backend_pid()`).
 */
import { describe, expect, it } from "@effect/vitest"
import type * as PgClient from "@effect/sql-pg/PgClient"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as TestClock from "effect/TestClock"
import * as PgPinnedSession from "../src/internal/pgPinnedSession.js"
import { eventually, fixture } from "./pg/PgTestKit.js"
import * as TestDatabase from "./utils/TestDatabase.js"

const kind = await Effect.runPromise(TestDatabase.kind)
const capabilities = TestDatabase.capabilitiesOf(kind)

const applicationName = "hyrex-pinned-test"

/** A pool of `maxConnections` on a fresh database. */
const poolOn = (maxConnections: number) =>
  Effect.gen(function*() {
    const f = yield* fixture
    const sql = yield* TestDatabase.makeClient(f.url, { maxConnections, applicationName })
    return { f, sql }
  })

/** A pool of `maxConnections` on a fresh database, and a session pinned from it. */
const pinnedOn = (maxConnections: number) =>
  Effect.flatMap(poolOn(maxConnections), ({ f, sql }) =>
    Effect.map(PgPinnedSession.make(sql, { idleTimeToLive: "1 minute" }), (pinned) => ({ f, sql, pinned })))

/** The session that runs it, after sleeping `seconds`. */
const sessionOf = (sql: PgClient.PgClient, seconds = 0) =>
  Effect.map(sql<{ readonly pid: number }>`SELECT pg_backend_pid() AS pid, pg_sleep(${seconds})`, (rows) => rows[0]!.pid)

/** Statements of the test's pool running now, as Postgres sees them. */
const activeSleeps = (probe: PgClient.PgClient) =>
  Effect.map(
    probe<{ readonly n: number }>`
      SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE datname = current_database() AND application_name = ${applicationName}
        AND state = 'active' AND query LIKE '%pg_sleep%'`,
    (rows) => rows[0]!.n
  )

describe.runIf(capabilities.concurrentSessions)("pgPinnedSession", () => {
  it.scopedLive("runs every statement on one session while other statements take the rest of the pool", () =>
    Effect.gen(function*() {
      const { pinned, sql } = yield* pinnedOn(4)
      const pids = yield* Effect.forEach(
        [0, 1, 2, 3, 4],
        () =>
          Effect.zipLeft(
            pinned.run(sessionOf(sql)),
            // The pool's other sessions, busy at the same time.
            Effect.forEach([0, 1, 2], () => sessionOf(sql, 0.02), { concurrency: "unbounded" })
          ),
        { concurrency: 1 }
      )
      expect(new Set(pids).size).toBe(1)
    }))

  it.scopedLive("a statement that finds the session busy runs through the pool", () =>
    Effect.gen(function*() {
      const { f, pinned, sql } = yield* pinnedOn(3)
      const long = yield* Effect.fork(pinned.run(sessionOf(sql, 2)))
      yield* eventually(Effect.map(activeSleeps(f.sql), (n) => expect(n).toBe(1)))
      const other = yield* pinned.run(sessionOf(sql))
      // Answered while the first still sleeps, by another session.
      expect(long.unsafePoll()).toBeNull()
      expect(other).not.toBe(yield* Fiber.join(long))
    }))

  it.scopedLive("a statement that fails on the session runs again through the pool, and the next one pins another", () =>
    Effect.gen(function*() {
      const { f, pinned, sql } = yield* pinnedOn(3)
      const ended = yield* pinned.run(sessionOf(sql))
      yield* f.sql`SELECT pg_terminate_backend(${ended})`
      const retried = yield* pinned.run(sessionOf(sql))
      expect(retried).not.toBe(ended)
      const next = yield* pinned.run(sessionOf(sql))
      expect(next).not.toBe(ended)
      expect(yield* pinned.run(sessionOf(sql))).toBe(next)
    }))

  // TestClock: the session's idle time passes when the test says so. (Kept
  // aside before the fixture, which leaves the live clock in this fiber; see
  // the lease time test in PgTaskStoreConcurrency.)
  it.scoped("the session goes back to the pool once idleTimeToLive passes without a statement", () =>
    Effect.gen(function*() {
      const testClock = yield* Effect.clock
      const { sql } = yield* poolOn(2)
      const pinned = yield* Effect.withClock(testClock)(PgPinnedSession.make(sql, { idleTimeToLive: "30 seconds" }))
      // Two plain statements at once, on one session or on both of the pool's.
      const sessionsServing = Effect.map(
        Effect.forEach([0, 1], () => sessionOf(sql), { concurrency: "unbounded" }),
        (pids) => new Set(pids).size
      )
      yield* Effect.withClock(testClock)(Effect.gen(function*() {
        yield* pinned.run(sessionOf(sql))
        yield* TestClock.adjust("25 seconds")
        yield* pinned.run(sessionOf(sql))
        // The look at 30 s finds it used 5 s before: kept.
        yield* TestClock.adjust("10 seconds")
        expect(yield* sessionsServing).toBe(1)
        // The look at 60 s finds it idle for 35 s: given back.
        yield* TestClock.adjust("30 seconds")
        yield* eventually(Effect.map(sessionsServing, (n) => expect(n).toBe(2)))
      }))
    }))

  it.scopedLive("an interrupted statement gives the session back to the pool", () =>
    Effect.gen(function*() {
      const { f, pinned, sql } = yield* pinnedOn(2)
      const stuck = yield* Effect.fork(pinned.run(sessionOf(sql, 30)))
      yield* eventually(Effect.map(activeSleeps(f.sql), (n) => expect(n).toBe(1)))
      yield* Fiber.interrupt(stuck)
      // Both sessions of the pool serve plain statements at once again.
      const both = yield* Effect.fork(Effect.forEach([0, 1], () => sessionOf(sql, 2), { concurrency: "unbounded" }))
      yield* eventually(Effect.map(activeSleeps(f.sql), (n) => expect(n).toBe(2)))
      yield* Fiber.join(both)
    }))
})
