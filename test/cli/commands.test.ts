/**
 * `hyrex migrate`, `tasks list|show|retry|cancel`, `status` and bad input,
 * each run as a subprocess of the package's bin against a fresh database.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { TaskStore } from "../../src/TaskStore.js"
import * as TestDatabase from "../utils/TestDatabase.js"
import { nap } from "./fixtures/sleepy.js"
import { fixture, type Result, run, store } from "./utils.js"

const expectOk = (result: Result) => {
  expect(result.stderr).toBe("")
  expect(result.code).toBe(0)
}

/** Exit code 1 and exactly one line on stderr, `hyrex: …`, no stack trace. */
const expectOneLineError = (result: Result, pattern: RegExp) => {
  expect(result.code, result.stderr).toBe(1)
  const lines = result.stderr.trimEnd().split("\n")
  expect(lines, result.stderr).toHaveLength(1)
  expect(lines[0]).toMatch(/^hyrex: \S/)
  expect(lines[0]).toMatch(pattern)
  expect(result.stdout).toBe("")
}

const worker = {
  id: "seed-worker/0001",
  name: "seed-worker",
  host: "testhost",
  pid: 4242,
  queues: ["naps"],
  concurrency: 4
}

/**
 * Four tasks on queue "naps": one queued, one scheduled, one failed (with an
 * error history), one running under the lease of a registered worker.
 */
const seed = Effect.gen(function*() {
  const store = yield* TaskStore
  const queued = yield* nap.send({ millis: 1 })
  const scheduled = yield* nap.send({ millis: 2 }, { delay: "1 hour" })
  const failed = yield* nap.send({ millis: 3 }, { priority: 10 })
  const running = yield* nap.send({ millis: 4 }, { priority: 5 })
  yield* store.registerWorker(worker)
  const claim = (max: number) =>
    store.claim({ workerId: worker.id, queues: ["naps"], names: ["nap"], limits: {}, max, leaseTtlMillis: 600_000 })
  const [first] = yield* claim(1)
  yield* store.fail(first!.lease, {
    kind: "error",
    message: "disk on fire",
    cause: "Error: disk on fire\n    at burn (fire.ts:1:1)",
    retryable: false
  })
  const [second] = yield* claim(1)
  yield* store.heartbeat({ workerId: worker.id, leases: [second!.lease], leaseTtlMillis: 600_000 })
  return { queued, scheduled, failed, running }
})

describe("hyrex CLI commands", () => {
  it.scopedLive("migrate creates the schema, is idempotent, and honours --schema", () =>
    Effect.gen(function*() {
      const url = yield* TestDatabase.databaseUrl
      const first = yield* run(["migrate"], { DATABASE_URL: url })
      expectOk(first)
      expect(first.stdout).toMatch(/schema "hyrex" is up to date/)
      const [again, other] = yield* Effect.all([
        run(["migrate"], { DATABASE_URL: url }),
        run(["migrate", "--database-url", url, "--schema", "jobs"])
      ], { concurrency: 2 })
      expectOk(again)
      expectOk(other)
      expect(other.stdout).toMatch(/schema "jobs" is up to date/)
      // The other schema is usable, by flag or by HYREX_SCHEMA.
      const lists = yield* Effect.all([
        run(["tasks", "list", "--database-url", url, "--schema", "jobs"]),
        run(["tasks", "list"], { DATABASE_URL: url, HYREX_SCHEMA: "jobs" })
      ], { concurrency: 2 })
      for (const list of lists) {
        expectOk(list)
        expect(list.stdout.trim()).toBe("no tasks")
      }
    }))

  it.scopedLive("tasks list, show, retry and cancel on seeded tasks", () =>
    Effect.gen(function*() {
      const url = yield* TestDatabase.databaseUrl
      const ids = yield* Effect.provide(seed, store(url))
      const env = { DATABASE_URL: url }

      const [list, failedOnly, limited, byName, json, showFailed, showRunning] = yield* Effect.all([
        run(["tasks", "list"], env),
        run(["tasks", "list", "--status", "failed"], env),
        run(["tasks", "list", "--limit", "1", "--queue", "naps"], env),
        run(["tasks", "list", "--name", "other"], env),
        run(["tasks", "list", "--json", "--status", "running"], env),
        run(["tasks", "show", ids.failed], env),
        run(["tasks", "show", ids.running], env)
      ], { concurrency: 4 })
      expectOk(list)
      for (const id of Object.values(ids)) expect(list.stdout).toMatch(new RegExp(`^\\s*${id}\\s+nap\\s+naps`, "m"))
      expect(list.stdout).toMatch(/scheduled/)
      expect(list.stdout).toMatch(/error: disk on fire/)
      expectOk(failedOnly)
      expect(failedOnly.stdout).toMatch(new RegExp(`^\\s*${ids.failed}\\s`, "m"))
      expect(failedOnly.stdout.trim().split("\n")).toHaveLength(2)
      expect(limited.stdout.trim().split("\n")).toHaveLength(2)
      expect(byName.stdout.trim()).toBe("no tasks")
      const parsed: unknown = JSON.parse(json.stdout)
      expect(parsed).toMatchObject([{ id: ids.running, status: "running", leaseOwner: worker.id }])
      expectOk(showFailed)
      expect(showFailed.stdout).toMatch(new RegExp(`task ${ids.failed}\\s+nap`))
      expect(showFailed.stdout).toMatch(/status\s+failed, attempt 1\/1/)
      expect(showFailed.stdout).toMatch(/errors \(1\)/)
      expect(showFailed.stdout).toMatch(/1\s+error\s+\S+\s+seed-worker\/0001\s+disk on fire/)
      expect(showFailed.stdout).toMatch(/at burn \(fire\.ts:1:1\)/)
      expectOk(showRunning)
      expect(showRunning.stdout).toMatch(/lease\s+held by seed-worker\/0001, expires in \d+m/)

      const [retried, cancelled] = yield* Effect.all([
        run(["tasks", "retry", ids.failed], env),
        run(["tasks", "cancel", ids.running], env)
      ], { concurrency: 2 })
      expectOk(retried)
      expect(retried.stdout).toMatch(new RegExp(`task ${ids.failed} \\(nap\\) is queued again`))
      expectOk(cancelled)
      expect(cancelled.stdout).toMatch(/is cancelled; worker seed-worker\/0001 lost its lease/)

      const after = yield* Effect.provide(
        Effect.flatMap(TaskStore, (store) =>
          Effect.all([store.getTask(ids.failed), store.getTask(ids.running)])),
        store(url)
      )
      expect(after.map((task) => Option.getOrThrow(task).status)).toEqual(["queued", "cancelled"])

      // Transitions that do not apply say so.
      const [retryQueued, cancelCancelled] = yield* Effect.all([
        run(["tasks", "retry", ids.queued], env),
        run(["tasks", "cancel", ids.running], env)
      ], { concurrency: 2 })
      expectOneLineError(retryQueued, new RegExp(`task ${ids.queued} is queued: only failed or cancelled tasks can be retried`))
      expectOneLineError(cancelCancelled, /is cancelled: only queued or running tasks can be cancelled/)
    }))

  it.scopedLive("status shows queues and live workers", () =>
    Effect.gen(function*() {
      const url = yield* TestDatabase.databaseUrl
      yield* Effect.provide(seed, store(url))
      const status = yield* run(["status"], { DATABASE_URL: url })
      expectOk(status)
      // queued, scheduled, running, failed, succeeded in the last hour, in the last minute
      expect(status.stdout).toMatch(/^QUEUE\s+QUEUED\s+SCHEDULED\s+RUNNING\s+FAILED\s+SUCCEEDED 1H\s+SUCCEEDED 1MIN$/m)
      expect(status.stdout).toMatch(/^naps\s+1\s+1\s+1\s+1\s+0\s+0$/m)
      expect(status.stdout).toMatch(/WORKERS: 1 live/)
      expect(status.stdout).toMatch(/^seed-worker\s+seed-worker\/0001\s+4242\s+testhost\s+naps\s+1\/4\s+[\d.]+s ago\s+running/m)
    }))

  it.scopedLive("bad input: one line on stderr, exit code 1", () =>
    Effect.gen(function*() {
      const url = yield* TestDatabase.databaseUrl
      const migrated = yield* TestDatabase.databaseUrl
      expectOk(yield* run(["migrate", "--database-url", migrated]))
      const env = { DATABASE_URL: migrated }
      const cases: ReadonlyArray<readonly [ReadonlyArray<string>, Record<string, string>, RegExp]> = [
        [["tasks", "show", "123456"], env, /^hyrex: no task with id 123456$/],
        [["tasks", "retry", "not-an-id"], env, /^hyrex: no task with id not-an-id$/],
        [["tasks", "list"], { DATABASE_URL: url }, /no hyrex tables in schema "hyrex".*hyrex migrate/],
        [["status"], {}, /no database: pass --database-url or set DATABASE_URL/],
        [["status", "--database-url", "not a url"], {}, /invalid database URL "not a url"/],
        [["status"], { DATABASE_URL: "postgres://postgres:secret@127.0.0.1:1/x" }, /cannot connect to postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:1\/x: .*ECONNREFUSED/],
        [["migrate", "--schema", "Bad-Name"], env, /invalid --schema "Bad-Name"/],
        [["tasks", "list", "--status", "sleeping"], env, /--status: "sleeping" is not one of queued, running/],
        [["tasks", "list", "--limit", "0"], env, /--limit: must be an integer of at least 1, got 0/],
        [["status", "--watch", "--interval", "soon"], env, /--interval: "soon" is not a duration/],
        [["tasks", "show"], env, /Missing argument <id>/],
        [["frobnicate"], env, /Invalid subcommand for hyrex/],
        [["worker", fixture("sleepy.ts")], { DATABASE_URL: "postgres://postgres@127.0.0.1:1/x" }, /^hyrex: cannot connect to .*ECONNREFUSED/],
        [["worker", fixture("missing.ts")], env, /module not found: test\/cli\/fixtures\/missing\.ts/],
        [["worker", fixture("noRegistry.ts")], env, /exports no registry.*it exports the tasks lonely/],
        [["worker", fixture("broken.ts")], env, /cannot load .*broken\.ts: invalid option "bad\.maxRetries"/],
        [["worker", fixture("sleepy.ts"), "--concurrency", "many"], env, /--concurrency: "many" is not an integer/],
        [["worker", fixture("sleepy.ts"), "--prefetch", "-1"], env, /--prefetch: must be an integer of at least 0, got -1/],
        [["worker", fixture("sleepy.ts"), "--queues", "nowhere"], env, /no registered task runs on "nowhere"/],
        [["worker", fixture("sleepy.ts"), "--lease-ttl", "3s", "--heartbeat-interval", "5s"], env, /heartbeatInterval .* must be shorter than leaseTtl/],
        // Told not to migrate, on a database without the schema: it says so and touches nothing.
        [["worker", fixture("sleepy.ts"), "--no-migrate"], { DATABASE_URL: url }, /no hyrex tables in schema "hyrex".*hyrex migrate/],
        [["worker", fixture("sleepy.ts")], { DATABASE_URL: url, HYREX_MIGRATE: "false" }, /no hyrex tables in schema "hyrex"/],
        [["worker", fixture("sleepy.ts")], { ...env, HYREX_LEASE_TTL: "soon" }, /invalid worker setting in the environment: .*HYREX_LEASE_TTL/]
      ]
      const results = yield* Effect.forEach(cases, ([args, env]) => run(args, env), { concurrency: 4 })
      results.forEach((result, i) => {
        const [args, , pattern] = cases[i]!
        expect.soft(() => expectOneLineError(result, pattern), `hyrex ${args.join(" ")}`).not.toThrow()
      })
    }), 120_000)
})
