/**
 * What only a real Postgres can show about `PgTaskStore`: many sessions
 * racing for the same rows, locks and migrations, time taken from the
 * database's clock, LISTEN/NOTIFY, a network that goes away and comes back,
 * and the plans of the hot statements on a big table. The store contract and
 * the worker semantics themselves are the shared suites' job
 * (test/PgTaskStore.test.ts).
 *
 * Every test gets a fresh database (and a random schema in it). Tests that
 * need several real sessions or LISTEN/NOTIFY are gated on the capabilities of
 * the server (`TestDatabase.capabilitiesOf`): they run wherever the server is
 * a real Postgres (always in CI, where DATABASE_URL is set) and are skipped on
 * the embedded PGlite fallback, where every connection shares one session
 * (and the tests that remain use pools of one connection, see `fixture`).
 *
 * Tests assert behaviour and invariants, never how long something took; the
 * latencies they observe are only printed.
 */
import { describe, expect, it } from "@effect/vitest"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Queue from "effect/Queue"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as Backoff from "../src/Backoff.js"
import { LeaseLost, type StoreError } from "../src/Errors.js"
import * as PgTaskStore from "../src/PgTaskStore.js"
import * as Registry from "../src/Registry.js"
import * as Task from "../src/Task.js"
import * as TaskContext from "../src/TaskContext.js"
import { type ClaimedTask, type Lease, type TaskInfo, TaskStore } from "../src/TaskStore.js"
import * as Worker from "../src/Worker.js"
import * as PgClaimDue from "../src/internal/pgClaimDue.js"
import * as PgComplete from "../src/internal/pgComplete.js"
import * as PgMigrations from "../src/internal/pgMigrations.js"
import {
  type Captured,
  capturing,
  claimRequest,
  count,
  dbNow,
  enqueueRequest,
  eventually,
  explain,
  explainGeneric,
  type Fixture,
  fixture,
  freshSchema,
  listeners,
  lockWaiters,
  nodes,
  type PlanNode,
  render,
  sleepLive,
  storeOn,
  timedLive,
  withStore
} from "./pg/PgTestKit.js"
import * as TcpProxy from "./pg/TcpProxy.js"
import * as TestDatabase from "./utils/TestDatabase.js"

// Decided once per process (and printed); needed at collection time for runIf.
const kind = await Effect.runPromise(TestDatabase.kind)
const capabilities = TestDatabase.capabilitiesOf(kind)

const note = (line: string) => Effect.sync(() => console.info(`[PgTaskStoreConcurrency] ${line}`))

const range = (n: number): ReadonlyArray<number> => Array.from({ length: n }, (_, i) => i)

/** The task with this id; dies if there is none. */
const taskOf = (store: TaskStore["Type"], id: string): Effect.Effect<TaskInfo, unknown> =>
  Effect.flatMap(store.getTask(id), Option.match({ onNone: () => Effect.dieMessage(`no task ${id}`), onSome: Effect.succeed }))

/** The typed error an exit failed with, or a description of why it did not fail that way. */
const failureOf = <A, E>(exit: Exit.Exit<A, E>): E | string =>
  Exit.isSuccess(exit)
    ? "succeeded"
    : Option.getOrElse(Cause.failureOption(exit.cause), () => `not a typed failure: ${Cause.pretty(exit.cause)}`)

/** `succeeded`, the tag of the typed failure, or why there is none. */
const tagOf = <A, E>(exit: Exit.Exit<A, E>): string => {
  const failure = failureOf(exit)
  if (typeof failure === "string") return failure
  return Predicate.hasProperty(failure, "_tag") && typeof failure._tag === "string" ? failure._tag : String(failure)
}

/** The task ids a captured completion batch carries (its first parameter, comma-separated). */
const idsIn = (statement: Captured): ReadonlyArray<string> => {
  const ids = statement.params[0]
  return typeof ids === "string" && ids !== "" ? ids.split(",") : []
}

/** The captured completion batches among `statements`. */
const completionBatches = (statements: ReadonlyArray<Captured>) =>
  statements.filter((statement) => statement.text.includes("complete_batch"))

/** Builds `PgTaskStore.layer(options)` on `client` (its own pool), the way an application provides it. */
const buildLayer = (client: PgClient.PgClient, options: PgTaskStore.Options) =>
  Layer.build(PgTaskStore.layer(options)).pipe(
    Effect.provideService(SqlClient.SqlClient, client),
    Effect.provideService(PgClient.PgClient, client),
    Effect.map(Context.get(TaskStore))
  )

/** A worker started in the current scope on `store`, with logs below Error silenced. */
const startWorker = <Tasks extends Task.Any>(
  store: TaskStore["Type"],
  registry: Registry.Registry<Tasks>,
  options: Worker.WorkerOptions
) => Worker.start(registry, options).pipe(withStore(store), Logger.withMinimumLogLevel(LogLevel.Error))

describe("PgTaskStore on Postgres: concurrency, time, network, plans", () => {
  // ---------------------------------------------------------------------------
  // 1. Claims
  // ---------------------------------------------------------------------------

  describe("claim", () => {
    it.scopedLive.runIf(capabilities.concurrentSessions)("claimers with pools of their own never claim one task twice", () =>
      Effect.gen(function*() {
        const f = yield* fixture
        const total = 2000
        const queues = ["q1", "q2", "q3"]
        const ids = yield* f.store.enqueue(
          range(total).map((n) => enqueueRequest({ queue: queues[n % queues.length]!, payload: { n } }))
        )
        const claimers = yield* Effect.forEach(range(12), (n) =>
          Effect.map(f.newStore(), (store) => ({ store, workerId: `w${n}` })), { concurrency: "unbounded" })

        // Every claimer claims batches until it finds nothing.
        const claimedBy = yield* Effect.forEach(claimers, ({ store, workerId }) =>
          Effect.gen(function*() {
            const mine: Array<ClaimedTask> = []
            while (true) {
              const batch = yield* store.claim(claimRequest(workerId, { queues, max: 25 }))
              if (batch.length === 0) return mine
              mine.push(...batch)
            }
          }), { concurrency: "unbounded" })

        const claimedIds = claimedBy.flat().map((task) => task.lease.taskId)
        expect(new Set(claimedIds).size, "a task was claimed twice").toBe(claimedIds.length)
        expect([...claimedIds].sort()).toEqual([...ids].sort())
        yield* note(`claims per claimer: ${claimedBy.map((tasks) => tasks.length).join(" ")}`)
        expect(claimedBy.filter((tasks) => tasks.length > 0).length).toBeGreaterThan(1)
        claimedBy.forEach((tasks, n) => {
          for (const task of tasks) expect(task.lease).toMatchObject({ attempt: 1, owner: `w${n}` })
        })
        // The database agrees on who holds what.
        const owners = yield* f.sql<{ readonly id: string; readonly lease_owner: string | null }>`
          SELECT id::text AS id, lease_owner FROM ${f.table("tasks")} WHERE status = 'running'`
        const ownerOf = new Map(owners.map((row) => [row.id, row.lease_owner]))
        expect(ownerOf.size).toBe(total)
        claimedBy.forEach((tasks, n) => {
          for (const task of tasks) expect(ownerOf.get(task.lease.taskId)).toBe(`w${n}`)
        })
        expect(yield* f.store.claim(claimRequest("late", { queues, max: 25 }))).toEqual([])

        // Each claimer completes its own tasks, all at once.
        yield* Effect.forEach(claimers, ({ store }, n) =>
          Effect.forEach(claimedBy[n]!, (task) => store.complete(task.lease, { by: n }), {
            concurrency: "unbounded",
            discard: true
          }), { concurrency: "unbounded", discard: true })
        const [summary] = yield* f.sql<{ readonly succeeded: number; readonly other: number; readonly retried: number }>`
          SELECT count(*) FILTER (WHERE status = 'succeeded')::int AS succeeded,
            count(*) FILTER (WHERE status <> 'succeeded')::int AS other,
            count(*) FILTER (WHERE attempt <> 1)::int AS retried
          FROM ${f.table("tasks")}`
        expect(summary).toEqual({ succeeded: total, other: 0, retried: 0 })
      }))

    /** A store (and its pool of `maxConnections`, sessions named `applicationName`) on the fixture's schema. */
    const storeWithPool = (f: Fixture, maxConnections: number, applicationName: string) =>
      Effect.flatMap(
        TestDatabase.makeClient(f.url, { maxConnections, applicationName }),
        (client) => Effect.map(storeOn(client, { schema: f.schema, migrate: false }), (store) => ({ client, store }))
      )

    /** Sessions named `applicationName` whose last statement was a claim. */
    const claimSessions = (f: Fixture, applicationName: string) =>
      Effect.map(
        f.sql<{ readonly pid: number }>`
          SELECT pid FROM pg_stat_activity
          WHERE datname = current_database() AND application_name = ${applicationName} AND query LIKE '%claim_batch%'`,
        (rows) => rows.map((row) => row.pid)
      )

    it.scopedLive.runIf(capabilities.concurrentSessions)(
      "a store's claims keep a session of their own: a claim does not wait for a pool other statements fill",
      () =>
        Effect.gen(function*() {
          const f = yield* fixture
          const { client, store } = yield* storeWithPool(f, 3, "hyrex-claims")
          expect(yield* store.claim(claimRequest("w1"))).toEqual([])
          // Three long statements on the same pool: two sessions are free for them.
          let slept = 0
          const sleeping = yield* Effect.fork(Effect.forEach(range(3), () =>
            Effect.zipRight(
              client`SELECT pg_sleep(3)`,
              Effect.sync(() => {
                slept += 1
              })
            ), { concurrency: "unbounded", discard: true }))
          yield* eventually(Effect.map(
            f.sql<{ readonly n: number }>`
              SELECT count(*)::int AS n FROM pg_stat_activity
              WHERE datname = current_database() AND application_name = 'hyrex-claims' AND query LIKE '%pg_sleep%'
                AND state = 'active'`,
            (rows) => expect(rows[0]?.n).toBe(2)
          ))
          const [id] = yield* f.store.enqueue([enqueueRequest()])
          const claimed = yield* store.claim(claimRequest("w1"))
          // Claimed on its own session while every statement still sleeps.
          expect(claimed.map((task) => task.lease.taskId)).toEqual([id])
          expect(slept).toBe(0)
          expect(yield* claimSessions(f, "hyrex-claims")).toHaveLength(1)
          yield* Fiber.join(sleeping)
        })
    )

    it.scopedLive.runIf(capabilities.concurrentSessions)("a claim session the server ends is replaced by another", () =>
      Effect.gen(function*() {
        const f = yield* fixture
        const { store } = yield* storeWithPool(f, 3, "hyrex-claims")
        expect(yield* store.claim(claimRequest("w1"))).toEqual([])
        const [ended] = yield* claimSessions(f, "hyrex-claims")
        expect(ended).toBeDefined()
        yield* f.sql`SELECT pg_terminate_backend(${ended!})`
        // The claim fails on the ended session and runs again through the
        // pool; the next one pins a new session.
        const [first] = yield* f.store.enqueue([enqueueRequest()])
        expect((yield* store.claim(claimRequest("w1"))).map((task) => task.lease.taskId)).toEqual([first])
        const [second] = yield* f.store.enqueue([enqueueRequest()])
        expect((yield* store.claim(claimRequest("w1"))).map((task) => task.lease.taskId)).toEqual([second])
        const sessions = yield* claimSessions(f, "hyrex-claims")
        expect(sessions.length).toBeGreaterThan(0)
        expect(sessions).not.toContain(ended)
      }))

    it.scopedLive("a store on a pool of one connection keeps none for its claims: other statements do not wait for it", () =>
      Effect.gen(function*() {
        const f = yield* fixture
        const { store } = yield* storeWithPool(f, 1, "hyrex-claims")
        yield* f.store.enqueue([enqueueRequest()])
        const [task] = yield* store.claim(claimRequest("w1"))
        // Held for the next claim, the only session would keep this write waiting.
        const recorded = yield* store.completeAll([{ lease: task!.lease, result: null }]).pipe(
          Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => "the write waited for the claim's session" })
        )
        expect(recorded).toEqual([true])
      }))
  })

  // ---------------------------------------------------------------------------
  // 2. maxConcurrency
  // ---------------------------------------------------------------------------

  describe("maxConcurrency", () => {
    const limited = "t.lim"
    const limits = { [limited]: 2 }
    const liveLeases = (f: Fixture) =>
      count(
        f.sql<{ readonly n: number }>`
          SELECT count(*)::int AS n FROM ${f.table("tasks")}
          WHERE name = ${limited} AND status = 'running' AND lease_expires_at > now()`
      )

    it.scopedLive.runIf(capabilities.concurrentSessions)("live leases of a limited task never exceed the limit, round after round", () =>
      Effect.gen(function*() {
        const f = yield* fixture
        const limitedTotal = 12
        yield* f.store.enqueue([
          ...range(limitedTotal).map((n) => enqueueRequest({ name: limited, queue: n % 2 === 0 ? "q1" : "q2", payload: { n } })),
          ...range(30).map((n) => enqueueRequest({ queue: n % 2 === 0 ? "q1" : "q2", payload: { n } }))
        ])
        // Half the claimers serve only the limited task, half serve it beside an unlimited one.
        const claimers = yield* Effect.forEach(range(10), (n) =>
          Effect.map(f.newStore(), (store) => ({
            store,
            request: claimRequest(`w${n}`, {
              queues: ["q1", "q2"],
              names: n < 5 ? [limited] : [limited, "t.a"],
              limits,
              max: 3
            })
          })), { concurrency: "unbounded" })
        const storeOf = new Map(claimers.map((claimer) => [claimer.request.workerId, claimer.store]))

        const held: Array<ClaimedTask> = []
        let done = 0
        for (let round = 0; done < limitedTotal; round++) {
          expect(round, "the limited tasks should be done by now").toBeLessThan(limitedTotal * 3)
          const before = yield* liveLeases(f)
          expect(before).toBe(held.length)
          const claimed = (yield* Effect.forEach(claimers, ({ request, store }) => store.claim(request), {
            concurrency: "unbounded"
          })).flat()
          const claimedLimited = claimed.filter((task) => task.name === limited)
          const remaining = limitedTotal - done - held.length
          // Never more than the free slots, and the free slots are used.
          expect(claimedLimited.length).toBeLessThanOrEqual(2 - before)
          expect(claimedLimited.length).toBe(Math.min(2 - before, remaining))
          const after = yield* liveLeases(f)
          expect(after).toBeLessThanOrEqual(2)
          expect(after).toBe(before + claimedLimited.length)
          held.push(...claimedLimited)
          // Unlimited tasks are simply completed; one limited task completes per round, freeing one slot.
          yield* Effect.forEach(claimed.filter((task) => task.name !== limited), (task) =>
            storeOf.get(task.lease.owner)!.complete(task.lease, null), { concurrency: "unbounded", discard: true })
          const finished = held.shift()
          if (finished !== undefined) {
            yield* storeOf.get(finished.lease.owner)!.complete(finished.lease, null)
            done += 1
          }
        }
        const [summary] = yield* f.sql<{ readonly succeeded: number; readonly attempts: number }>`
          SELECT count(*) FILTER (WHERE status = 'succeeded')::int AS succeeded, max(attempt)::int AS attempts
          FROM ${f.table("tasks")} WHERE name = ${limited}`
        expect(summary).toEqual({ succeeded: limitedTotal, attempts: 1 })
      }))

    it.scopedLive.runIf(capabilities.concurrentSessions)("claimers racing in a loop never hold more live leases than the limit", () =>
      Effect.gen(function*() {
        const f = yield* fixture
        const total = 40
        yield* f.store.enqueue(range(total).map((n) => enqueueRequest({ name: limited, payload: { n } })))
        const claimers = yield* Effect.forEach(range(10), (n) =>
          Effect.map(f.newStore(), (store) => ({ store, workerId: `w${n}` })), { concurrency: "unbounded" })

        // `holding` counts tasks whose claim has returned and whose completion has not
        // started: each is a live lease in the database at that moment.
        let holding = 0
        let maxHolding = 0
        let completed = 0
        const loop = ({ store, workerId }: (typeof claimers)[number]) =>
          Effect.gen(function*() {
            while (completed < total) {
              const claimed = yield* store.claim(claimRequest(workerId, { names: [limited], limits, max: 2 }))
              holding += claimed.length
              maxHolding = Math.max(maxHolding, holding)
              yield* Effect.yieldNow()
              for (const task of claimed) {
                holding -= 1
                yield* store.complete(task.lease, null)
                completed += 1
              }
            }
          })
        // Meanwhile the database's own count is sampled as often as it can be.
        const sampled: Array<number> = []
        const monitor = yield* Effect.fork(Effect.forever(Effect.flatMap(liveLeases(f), (n) => Effect.sync(() => sampled.push(n)))))
        yield* Effect.forEach(claimers, loop, { concurrency: "unbounded", discard: true }).pipe(Effect.timeout("40 seconds"))
        yield* Fiber.interrupt(monitor)
        yield* note(`limit 2: max held ${maxHolding}, max sampled ${Math.max(...sampled)} over ${sampled.length} samples`)
        expect(maxHolding).toBeLessThanOrEqual(2)
        expect(Math.max(...sampled)).toBeLessThanOrEqual(2)
        expect(completed).toBe(total)
        const attempts = yield* f.sql<{ readonly attempt: number; readonly n: number }>`
          SELECT attempt, count(*)::int AS n FROM ${f.table("tasks")} WHERE status = 'succeeded' GROUP BY attempt`
        expect(attempts).toEqual([{ attempt: 1, n: total }])
      }))

    it.scopedLive.runIf(capabilities.concurrentSessions)("an expired lease frees its slot, and only its slot, for claimers racing for it", () =>
      Effect.gen(function*() {
        const f = yield* fixture
        yield* f.store.enqueue(range(6).map((n) => enqueueRequest({ name: limited, payload: { n } })))
        const request = (workerId: string, leaseTtlMillis: number) =>
          claimRequest(workerId, { names: [limited], limits, max: 2, leaseTtlMillis })
        const first = yield* f.store.claim(request("w0", 500))
        expect(first).toHaveLength(2)
        const claimers = yield* Effect.forEach(range(8), (n) =>
          Effect.map(f.newStore(), (store) => ({ store, workerId: `w${n + 1}` })), { concurrency: "unbounded" })
        const race = Effect.map(
          Effect.forEach(claimers, ({ store, workerId }) => store.claim(request(workerId, 30_000)), {
            concurrency: "unbounded"
          }),
          (batches) => batches.flat()
        )
        // While both leases are live, nobody gets anything.
        expect(yield* race).toEqual([])
        // Once they expire (database time), exactly two slots are free again.
        const second = yield* eventually(Effect.map(race, (claimed) => {
          expect(claimed.length).toBeGreaterThan(0)
          return claimed
        }), { timeout: "10 seconds", step: "50 millis" })
        expect(second).toHaveLength(2)
        expect(yield* liveLeases(f)).toBe(2)
        expect(yield* race).toEqual([])
      }))

    it.scoped("a limited task of higher priority is claimed before an unlimited one of lower priority", () =>
      Effect.gen(function*() {
        // The contract (TaskStore.claim): higher priority first, then the earliest due;
        // limits only skip tasks whose slots are taken. MemoryTaskStore does exactly that.
        const f = yield* fixture
        yield* f.store.enqueue([enqueueRequest({ name: "t.a", priority: 0 })])
        const [urgent] = yield* f.store.enqueue([enqueueRequest({ name: limited, priority: 10 })])
        const claimed = yield* f.store.claim(claimRequest("w1", { names: ["t.a", limited], limits, max: 1 }))
        expect(claimed.map((task) => [task.lease.taskId, task.name])).toEqual([[urgent, limited]])
      }))
  })

  // ---------------------------------------------------------------------------
  // 3. Migrations and configuration
  // ---------------------------------------------------------------------------

  describe("migrations", () => {
    it.scopedLive("a store built on an up-to-date schema reads the migrations table once and changes nothing", () =>
      Effect.gen(function*() {
        const f = yield* fixture
        const client = yield* f.client()
        const [store, statements] = yield* capturing(storeOn(client, { schema: f.schema }))
        expect(statements.map((statement) => statement.text)).toEqual([
          `SELECT max(migration_id) AS id FROM "${f.schema}"."migrations"`
        ])
        const [id] = yield* store.enqueue([enqueueRequest()])
        expect(yield* store.claim(claimRequest("w1"))).toMatchObject([{ lease: { taskId: id } }])
      }))

    it.scopedLive.runIf(capabilities.concurrentSessions)("eight stores built at once on an empty database all succeed and migrate it once", () =>
      Effect.gen(function*() {
        const url = yield* TestDatabase.databaseUrl
        const schema = freshSchema()
        const clients = yield* Effect.forEach(range(8), () => TestDatabase.makeClient(url, { maxConnections: 2 }), {
          concurrency: "unbounded"
        })
        const probe = clients[0]!
        const [before] = yield* probe<{ readonly exists: boolean }>`
          SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = ${schema}) AS exists`
        expect(before?.exists).toBe(false)

        const stores = yield* Effect.forEach(clients, (client) => buildLayer(client, { schema }), { concurrency: "unbounded" })

        const migrations = yield* probe<{ readonly migration_id: number; readonly name: string }>`
          SELECT migration_id, name FROM ${probe(`${schema}.migrations`)} ORDER BY migration_id`
        expect(migrations).toEqual([
          { migration_id: 1, name: "create_tasks" },
          { migration_id: 2, name: "claim_due" },
          { migration_id: 3, name: "enqueue" },
          { migration_id: 4, name: "claim_and_complete" },
          { migration_id: 5, name: "vacuum_often" },
          { migration_id: 6, name: "running_apart" },
          { migration_id: 7, name: "compact_batches" },
          { migration_id: 8, name: "delete_batch" }
        ])
        // A claim writes two index entries per task: the primary key and tasks_running.
        const indexes = yield* probe<{ readonly name: string }>`
          SELECT indexname AS name FROM pg_indexes WHERE schemaname = ${schema} AND tablename = 'tasks' ORDER BY indexname`
        expect(indexes.map((row) => row.name)).toEqual([
          "tasks_finished",
          "tasks_idempotency",
          "tasks_pkey",
          "tasks_queued",
          "tasks_running"
        ])
        // The hot table is vacuumed long before autovacuum's default fifth of it is dead.
        const [options] = yield* probe<{ readonly reloptions: ReadonlyArray<string> }>`
          SELECT reloptions FROM pg_class WHERE oid = ${`${schema}.tasks`}::regclass`
        expect(options?.reloptions).toEqual(expect.arrayContaining([
          "autovacuum_vacuum_scale_factor=0.02",
          "autovacuum_vacuum_threshold=1000"
        ]))
        const tables = yield* probe<{ readonly name: string }>`
          SELECT tablename AS name FROM pg_tables WHERE schemaname = ${schema} ORDER BY tablename`
        expect(tables.map((row) => row.name)).toEqual(["idempotency", "migrations", "tasks", "workers"])

        // Any of them works on the shared schema.
        const [id] = yield* stores[3]!.enqueue([enqueueRequest()])
        const [claimed] = yield* stores[5]!.claim(claimRequest("w1"))
        expect(claimed?.lease.taskId).toBe(id)
        yield* stores[7]!.complete(claimed!.lease, "ok")
        expect(yield* taskOf(stores[0]!, id!)).toMatchObject({ status: "succeeded", result: "ok" })
      }))

    it.scopedLive.runIf(capabilities.concurrentSessions)(
      "a schema at migration 5 with tasks in flight upgrades: a held lease completes, an expired one is taken over, a queued task is claimed, and the previous release's workers keep working",
      () =>
        Effect.gen(function*() {
          const url = yield* TestDatabase.databaseUrl
          const schema = freshSchema()
          const client = yield* TestDatabase.makeClient(url, { maxConnections: 4 })
          yield* PgMigrations.migrate(schema, 5).pipe(Effect.provideService(SqlClient.SqlClient, client))
          // A worker of the previous release claims and completes through
          // claim_due (one JSON object per task) and complete_tasks.
          const oldClaim = (worker: string, leaseTtlMillis: number) =>
            Effect.map(
              client<{ readonly claimed: ReadonlyArray<{ readonly id: string; readonly attempt: number }> }>`
                SELECT ${client(`${schema}.claim_due`)}(${["q1"]}::text[], ${["t.a"]}::text[], 1, ${leaseTtlMillis}::double precision,
                  ${worker}::text) AS claimed`,
              ([row]) => row!.claimed.map((task): Lease => ({ taskId: task.id, attempt: task.attempt, owner: worker }))
            )
          const oldComplete = (lease: Lease) =>
            Effect.map(
              client<{ readonly recorded: ReadonlyArray<number> }>`
                SELECT ${client(`${schema}.complete_tasks`)}(${[lease.taskId]}::bigint[], ${[lease.attempt]}::int[],
                  ${[lease.owner]}::text[], ${['"old"']}::text[]) AS recorded`,
              ([row]) => row!.recorded
            )
          // Tasks in every state a deploy finds, left by the old release on schema 5.
          const before = yield* buildLayer(client, { schema, migrate: false })
          const [held, expiring, oldAfter, queued] = yield* before.enqueue(range(4).map((n) => enqueueRequest({ payload: { n } })))
          const [heldLease] = yield* oldClaim("w-old", 30_000)
          expect(heldLease?.taskId).toBe(held)
          const [expiringLease] = yield* oldClaim("w-gone", 300)
          expect(expiringLease?.taskId).toBe(expiring)

          const after = yield* buildLayer(client, { schema })
          const migrations = yield* client<{ readonly id: number }>`
            SELECT migration_id AS id FROM ${client(`${schema}.migrations`)} ORDER BY migration_id`
          expect(migrations.map((row) => row.id)).toEqual([1, 2, 3, 4, 5, 6, 7, 8])

          // Rolling deploy: an old worker still claims and completes on the upgraded schema.
          const [oldLease] = yield* oldClaim("w-old", 30_000)
          expect(oldLease?.taskId).toBe(oldAfter)
          expect(yield* oldComplete(oldLease!)).toEqual([1])
          expect(yield* taskOf(after, oldAfter!)).toMatchObject({ status: "succeeded", result: "old" })

          const claimed: Array<ClaimedTask> = []
          yield* eventually(
            Effect.gen(function*() {
              claimed.push(...(yield* after.claim(claimRequest("w-new"))))
              expect(claimed.map((task) => task.lease.taskId).sort()).toEqual([expiring, queued].sort())
            }),
            { timeout: "10 seconds", step: "50 millis" }
          )
          const takenOver = claimed.find((task) => task.lease.taskId === expiring)
          expect(takenOver).toMatchObject({ takeover: true, lease: { attempt: 2, owner: "w-new" } })
          // The lease held across the upgrade is still the task's, and its result lands.
          const leases = [heldLease!, ...claimed.map((task) => task.lease)]
          expect(yield* after.completeAll(leases.map((lease) => ({ lease, result: "ok" })))).toEqual([true, true, true])
          for (const id of [held!, expiring!, queued!]) {
            expect(yield* taskOf(after, id)).toMatchObject({ status: "succeeded", result: "ok" })
          }
        })
    )

    it.scopedLive("with migrate: false on an empty database every call fails with a typed StoreError", () =>
      Effect.gen(function*() {
        const url = yield* TestDatabase.databaseUrl
        const client = yield* TestDatabase.makeClient(url, { maxConnections: 4 })
        const store = yield* buildLayer(client, { schema: freshSchema(), migrate: false })
        const lease: Lease = { taskId: "1", attempt: 1, owner: "w1" }
        const calls: ReadonlyArray<readonly [string, Effect.Effect<unknown, unknown>]> = [
          ["enqueue", store.enqueue([enqueueRequest()])],
          ["claim", store.claim(claimRequest("w1"))],
          ["claim (limited)", store.claim(claimRequest("w1", { limits: { "t.a": 1 } }))],
          ["heartbeat", store.heartbeat({ workerId: "w1", leases: [lease], leaseTtlMillis: 1000 })],
          ["complete", store.complete(lease, null)],
          ["fail", store.fail(lease, { kind: "error", message: "x", retryable: true })],
          ["release", store.release(lease)],
          ["cancel", store.cancel("1")],
          ["retry", store.retry("1")],
          ["getTask", store.getTask("1")],
          ["listTasks", store.listTasks({})],
          ["stats", store.stats],
          ["registerWorker", store.registerWorker({ id: "w1", name: "w", host: "h", pid: 1, queues: ["q1"], concurrency: 1 })],
          ["deregisterWorker", store.deregisterWorker("w1")],
          ["listWorkers", store.listWorkers],
          ["getIdempotent", store.getIdempotent("k")],
          ["putIdempotent", store.putIdempotent("k", 1, undefined)],
          ["maintenance", store.maintenance({ retentionMillis: 1000, workerTimeoutMillis: 1000 })]
        ]
        for (const [name, call] of calls) {
          const exit = yield* Effect.exit(call)
          expect(`${name}: ${tagOf(exit)}`).toBe(`${name}: StoreError`)
        }
      }))

    it.scopedLive("a claim answer that does not hold together fails with a typed StoreError, and the queued task stays queued", () =>
      Effect.gen(function*() {
        const f = yield* fixture
        const [id] = yield* f.store.enqueue([enqueueRequest()])
        // A claim function whose columns differ in length (as a damaged or foreign function could answer).
        yield* f.sql.unsafe(`
          CREATE OR REPLACE FUNCTION ${f.schema}.claim_batch(text[], text[], integer, double precision, text)
          RETURNS json LANGUAGE sql AS $$
            SELECT '{"id": ["1", "2"], "name": ["t.a"], "queue": ["q1"], "payload": [{}], "priority": [0],
              "attempt": [1], "max_retries": [3], "lease_losses": [0], "takeover": [false], "due_at": [0],
              "trace_parent": [null]}'::json
          $$`)
        const exit = yield* Effect.exit(f.store.claim(claimRequest("w1")))
        expect(tagOf(exit)).toBe("StoreError")
        expect(String((failureOf(exit) as StoreError).cause)).toContain("columns of different lengths")
        expect(yield* taskOf(f.store, id!)).toMatchObject({ status: "queued", attempt: 0 })
      }))

    it.scopedLive("a schema name that is not a plain identifier fails with ConfigurationError and touches nothing", () =>
      Effect.gen(function*() {
        const url = yield* TestDatabase.databaseUrl
        const client = yield* TestDatabase.makeClient(url, { maxConnections: 2 })
        for (const schema of ["Bad-Name", "x; DROP SCHEMA public", "9lives", ""]) {
          const error = yield* Effect.flip(buildLayer(client, { schema }))
          expect(error._tag).toBe("ConfigurationError")
          expect(error).toMatchObject({ option: "schema" })
        }
        const [created] = yield* client<{ readonly n: number }>`
          SELECT count(*)::int AS n FROM pg_namespace WHERE nspname NOT LIKE 'pg\_%' AND nspname NOT IN ('public', 'information_schema')`
        expect(created?.n).toBe(0)
      }))

    it.scopedLive("a migration that cannot be applied fails the layer with a typed StoreError, not a defect", () =>
      Effect.gen(function*() {
        // E.g. the application already has a table named like one of hyrex's in that schema.
        const url = yield* TestDatabase.databaseUrl
        const client = yield* TestDatabase.makeClient(url, { maxConnections: 2 })
        const schema = freshSchema()
        yield* client`CREATE SCHEMA ${client(schema)}`
        yield* client`CREATE TABLE ${client(`${schema}.tasks`)} (id int)`
        const exit = yield* Effect.exit(buildLayer(client, { schema }))
        expect(tagOf(exit)).toBe("StoreError")
      }))
  })

  // ---------------------------------------------------------------------------
  // 4. Time is the database's
  // ---------------------------------------------------------------------------

  describe("lease time", () => {
    // TestClock: the worker's clock only moves when the test says so.
    it.scoped("a lease runs out by the database's clock, whatever the worker's clock says", () =>
      Effect.gen(function*() {
        // Kept aside: once TestDatabase's memoized server lookup has run in another fiber (the
        // top-level `TestDatabase.kind` above), calling it leaves the live clock in the calling
        // fiber, so the body runs explicitly on this TestClock.
        const testClock = yield* Effect.clock
        const f = yield* fixture
        yield* Effect.withClock(testClock)(Effect.gen(function*() {
          const ttl = 500
          const [id] = yield* f.store.enqueue([enqueueRequest()])

          // The worker's clock far in the future.
          yield* TestClock.setTime(Date.parse("2100-01-01T00:00:00Z"))
          const notBefore = yield* dbNow(f.sql)
          const [first] = yield* f.store.claim(claimRequest("w1", { leaseTtlMillis: ttl }))
          const notAfter = yield* dbNow(f.sql)
          expect(first?.lease).toEqual({ taskId: id, attempt: 1, owner: "w1" })
          const expiry = (yield* taskOf(f.store, id!)).leaseExpiresAt!.getTime()
          expect(expiry).toBeGreaterThanOrEqual(notBefore.getTime() + ttl)
          expect(expiry).toBeLessThanOrEqual(notAfter.getTime() + ttl)

          // The worker's clock far in the past: the lease is still live, nobody else gets the task.
          yield* TestClock.setTime(0)
          expect(yield* f.store.claim(claimRequest("w2", { leaseTtlMillis: ttl }))).toEqual([])

          // Real time passes until the database says the lease is over; the worker's clock stands still.
          yield* eventually(Effect.map(dbNow(f.sql), (now) => expect(now.getTime()).toBeGreaterThan(expiry)), {
            timeout: "10 seconds",
            step: "50 millis"
          })
          expect(yield* Clock.currentTimeMillis).toBe(0)
          const [second] = yield* f.store.claim(claimRequest("w2", { leaseTtlMillis: ttl }))
          expect(second).toMatchObject({ takeover: true, leaseLosses: 1, lease: { taskId: id, attempt: 2, owner: "w2" } })
          const task = yield* taskOf(f.store, id!)
          expect(task).toMatchObject({ status: "running", attempt: 2, leaseOwner: "w2", leaseLosses: 1 })
          expect(task.errors).toHaveLength(1)
          expect(task.errors[0]).toMatchObject({ attempt: 1, kind: "lease_expired", worker: "w1" })
          // The loss is dated at the lease's expiry (µs in Postgres, ms here).
          expect(Math.abs(task.errors[0]!.at.getTime() - expiry)).toBeLessThanOrEqual(1)
          // The first worker is fenced off.
          expect(yield* Effect.flip(f.store.complete(first!.lease, "stale"))).toBeInstanceOf(LeaseLost)
          // Renewals are measured on the database's clock too, whatever the worker's says.
          yield* TestClock.setTime(Date.parse("1990-01-01T00:00:00Z"))
          const renewedFrom = yield* dbNow(f.sql)
          expect(yield* f.store.heartbeat({ workerId: "w2", leases: [second!.lease], leaseTtlMillis: 60_000 })).toEqual([second!.lease])
          const renewed = (yield* taskOf(f.store, id!)).leaseExpiresAt!.getTime()
          expect(renewed).toBeGreaterThanOrEqual(renewedFrom.getTime() + 60_000)
        }))
      }))

    it.scopedLive.runIf(capabilities.concurrentSessions)(
      "a limited claim that waited for the limit's lock gets a full lease from when it claimed",
      () =>
        Effect.gen(function*() {
          const f = yield* fixture
          const ttl = 500
          const [id] = yield* f.store.enqueue([enqueueRequest({ name: "t.lim" })])
          // Another session holds the limit's lock, like a slow concurrent claimer would.
          const locked = yield* Deferred.make<void>()
          const release = yield* Deferred.make<void>()
          const holder = yield* f.sql.withTransaction(Effect.gen(function*() {
            yield* f.sql`SELECT pg_advisory_xact_lock(hashtext(${`hyrex:limit:${f.schema}:t.lim`}))`
            yield* Deferred.succeed(locked, undefined)
            yield* Deferred.await(release)
          })).pipe(Effect.fork)
          yield* Deferred.await(locked)
          const other = yield* f.newStore()
          const claiming = yield* Effect.fork(
            other.claim(claimRequest("w1", { names: ["t.lim"], limits: { "t.lim": 1 }, leaseTtlMillis: ttl }))
          )
          yield* eventually(Effect.map(lockWaiters(f.sql), (n) => expect(n).toBe(1)))
          // Held for longer than the TTL.
          yield* sleepLive(ttl + 300)
          const releasedAt = yield* dbNow(f.sql)
          yield* Deferred.succeed(release, undefined)
          yield* Fiber.join(holder)
          const claimed = yield* Fiber.join(claiming)
          const returnedAt = yield* dbNow(f.sql)
          expect(claimed.map((task) => task.lease.taskId)).toEqual([id])
          const expiry = (yield* taskOf(f.store, id!)).leaseExpiresAt!.getTime()
          yield* note(
            `limited claim after a lock wait: lease expires ${expiry - returnedAt.getTime()} ms after the claim returned ` +
              `(TTL ${ttl} ms)`
          )
          // The claim took effect after the lock was released: its lease runs a full TTL from then.
          expect(expiry).toBeGreaterThanOrEqual(releasedAt.getTime() + ttl)
        })
    )
  })

  // ---------------------------------------------------------------------------
  // 5. LISTEN / NOTIFY
  // ---------------------------------------------------------------------------

  describe("wake-ups", () => {
    /** The store's wake-ups, collected in a queue once its LISTEN connection is up. */
    const listening = (f: Fixture) =>
      Effect.gen(function*() {
        const received = yield* Queue.unbounded<string>()
        yield* f.store.wakeups.pipe(Stream.runForEach((queue) => Queue.offer(received, queue)), Effect.forkScoped)
        yield* eventually(Effect.map(listeners(f.sql), (n) => expect(n).toBe(1)))
        return received
      })

    it.scopedLive.runIf(capabilities.listenNotify)("wakeups emits the queue of a task that is due, soon after enqueue", () =>
      Effect.gen(function*() {
        const f = yield* fixture
        const received = yield* listening(f)
        const next = Queue.take(received).pipe(Effect.timeoutFail({
          duration: "5 seconds",
          onTimeout: () => new Error("no wake-up within 5 s")
        }))

        // A delayed task wakes nobody; a due one does.
        const [latency, first] = yield* timedLive(Effect.gen(function*() {
          yield* f.store.enqueue([enqueueRequest({ queue: "later", delayMillis: 60_000 })])
          yield* f.store.enqueue([enqueueRequest({ queue: "soon" })])
          return yield* next
        }))
        yield* note(`wake-up ${latency} ms after enqueue`)
        expect(first).toBe("soon")

        // A release and a retry that is due at once wake workers too.
        const [claimed] = yield* f.store.claim(claimRequest("w1", { queues: ["soon"] }))
        yield* f.store.release(claimed!.lease)
        expect(yield* next).toBe("soon")
        const [again] = yield* f.store.claim(claimRequest("w1", { queues: ["soon"] }))
        expect(yield* f.store.fail(again!.lease, { kind: "error", message: "x", retryable: true })).toMatchObject({
          _tag: "Retrying"
        })
        expect(yield* next).toBe("soon")
        // A batch given back in one write wakes its queue once.
        yield* f.store.enqueue([enqueueRequest({ queue: "soon" }), enqueueRequest({ queue: "soon" })])
        expect(yield* next).toBe("soon")
        const batch = yield* f.store.claim(claimRequest("w1", { queues: ["soon"], max: 10 }))
        expect(batch.length).toBeGreaterThanOrEqual(2)
        expect(yield* f.store.releaseAll(batch.map((task) => task.lease))).toEqual(batch.map(() => true))
        expect(yield* next).toBe("soon")
        expect(yield* Queue.size(received)).toBe(0)
      }))

    it.scopedLive.runIf(capabilities.listenNotify)(
      "the LISTEN connection opens with the first subscriber, is shared, and closes after the last",
      () =>
        Effect.gen(function*() {
          const f = yield* fixture
          // A store that only sends never listens.
          yield* f.store.enqueue([enqueueRequest({ queue: "soon" })])
          yield* sleepLive("200 millis")
          expect(yield* listeners(f.sql)).toBe(0)

          const subscribe = Effect.gen(function*() {
            const received = yield* Queue.unbounded<string>()
            const fiber = yield* f.store.wakeups.pipe(Stream.runForEach((queue) => Queue.offer(received, queue)), Effect.fork)
            return { received, fiber }
          })
          const first = yield* subscribe
          const second = yield* subscribe
          yield* eventually(Effect.map(listeners(f.sql), (n) => expect(n).toBe(1)))
          yield* f.store.enqueue([enqueueRequest({ queue: "soon" })])
          expect(yield* Queue.take(first.received).pipe(Effect.timeout("5 seconds"))).toBe("soon")
          expect(yield* Queue.take(second.received).pipe(Effect.timeout("5 seconds"))).toBe("soon")

          // One subscriber left: still listening, still told.
          yield* Fiber.interrupt(first.fiber)
          yield* f.store.enqueue([enqueueRequest({ queue: "again" })])
          expect(yield* Queue.take(second.received).pipe(Effect.timeout("5 seconds"))).toBe("again")
          expect(yield* listeners(f.sql)).toBe(1)

          yield* Fiber.interrupt(second.fiber)
          yield* eventually(Effect.map(listeners(f.sql), (n) => expect(n).toBe(0)))

          // A new subscriber opens it again.
          const third = yield* subscribe
          yield* eventually(Effect.map(listeners(f.sql), (n) => expect(n).toBe(1)))
          yield* f.store.enqueue([enqueueRequest({ queue: "soon" })])
          expect(yield* Queue.take(third.received).pipe(Effect.timeout("5 seconds"))).toBe("soon")
          yield* Fiber.interrupt(third.fiber)
        })
    )

    it.scopedLive.runIf(capabilities.listenNotify)("a LISTEN connection the server ends is opened again", () =>
      Effect.gen(function*() {
        const f = yield* fixture
        const received = yield* listening(f)
        const endedAt = yield* dbNow(f.sql)
        yield* f.sql`
          SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND application_name = 'hyrex-listener'`
        // A new session (started after the old one ended), and wake-ups reach the same subscriber.
        yield* eventually(Effect.map(listeners(f.sql, endedAt), (n) => expect(n).toBe(1)), { timeout: "10 seconds" })
        yield* f.store.enqueue([enqueueRequest({ queue: "soon" })])
        expect(yield* Queue.take(received).pipe(Effect.timeout("5 seconds"))).toBe("soon")
      }))

    it.scopedLive.runIf(capabilities.listenNotify)(
      "a worker that polls every 30 s runs a task sent while it idles well before its next poll",
      () =>
        Effect.gen(function*() {
          const f = yield* fixture
          const ping = Task.make("ping", {
            payload: Schema.Struct({ n: Schema.Number }),
            result: Schema.Number,
            handler: ({ n }) => Effect.succeed(n)
          })
          // A long lease (so renewals have time): a renewal that fails makes the worker skip claims.
          const handle = yield* startWorker(f.store, Registry.make(ping), {
            pollInterval: "30 seconds",
            leaseTtl: "30 seconds",
            concurrency: 1
          })
          yield* eventually(Effect.map(listeners(f.sql), (n) => expect(n).toBe(1)))
          const succeeded = (id: string) =>
            eventually(Effect.map(taskOf(f.store, id), (task) => expect(`task ${id}: ${task.status}`).toBe(`task ${id}: succeeded`)), {
              timeout: "10 seconds"
            })
          // The first task may be found by the worker's first claim; after it the worker idles.
          yield* succeeded(yield* ping.send({ n: 1 }).pipe(withStore(f.store)))
          yield* sleepLive("500 millis")
          const [latency] = yield* timedLive(
            Effect.flatMap(ping.send({ n: 2 }).pipe(withStore(f.store)), succeeded)
          )
          yield* note(`task sent to an idle worker (poll interval 30 s) done after ${latency} ms`)
          expect(yield* handle.healthy).toBe(true)
        })
    )
  })

  // ---------------------------------------------------------------------------
  // 6. Connection loss
  // ---------------------------------------------------------------------------

  describe("connection loss", () => {
    it.scopedLive.runIf(capabilities.concurrentSessions)(
      "store calls fail with StoreError while the network is cut, and work again once it heals",
      () =>
        Effect.gen(function*() {
          const f = yield* fixture
          const proxy = yield* TcpProxy.make(TcpProxy.targetOf(f.url))
          const client = yield* TestDatabase.makeClient(proxy.urlFor(f.url), { maxConnections: 4, connectTimeout: "2 seconds" })
          const store = yield* storeOn(client, { schema: f.schema, migrate: false })
          const [id] = yield* store.enqueue([enqueueRequest()])
          const [claimed] = yield* store.claim(claimRequest("w1"))
          const lease = claimed!.lease

          const calls: ReadonlyArray<readonly [string, Effect.Effect<unknown, unknown>]> = [
            ["enqueue", store.enqueue([enqueueRequest()])],
            ["claim", store.claim(claimRequest("w2"))],
            ["claim (limited)", store.claim(claimRequest("w2", { limits: { "t.a": 5 } }))],
            ["heartbeat", store.heartbeat({ workerId: "w1", leases: [lease], leaseTtlMillis: 30_000 })],
            ["complete", store.complete(lease, "cut")],
            ["fail", store.fail(lease, { kind: "error", message: "cut", retryable: true })],
            ["release", store.release(lease)],
            ["cancel", store.cancel(id!)],
            ["getTask", store.getTask(id!)],
            ["listTasks", store.listTasks({})],
            ["stats", store.stats],
            ["registerWorker", store.registerWorker({ id: "w1", name: "w", host: "h", pid: 1, queues: ["q1"], concurrency: 1 })],
            ["listWorkers", store.listWorkers],
            ["putIdempotent", store.putIdempotent("k", 1, undefined)],
            ["maintenance", store.maintenance({ retentionMillis: 1000, workerTimeoutMillis: 1000 })]
          ]
          const everyCall = Effect.forEach(calls, ([name, call]) =>
            Effect.exit(call).pipe(
              Effect.timeout("20 seconds"),
              Effect.map((exit) => `${name}: ${tagOf(exit)}`)
            ), { concurrency: "unbounded" })
          const expected = calls.map(([name]) => `${name}: StoreError`)

          // Open connections are dropped, new ones are never answered: the pool's connect timeout decides.
          yield* proxy.cut("blackhole")
          const [blackholed, outcomes] = yield* timedLive(everyCall)
          yield* note(`black-holed: ${calls.length} calls failed with StoreError within ${blackholed} ms`)
          expect(outcomes).toEqual(expected)

          // New connections are refused: calls fail at once.
          yield* proxy.cut("refuse")
          const [refused, again] = yield* timedLive(everyCall)
          yield* note(`refused: ${calls.length} calls failed with StoreError within ${refused} ms`)
          expect(again).toEqual(expected)

          // Healed, the same store works again and nothing of the failed calls happened.
          yield* proxy.heal
          const task = yield* eventually(taskOf(store, id!), { timeout: "15 seconds", step: "100 millis" })
          expect(task).toMatchObject({ status: "running", attempt: 1, leaseOwner: "w1" })
          expect(yield* count(f.sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM ${f.table("tasks")}`)).toBe(1)
          yield* store.complete(lease, "healed")
          expect(yield* taskOf(f.store, id!)).toMatchObject({ status: "succeeded", result: "healed" })
        })
    )

    it.scopedLive.runIf(capabilities.concurrentSessions && capabilities.listenNotify)(
      "a worker cut off from Postgres fences itself, resumes once the network heals, and loses no task",
      () =>
        Effect.gen(function*() {
          const f = yield* fixture
          const proxy = yield* TcpProxy.make(TcpProxy.targetOf(f.url))
          const client = yield* TestDatabase.makeClient(proxy.urlFor(f.url), { maxConnections: 6, connectTimeout: "2 seconds" })
          const proxied = yield* storeOn(client, { schema: f.schema, migrate: false })

          const events: Array<string> = []
          const event = (line: string) => Effect.sync(() => void events.push(line))
          const hang = Task.make("hang", {
            payload: Schema.Struct({}),
            result: Schema.String,
            retryBackoff: Backoff.none,
            handler: () =>
              Effect.gen(function*() {
                const { attempt } = yield* TaskContext.TaskContext
                yield* event(`start ${attempt}`)
                if (attempt > 1) return `done ${attempt}`
                return yield* Effect.never.pipe(Effect.onInterrupt(() => event(`interrupted ${attempt}`)))
              })
          })
          const quick = Task.make("quick", {
            payload: Schema.Struct({ n: Schema.Number }),
            result: Schema.Number,
            handler: ({ n }) => Effect.succeed(n)
          })
          const handle = yield* startWorker(proxied, Registry.make(hang, quick), {
            name: "cut",
            leaseTtl: "1500 millis",
            heartbeatInterval: "400 millis",
            pollInterval: "100 millis",
            drainTimeout: "1 second",
            concurrency: 4
          })
          // A second listener through the proxy, to watch wake-ups arrive.
          const received = yield* Queue.unbounded<string>()
          yield* proxied.wakeups.pipe(Stream.runForEach((queue) => Queue.offer(received, queue)), Effect.forkScoped)

          const allSucceeded = (ids: ReadonlyArray<string>, timeout: Duration.DurationInput) =>
            eventually(
              Effect.forEach(ids, (id) => Effect.map(taskOf(f.store, id), (task) => expect(`${id} ${task.status}`).toBe(`${id} succeeded`))),
              { timeout, step: "100 millis" }
            )

          const hangId = yield* hang.send({}).pipe(withStore(f.store))
          yield* eventually(Effect.sync(() => expect(events).toContain("start 1")))
          const before = yield* Effect.forEach(range(5), (n) => quick.send({ n }).pipe(withStore(f.store)))
          yield* allSucceeded(before, "10 seconds")

          yield* proxy.cut("blackhole")
          // It stops claiming and, before its lease runs out, interrupts the attempt it cannot renew.
          yield* eventually(Effect.map(handle.healthy, (healthy) => expect(healthy).toBe(false)), { timeout: "10 seconds" })
          yield* eventually(Effect.sync(() => expect(events).toContain("interrupted 1")), { timeout: "10 seconds" })
          yield* eventually(Effect.map(handle.inFlight, (leases) => expect(leases).toEqual([])))
          const during = yield* Effect.forEach(range(5), (n) => quick.send({ n: 10 + n }).pipe(withStore(f.store)))
          expect(yield* taskOf(f.store, hangId)).toMatchObject({ status: "running", attempt: 1, leaseOwner: handle.id })

          yield* proxy.heal
          const healedAt = yield* dbNow(f.sql)
          yield* eventually(Effect.map(handle.healthy, (healthy) => expect(healthy).toBe(true)), { timeout: "20 seconds" })
          yield* allSucceeded([hangId, ...before, ...during], "20 seconds")

          // The hung attempt was taken over (by the same worker, once healed) and counted as lost.
          const done = yield* taskOf(f.store, hangId)
          expect(done).toMatchObject({ status: "succeeded", attempt: 2, result: "done 2", leaseLosses: 1 })
          expect(done.errors.map((error) => [error.attempt, error.kind, error.worker])).toEqual([[1, "lease_expired", handle.id]])
          expect(events.filter((line) => line.endsWith(" 1"))).toEqual(["start 1", "interrupted 1"])
          const [summary] = yield* f.sql<{ readonly succeeded: number; readonly retried: number }>`
            SELECT count(*) FILTER (WHERE status = 'succeeded')::int AS succeeded,
              count(*) FILTER (WHERE name = 'quick' AND attempt <> 1)::int AS retried
            FROM ${f.table("tasks")}`
          expect(summary).toEqual({ succeeded: 11, retried: 0 })

          // The store's LISTEN connection (the worker's and ours: one, or one each) reconnected, and wake-ups flow again.
          yield* eventually(Effect.map(listeners(f.sql, healedAt), (n) => expect(n).toBeGreaterThanOrEqual(1)), {
            timeout: "20 seconds"
          })
          yield* Queue.takeAll(received)
          yield* f.store.enqueue([enqueueRequest({ name: "probe", queue: "probe" })])
          const woken = yield* Queue.take(received).pipe(
            Effect.repeat({ until: (queue) => queue === "probe" }),
            Effect.timeout("5 seconds")
          )
          expect(woken).toBe("probe")
        })
    )
    it.scopedLive.runIf(capabilities.concurrentSessions && capabilities.listenNotify)(
      "a wake-up that arrives while renewals fail is not lost: the worker claims as soon as they succeed again",
      () =>
        Effect.gen(function*() {
          const f = yield* fixture
          const proxy = yield* TcpProxy.make(TcpProxy.targetOf(f.url))
          const proxied = yield* TestDatabase.makeClient(proxy.urlFor(f.url), { maxConnections: 4, connectTimeout: "1 second" })
          // Statements go through the proxy; the LISTEN connection (from the PgClient service) does not,
          // so wake-ups keep arriving while the worker cannot reach the tasks.
          const store = yield* PgTaskStore.make({ schema: f.schema, migrate: false }).pipe(
            Effect.provideService(SqlClient.SqlClient, proxied),
            Effect.provideService(PgClient.PgClient, f.sql)
          )
          const ping = Task.make("ping", { payload: Schema.Struct({}), handler: () => Effect.void })
          const handle = yield* startWorker(store, Registry.make(ping), {
            pollInterval: "30 seconds",
            leaseTtl: "3 seconds",
            heartbeatInterval: "300 millis"
          })
          // A listener of our own sees a wake-up when the worker's does.
          const received = yield* Queue.unbounded<string>()
          yield* f.store.wakeups.pipe(Stream.runForEach((queue) => Queue.offer(received, queue)), Effect.forkScoped)
          yield* eventually(Effect.map(listeners(f.sql), (n) => expect(n).toBe(2)))

          yield* proxy.cut("refuse")
          yield* eventually(Effect.map(handle.healthy, (healthy) => expect(healthy).toBe(false)), { timeout: "10 seconds" })
          const id = yield* ping.send({}).pipe(withStore(f.store))
          expect(yield* Queue.take(received).pipe(Effect.timeout("5 seconds"))).toBe("default")
          // Let the worker's wake-up reach its claim loop while it still cannot renew.
          yield* sleepLive("300 millis")
          expect(yield* handle.healthy).toBe(false)

          yield* proxy.heal
          yield* eventually(Effect.map(handle.healthy, (healthy) => expect(healthy).toBe(true)), { timeout: "10 seconds" })
          // The next poll is up to 30 s away: only acting on the wake-up (or on recovering) runs it now.
          yield* eventually(Effect.map(taskOf(f.store, id), (task) => expect(task.status).toBe("succeeded")), {
            timeout: "10 seconds",
            step: "100 millis"
          })
        })
    )
  })

  // ---------------------------------------------------------------------------
  // 7. Plans
  // ---------------------------------------------------------------------------

  describe("query plans on a big table", () => {
    /** Every node below (and including) `plan` that matches. */
    const find = (plan: PlanNode, predicate: (node: PlanNode) => boolean) => nodes(plan).filter(predicate)
    const isSort = (node: PlanNode) => node["Node Type"] === "Sort" || node["Node Type"] === "Incremental Sort"
    const seqScansOfTasks = (plan: PlanNode) =>
      find(plan, (node) => node["Relation Name"] === "tasks" && node["Node Type"] === "Seq Scan")
    /** How the plan reads tasks (other than the table it updates): [node type, index] per access. */
    const readsOfTasks = (plan: PlanNode) =>
      find(plan, (node) => node["Relation Name"] === "tasks" && node["Node Type"] !== "ModifyTable")
        .map((node) => [node["Node Type"], node["Index Name"]])

    it.scopedLive("the claim scans tasks_queued per queue in index order, expired leases through tasks_running", () =>
      Effect.gen(function*() {
        const f = yield* fixture
        const tasks = f.table("tasks")
        // 150k rows: 60 % succeeded, 10 % failed, 10 % running (half of them expired), 20 % queued
        // (half of them due), over 8 queues, 4 names and 3 priorities.
        yield* f.sql`
          INSERT INTO ${tasks} (name, queue, payload, status, priority, attempt, max_retries, backoff, run_at,
            lease_owner, lease_expires_at, finished_at)
          SELECT (ARRAY['t.a', 't.b', 't.c', 't.d'])[1 + g % 4], 'q' || (1 + (g / 7) % 8), '{}'::jsonb,
            CASE WHEN g % 10 < 6 THEN 'succeeded' WHEN g % 10 = 6 THEN 'failed' WHEN g % 10 = 7 THEN 'running' ELSE 'queued' END,
            g % 3, CASE WHEN g % 10 < 8 THEN 1 ELSE 0 END, 3, '[0, 0, 0]'::jsonb,
            now() + ((g % 200) - 100) * interval '1 minute',
            CASE WHEN g % 10 = 7 THEN 'w' || g % 16 END,
            CASE WHEN g % 10 = 7 THEN now() + ((g % 200) - 100) * interval '1 minute' END,
            CASE WHEN g % 10 < 7 THEN now() END
          FROM generate_series(1, 150000) g`
        yield* f.sql`ANALYZE ${tasks}`

        // The statements the store really sends, with their parameters.
        const [claimed, claimStatements] = yield* capturing(
          f.store.claim(claimRequest("w1", { queues: ["q1", "q2", "q3"], names: ["t.a", "t.b"], max: 10 }))
        )
        expect(claimed).toHaveLength(10)
        // One call of the claim function, whose query is planned once per
        // session: its plan for these values, and the generic plan it keeps.
        expect(claimStatements.map((statement) => /claim_batch/.test(statement.text))).toEqual([true])
        const functionQuery = {
          text: PgClaimDue.query(f.schema),
          params: [["q1", "q2", "q3"], ["t.a", "t.b"], 10, 30_000, "w2"]
        }
        const indexesRead = (plan: PlanNode) =>
          find(plan, (node) => node["Index Name"] !== undefined).map((node) => node["Index Name"])
        for (const claimPlan of [yield* explain(f.sql, functionQuery), yield* explainGeneric(f.sql, functionQuery)]) {
          const why = `\n${render(claimPlan)}`
          expect(seqScansOfTasks(claimPlan), why).toEqual([])
          // Two locked scans per queue: queued tasks, then expired leases.
          const lockRows = find(claimPlan, (node) => node["Node Type"] === "LockRows")
          expect(lockRows.map(indexesRead), why).toEqual([["tasks_queued"], ["tasks_running"]])
          // Queued tasks are read in the claim order: no sort below their lock.
          expect(find(lockRows[0]!, isSort), why).toEqual([])
        }

        // A limited claim: the count of live leases and the claim use indexes too.
        const [, limitedStatements] = yield* capturing(
          f.store.claim(claimRequest("w1", { queues: ["q1", "q2"], names: ["t.c"], limits: { "t.c": 1000 }, max: 5 }))
        )
        const limitedPlans = yield* Effect.forEach(
          limitedStatements.filter((statement) => /count\(\*\)|FOR UPDATE/.test(statement.text)),
          (statement) => explain(f.sql, statement)
        )
        expect(limitedPlans.length).toBeGreaterThanOrEqual(2)
        for (const plan of limitedPlans) expect(seqScansOfTasks(plan), `\n${render(plan)}`).toEqual([])

        // A heartbeat renewing ten leases: found by primary key.
        const [, heartbeatStatements] = yield* capturing(
          f.store.heartbeat({ workerId: "w1", leases: claimed.map((task) => task.lease), leaseTtlMillis: 30_000 })
        )
        expect(heartbeatStatements).toHaveLength(1)
        const heartbeatPlan = yield* explain(f.sql, heartbeatStatements[0]!)
        const heartbeatWhy = `\n${render(heartbeatPlan)}`
        expect(seqScansOfTasks(heartbeatPlan), heartbeatWhy).toEqual([])
        expect(readsOfTasks(heartbeatPlan).map(([, index]) => index), heartbeatWhy).toEqual(["tasks_pkey"])

        // Giving those leases back (here as another owner: nothing changes): by primary key.
        const [, releases] = yield* capturing(
          f.store.releaseAll(claimed.map((task) => ({ ...task.lease, owner: "nobody" })))
        )
        expect(releases).toHaveLength(1)
        const releasePlan = yield* explain(f.sql, releases[0]!)
        const releaseWhy = `\n${render(releasePlan)}`
        expect(seqScansOfTasks(releasePlan), releaseWhy).toEqual([])
        expect(readsOfTasks(releasePlan).map(([, index]) => index), releaseWhy).toEqual(["tasks_pkey"])

        // A batch of completions: by primary key as well.
        const [, captured] = yield* capturing(f.store.completeAll(claimed.map((task) => ({ lease: task.lease, result: null }))))
        const completions = completionBatches(captured)
        expect(completions).toHaveLength(1)
        expect(idsIn(completions[0]!)).toEqual(claimed.map((task) => task.lease.taskId))
        const completeQuery = { text: PgComplete.query(f.schema), params: completions[0]!.params }
        for (const completePlan of [yield* explain(f.sql, completeQuery), yield* explainGeneric(f.sql, completeQuery)]) {
          const why = `\n${render(completePlan)}`
          expect(readsOfTasks(completePlan), why).toEqual([["Index Scan", "tasks_pkey"]])
        }
      }))

    it.scopedLive("completions find their rows by primary key even when the statistics count no running task", () =>
      Effect.gen(function*() {
        const f = yield* fixture
        const tasks = f.table("tasks")
        // Statistics taken while nothing ran: a partial index of running
        // tasks looks free to scan in full.
        yield* f.sql`
          INSERT INTO ${tasks} (name, queue, payload, status, max_retries, run_at, finished_at)
          SELECT 't.a', 'q1', '{}'::jsonb, CASE WHEN g % 2 = 0 THEN 'succeeded' ELSE 'queued' END, 3, now(),
            CASE WHEN g % 2 = 0 THEN now() END
          FROM generate_series(1, 20000) g`
        yield* f.sql`ANALYZE ${tasks}`
        const claimed = yield* f.store.claim(claimRequest("w1", { queues: ["q1"], names: ["t.a"], max: 500 }))
        const completeQuery = {
          text: PgComplete.query(f.schema),
          params: [
            claimed.map((task) => task.lease.taskId).join(","),
            claimed.map((task) => task.lease.attempt).join(","),
            claimed.map(() => 1).join(","),
            ["w1"],
            JSON.stringify(claimed.map(() => null))
          ]
        }
        const plan = yield* explainGeneric(f.sql, completeQuery)
        expect(readsOfTasks(plan), `\n${render(plan)}`).toEqual([["Index Scan", "tasks_pkey"]])
        // So do the completions of a worker with retention 0, which delete them.
        const deletePlan = yield* explainGeneric(f.sql, { text: PgComplete.deleteQuery(f.schema), params: completeQuery.params.slice(0, 4) })
        expect(readsOfTasks(deletePlan), `\n${render(deletePlan)}`).toEqual([["Index Scan", "tasks_pkey"]])
        // A heartbeat of the same leases may read the running tasks' index
        // instead of the primary key (it renews this worker's running
        // tasks), never the whole table: with the status left out of its
        // condition, these statistics make Postgres scan all of it.
        const leases = claimed.map((task) => task.lease)
        const [, heartbeats] = yield* capturing(f.store.heartbeat({ workerId: "w1", leases, leaseTtlMillis: 30_000 }))
        for (const statement of heartbeats) {
          const heartbeatPlan = yield* explain(f.sql, statement)
          expect(seqScansOfTasks(heartbeatPlan), `\n${render(heartbeatPlan)}`).toEqual([])
        }
        // And the function it runs records them all.
        const recorded = yield* f.store.completeAll(claimed.map((task) => ({ lease: task.lease, result: null })))
        expect(recorded.filter((ok) => !ok)).toEqual([])
      }))
  })

  // ---------------------------------------------------------------------------
  // 8. Batched completions
  // ---------------------------------------------------------------------------

  describe("batched completions", () => {
    it.scopedLive("500 completions in one completeAll are one statement, and all of them are recorded", () =>
      Effect.gen(function*() {
        const f = yield* fixture
        yield* f.store.enqueue(range(500).map((n) => enqueueRequest({ payload: { n } })))
        const claimed = (yield* Effect.forEach(range(5), (n) => f.store.claim(claimRequest(`w${n}`, { max: 100 })))).flat()
        expect(claimed).toHaveLength(500)

        const [recorded, captured] = yield* capturing(
          f.store.completeAll(claimed.map((task) => ({ lease: task.lease, result: { n: task.payload } })))
        )
        expect(recorded.filter((ok) => !ok)).toEqual([])
        expect(completionBatches(captured).map((statement) => idsIn(statement).length)).toEqual([500])
        const rows = yield* f.sql<{ readonly n: number }>`
          SELECT count(*)::int AS n FROM ${f.table("tasks")}
          WHERE status = 'succeeded' AND result = jsonb_build_object('n', payload) AND lease_owner IS NULL`
        expect(rows[0]?.n).toBe(500)
      }))

    /** Completes `items` in one `completeAll`, checked to be one statement; an Exit per item. */
    const completeInOneBatch = (f: Fixture, items: ReadonlyArray<{ readonly lease: Lease; readonly result: unknown }>) =>
      Effect.gen(function*() {
        const [recorded, captured] = yield* capturing(f.store.completeAll(items))
        expect(completionBatches(captured)).toHaveLength(1)
        return recorded.map((ok, n) => ok ? Exit.void : Exit.fail(new LeaseLost(items[n]!.lease)))
      })

    it.scopedLive.runIf(capabilities.concurrentSessions)(
      "one batch mixing valid and stale leases answers each lease on its own",
      () =>
        Effect.gen(function*() {
          const f = yield* fixture
          const ids = yield* f.store.enqueue(range(13).map((n) => enqueueRequest({ payload: { n } })))
          const valid = yield* f.store.claim(claimRequest("w1", { max: 10 }))
          expect(valid).toHaveLength(10)
          // A lease taken over after it expired: the old and the new owner complete in the same batch.
          yield* f.store.enqueue([enqueueRequest({ queue: "expiring" })])
          const [expiring] = yield* f.store.claim(claimRequest("w-old", { queues: ["expiring"], leaseTtlMillis: 300 }))
          const takenOver = yield* eventually(Effect.map(f.store.claim(claimRequest("w-new", { queues: ["expiring"] })), (claimed) => {
            expect(claimed.map((task) => task.lease.taskId)).toEqual([expiring!.lease.taskId])
            return claimed[0]!
          }), { timeout: "10 seconds", step: "50 millis" })
          expect(takenOver.lease.attempt).toBe(2)
          const [cancelled, settled, wrongAttempt] = yield* f.store.claim(claimRequest("w1", { max: 3 }))
          yield* f.store.cancel(cancelled!.lease.taskId)
          yield* f.store.complete(settled!.lease, "first")

          const stale: ReadonlyArray<Lease> = [
            expiring!.lease,
            cancelled!.lease,
            settled!.lease,
            { ...wrongAttempt!.lease, attempt: wrongAttempt!.lease.attempt + 1 },
            { ...wrongAttempt!.lease, attempt: 0 },
            { taskId: "999999999", attempt: 1, owner: "w1" }
          ]
          const fresh: ReadonlyArray<Lease> = [...valid.map((task) => task.lease), takenOver.lease]
          const items = [
            ...fresh.map((lease) => ({ lease, result: `ok ${lease.taskId}` })),
            ...stale.map((lease) => ({ lease, result: `stale ${lease.taskId}` }))
          ]
          const exits = yield* completeInOneBatch(f, items)
          expect(exits.map((exit, n) => `${items[n]!.lease.taskId}/${items[n]!.lease.attempt}/${items[n]!.lease.owner}: ${tagOf(exit)}`))
            .toEqual([
              ...fresh.map((lease) => `${lease.taskId}/${lease.attempt}/${lease.owner}: succeeded`),
              ...stale.map((lease) => `${lease.taskId}/${lease.attempt}/${lease.owner}: LeaseLost`)
            ])
          // Only the valid leases wrote.
          for (const lease of fresh) {
            expect(yield* taskOf(f.store, lease.taskId)).toMatchObject({ status: "succeeded", result: `ok ${lease.taskId}` })
          }
          expect(yield* taskOf(f.store, cancelled!.lease.taskId)).toMatchObject({ status: "cancelled", result: null })
          expect(yield* taskOf(f.store, settled!.lease.taskId)).toMatchObject({ status: "succeeded", result: "first" })
          expect(yield* taskOf(f.store, wrongAttempt!.lease.taskId)).toMatchObject({ status: "running", attempt: 1 })
          expect(ids).toHaveLength(13)
        })
    )

    it.scopedLive.runIf(capabilities.concurrentSessions)(
      "in one batch, a stale lease with the same task and attempt as a valid one (another owner) gets LeaseLost",
      () =>
        Effect.gen(function*() {
          // Attempt numbers repeat after a release: w1 claims attempt 1 and releases it,
          // w2 then claims attempt 1. w1's old lease differs from w2's only by its owner.
          const f = yield* fixture
          const [id] = yield* f.store.enqueue([enqueueRequest()])
          const [old] = yield* f.store.claim(claimRequest("w1"))
          yield* f.store.release(old!.lease)
          const [current] = yield* f.store.claim(claimRequest("w2"))
          expect(current!.lease).toEqual({ taskId: id, attempt: old!.lease.attempt, owner: "w2" })
          const exits = yield* completeInOneBatch(f, [
            { lease: current!.lease, result: "w2" },
            { lease: old!.lease, result: "w1" }
          ])
          expect(exits.map(tagOf)).toEqual(["succeeded", "LeaseLost"])
          expect(yield* taskOf(f.store, id!)).toMatchObject({ status: "succeeded", result: "w2" })
        })
    )

    it.scopedLive.runIf(capabilities.concurrentSessions)(
      "in one batch, the same lease completed twice succeeds once, like two completions one after the other",
      () =>
        Effect.gen(function*() {
          const f = yield* fixture
          const [id] = yield* f.store.enqueue([enqueueRequest()])
          const [claimed] = yield* f.store.claim(claimRequest("w1"))
          const exits = yield* completeInOneBatch(f, [
            { lease: claimed!.lease, result: "first" },
            { lease: claimed!.lease, result: "second" }
          ])
          expect(exits.map(tagOf).sort()).toEqual(["LeaseLost", "succeeded"])
          expect(yield* taskOf(f.store, id!)).toMatchObject({ status: "succeeded" })
        })
    )
  })

  // ---------------------------------------------------------------------------
  // 9. Idempotent enqueue
  // ---------------------------------------------------------------------------

  describe("idempotent enqueue", () => {
    const idem = Task.make("t.idem", { payload: Schema.Struct({ n: Schema.Number }), handler: () => Effect.void })

    const rowsWithKey = (f: Fixture, key: string) =>
      f.sql<{ readonly id: string; readonly n: number }>`
        SELECT id::text AS id, (payload ->> 'n')::int AS n FROM ${f.table("tasks")} WHERE idempotency_key = ${key}`

    it.scopedLive.runIf(capabilities.concurrentSessions)("20 concurrent sends with one idempotency key, on pools of their own, make one task", () =>
      Effect.gen(function*() {
        const f = yield* fixture
        const stores = yield* Effect.forEach(range(20), () => f.newStore(), { concurrency: "unbounded" })
        const ids = yield* Effect.forEach(stores, (store, n) =>
          idem.send({ n }, { idempotencyKey: "order-42" }).pipe(withStore(store)), { concurrency: "unbounded" })
        expect(new Set(ids).size).toBe(1)
        const rows = yield* rowsWithKey(f, "order-42")
        expect(rows.map((row) => row.id)).toEqual([ids[0]])
        expect(yield* count(f.sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM ${f.table("tasks")}`)).toBe(1)
      }))

    it.scopedLive.runIf(capabilities.concurrentSessions)(
      "20 sends that all wait on an uncommitted insert of their key make one task, whether it rolls back or commits",
      () =>
        Effect.gen(function*() {
          const f = yield* fixture
          const stores = yield* Effect.forEach(range(20), () => f.newStore(), { concurrency: "unbounded" })
          const race = (key: string, outcome: "rollback" | "commit") =>
            Effect.gen(function*() {
              // Another session inserts the key and keeps its transaction open: every send waits on it.
              const inserted = yield* Deferred.make<string>()
              const finish = yield* Deferred.make<void>()
              const holder = yield* f.sql.withTransaction(Effect.gen(function*() {
                const [row] = yield* f.sql<{ readonly id: string }>`
                  INSERT INTO ${f.table("tasks")} (name, queue, payload, status, max_retries, run_at, idempotency_key)
                  VALUES (${idem.name}, 'default', '{"n": -1}', 'queued', 3, now(), ${key}) RETURNING id::text AS id`
                yield* Deferred.succeed(inserted, row!.id)
                yield* Deferred.await(finish)
                if (outcome === "rollback") return yield* Effect.fail("rollback" as const)
              })).pipe(Effect.catchAll(() => Effect.void), Effect.fork)
              const holderId = yield* Deferred.await(inserted)
              const sends = yield* Effect.fork(Effect.forEach(stores, (store, n) =>
                idem.send({ n }, { idempotencyKey: key }).pipe(withStore(store)), { concurrency: "unbounded" }))
              yield* eventually(Effect.map(lockWaiters(f.sql), (n) => expect(n).toBe(stores.length)))
              yield* Deferred.succeed(finish, undefined)
              yield* Fiber.join(holder)
              const ids = yield* Fiber.join(sends)
              expect(new Set(ids).size).toBe(1)
              const rows = yield* rowsWithKey(f, key)
              expect(rows.map((row) => row.id)).toEqual([ids[0]])
              if (outcome === "commit") expect(ids[0]).toBe(holderId)
              else expect(rows[0]!.n).toBeGreaterThanOrEqual(0)
            })
          yield* race("order-rolled-back", "rollback")
          yield* race("order-committed", "commit")
        })
    )
  })

  describe("enqueue", () => {
    it.scopedLive("each task's backoff is stored as sent, from a batch and from a single send", () =>
      Effect.gen(function*() {
        const f = yield* fixture
        const backoffs = [[], [1], [250, 1000.5, 90000]]
        const batch = backoffs.map((backoff) => enqueueRequest({ backoff, maxRetries: backoff.length }))
        const ids = [...yield* f.store.enqueue(batch), ...yield* f.store.enqueue([batch[2]!])]
        const rows = yield* f.sql<{ readonly id: string; readonly backoff: ReadonlyArray<number>; readonly max_retries: number }>`
          SELECT id::text AS id, backoff, max_retries FROM ${f.table("tasks")} ORDER BY id`
        expect(rows.map((row) => row.id)).toEqual(ids)
        expect(rows.map((row) => row.backoff)).toEqual([...backoffs, backoffs[2]])
        expect(rows.map((row) => row.max_retries)).toEqual([0, 1, 3, 3])
      }))
  })

  describe("retention", () => {
    it.scopedLive("one maintenance run prunes more than one batch of old tasks, and keeps recent and failed ones", () =>
      Effect.gen(function*() {
        const f = yield* fixture
        const tasks = f.table("tasks")
        yield* f.sql`
          INSERT INTO ${tasks} (name, queue, payload, status, max_retries, run_at, finished_at)
          SELECT 't.a', 'q1', '{}'::jsonb, CASE WHEN g % 100 = 0 THEN 'failed' ELSE 'succeeded' END, 0, now(),
            now() - interval '2 hours'
          FROM generate_series(1, 12000) g`
        yield* f.sql`
          INSERT INTO ${tasks} (name, queue, payload, status, max_retries, run_at, finished_at)
          SELECT 't.a', 'q1', '{}'::jsonb, 'succeeded', 0, now(), now() FROM generate_series(1, 10)`
        yield* f.store.maintenance({ retentionMillis: 3_600_000, workerTimeoutMillis: 60_000 })
        const left = yield* f.sql<{ readonly status: string; readonly n: number }>`
          SELECT status, count(*)::int AS n FROM ${tasks} GROUP BY status ORDER BY status`
        // 12,000 old: 120 failed (kept), 11,880 succeeded (pruned, over three batches); 10 recent kept.
        expect(left).toEqual([{ status: "failed", n: 120 }, { status: "succeeded", n: 10 }])
      }))

    it.scopedLive("Idempotency.once records older than retention are pruned only once their task has finished", () =>
      Effect.gen(function*() {
        const f = yield* fixture
        const tasks = f.table("tasks")
        const idempotency = f.table("idempotency")
        // A task still waiting for a retry, one still running, one finished, one gone.
        const ids = yield* f.sql<{ readonly id: string; readonly status: string }>`
          INSERT INTO ${tasks} (name, queue, payload, status, max_retries, run_at, lease_owner, finished_at)
          VALUES ('t.a', 'q1', '{}', 'queued', 3, now() + interval '1 day', NULL, NULL),
            ('t.a', 'q1', '{}', 'running', 3, now(), 'w1', NULL),
            ('t.a', 'q1', '{}', 'succeeded', 3, now(), NULL, now() - interval '2 hours'),
            ('t.a', 'q1', '{}', 'failed', 3, now(), NULL, now() - interval '2 hours')
          RETURNING id::text AS id, status`
        const idOf = (status: string) => ids.find((row) => row.status === status)!.id
        for (const [key, taskId] of [
          ["retrying", idOf("queued")],
          ["running", idOf("running")],
          ["succeeded", idOf("succeeded")],
          ["failed", idOf("failed")],
          ["no-task", undefined],
          ["task-gone", "999999"]
        ] as const) {
          yield* f.store.putIdempotent(key, { key }, taskId)
        }
        yield* f.store.putIdempotent("recent", 1, undefined)
        yield* f.sql`UPDATE ${idempotency} SET created_at = now() - interval '2 hours' WHERE key <> 'recent'`
        yield* f.store.maintenance({ retentionMillis: 3_600_000, workerTimeoutMillis: 60_000 })
        const left = yield* f.sql<{ readonly key: string }>`SELECT key FROM ${idempotency} ORDER BY key`
        // A retried attempt must still find what an earlier attempt recorded,
        // however long its backoff: only records of finished (or deleted)
        // tasks, and of no task, go with age.
        expect(left.map((row) => row.key)).toEqual(["recent", "retrying", "running"])
      }))
  })
})
