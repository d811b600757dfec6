/**
 * Helpers of the Postgres-specific store tests (test/PgTaskStoreConcurrency.test.ts):
 * fresh schemas, stores on clients of their own, probes of the database's
 * sessions, the SQL a store call really sends, and `EXPLAIN` plans as trees.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Statement from "@effect/sql/Statement"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { randomBytes } from "node:crypto"
import type { ConfigurationError, StoreError } from "../../src/Errors.js"
import * as PgTaskStore from "../../src/PgTaskStore.js"
import type { ClaimRequest, EnqueueRequest } from "../../src/TaskStore.js"
import { TaskStore } from "../../src/TaskStore.js"
import * as TestDatabase from "../utils/TestDatabase.js"

// ---------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------

/** The real clock, for tests that run under `TestClock` but must wait for the database's time to pass. */
export const liveClock: Clock.Clock = Clock.make()

/** Runs `effect` on the real clock (sleeps and timeouts in real time), also under `TestClock`. */
export const live = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => Effect.withClock(effect, liveClock)

/** Sleeps in real time, also under `TestClock`. */
export const sleepLive = (duration: Duration.DurationInput): Effect.Effect<void> => live(Effect.sleep(duration))

/**
 * Retries `check` (an `expect` that throws counts as a failure) every `step`
 * until it succeeds, for at most `timeout` of real time; then fails with the
 * last failure. Never asserts how long it took.
 */
export const eventually = <A, E, R>(
  check: Effect.Effect<A, E, R>,
  options: { readonly timeout?: Duration.DurationInput; readonly step?: Duration.DurationInput } = {}
): Effect.Effect<A, unknown, R> =>
  live(Effect.gen(function*() {
    const deadline = (yield* Clock.currentTimeMillis) + Duration.toMillis(options.timeout ?? "15 seconds")
    const step = options.step ?? "25 millis"
    while (true) {
      const exit = yield* Effect.exit(check)
      if (exit._tag === "Success") return exit.value
      if ((yield* Clock.currentTimeMillis) >= deadline) return yield* exit
      yield* Effect.sleep(step)
    }
  }))

/** Real milliseconds `effect` took, with its result. */
export const timedLive = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<readonly [number, A], E, R> =>
  live(Effect.map(Effect.timed(effect), ([duration, value]) => [Duration.toMillis(duration), value] as const))

// ---------------------------------------------------------------------------
// Databases, clients and stores
// ---------------------------------------------------------------------------

/** A schema name no other test uses (`t_<random>`). Not `effect/Random`: it is seeded under `TestRandom`. */
export const freshSchema = (): string => `t_${randomBytes(6).toString("hex")}`

/** A `PgTaskStore` on `client` (so on its pool), in `options.schema`. */
export const storeOn = (
  client: PgClient.PgClient,
  options: PgTaskStore.Options
): Effect.Effect<TaskStore["Type"], ConfigurationError | StoreError, Scope.Scope> =>
  PgTaskStore.make(options).pipe(
    Effect.provideService(SqlClient.SqlClient, client),
    Effect.provideService(PgClient.PgClient, client)
  )

/** A fresh database with a migrated schema, a client for probes, and a store on that client. */
export interface Fixture {
  readonly url: string
  readonly schema: string
  /** A client of its own, for probes and for the store below. */
  readonly sql: PgClient.PgClient
  readonly store: TaskStore["Type"]
  /** `<schema>.<table>` as an identifier fragment. */
  readonly table: (name: "tasks" | "workers" | "idempotency" | "migrations") => Statement.Identifier
  /** A new client (a pool of its own) on the fixture's database. */
  readonly client: (maxConnections?: number) => Effect.Effect<PgClient.PgClient, SqlError, Scope.Scope>
  /** A new store on a new client (a pool of its own), without migrating. */
  readonly newStore: (maxConnections?: number) => Effect.Effect<TaskStore["Type"], unknown, Scope.Scope>
}

/**
 * See {@link Fixture}. On a server without concurrent sessions (the embedded
 * PGlite) every pool has ONE connection: its socket server can interleave the
 * protocol messages of connections that talk at the same time.
 */
export const fixture: Effect.Effect<Fixture, unknown, Scope.Scope> = Effect.gen(function*() {
  const { concurrentSessions } = yield* TestDatabase.capabilities
  const poolSize = (wanted: number) => concurrentSessions ? wanted : 1
  const url = yield* TestDatabase.databaseUrl
  const schema = freshSchema()
  const sql = yield* TestDatabase.makeClient(url, { maxConnections: poolSize(6), applicationName: "hyrex-test-probe" })
  const store = yield* storeOn(sql, { schema })
  const client = (maxConnections = 2) => TestDatabase.makeClient(url, { maxConnections: poolSize(maxConnections) })
  return {
    url,
    schema,
    sql,
    store,
    table: (name) => sql(`${schema}.${name}`),
    client,
    newStore: (maxConnections = 2) =>
      Effect.flatMap(client(maxConnections), (other) => storeOn(other, { schema, migrate: false }))
  }
})

/** Provides `store` as the `TaskStore` of `effect`. */
export const withStore = (store: TaskStore["Type"]) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.provideService(effect, TaskStore, store)

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/** An enqueue request for task `t.a` on queue `q1`, due at once, 3 retries without delay. */
export const enqueueRequest = (overrides: Partial<EnqueueRequest> = {}): EnqueueRequest => ({
  name: "t.a",
  queue: "q1",
  payload: { n: 0 },
  priority: 0,
  maxRetries: 3,
  backoff: [0, 0, 0],
  delayMillis: 0,
  ...overrides
})

/** A claim request of `workerId` for `t.a` on `q1`, 10 at most, lease of 30 s. */
export const claimRequest = (workerId: string, overrides: Partial<ClaimRequest> = {}): ClaimRequest => ({
  workerId,
  queues: ["q1"],
  names: ["t.a"],
  limits: {},
  max: 10,
  leaseTtlMillis: 30_000,
  ...overrides
})

// ---------------------------------------------------------------------------
// Probes
// ---------------------------------------------------------------------------

/** One `count(*)::int AS n` query. */
export const count = (statement: Statement.Statement<{ readonly n: number }>): Effect.Effect<number, SqlError> =>
  Effect.map(statement, (rows) => rows[0]?.n ?? 0)

/** Backends of the current database that wait for a lock (row locks, advisory locks, tuple locks). */
export const lockWaiters = (sql: PgClient.PgClient): Effect.Effect<number, SqlError> =>
  count(
    sql<{ readonly n: number }>`
      SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE datname = current_database() AND wait_event_type = 'Lock'`
  )

/**
 * Listener sessions (`hyrex-listener`) of the current database that have
 * run their `LISTEN` and wait for notifications, optionally only those that
 * connected after `since` (the database's time).
 */
export const listeners = (sql: PgClient.PgClient, since?: Date): Effect.Effect<number, SqlError> =>
  count(
    sql<{ readonly n: number }>`
      SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE datname = current_database() AND application_name = 'hyrex-listener'
        AND state = 'idle' AND query ILIKE 'LISTEN %'
        AND backend_start >= ${since ?? new Date(0)}`
  )

/** The database's `now()`. */
export const dbNow = (sql: PgClient.PgClient): Effect.Effect<Date, SqlError> =>
  Effect.map(sql<{ readonly now: Date }>`SELECT now() AS now`, (rows) => rows[0]!.now)

// ---------------------------------------------------------------------------
// Statements and plans
// ---------------------------------------------------------------------------

/** A statement as sent to Postgres: its text with `$n` placeholders, and its parameters. */
export interface Captured {
  readonly text: string
  readonly params: ReadonlyArray<unknown>
}

/**
 * Runs `effect` and records every statement it sends through `@effect/sql`
 * (from this fiber and the fibers it forks), compiled exactly as executed.
 */
export const capturing = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  into: Array<Captured> = []
): Effect.Effect<readonly [A, ReadonlyArray<Captured>], E, R> =>
  effect.pipe(
    Statement.withTransformer((statement) =>
      Effect.sync(() => {
        const [text, params] = statement.compile()
        into.push({ text, params })
        return statement
      })
    ),
    Effect.map((value) => [value, into] as const)
  )

/** A node of an `EXPLAIN (FORMAT JSON)` plan, with the fields the tests look at. */
export interface PlanNode {
  readonly "Node Type": string
  readonly "Relation Name"?: string | undefined
  readonly "Index Name"?: string | undefined
  readonly "Parent Relationship"?: string | undefined
  readonly Plans?: ReadonlyArray<PlanNode> | undefined
}

export const PlanNode: Schema.Schema<PlanNode> = Schema.Struct({
  "Node Type": Schema.String,
  "Relation Name": Schema.optional(Schema.String),
  "Index Name": Schema.optional(Schema.String),
  "Parent Relationship": Schema.optional(Schema.String),
  Plans: Schema.optional(Schema.Array(Schema.suspend((): Schema.Schema<PlanNode> => PlanNode)))
})

const ExplainRows = Schema.Tuple(Schema.Struct({ "QUERY PLAN": Schema.Tuple(Schema.Struct({ Plan: PlanNode })) }))

/** `EXPLAIN (FORMAT JSON)` of a captured statement, with its own parameters (not executed). */
export const explain = (sql: PgClient.PgClient, statement: Captured): Effect.Effect<PlanNode, unknown> =>
  sql.unsafe(`EXPLAIN (FORMAT JSON) ${statement.text}`, statement.params).pipe(
    Effect.flatMap(Schema.decodeUnknown(ExplainRows)),
    Effect.map((rows) => rows[0]["QUERY PLAN"][0].Plan)
  )

/**
 * The plan Postgres keeps for `statement` once it settles on a generic one,
 * as a server-side function does for its queries after a few calls: the
 * plan for any values of the parameters.
 */
export const explainGeneric = (sql: PgClient.PgClient, statement: Captured): Effect.Effect<PlanNode, unknown> =>
  sql.withTransaction(Effect.gen(function*() {
    yield* sql.unsafe(`SET LOCAL plan_cache_mode = force_generic_plan`)
    yield* sql.unsafe(`PREPARE hyrex_generic AS ${statement.text}`)
    // Untyped literals: Postgres reads each with its parameter's type (text[], bigint[], int, …).
    const quoted = (text: string) => `'${text.replaceAll("'", "''")}'`
    const element = (item: unknown) =>
      item === null ? "NULL" : `"${String(item).replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`
    const literals = statement.params.map((param) =>
      Array.isArray(param) ? quoted(`{${param.map(element).join(",")}}`) : quoted(String(param))
    )
    const plan = yield* sql.unsafe(`EXPLAIN (FORMAT JSON) EXECUTE hyrex_generic(${literals.join(", ")})`).pipe(
      Effect.flatMap(Schema.decodeUnknown(ExplainRows)),
      Effect.map((rows) => rows[0]["QUERY PLAN"][0].Plan)
    )
    yield* sql.unsafe(`DEALLOCATE hyrex_generic`)
    return plan
  }))

/** Every node of a plan, depth first. */
export const nodes = (plan: PlanNode): ReadonlyArray<PlanNode> => [plan, ...(plan.Plans ?? []).flatMap(nodes)]

/** A plan as indented lines (`Node Type on relation using index`), for failure messages. */
export const render = (plan: PlanNode, depth = 0): string =>
  [
    `${"  ".repeat(depth)}${plan["Node Type"]}${plan["Relation Name"] === undefined ? "" : ` on ${plan["Relation Name"]}`}${
      plan["Index Name"] === undefined ? "" : ` using ${plan["Index Name"]}`
    }`,
    ...(plan.Plans ?? []).map((child) => render(child, depth + 1))
  ].join("\n")
