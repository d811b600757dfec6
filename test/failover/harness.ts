/**
 * A fleet of real `node` worker processes (`workerProcess.ts`) on one fresh
 * Postgres database, and what the fail-over tests check about it.
 *
 * - {@link withFleet} gives a test a fresh database (`TestDatabase.database`),
 *   the hyrex schema, the `executions` side-effect table, a `TaskStore` to
 *   send tasks with, and spawns / stops / kills / pauses worker processes.
 *   Every process is SIGKILLed when the test ends; if the test fails, the
 *   state of the database and the tail of every worker's output are printed.
 * - {@link Fleet.waitFor} polls with a real-time deadline and fails with the
 *   state it saw.
 * - {@link checkInvariants} is the fail-over contract: nothing lost, every
 *   task terminal, at most one execution per lease, and only the current
 *   lease's execution ever commits a result.
 * - {@link takeovers} measures fault-to-takeover times (reported, and only
 *   loosely bounded: the machine is shared and noisy).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { type ChildProcess, spawn as spawnChild } from "node:child_process"
import { fileURLToPath } from "node:url"
import * as PgTaskStore from "../../src/PgTaskStore.js"
import type * as Task from "../../src/Task.js"
import { TaskStore } from "../../src/TaskStore.js"
import * as TestDatabase from "../utils/TestDatabase.js"
import { createExecutionsTable, Outcome } from "./tasks.js"

const root = fileURLToPath(new URL("../..", import.meta.url))
const entry = fileURLToPath(new URL("./workerProcess.ts", import.meta.url))

/** The hyrex schema the fleet uses. */
export const SCHEMA = "hyrex"

// ---------------------------------------------------------------------------
// Worker processes
// ---------------------------------------------------------------------------

/** How to start one worker process. Durations in milliseconds. */
export interface WorkerSpec {
  readonly leaseTtl: number
  readonly heartbeatInterval: number
  readonly pollInterval: number
  readonly drainTimeout: number
  readonly concurrency: number
  /** Where the worker connects (a proxy's URL); default the fleet's database. */
  readonly databaseUrl?: string | undefined
  /** Extra `node` flags, e.g. `--max-old-space-size=128`. */
  readonly nodeArgs?: ReadonlyArray<string> | undefined
}

/** Short leases, so that a scenario takes seconds. */
export const defaultSpec: WorkerSpec = {
  leaseTtl: 2_000,
  heartbeatInterval: 500,
  pollInterval: 200,
  drainTimeout: 3_000,
  concurrency: 4
}

/** One JSON log line of a worker (`Logger.json`). */
export interface LogLine {
  readonly message: string
  readonly level: string
  readonly at: number
  readonly annotations: Readonly<Record<string, unknown>>
  readonly cause: string | undefined
}

const JsonLine = Schema.parseJson(Schema.Struct({
  message: Schema.Unknown,
  logLevel: Schema.String,
  timestamp: Schema.Date,
  annotations: Schema.Record({ key: Schema.String, value: Schema.Unknown }),
  cause: Schema.optional(Schema.String)
}))
const decodeLine = Schema.decodeUnknownOption(JsonLine)

/** How a process ended. */
export interface ProcessExit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly at: number
}

/** A running (or finished) worker process. */
export interface WorkerProcess {
  /** `w1`, `w2`, … (also its `HYREX_WORKER_NAME`). */
  readonly name: string
  readonly pid: number
  readonly spec: WorkerSpec
  /** The worker's id in the store (`<name>/<uuid>`), known once it started. */
  readonly workerId: () => string | undefined
  readonly logs: () => ReadonlyArray<LogLine>
  readonly stdout: () => string
  readonly stderr: () => string
  readonly exit: Deferred.Deferred<ProcessExit>
  readonly isAlive: () => boolean
  /** Set when the test itself ends the process; a supervisor restarts only the others. */
  intended: boolean
}

const describeExit = (exit: ProcessExit) => exit.signal !== null ? `signal ${exit.signal}` : `code ${exit.code}`

const tail = (text: string, lines: number) => text.split("\n").slice(-lines).join("\n")

/** Log lines of `worker` whose message starts with `prefix`. */
export const logsOf = (worker: WorkerProcess, prefix: string): ReadonlyArray<LogLine> =>
  worker.logs().filter((line) => line.message.startsWith(prefix))

const spawnProcess = (name: string, spec: WorkerSpec, databaseUrl: string): WorkerProcess => {
  const args = [
    ...(spec.nodeArgs ?? []),
    "--import",
    "tsx",
    entry,
    `--leaseTtl=${spec.leaseTtl}`,
    `--heartbeatInterval=${spec.heartbeatInterval}`,
    `--pollInterval=${spec.pollInterval}`,
    `--drainTimeout=${spec.drainTimeout}`,
    `--concurrency=${spec.concurrency}`,
    `--name=${name}`
  ]
  const child: ChildProcess = spawnChild(process.execPath, args, {
    cwd: root,
    env: { ...process.env, DATABASE_URL: spec.databaseUrl ?? databaseUrl, HYREX_SCHEMA: SCHEMA },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let stdout = ""
  let stderr = ""
  let partial = ""
  const logs: Array<LogLine> = []
  let workerId: string | undefined
  let alive = true
  const exit = Deferred.unsafeMake<ProcessExit>(FiberId.none)
  child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk
    const lines = (partial + chunk).split("\n")
    partial = lines.pop() ?? ""
    for (const text of lines) {
      const parsed = decodeLine(text)
      if (Option.isNone(parsed)) continue
      const { annotations, cause, logLevel, message, timestamp } = parsed.value
      const first = Array.isArray(message) ? message[0] : message
      const line: LogLine = {
        message: typeof first === "string" ? first : JSON.stringify(first),
        level: logLevel,
        at: timestamp.getTime(),
        annotations,
        cause
      }
      logs.push(line)
      if (workerId === undefined && typeof annotations["worker"] === "string") workerId = annotations["worker"]
    }
  })
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk
  })
  child.on("exit", (code, signal) => {
    alive = false
    Deferred.unsafeDone(exit, Exit.succeed({ code, signal, at: Date.now() }))
  })
  if (child.pid === undefined) throw new Error(`could not spawn worker ${name}`)
  return {
    name,
    pid: child.pid,
    spec,
    workerId: () => workerId,
    logs: () => logs,
    stdout: () => stdout,
    stderr: () => stderr,
    exit,
    isAlive: () => alive,
    intended: false
  }
}

// ---------------------------------------------------------------------------
// Database state
// ---------------------------------------------------------------------------

const AttemptErrorRow = Schema.Struct({
  attempt: Schema.Number,
  kind: Schema.String,
  message: Schema.String,
  worker: Schema.optional(Schema.String),
  at: Schema.DateFromString
})

const TaskRow = Schema.Struct({
  id: Schema.String,
  name: Schema.String,
  status: Schema.String,
  attempt: Schema.Number,
  max_retries: Schema.Number,
  lease_losses: Schema.Number,
  lease_owner: Schema.NullOr(Schema.String),
  lease_expires_at: Schema.NullOr(Schema.DateFromSelf),
  errors: Schema.Array(AttemptErrorRow),
  result: Schema.NullOr(Outcome),
  payload: Schema.Unknown
})
export type TaskRow = typeof TaskRow.Type

const ExecutionRow = Schema.Struct({
  id: Schema.String,
  task_id: Schema.String,
  task_name: Schema.String,
  attempt: Schema.Number,
  worker_id: Schema.String,
  pid: Schema.Number,
  started_at: Schema.DateFromSelf,
  finished_at: Schema.NullOr(Schema.DateFromSelf),
  interrupted_at: Schema.NullOr(Schema.DateFromSelf)
})
export type ExecutionRow = typeof ExecutionRow.Type

const WorkerRow = Schema.Struct({
  id: Schema.String,
  pid: Schema.Number,
  status: Schema.String,
  in_flight: Schema.Number,
  last_heartbeat_at: Schema.DateFromSelf
})
export type WorkerRow = typeof WorkerRow.Type

/** What the database holds. */
export interface Snapshot {
  readonly tasks: ReadonlyArray<TaskRow>
  readonly executions: ReadonlyArray<ExecutionRow>
  readonly workers: ReadonlyArray<WorkerRow>
}

const terminal = (status: string) => status === "succeeded" || status === "failed" || status === "cancelled"

const summarize = (snapshot: Snapshot): string => {
  const counts: Record<string, number> = {}
  for (const task of snapshot.tasks) counts[task.status] = (counts[task.status] ?? 0) + 1
  const open = snapshot.tasks.filter((task) => !terminal(task.status)).slice(0, 15).map((task) =>
    `  task ${task.id} ${task.name} ${task.status} attempt=${task.attempt} owner=${task.lease_owner} ` +
    `expires=${task.lease_expires_at?.toISOString()} losses=${task.lease_losses}`
  )
  const workers = snapshot.workers.map((worker) =>
    `  worker ${worker.id} pid=${worker.pid} ${worker.status} in_flight=${worker.in_flight} ` +
    `last_heartbeat=${worker.last_heartbeat_at.toISOString()}`
  )
  return [
    `tasks by status: ${JSON.stringify(counts)}; executions: ${snapshot.executions.length}`,
    ...open,
    ...workers
  ].join("\n")
}

// ---------------------------------------------------------------------------
// The fleet
// ---------------------------------------------------------------------------

/** A database and the worker processes working on it. */
export interface Fleet {
  readonly databaseUrl: string
  readonly sql: SqlClient.SqlClient
  readonly store: TaskStore["Type"]
  /** Every process spawned so far, in order (including finished ones). */
  readonly workers: () => ReadonlyArray<WorkerProcess>
  readonly alive: () => ReadonlyArray<WorkerProcess>
  /** Starts a worker and waits until it runs (`worker started`). */
  readonly spawn: (spec?: Partial<WorkerSpec>) => Effect.Effect<WorkerProcess, Error>
  /** Starts `n` workers at once. */
  readonly spawnMany: (n: number, spec?: Partial<WorkerSpec>) => Effect.Effect<ReadonlyArray<WorkerProcess>, Error>
  /** Sends a signal; the harness keeps track of processes it ended on purpose. */
  readonly signal: (worker: WorkerProcess, signal: NodeJS.Signals) => Effect.Effect<void>
  /** SIGTERM, then wait for the process to exit (it drains). */
  readonly stop: (worker: WorkerProcess) => Effect.Effect<ProcessExit, Error>
  /** SIGKILL (or `signal`), then wait for the process to be gone. */
  readonly kill: (worker: WorkerProcess, signal?: NodeJS.Signals) => Effect.Effect<ProcessExit, Error>
  readonly awaitExit: (worker: WorkerProcess, timeout: Duration.DurationInput) => Effect.Effect<ProcessExit, Error>
  /** While on, a process that exits without the test asking is replaced, as a supervisor would. */
  readonly supervise: (on: boolean) => Effect.Effect<void>
  /** Sends tasks and remembers their ids for {@link checkInvariants}. */
  readonly send: <A>(task: Task.Task<string, A, unknown, unknown>, payloads: Iterable<A>) => Effect.Effect<ReadonlyArray<string>, Error>
  readonly sent: () => ReadonlyArray<string>
  readonly snapshot: Effect.Effect<Snapshot, Error>
  /** Polls `check` until it holds, for at most `timeout` of real time. */
  readonly waitFor: <A>(
    description: string,
    check: Effect.Effect<Option.Option<A> | boolean, unknown>,
    timeout?: Duration.DurationInput
  ) => Effect.Effect<A | true, Error>
  /** Waits until every sent task is terminal. */
  readonly settled: (timeout?: Duration.DurationInput) => Effect.Effect<Snapshot, Error>
  /** The database state and the tail of every worker's output. */
  readonly diagnostics: Effect.Effect<string>
}

const messageOf = (error: unknown) => error instanceof Error ? error.message : String(error)

const make = (defaults: Partial<WorkerSpec>): Effect.Effect<Fleet, Error, Scope.Scope> =>
  Effect.gen(function*() {
    const database = yield* TestDatabase.database.pipe(Effect.mapError((error) => new Error(error.message)))
    const sql = yield* TestDatabase.makeClient(database.url).pipe(Effect.mapError((error) => new Error(error.message)))
    const store = yield* PgTaskStore.make({ schema: SCHEMA }).pipe(
      Effect.provideService(SqlClient.SqlClient, sql),
      Effect.mapError((error) => new Error(error.message))
    )
    yield* createExecutionsTable.pipe(
      Effect.provideService(SqlClient.SqlClient, sql),
      Effect.mapError((error) => new Error(error.message))
    )

    const processes: Array<WorkerProcess> = []
    const sent: Array<string> = []
    let supervising = false
    let closed = false
    let counter = 0
    const baseSpec: WorkerSpec = { ...defaultSpec, ...defaults }

    const awaitExit = (worker: WorkerProcess, timeout: Duration.DurationInput) =>
      Deferred.await(worker.exit).pipe(
        Effect.timeoutFail({
          duration: timeout,
          onTimeout: () => new Error(`worker ${worker.name} (pid ${worker.pid}) did not exit within ${Duration.format(Duration.decode(timeout))}`)
        })
      )

    const watch = (worker: WorkerProcess): Effect.Effect<void> =>
      Deferred.await(worker.exit).pipe(
        Effect.flatMap((exit) => {
          if (worker.intended || !supervising || closed) return Effect.void
          console.log(`[failover] supervisor: ${worker.name} (pid ${worker.pid}) died (${describeExit(exit)}); starting a replacement`)
          return spawn(worker.spec).pipe(
            Effect.catchAll((error) =>
              Effect.sync(() => closed || console.log(`[failover] supervisor: restart failed: ${error.message}`))
            )
          )
        })
      )

    const spawn = (overrides: Partial<WorkerSpec> = {}): Effect.Effect<WorkerProcess, Error> =>
      Effect.gen(function*() {
        const name = `w${++counter}`
        // Checked and spawned synchronously: the finalizer sees every process.
        const worker = yield* Effect.try({
          try: () => {
            if (closed) throw new Error("the fleet is shut down")
            const started = spawnProcess(name, { ...baseSpec, ...overrides }, database.url)
            processes.push(started)
            return started
          },
          catch: (error) => new Error(`spawning ${name}: ${messageOf(error)}`)
        })
        yield* Effect.forkDaemon(watch(worker))
        // Ready once it logged "worker started"; a process that dies first fails the spawn.
        yield* Effect.gen(function*() {
          for (;;) {
            if (worker.workerId() !== undefined && logsOf(worker, "worker started").length > 0) return
            if (!worker.isAlive()) {
              return yield* Effect.fail(
                new Error(`worker ${name} exited before it started:\n${tail(worker.stdout(), 20)}\n${tail(worker.stderr(), 20)}`)
              )
            }
            yield* Effect.sleep("50 millis")
          }
        }).pipe(
          Effect.timeoutFail({
            duration: "60 seconds",
            onTimeout: () => new Error(`worker ${name} did not start within 60 s:\n${tail(worker.stdout(), 20)}\n${tail(worker.stderr(), 20)}`)
          })
        )
        return worker
      })

    const signal = (worker: WorkerProcess, sig: NodeJS.Signals) =>
      Effect.sync(() => {
        if (sig === "SIGTERM" || sig === "SIGKILL" || sig === "SIGINT") worker.intended = true
        try {
          process.kill(worker.pid, sig)
        } catch {
          // Already gone.
        }
      })

    const snapshot: Effect.Effect<Snapshot, Error> = Effect.gen(function*() {
      const tasks = yield* sql`
        SELECT id::text AS id, name, status, attempt, max_retries, lease_losses, lease_owner, lease_expires_at,
          errors, result, payload
        FROM ${sql(`${SCHEMA}.tasks`)} ORDER BY id`.pipe(Effect.flatMap(Schema.decodeUnknown(Schema.Array(TaskRow))))
      const executions = yield* sql`
        SELECT id::text AS id, task_id::text AS task_id, task_name, attempt, worker_id, pid, started_at, finished_at,
          interrupted_at
        FROM executions ORDER BY started_at, id`.pipe(Effect.flatMap(Schema.decodeUnknown(Schema.Array(ExecutionRow))))
      const workers = yield* sql`
        SELECT id, pid, status, in_flight, last_heartbeat_at FROM ${sql(`${SCHEMA}.workers`)} ORDER BY started_at`.pipe(
        Effect.flatMap(Schema.decodeUnknown(Schema.Array(WorkerRow)))
      )
      return { tasks, executions, workers }
    }).pipe(Effect.mapError((error) => new Error(`reading the database: ${messageOf(error)}`)))

    const diagnostics = Effect.gen(function*() {
      const state = yield* snapshot.pipe(
        Effect.map(summarize),
        Effect.timeout("10 seconds"),
        Effect.catchAll((error) => Effect.succeed(`(database state unavailable: ${messageOf(error)})`))
      )
      const outputs = processes.map((worker) => {
        const status = worker.isAlive() ? "alive" : "exited"
        return `--- ${worker.name} pid ${worker.pid} (${worker.workerId() ?? "?"}) ${status}\n` +
          `${tail(worker.stdout(), 40)}\n${worker.stderr() === "" ? "" : `stderr:\n${tail(worker.stderr(), 20)}`}`
      })
      return [`=== database\n${state}`, ...outputs].join("\n")
    })

    const waitFor = <A>(
      description: string,
      check: Effect.Effect<Option.Option<A> | boolean, unknown>,
      timeout: Duration.DurationInput = "60 seconds"
    ): Effect.Effect<A | true, Error> =>
      Effect.gen(function*() {
        const deadline = (yield* Clock.currentTimeMillis) + Duration.toMillis(Duration.decode(timeout))
        let lastError: unknown = undefined
        for (;;) {
          const result = yield* Effect.either(check)
          if (result._tag === "Right") {
            const value = result.right
            if (value === true) return true as const
            if (typeof value !== "boolean" && Option.isSome(value)) return value.value
            lastError = undefined
          } else {
            lastError = result.left
          }
          if ((yield* Clock.currentTimeMillis) > deadline) {
            const state = yield* snapshot.pipe(
              Effect.map(summarize),
              Effect.catchAll((error) => Effect.succeed(`(database unavailable: ${error.message})`))
            )
            return yield* Effect.fail(
              new Error(
                `timed out after ${Duration.format(Duration.decode(timeout))} waiting for ${description}` +
                  (lastError === undefined ? "" : ` (last error: ${messageOf(lastError)})`) + `\n${state}`
              )
            )
          }
          yield* Effect.sleep("200 millis")
        }
      })

    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        supervising = false
        closed = true
        for (const worker of processes) {
          if (!worker.isAlive()) continue
          worker.intended = true
          // A paused process must be continued for SIGKILL's exit to be reported promptly.
          yield* signal(worker, "SIGKILL")
          yield* signal(worker, "SIGCONT")
        }
        yield* Effect.forEach(processes, (worker) => Effect.ignore(awaitExit(worker, "10 seconds")), { discard: true })
      })
    )

    return {
      databaseUrl: database.url,
      sql,
      store,
      workers: () => processes,
      alive: () => processes.filter((worker) => worker.isAlive()),
      spawn,
      spawnMany: (n, spec) => Effect.all(Array.from({ length: n }, () => spawn(spec)), { concurrency: "unbounded" }),
      signal,
      stop: (worker) =>
        signal(worker, "SIGTERM").pipe(
          Effect.zipRight(awaitExit(worker, Duration.millis(worker.spec.drainTimeout + 20_000)))
        ),
      kill: (worker, sig = "SIGKILL") =>
        Effect.sync(() => {
          worker.intended = true
        }).pipe(
          Effect.zipRight(signal(worker, sig)),
          Effect.zipRight(awaitExit(worker, "20 seconds"))
        ),
      awaitExit,
      supervise: (on) =>
        Effect.sync(() => {
          supervising = on
        }),
      send: (task, payloads) =>
        task.sendBatch(payloads).pipe(
          Effect.provideService(TaskStore, store),
          Effect.tap((ids) => Effect.sync(() => sent.push(...ids))),
          Effect.mapError((error) => new Error(`sending ${task.name}: ${error.message}`))
        ),
      sent: () => sent,
      snapshot,
      waitFor,
      settled: (timeout = "60 seconds") =>
        waitFor(
          `all ${sent.length} sent task(s) to end`,
          Effect.map(snapshot, (state) => {
            const ids = new Set(sent)
            const mine = state.tasks.filter((task) => ids.has(task.id))
            return mine.length === ids.size && mine.every((task) => terminal(task.status))
              ? Option.some(state)
              : Option.none()
          }),
          timeout
        ).pipe(Effect.flatMap((state) => state === true ? snapshot : Effect.succeed(state))),
      diagnostics
    }
  })

/**
 * Runs `body` with a fresh fleet; every worker process is killed afterwards.
 * On failure the database state and every worker's output are printed.
 */
export const withFleet = <A, E>(
  body: (fleet: Fleet) => Effect.Effect<A, E>,
  defaults: Partial<WorkerSpec> = {}
): Effect.Effect<A, E | Error> =>
  Effect.scoped(Effect.gen(function*() {
    const fleet = yield* make(defaults)
    return yield* body(fleet).pipe(
      Effect.onExit((exit) =>
        Exit.isSuccess(exit)
          ? Effect.void
          : Effect.flatMap(fleet.diagnostics, (text) => Effect.sync(() => console.log(`[failover] diagnostics\n${text}`)))
      )
    )
  }))

// ---------------------------------------------------------------------------
// Invariants
// ---------------------------------------------------------------------------

/** A lease given back at drain, from the releasing worker's log. */
export interface Release {
  readonly taskId: string
  readonly attempt: number
  readonly worker: string
  readonly at: number
}

/** Every `released at shutdown` any worker of the fleet logged. */
export const releases = (fleet: Fleet): ReadonlyArray<Release> =>
  fleet.workers().flatMap((worker) =>
    logsOf(worker, "released at shutdown").map((line) => ({
      taskId: String(line.annotations["taskId"]),
      attempt: Number(line.annotations["attempt"]),
      worker: String(line.annotations["worker"]),
      at: line.at
    }))
  )

/** What {@link checkInvariants} may expect beyond the defaults. */
export interface InvariantOptions {
  /** Names of tasks that must end `failed` (with every attempt's lease expired); all others must succeed. */
  readonly failing?: ReadonlyArray<string> | undefined
}

/**
 * The fail-over contract, checked on the final state. Returns the violations
 * (empty when all hold):
 *
 * 1. none lost: the store holds exactly the sent tasks;
 * 2. every task terminal: `succeeded`, or `failed` for the `failing` names
 *    after `maxRetries + 1` attempts that all lost their lease;
 * 3. the store's accounting adds up: `attempt` = error entries (+ 1 if
 *    succeeded), `leaseLosses` = `lease_expired` entries;
 * 4. at most one execution per lease: executions ≤ 1 + leaseLosses +
 *    releases of that task, and every execution's attempt ≤ the task's;
 * 5. only the live lease commits: a succeeded task's result was produced by
 *    a completed execution of its final attempt by that worker, and that
 *    attempt's lease never expired; every other completed execution lost its
 *    lease before it could commit (it expired, or was released at drain).
 */
export const checkInvariants = (
  snapshot: Snapshot,
  sent: ReadonlyArray<string>,
  released: ReadonlyArray<Release>,
  options: InvariantOptions = {}
): ReadonlyArray<string> => {
  const violations: Array<string> = []
  const failing = new Set(options.failing ?? [])
  const sentIds = new Set(sent)
  const byId = new Map(snapshot.tasks.map((task) => [task.id, task]))
  for (const id of sentIds) if (!byId.has(id)) violations.push(`task ${id} was sent but is not in the store (lost)`)
  for (const task of snapshot.tasks) if (!sentIds.has(task.id)) violations.push(`task ${task.id} is in the store but was never sent`)
  const executionsOf = new Map<string, Array<ExecutionRow>>()
  for (const execution of snapshot.executions) {
    const list = executionsOf.get(execution.task_id) ?? []
    list.push(execution)
    executionsOf.set(execution.task_id, list)
  }
  const releasesOf = new Map<string, number>()
  for (const release of released) releasesOf.set(release.taskId, (releasesOf.get(release.taskId) ?? 0) + 1)
  const releasedKey = new Set(released.map((release) => `${release.taskId}:${release.attempt}:${release.worker}`))

  for (const task of snapshot.tasks) {
    const where = `task ${task.id} (${task.name}, ${task.status}, attempt ${task.attempt}, lease losses ${task.lease_losses})`
    const executions = executionsOf.get(task.id) ?? []
    const expired = task.errors.filter((error) => error.kind === "lease_expired")
    const expiredKey = new Set(expired.map((error) => `${error.attempt}:${error.worker}`))

    // 2. terminal, with the expected outcome.
    if (failing.has(task.name)) {
      if (task.status !== "failed") violations.push(`${where}: should have ended failed`)
      if (task.attempt !== task.max_retries + 1) violations.push(`${where}: should have used ${task.max_retries + 1} attempts`)
      if (task.errors.some((error) => error.kind !== "lease_expired")) {
        violations.push(`${where}: every attempt should have lost its lease, errors: ${task.errors.map((e) => e.kind).join(", ")}`)
      }
    } else if (task.status !== "succeeded") {
      violations.push(`${where}: should have succeeded; errors: ${JSON.stringify(task.errors)}`)
    }

    // 3. the store's own accounting.
    const expectedAttempt = task.errors.length + (task.status === "succeeded" ? 1 : 0)
    if (task.attempt !== expectedAttempt) {
      violations.push(`${where}: attempt should be ${expectedAttempt} (${task.errors.length} error entries)`)
    }
    if (task.lease_losses !== expired.length) {
      violations.push(`${where}: leaseLosses should equal its ${expired.length} lease_expired entries`)
    }

    // 4. one execution per lease.
    const allowed = 1 + task.lease_losses + (releasesOf.get(task.id) ?? 0)
    if (executions.length > allowed) {
      violations.push(
        `${where}: ${executions.length} executions > 1 + leaseLosses + releases = ${allowed}: ` +
          executions.map((e) => `attempt ${e.attempt} by ${e.worker_id}`).join("; ")
      )
    }
    for (const execution of executions) {
      if (execution.attempt > task.attempt) {
        violations.push(`${where}: execution of attempt ${execution.attempt} by ${execution.worker_id} is beyond the task's attempt`)
      }
    }

    // 5. only the live lease commits.
    let committed: ExecutionRow | undefined
    if (task.status === "succeeded") {
      const result = task.result
      if (result === null) {
        violations.push(`${where}: succeeded without a result`)
      } else {
        if (result.attempt !== task.attempt) {
          violations.push(`${where}: result committed by attempt ${result.attempt}, not the final attempt`)
        }
        committed = executions.find((e) => e.attempt === result.attempt && e.worker_id === result.worker)
        if (committed === undefined || committed.finished_at === null) {
          violations.push(`${where}: result from ${result.worker} attempt ${result.attempt} has no completed execution`)
        }
        if (expiredKey.has(`${result.attempt}:${result.worker}`)) {
          violations.push(`${where}: result committed by ${result.worker} attempt ${result.attempt}, whose lease had expired`)
        }
      }
    }
    for (const execution of executions) {
      if (execution.finished_at === null || execution === committed) continue
      // Its work was done but its lease ended first: it expired, or the worker
      // gave it back at drain (interrupted after its last side effect landed).
      const key = `${execution.attempt}:${execution.worker_id}`
      if (!expiredKey.has(key) && !releasedKey.has(`${task.id}:${key}`)) {
        violations.push(
          `${where}: execution of attempt ${execution.attempt} by ${execution.worker_id} completed, ` +
            "did not commit, and its lease neither expired nor was released"
        )
      }
    }
  }
  return violations
}

/** Fails with every violation of {@link checkInvariants}; returns the snapshot. */
export const assertInvariants = (fleet: Fleet, options: InvariantOptions = {}): Effect.Effect<Snapshot, Error> =>
  Effect.gen(function*() {
    const snapshot = yield* fleet.snapshot
    const violations = checkInvariants(snapshot, fleet.sent(), releases(fleet), options)
    if (violations.length > 0) {
      return yield* Effect.fail(new Error(`${violations.length} invariant violation(s):\n  ${violations.join("\n  ")}`))
    }
    return snapshot
  })

// ---------------------------------------------------------------------------
// Takeover timing
// ---------------------------------------------------------------------------

/** One task that a fault took away from a worker, and who ran it next. */
export interface Takeover {
  readonly taskId: string
  readonly lost: ExecutionRow
  readonly next: ExecutionRow | undefined
  /** From the fault to the next execution's start, in ms. */
  readonly delayMs: number | undefined
}

/**
 * The executions `victims` had in flight at `faultAt` (started before it and
 * not finished before it), and the next execution of the same task elsewhere.
 */
export const takeovers = (
  snapshot: Snapshot,
  victims: ReadonlyArray<string>,
  faultAt: number
): ReadonlyArray<Takeover> => {
  const victimIds = new Set(victims)
  return snapshot.executions
    .filter((e) =>
      victimIds.has(e.worker_id) && e.started_at.getTime() <= faultAt &&
      (e.finished_at === null || e.finished_at.getTime() > faultAt)
    )
    .map((lost) => {
      const next = snapshot.executions.find((e) =>
        e.task_id === lost.task_id && !victimIds.has(e.worker_id) && e.started_at.getTime() > faultAt
      )
      return {
        taskId: lost.task_id,
        lost,
        next,
        delayMs: next === undefined ? undefined : next.started_at.getTime() - faultAt
      }
    })
}

/** Summary of delays: `min/median/max` in ms. */
export const describeDelays = (delays: ReadonlyArray<number>): string => {
  if (delays.length === 0) return "none"
  const sorted = [...delays].sort((a, b) => a - b)
  return `min ${sorted[0]} ms, median ${sorted[Math.floor(sorted.length / 2)]} ms, max ${sorted[sorted.length - 1]} ms (n=${sorted.length})`
}

/**
 * Logs the takeover times of a scenario against what the execution model
 * promises (`L + backoff + P + 1 s`) and returns the worst one. Only a loose
 * bound is asserted by the tests.
 */
export const reportTakeovers = (
  scenario: string,
  found: ReadonlyArray<Takeover>,
  spec: WorkerSpec,
  backoffMs: number
): number => {
  const delays = found.flatMap((t) => t.delayMs === undefined ? [] : [t.delayMs])
  const expected = spec.leaseTtl + backoffMs + spec.pollInterval + 1_000
  console.log(
    `[failover] ${scenario}: fault-to-takeover of ${found.length} in-flight task(s): ${describeDelays(delays)}; ` +
      `model: ≤ L + backoff + P + 1 s = ${expected} ms`
  )
  return delays.length === 0 ? 0 : Math.max(...delays)
}

/** The loose bound the tests assert on a takeover delay: `4 L + 10 s`. */
export const takeoverBound = (spec: WorkerSpec) => 4 * spec.leaseTtl + 10_000
