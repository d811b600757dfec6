/**
 * `hyrex worker <module>` as a subprocess: it runs the module's tasks, drains
 * on SIGTERM (the task in flight completes, exit code 0), and a second
 * SIGINT exits at once (code 130).
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { TaskStore } from "../../src/TaskStore.js"
import * as TestDatabase from "../utils/TestDatabase.js"
import { nap } from "./fixtures/sleepy.js"
import { eventually, fixture, run, start, store } from "./utils.js"

const statusOf = (id: string) =>
  Effect.flatMap(TaskStore, (store) => store.getTask(id)).pipe(Effect.map((task) => Option.getOrThrow(task).status))

// A worker process next to the test's own connections needs sessions of their
// own: on the embedded PGlite every connection shares one session, so a
// transaction of one process (a claim, a migration, a worker killed in the
// middle of a write) takes the other's statements with it. Seen as tasks the
// test had sent reading as missing, with or without the current worker.
const kind = await Effect.runPromise(TestDatabase.kind)
const realServer = TestDatabase.capabilitiesOf(kind).concurrentSessions
if (!realServer) console.log(`[cli worker] skipped: the test database is ${kind}, a worker process needs a real Postgres server`)

describe.skipIf(!realServer)("hyrex worker", () => {
  it.scopedLive("runs the module's tasks, shows up in status, and drains on SIGTERM", () =>
    Effect.gen(function*() {
      const url = yield* TestDatabase.databaseUrl
      const env = { DATABASE_URL: url }
      const quick = yield* Effect.provide(nap.sendBatch([{ millis: 10 }, { millis: 20 }, { millis: 30 }]), store(url))
      const worker = yield* start(
        ["worker", fixture("sleepy.ts"), "--name", "napper", "--concurrency", "3", "--prefetch", "6", "--poll-interval", "100ms"],
        env
      )
      yield* eventually(
        Effect.map(Effect.all(quick.map(statusOf)), (all) => all.every((status) => status === "succeeded")),
        "20 seconds",
        "the worker to run the queued tasks"
      ).pipe(Effect.provide(store(url)))

      const status = yield* run(["status"], env)
      expect(status.stdout).toMatch(/^naps\s+0\s+0\s+0\s+0\s+3\s+3$/m)
      expect(status.stdout).toMatch(/^napper\s+napper\/\S+\s+\d+\s+\S+\s+naps\s+0\/3\s+[\d.]+s ago\s+running/m)

      // A task that is still running when SIGTERM arrives is finished, not abandoned.
      const slow = yield* Effect.provide(nap.send({ millis: 1500 }), store(url))
      yield* eventually(Effect.map(statusOf(slow), (s) => s === "running"), "10 seconds", "the slow task to start")
        .pipe(Effect.provide(store(url)))
      yield* worker.signal("SIGTERM")
      const result = yield* worker.exit.pipe(Effect.timeout("15 seconds"))
      expect(result.code, result.stderr).toBe(0)
      expect(result.stderr).toMatch(/SIGTERM: draining in-flight tasks for up to 30s/)
      expect(result.stderr).toMatch(/draining 1 task\(s\)/)
      expect(result.stderr).toMatch(/worker stopped/)
      expect(yield* Effect.provide(statusOf(slow), store(url))).toBe("succeeded")

      const after = yield* run(["status"], env)
      expect(after.stdout).toMatch(/WORKERS: 0 live \(1 stopped, 0 dead not shown\)/)
    }), 60_000)

  it.scopedLive("a second SIGINT exits at once", () =>
    Effect.gen(function*() {
      const url = yield* TestDatabase.databaseUrl
      const long = yield* Effect.provide(nap.send({ millis: 60_000 }), store(url))
      const worker = yield* start(
        ["worker", fixture("sleepy.ts"), "--poll-interval", "100ms", "--drain-timeout", "1m"],
        { DATABASE_URL: url }
      )
      yield* eventually(Effect.map(statusOf(long), (s) => s === "running"), "15 seconds", "the task to start")
        .pipe(Effect.provide(store(url)))
      yield* worker.signal("SIGINT")
      yield* eventually(Effect.sync(() => /draining 1 task/.test(worker.stderr())), "5 seconds", "the drain to start")
      yield* worker.signal("SIGINT")
      const result = yield* worker.exit.pipe(Effect.timeout("3 seconds"))
      expect(result.code, result.stderr).toBe(130)
      expect(result.stderr).toMatch(/second SIGINT, exiting now/)
      // Nothing was released: the lease stays until it expires and another worker takes over.
      expect(yield* Effect.provide(statusOf(long), store(url))).toBe("running")
    }), 60_000)
})
