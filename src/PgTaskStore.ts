/**
 * The production `TaskStore`: Postgres through `@effect/sql`. Same semantics
 * as `MemoryTaskStore`, proven by the same test suite.
 *
 * - Time is the database's `now()`, never a worker's clock.
 * - A claim is one statement: per queue, the due tasks (queued ones, and
 *   running ones whose lease expired and whose backoff passed) in priority
 *   then due order, `FOR UPDATE SKIP LOCKED`, taken round-robin across queues.
 * - Fleet-wide `maxConcurrency` is enforced inside the claiming transaction
 *   under a transaction-scoped advisory lock per limited task.
 * - Every write that ends or extends an attempt is fenced on
 *   (id, attempt, owner): an owner is set only while a task runs (a
 *   constraint), and the single writes also check the status.
 * - The hot statements (claim, lease, enqueue, complete) are server-side
 *   functions that keep their plans (`internal/pg*.ts`).
 * - `LISTEN`/`NOTIFY` wakes idle workers; polling is the fallback.
 *
 * @example
 * ```ts
 * const StoreLive = PgTaskStore.layerFromUrl("postgres://localhost/app")
 * Layer.launch(Worker.layer(registry).pipe(Layer.provide(StoreLive)))
 * ```
 *
 * @since 0.1.0
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { ConfigurationError, LeaseLost, StoreError, TaskNotFound } from "./Errors.js"
import * as PgClaimDue from "./internal/pgClaimDue.js"
import * as PgListener from "./internal/pgListener.js"
import * as PgMigrations from "./internal/pgMigrations.js"
import * as PgPinnedSession from "./internal/pgPinnedSession.js"
import {
  AttemptError,
  type ClaimedTask,
  type ClaimRequest,
  type EnqueueRequest,
  type FailOutcome,
  type CompleteOptions,
  type Completion,
  type Lease,
  type QueueStats,
  type TaskInfo,
  TaskStatus,
  TaskStore,
  type WorkerInfo
} from "./TaskStore.js"

/** Options of the Postgres store. */
export interface Options {
  /** The Postgres schema holding hyrex's tables, so applications can share a database. Default `"hyrex"`. */
  readonly schema?: string | undefined
  /** Create or upgrade the schema when the layer is built. Default `true`; turn off when you run `hyrex migrate` yourself. */
  readonly migrate?: boolean | undefined
  /**
   * How long a batch of completions may wait for Postgres before its callers
   * get a `StoreError` (and retry). Default 10 seconds.
   */
  readonly writeTimeout?: Duration.DurationInput | undefined
}

/** Defaults of `Options`. */
export const defaults = { schema: "hyrex", migrate: true, writeTimeout: Duration.seconds(10) } as const

const validSchema = /^[a-z_][a-z0-9_]{0,47}$/

const TaskRow = Schema.Struct({
  id: Schema.String,
  name: Schema.String,
  queue: Schema.String,
  status: TaskStatus,
  payload: Schema.Unknown,
  result: Schema.Unknown,
  priority: Schema.Number,
  attempt: Schema.Number,
  max_retries: Schema.Number,
  lease_losses: Schema.Number,
  lease_owner: Schema.NullOr(Schema.String),
  lease_expires_at: Schema.NullOr(Schema.DateFromSelf),
  run_at: Schema.DateFromSelf,
  idempotency_key: Schema.NullOr(Schema.String),
  errors: Schema.Array(AttemptError),
  created_at: Schema.DateFromSelf,
  updated_at: Schema.DateFromSelf,
  finished_at: Schema.NullOr(Schema.DateFromSelf)
})

/**
 * A column of a claim's answer: an array whose elements all pass `is`. One
 * check per column instead of a parser per element: decoding a claim of a
 * thousand tasks took longer than running their no-op handlers.
 */
const column = <A>(is: (u: unknown) => u is A, element: string) =>
  Schema.declare((u: unknown): u is ReadonlyArray<A> => Array.isArray(u) && u.every(is), {
    identifier: `ReadonlyArray<${element}>`
  })

const isNullOrString = (u: unknown): u is string | null => u === null || Predicate.isString(u)

/**
 * What a claim returns (`lease_batch`): the leased tasks, with what a worker
 * needs, as one array per column (all of one length), or null when it
 * leased none.
 */
const ClaimedColumns = Schema.NullOr(
  Schema.Struct({
    id: column(Predicate.isString, "string"),
    name: column(Predicate.isString, "string"),
    queue: column(Predicate.isString, "string"),
    payload: column(Predicate.isUnknown, "unknown"),
    priority: column(Predicate.isNumber, "number"),
    attempt: column(Predicate.isNumber, "number"),
    max_retries: column(Predicate.isNumber, "number"),
    lease_losses: column(Predicate.isNumber, "number"),
    takeover: column(Predicate.isBoolean, "boolean"),
    /** Epoch milliseconds. */
    due_at: column(Predicate.isNumber, "number"),
    trace_parent: column(isNullOrString, "string | null")
  }).pipe(Schema.filter((columns) => {
    const length = columns.id.length
    return Object.values(columns).every((values) => values.length === length) || "columns of different lengths"
  }))
)

const WorkerRow = Schema.Struct({
  id: Schema.String,
  name: Schema.String,
  host: Schema.String,
  pid: Schema.Number,
  queues: Schema.Array(Schema.String),
  concurrency: Schema.Number,
  status: Schema.Literal("running", "stopped", "dead"),
  in_flight: Schema.Number,
  started_at: Schema.DateFromSelf,
  last_heartbeat_at: Schema.DateFromSelf
})

const StatsRow = Schema.Struct({
  queue: Schema.String,
  queued: Schema.Number,
  scheduled: Schema.Number,
  running: Schema.Number,
  failed: Schema.Number,
  cancelled: Schema.Number,
  succeeded: Schema.Number,
  succeeded_last_hour: Schema.Number
})

const toInfo = (row: typeof TaskRow.Type): TaskInfo => ({
  id: row.id,
  name: row.name,
  queue: row.queue,
  status: row.status,
  payload: row.payload,
  result: row.result,
  priority: row.priority,
  attempt: row.attempt,
  maxRetries: row.max_retries,
  leaseLosses: row.lease_losses,
  leaseOwner: row.lease_owner,
  leaseExpiresAt: row.lease_expires_at,
  runAt: row.run_at,
  idempotencyKey: row.idempotency_key,
  errors: row.errors,
  createdAt: row.created_at,
  updatedAt: row.updated_at,
  finishedAt: row.finished_at
})

const isTaskId = (id: string) => /^\d{1,18}$/.test(id)

/**
 * The distinct leases of a batch write, and for each item its 1-based
 * position among them (0 for a repeat): a lease written twice in one
 * statement counts once, as it would one write after the other.
 */
const uniqueLeases = <A>(items: ReadonlyArray<A>, leaseOf: (item: A) => Lease) => {
  const positions = new Array<number>(items.length)
  const seen = new Set<string>()
  const unique: Array<A> = []
  for (let index = 0; index < items.length; index++) {
    const lease = leaseOf(items[index]!)
    const key = `${lease.taskId}:${lease.attempt}:${lease.owner}`
    if (seen.has(key)) {
      positions[index] = 0
    } else {
      seen.add(key)
      unique.push(items[index]!)
      positions[index] = unique.length
    }
  }
  return { positions, unique }
}

/**
 * Builds the store on the `SqlClient` in context (a `PgClient`). Migrates the
 * schema unless told not to.
 */
export const make = (
  options: Options = {}
): Effect.Effect<TaskStore["Type"], ConfigurationError | StoreError, SqlClient.SqlClient | Scope.Scope> =>
  Effect.gen(function*() {
    const schema = options.schema ?? defaults.schema
    if (!validSchema.test(schema)) {
      return yield* new ConfigurationError({
        option: "schema",
        issue: `"${schema}" is not a plain lower-case identifier (letters, digits, _; at most 48 characters)`
      })
    }
    const sql = yield* SqlClient.SqlClient
    const pgClient = yield* Effect.serviceOption(PgClient.PgClient)
    if (options.migrate ?? defaults.migrate) {
      yield* PgMigrations.migrate(schema).pipe(
        Effect.mapError((cause) => new StoreError({ operation: "migrate", cause }))
      )
    }

    const tasks = sql(`${schema}.tasks`)
    const workers = sql(`${schema}.workers`)
    const idempotency = sql(`${schema}.idempotency`)
    const retryDelay = sql(`${schema}.retry_delay`)
    const claimBatch = sql(`${schema}.claim_batch`)
    const leaseBatch = sql(`${schema}.lease_batch`)
    const completeBatch = sql(`${schema}.complete_batch`)
    const deleteBatch = sql(`${schema}.delete_batch`)
    const enqueueFunction = sql(`${schema}.enqueue`)
    const channel = `hyrex_${schema}`
    const maintenanceLock = `hyrex:maintenance:${schema}`

    // Every store call is a span (completions: one per batch) and fails with a StoreError.
    const wrap = (operation: string) => <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<A, StoreError> =>
      effect.pipe(
        Effect.mapError((cause) => new StoreError({ operation, cause })),
        Effect.withSpan(`hyrex.store.${operation}`, {
          captureStackTrace: false,
          attributes: { "hyrex.schema": schema }
        })
      )
    const decodeTasks = Schema.decodeUnknown(Schema.Array(TaskRow))
    const decodeClaims = Schema.decodeUnknown(ClaimedColumns)
    const json = (value: unknown) => JSON.stringify(value ?? null)
    // Values as a `text[]` of JSON texts. A batch travels as one JSON array,
    // split by the server: the client escapes one string instead of a
    // thousand (a batch of 1,000 took about 12 % less time). One value goes as
    // it is, which costs the server no extra planning on a single send's path.
    const jsonTexts = (values: ReadonlyArray<unknown>) =>
      values.length === 1
        ? sql`${[json(values[0])]}::text[]`
        : sql`ARRAY(SELECT e.value::text FROM jsonb_array_elements(${json(values)}::jsonb) WITH ORDINALITY e ORDER BY e.ordinality)`

    const claimedTasks = (request: ClaimRequest, columns: typeof ClaimedColumns.Type): Array<ClaimedTask> =>
      columns === null ? [] : Array.from(columns.id, (taskId, i): ClaimedTask => ({
        lease: { taskId, attempt: columns.attempt[i]!, owner: request.workerId },
        name: columns.name[i]!,
        queue: columns.queue[i]!,
        payload: columns.payload[i],
        priority: columns.priority[i]!,
        maxRetries: columns.max_retries[i]!,
        leaseLosses: columns.lease_losses[i]!,
        takeover: columns.takeover[i]!,
        dueAt: new Date(columns.due_at[i]!),
        traceParent: columns.trace_parent[i] ?? undefined
      }))
    /** The answer of `lease_batch` (directly or through `claim_batch`): one row, one JSON object of columns. */
    const leased = (request: ClaimRequest) => (rows: ReadonlyArray<{ readonly claimed: unknown }>) =>
      Effect.map(decodeClaims(rows[0]?.claimed ?? null), (claimed) => claimedTasks(request, claimed))

    const fencedBy = (lease: Lease) =>
      sql`t.id = ${lease.taskId} AND t.attempt = ${lease.attempt} AND t.lease_owner = ${lease.owner} AND t.status = 'running'`

    // A limited claim: due tasks of the unlimited names, and of each limited
    // name at most its free slots, locked per queue in claim order (the same
    // scan as `claim_batch`'s), then merged round-robin across queues; the
    // lease is taken by `lease_batch`, as for every claim.
    const claimLimited = (
      request: ClaimRequest,
      unlimited: ReadonlyArray<string>,
      slots: ReadonlyArray<readonly [name: string, free: number]>
    ) => {
      const dueIn = (names: string, limit: string) => sql.literal(PgClaimDue.dueIn(schema, "q.queue", names, limit))
      const queues = sql`claim, unnest(claim.queues) WITH ORDINALITY AS q(queue, pos)`
      return sql<{ readonly claimed: unknown }>`
        SELECT ${leaseBatch}(ARRAY(
          WITH claim AS (
            SELECT ${request.queues}::text[] AS queues, ${unlimited}::text[] AS names, ${request.max}::int AS max
          )
          SELECT ${sql.literal(PgClaimDue.candidate(schema, "m"))} FROM (
            SELECT p.*,
              row_number() OVER (PARTITION BY p.queue ORDER BY p.priority DESC, p.run_at, p.id) AS turn,
              row_number() OVER (PARTITION BY p.name ORDER BY p.priority DESC, p.run_at, p.id) AS slot
            FROM (
              ${
        unlimited.length === 0 ? sql`` : sql`
              SELECT c.*, q.pos, NULL::int AS free FROM ${queues}
              CROSS JOIN LATERAL (${dueIn("ANY(claim.names)", "claim.max")}) c
              UNION ALL`
      }
              SELECT c.*, q.pos, s.free FROM ${queues}
              CROSS JOIN unnest(${slots.map(([name]) => name)}::text[], ${slots.map(([, free]) => free)}::int[]) AS s(name, free)
              CROSS JOIN LATERAL (${dueIn("s.name", "LEAST(s.free, claim.max)")}) c
            ) p
          ) m
          WHERE m.free IS NULL OR m.slot <= m.free
          ORDER BY m.turn, m.priority DESC, m.pos, m.run_at, m.id
          LIMIT ${request.max}
        ), ${request.leaseTtlMillis}::double precision, ${request.workerId}::text) AS claimed
      `.pipe(Effect.flatMap(leased(request)))
    }

    // Common claims on a session of their own, warmed by the claims before
    // (see pgPinnedSession), when the pool has sessions to spare for the
    // rest: with fewer than three, keeping one out could leave heartbeats
    // and completions waiting on it.
    const poolSize = Option.match(pgClient, { onNone: () => 0, onSome: (client) => client.config.maxConnections ?? 10 })
    const claimSession = poolSize >= 3
      ? yield* PgPinnedSession.make(sql, { idleTimeToLive: Duration.seconds(30) })
      : PgPinnedSession.unpinned
    const claimDueOf = (request: ClaimRequest, names: ReadonlyArray<string>) =>
      claimSession.run(sql<{ readonly claimed: unknown }>`
        SELECT ${claimBatch}(${request.queues}::text[], ${names}::text[], ${request.max}::int,
          ${request.leaseTtlMillis}::double precision, ${request.workerId}::text) AS claimed
      `).pipe(Effect.flatMap(leased(request)))

    // Limited tasks are claimed under an advisory lock per name (taken in one
    // order by every claimer, so they cannot deadlock): the count of live
    // leases and the claim that follows cannot interleave with another
    // worker's, and one statement still claims in priority order across
    // limited and unlimited tasks.
    const claim = (request: ClaimRequest) => {
      const unlimited = request.names.filter((name) => request.limits[name] === undefined)
      const limited = request.names.filter((name) => request.limits[name] !== undefined)
      if (limited.length === 0) return claimDueOf(request, unlimited)
      return sql.withTransaction(Effect.gen(function*() {
        yield* sql`
          SELECT pg_advisory_xact_lock(h) FROM (
            SELECT DISTINCT hashtext(${`hyrex:limit:${schema}:`} || name) AS h FROM unnest(${limited}::text[]) AS n(name)
            ORDER BY h
          ) locks`
        const live = yield* sql<{ readonly name: string; readonly running: number }>`
          SELECT name, count(*)::int AS running FROM ${tasks}
          WHERE name = ANY(${limited}::text[]) AND status = 'running' AND lease_expires_at > clock_timestamp()
          GROUP BY name`
        const running = new Map(live.map((row) => [row.name, row.running]))
        const slots = limited
          .map((name) => [name, request.limits[name]! - (running.get(name) ?? 0)] as const)
          .filter(([, free]) => free > 0)
        if (slots.length > 0) return yield* claimLimited(request, unlimited, slots)
        if (unlimited.length > 0) return yield* claimDueOf(request, unlimited)
        return []
      }))
    }

    const selectTask = (taskId: string) =>
      sql`SELECT * FROM ${tasks} WHERE id = ${taskId}`.pipe(
        Effect.flatMap(decodeTasks),
        Effect.map((rows) => Option.map(Option.fromNullable(rows[0]), toInfo))
      )

    const transition = (operation: string, taskId: string, update: Effect.Effect<ReadonlyArray<unknown>, unknown>) =>
      Effect.gen(function*() {
        if (!isTaskId(taskId)) return yield* new TaskNotFound({ taskId })
        yield* wrap(operation)(update)
        const task = yield* wrap(operation)(selectTask(taskId))
        if (Option.isNone(task)) return yield* new TaskNotFound({ taskId })
        return task.value
      })

    // One fenced UPDATE for many completions (`complete_batch`), each row
    // still conditional on its own lease. A lease completed twice in one batch
    // succeeds once, as it would one after the other. Bounded by
    // `writeTimeout` and disconnected: giving up on a round trip over a dead
    // link must not wait for the link.
    const writeTimeout = Duration.decode(options.writeTimeout ?? defaults.writeTimeout)
    const completeAll = (
      items: ReadonlyArray<Completion>,
      options?: CompleteOptions
    ): Effect.Effect<ReadonlyArray<boolean>, StoreError> => {
      const { positions, unique } = uniqueLeases(items, (item) => item.lease)
      // Each owner once (a worker's batch has one), and each lease's by its position.
      const owners = Array.from(new Set(unique.map((item) => item.lease.owner)))
      const ids = unique.map((item) => item.lease.taskId).join(",")
      const attempts = unique.map((item) => item.lease.attempt).join(",")
      const ownerPositions = unique.map((item) => owners.indexOf(item.lease.owner) + 1).join(",")
      const statement = options?.deleteSucceeded === true
        ? sql<{ readonly recorded: ReadonlyArray<number> }>`
          SELECT ${deleteBatch}(${ids}, ${attempts}, ${ownerPositions}, ${owners}::text[]) AS recorded`
        : sql<{ readonly recorded: ReadonlyArray<number> }>`
          SELECT ${completeBatch}(
            ${ids}, ${attempts}, ${ownerPositions}, ${owners}::text[],
            ${JSON.stringify(unique.map((item) => item.result ?? null))}::jsonb
          ) AS recorded`
      return statement.pipe(
        wrap("complete"),
        Effect.disconnect,
        Effect.timeoutFail({
          duration: writeTimeout,
          onTimeout: () => new StoreError({ operation: "complete", cause: new Error("no answer within writeTimeout") })
        }),
        Effect.map(([row]) => {
          const recorded = new Set(row?.recorded ?? [])
          return positions.map((position) => recorded.has(position))
        })
      )
    }
    // One fenced UPDATE gives many leases back (fenced as completions are:
    // an owner is set only while a task runs), and wakes each queue once.
    const releaseAll = (leases: ReadonlyArray<Lease>): Effect.Effect<ReadonlyArray<boolean>, StoreError> => {
      const { positions, unique } = uniqueLeases(leases, (lease) => lease)
      return sql<{ readonly position: number }>`
        WITH released AS (
          UPDATE ${tasks} t SET status = 'queued', attempt = t.attempt - 1, lease_owner = NULL, lease_expires_at = NULL,
            run_at = now(), updated_at = now()
          FROM unnest(
            ${unique.map((lease) => lease.taskId)}::bigint[],
            ${unique.map((lease) => lease.attempt)}::int[],
            ${unique.map((lease) => lease.owner)}::text[]
          ) WITH ORDINALITY AS l(id, attempt, owner, position)
          WHERE t.id = l.id AND t.attempt = l.attempt AND t.lease_owner = l.owner
          RETURNING l.position, t.queue
        )
        SELECT r.position::int AS position FROM released r
        CROSS JOIN (SELECT count(pg_notify(${channel}, q.queue)) FROM (SELECT DISTINCT queue FROM released) q) notified
      `.pipe(
        wrap("release"),
        Effect.map((rows) => {
          const released = new Set(rows.map((row) => row.position))
          return positions.map((position) => released.has(position))
        })
      )
    }
    const complete = (lease: Lease, result: unknown) =>
      Effect.flatMap(completeAll([{ lease, result }]), ([recorded]) => recorded ? Effect.void : Effect.fail(new LeaseLost(lease)))

    // One LISTEN connection per store, shared by all its workers, opened when
    // the first one subscribes (a producer alone never opens it).
    const listener = yield* Option.match(pgClient, {
      onNone: () => Effect.succeed(Stream.empty),
      onSome: (client) => PgListener.listen(client.config, channel)
    })

    // Pruning deletes in batches of 5,000, at most 20 per run (100,000 rows
    // a minute at the default interval), so one run never holds long locks.
    const pruneBatch = 5000
    const inBatches = (statement: Effect.Effect<ReadonlyArray<unknown>, unknown>) =>
      Effect.iterate(0, {
        while: (batch) => batch < 20,
        body: (batch) => Effect.map(statement, (deleted) => deleted.length < pruneBatch ? 20 : batch + 1)
      })

    return TaskStore.of({
      enqueue: (all) => {
        // ON CONFLICT cannot touch one row twice in a statement: a key repeated
        // within the batch is sent once and its id shared.
        const firstOfKey = new Map<string, number>()
        const requests: Array<EnqueueRequest> = []
        const slots = all.map((request) => {
          const key = request.idempotencyKey === undefined ? undefined : `${request.name}\u0000${request.idempotencyKey}`
          const seen = key === undefined ? undefined : firstOfKey.get(key)
          if (seen !== undefined) return seen
          requests.push(request)
          if (key !== undefined) firstOfKey.set(key, requests.length - 1)
          return requests.length - 1
        })
        // Without idempotency keys nothing can conflict: a plain insert skips
        // the speculative insertion ON CONFLICT costs on every row.
        const keyed = requests.some((r) => r.idempotencyKey !== undefined)
        return sql<{ readonly id: string }>`
          SELECT id FROM ${enqueueFunction}(
            ${requests.map((r) => r.name)}::text[],
            ${requests.map((r) => r.queue)}::text[],
            ${jsonTexts(requests.map((r) => r.payload))},
            ${requests.map((r) => r.priority)}::int[],
            ${requests.map((r) => r.maxRetries)}::int[],
            ${jsonTexts(requests.map((r) => r.backoff))},
            ${requests.map((r) => r.delayMillis)}::double precision[],
            ${requests.map((r) => r.idempotencyKey ?? null)}::text[],
            ${requests.map((r) => r.traceParent ?? null)}::text[],
            ${channel}::text,
            ${keyed}
          )
        `.pipe(
          Effect.filterOrFail(
            (rows) => rows.length === requests.length,
            (rows) => new Error(`enqueue of ${requests.length} task(s) answered ${rows.length} id(s)`)
          ),
          Effect.map((rows) => slots.map((slot) => rows[slot]!.id)),
          wrap("enqueue")
        )
      },

      claim: (request) => wrap("claim")(claim(request)),

      heartbeat: (request) =>
        sql<{ readonly id: string; readonly attempt: number }>`
          WITH held AS (
            UPDATE ${tasks} t SET
              lease_expires_at = now() + make_interval(secs => ${request.leaseTtlMillis}::double precision / 1000),
              run_at = now() + make_interval(secs => ${request.leaseTtlMillis}::double precision / 1000)
                + CASE WHEN t.attempt > t.max_retries THEN interval '0' ELSE ${retryDelay}(t.backoff, t.attempt) END
            FROM unnest(${request.leases.map((l) => l.taskId)}::bigint[], ${request.leases.map((l) => l.attempt)}::int[])
              AS l(id, attempt)
            WHERE t.id = l.id AND t.attempt = l.attempt AND t.lease_owner = ${request.workerId} AND t.status = 'running'
              -- An expired lease is not renewed, even if nobody took it over
              -- yet: its slot may already count as free for a limited task.
              AND t.lease_expires_at > now()
            RETURNING t.id::text AS id, t.attempt
          ), beat AS (
            UPDATE ${workers} SET last_heartbeat_at = now(), in_flight = ${request.leases.length}, status = 'running'
            WHERE id = ${request.workerId}
          )
          SELECT id, attempt FROM held
        `.pipe(
          Effect.map((rows) => rows.map((row): Lease => ({ taskId: row.id, attempt: row.attempt, owner: request.workerId }))),
          wrap("heartbeat")
        ),

      complete,
      completeAll,

      fail: (lease, failure) =>
        sql<{ readonly status: string; readonly run_at: Date }>`
          WITH failed AS (
            UPDATE ${tasks} t SET
              errors = t.errors || jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
                'attempt', t.attempt, 'kind', ${failure.kind}::text, 'message', ${failure.message}::text,
                'cause', ${failure.cause ?? null}::text, 'worker', t.lease_owner, 'at', now()))),
              status = CASE WHEN ${failure.retryable} AND t.attempt <= t.max_retries THEN 'queued' ELSE 'failed' END,
              run_at = CASE WHEN ${failure.retryable} AND t.attempt <= t.max_retries
                THEN now() + ${retryDelay}(t.backoff, t.attempt) ELSE t.run_at END,
              finished_at = CASE WHEN ${failure.retryable} AND t.attempt <= t.max_retries THEN NULL ELSE now() END,
              lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
            WHERE ${fencedBy(lease)}
            RETURNING t.status, t.run_at, t.queue
          )
          SELECT status, run_at,
            CASE WHEN status = 'queued' AND run_at <= now() THEN pg_notify(${channel}, queue) END AS notified
          FROM failed
        `.pipe(
          wrap("fail"),
          Effect.flatMap((rows) => {
            const row = rows[0]
            if (row === undefined) return Effect.fail(new LeaseLost(lease))
            const outcome: FailOutcome = row.status === "queued" ? { _tag: "Retrying", runAt: row.run_at } : { _tag: "Dead" }
            return Effect.succeed(outcome)
          })
        ),

      release: (lease) =>
        Effect.flatMap(releaseAll([lease]), ([released]) => released ? Effect.void : Effect.fail(new LeaseLost(lease))),
      releaseAll,

      cancel: (taskId) =>
        transition(
          "cancel",
          taskId,
          sql`UPDATE ${tasks} SET status = 'cancelled', lease_owner = NULL, lease_expires_at = NULL,
                finished_at = now(), updated_at = now()
              WHERE id = ${taskId} AND status IN ('queued', 'running')`
        ),

      retry: (taskId) =>
        transition(
          "retry",
          taskId,
          // Attempts stay monotonic so that a stale lease can never match again.
          sql`WITH retried AS (
                UPDATE ${tasks} SET status = 'queued', max_retries = attempt + jsonb_array_length(backoff),
                  run_at = now(), finished_at = NULL, updated_at = now()
                WHERE id = ${taskId} AND status IN ('failed', 'cancelled')
                RETURNING queue
              )
              SELECT pg_notify(${channel}, queue) FROM retried`
        ),

      getTask: (taskId) =>
        isTaskId(taskId) ? wrap("getTask")(selectTask(taskId)) : Effect.succeed(Option.none()),

      listTasks: (filter) =>
        sql`
          SELECT * FROM ${tasks}
          WHERE ${
          sql.and([
            ...(filter.status === undefined ? [] : [sql`status = ${filter.status}`]),
            ...(filter.queue === undefined ? [] : [sql`queue = ${filter.queue}`]),
            ...(filter.name === undefined ? [] : [sql`name = ${filter.name}`])
          ])
        }
          ORDER BY id DESC
          LIMIT ${filter.limit ?? 100}
        `.pipe(Effect.flatMap(decodeTasks), Effect.map((rows) => rows.map(toInfo)), wrap("listTasks")),

      stats: sql`
        SELECT queue,
          count(*) FILTER (WHERE status = 'queued' AND run_at <= now())::int AS queued,
          count(*) FILTER (WHERE status = 'queued' AND run_at > now())::int AS scheduled,
          count(*) FILTER (WHERE status = 'running')::int AS running,
          count(*) FILTER (WHERE status = 'failed')::int AS failed,
          count(*) FILTER (WHERE status = 'cancelled')::int AS cancelled,
          count(*) FILTER (WHERE status = 'succeeded')::int AS succeeded,
          count(*) FILTER (WHERE status = 'succeeded' AND finished_at > now() - interval '1 hour')::int AS succeeded_last_hour
        FROM ${tasks} GROUP BY queue ORDER BY queue
      `.pipe(
        Effect.flatMap(Schema.decodeUnknown(Schema.Array(StatsRow))),
        Effect.map((rows) =>
          rows.map((row): QueueStats => ({
            queue: row.queue,
            queued: row.queued,
            scheduled: row.scheduled,
            running: row.running,
            failed: row.failed,
            cancelled: row.cancelled,
            succeeded: row.succeeded,
            succeededLastHour: row.succeeded_last_hour
          }))
        ),
        wrap("stats")
      ),

      registerWorker: (worker) =>
        sql`
          INSERT INTO ${workers} (id, name, host, pid, queues, concurrency, status)
          VALUES (${worker.id}, ${worker.name}, ${worker.host}, ${worker.pid}, ${worker.queues}::text[], ${worker.concurrency}, 'running')
          ON CONFLICT (id) DO UPDATE SET status = 'running', last_heartbeat_at = now()
        `.pipe(Effect.asVoid, wrap("registerWorker")),

      deregisterWorker: (workerId) =>
        sql`UPDATE ${workers} SET status = 'stopped', in_flight = 0, last_heartbeat_at = now() WHERE id = ${workerId}`.pipe(
          Effect.asVoid,
          wrap("deregisterWorker")
        ),

      listWorkers: sql`SELECT * FROM ${workers} ORDER BY started_at`.pipe(
        Effect.flatMap(Schema.decodeUnknown(Schema.Array(WorkerRow))),
        Effect.map((rows) =>
          rows.map((row): WorkerInfo => ({
            id: row.id,
            name: row.name,
            host: row.host,
            pid: row.pid,
            queues: row.queues,
            concurrency: row.concurrency,
            status: row.status,
            inFlight: row.in_flight,
            startedAt: row.started_at,
            lastHeartbeatAt: row.last_heartbeat_at
          }))
        ),
        wrap("listWorkers")
      ),

      getIdempotent: (key) =>
        sql<{ readonly value: unknown }>`SELECT value FROM ${idempotency} WHERE key = ${key}`.pipe(
          Effect.map((rows) => Option.map(Option.fromNullable(rows[0]), (row) => row.value)),
          wrap("getIdempotent")
        ),

      putIdempotent: (key, value, taskId) =>
        Effect.gen(function*() {
          const inserted = yield* sql<{ readonly value: unknown }>`
            INSERT INTO ${idempotency} (key, value, task_id)
            VALUES (${key}, ${json(value)}::jsonb, ${taskId !== undefined && isTaskId(taskId) ? taskId : null}::bigint)
            ON CONFLICT (key) DO NOTHING
            RETURNING value`
          if (inserted.length > 0) return inserted[0]!.value
          // Lost the race: a new statement sees the winner's committed row.
          const [winner] = yield* sql<{ readonly value: unknown }>`SELECT value FROM ${idempotency} WHERE key = ${key}`
          return winner?.value ?? null
        }).pipe(wrap("putIdempotent")),

      maintenance: (maintenance) =>
        sql.withTransaction(Effect.gen(function*() {
          const [lock] = yield* sql<{ readonly locked: boolean }>`
            SELECT pg_try_advisory_xact_lock(hashtext(${maintenanceLock})) AS locked`
          if (lock?.locked !== true) return
          const retention = sql`make_interval(secs => ${maintenance.retentionMillis}::double precision / 1000)`
          yield* sql`
            UPDATE ${tasks} t SET status = 'failed', finished_at = now(), updated_at = now(),
              lease_losses = t.lease_losses + 1, lease_owner = NULL, lease_expires_at = NULL,
              errors = t.errors || jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
                'attempt', t.attempt, 'kind', 'lease_expired', 'message', 'lease of worker ' || t.lease_owner || ' expired',
                'worker', t.lease_owner, 'at', t.lease_expires_at)))
            WHERE t.status = 'running' AND t.lease_expires_at <= now() AND t.attempt > t.max_retries`
          yield* inBatches(sql`
            DELETE FROM ${tasks} WHERE id IN (
              SELECT id FROM ${tasks} WHERE status IN ('succeeded', 'cancelled') AND finished_at < now() - ${retention}
              LIMIT ${pruneBatch})
            RETURNING 1`)
          // A record stays while its task may still run: a retry after a long
          // backoff must find what an earlier attempt did.
          yield* inBatches(sql`
            DELETE FROM ${idempotency} WHERE key IN (
              SELECT i.key FROM ${idempotency} i
              WHERE i.created_at < now() - ${retention}
                AND NOT EXISTS (
                  SELECT 1 FROM ${tasks} t WHERE t.id = i.task_id AND t.status IN ('queued', 'running'))
              LIMIT ${pruneBatch})
            RETURNING 1`)
          yield* sql`
            UPDATE ${workers} SET status = 'dead'
            WHERE status = 'running'
              AND last_heartbeat_at < now() - make_interval(secs => ${maintenance.workerTimeoutMillis}::double precision / 1000)`
          yield* sql`DELETE FROM ${workers} WHERE status <> 'running' AND last_heartbeat_at < now() - ${retention}`
        })).pipe(wrap("maintenance")),

      wakeups: listener
    })
  })

/** The store as a Layer on the `SqlClient` in context. */
export const layer = (options: Options = {}): Layer.Layer<TaskStore, ConfigurationError | StoreError, SqlClient.SqlClient> =>
  Layer.scoped(TaskStore, make(options))

/** The store with its own connection pool to `url`. */
export const layerFromUrl = (
  url: string | Redacted.Redacted,
  options: Options & { readonly maxConnections?: number | undefined } = {}
): Layer.Layer<TaskStore, ConfigurationError | StoreError> =>
  layer(options).pipe(
    Layer.provide(
      PgClient.layer({
        url: typeof url === "string" ? Redacted.make(url) : url,
        maxConnections: options.maxConnections ?? 10,
        applicationName: "hyrex"
      }).pipe(Layer.mapError((cause) => new StoreError({ operation: "connect", cause })))
    )
  )

/**
 * The store configured from the environment: `DATABASE_URL` (required),
 * `HYREX_SCHEMA`, `HYREX_MIGRATE` (true/false), `HYREX_MAX_CONNECTIONS`.
 */
export const layerConfig: Layer.Layer<TaskStore, ConfigurationError | StoreError | ConfigError.ConfigError> = Layer.unwrapEffect(
  Effect.map(
    Config.all({
      url: Config.redacted("DATABASE_URL"),
      schema: Config.string("HYREX_SCHEMA").pipe(Config.withDefault(defaults.schema)),
      migrate: Config.boolean("HYREX_MIGRATE").pipe(Config.withDefault(defaults.migrate)),
      maxConnections: Config.integer("HYREX_MAX_CONNECTIONS").pipe(Config.withDefault(10))
    }),
    ({ maxConnections, migrate, schema, url }) => layerFromUrl(url, { schema, migrate, maxConnections })
  )
)

/** Runs the migrations only (for `hyrex migrate` or a deploy step). */
export const migrate = (options: Pick<Options, "schema"> = {}): Effect.Effect<void, ConfigurationError | StoreError, SqlClient.SqlClient> =>
  Effect.scoped(Effect.asVoid(make({ schema: options.schema, migrate: true })))
