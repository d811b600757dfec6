/**
 * `hyrex demo`: a fail-over, live. Starts worker processes (`hyrex worker
 * examples/documents.ts`), enqueues a backlog of documents and invoices,
 * SIGKILLs one worker while it holds tasks, and redraws in place how its
 * leases expire, how the other workers take its tasks over and how the
 * backlog drains; then sums up: tasks, attempts, takeovers, duplicates, lost.
 *
 * Without a database (no `--database-url`, no `DATABASE_URL`) it runs on an
 * embedded Postgres (PGlite in this process, served over a socket); with one
 * it runs in a fresh schema `hyrex_demo_<random>`, dropped at the end.
 *
 * @since 0.1.0
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import { type ChildProcess, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { createWriteStream, existsSync, mkdtempSync } from "node:fs"
import { rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { StoreError } from "../Errors.js"
import { type QueueStats, type TaskInfo, TaskStore, type WorkerInfo } from "../TaskStore.js"
import * as Registry from "../Registry.js"
import type * as Task from "../Task.js"
import { CliError, describe, redactUrl } from "./CliError.js"
import * as Database from "./Database.js"
import * as Embedded from "./Embedded.js"
import * as Input from "./Input.js"
import * as Render from "./Render.js"
import * as WorkerModule from "./WorkerModule.js"

const bin = fileURLToPath(new URL("../../bin/hyrex.mjs", import.meta.url))
const demoModule = fileURLToPath(new URL("../../examples/documents.ts", import.meta.url))

/** Lease settings of the demo's workers: short, so that a takeover happens within seconds. */
export const leaseTtl = Duration.seconds(3)
export const heartbeatInterval = Duration.seconds(1)

const draining = "draining the backlog"
const done = "done"

/** How often the screen is redrawn. */
const frameInterval = Duration.millis(200)

interface Settings {
  readonly workers: number
  readonly documents: number
  readonly invoices: number
  readonly concurrency: number
  /** Percentage of the backlog done when a worker is killed. */
  readonly killAt: number
  readonly timeout: Duration.Duration
}

interface Backend {
  readonly url: string
  readonly schema: string
  readonly description: string
  readonly embedded: boolean
}

// --- worker processes -------------------------------------------------------

interface WorkerProcess {
  readonly name: string
  readonly child: ChildProcess
  readonly pid: number
  readonly exited: Deferred.Deferred<string>
  /** How it ended, once it has: "exit 0", "SIGKILL" … */
  ended: string | undefined
  killedAt: number | undefined
  stopping: boolean
  /** The last line it wrote, to explain an early exit. */
  lastLine: string
}

const spawnWorker = (
  backend: Backend,
  settings: Settings,
  name: string,
  logDir: string
): Effect.Effect<WorkerProcess, CliError, Scope.Scope> =>
  Effect.gen(function*() {
    const exited = yield* Deferred.make<string>()
    const log = createWriteStream(join(logDir, `${name}.log`))
    const child = spawn(process.execPath, [
      bin,
      "worker",
      demoModule,
      "--name",
      name,
      "--concurrency",
      String(settings.concurrency),
      "--lease-ttl",
      `${Duration.toMillis(leaseTtl)}ms`,
      "--heartbeat-interval",
      `${Duration.toMillis(heartbeatInterval)}ms`,
      "--poll-interval",
      "300ms",
      "--drain-timeout",
      "10s",
      // PGlite runs one statement at a time: a few connections per worker are plenty.
      "--max-connections",
      "3"
    ], {
      env: {
        ...process.env,
        DATABASE_URL: backend.url,
        HYREX_SCHEMA: backend.schema,
        HYREX_RECORD_EXECUTIONS: "true",
        NO_COLOR: "1"
      },
      // The IPC channel lets a worker notice that the demo went away (it then drains and stops).
      stdio: ["ignore", "pipe", "pipe", "ipc"],
      // Its own process group: Ctrl-C reaches the demo only, which then stops the workers with one SIGTERM.
      detached: true
    })
    if (child.pid === undefined) {
      return yield* new CliError({ message: `could not start worker process ${name}` })
    }
    const worker: WorkerProcess = {
      name,
      child,
      pid: child.pid,
      exited,
      ended: undefined,
      killedAt: undefined,
      stopping: false,
      lastLine: ""
    }
    const onOutput = (chunk: Buffer) => {
      log.write(chunk)
      const lines = chunk.toString("utf8").split("\n").filter((line) => line.trim() !== "")
      if (lines.length > 0) worker.lastLine = lines.at(-1)!
    }
    child.stdout?.on("data", onOutput)
    child.stderr?.on("data", onOutput)
    child.on("error", (error) => {
      worker.lastLine = error.message
    })
    child.on("exit", (code, signal) => {
      worker.ended = signal !== null ? signal : `exit ${code}`
      log.end()
      Deferred.unsafeDone(exited, Effect.succeed(worker.ended))
    })
    // Whatever happens to the demo, no worker outlives it: SIGTERM (drain), then SIGKILL.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        if (worker.ended !== undefined) return
        yield* Effect.sync(() => child.kill("SIGTERM"))
        yield* Deferred.await(exited).pipe(
          Effect.timeout(Duration.seconds(12)),
          Effect.catchAll(() => Effect.sync(() => child.kill("SIGKILL")))
        )
      })
    )
    return worker
  })

// --- data -------------------------------------------------------------------

interface Snapshot {
  readonly now: Date
  readonly queues: ReadonlyArray<QueueStats>
  readonly workers: ReadonlyArray<WorkerInfo>
}

const snapshot = Effect.gen(function*() {
  const store = yield* TaskStore
  const [now, queues, workers] = yield* Effect.all([Database.now, store.stats, store.listWorkers])
  return { now, queues, workers } satisfies Snapshot
})

/** A task the killed worker held, and what became of it. */
interface Held {
  readonly id: string
  readonly name: string
  /** The attempt the killed worker was running. */
  readonly attempt: number
  stage: "held" | "expired" | "claimed" | "succeeded" | "failed"
  note: string
}

/** Where a held task is now. */
const follow = (task: Held, info: TaskInfo, now: Date): Held["stage"] => {
  if (info.status === "succeeded") return "succeeded"
  if (info.status === "failed" || info.status === "cancelled") return "failed"
  if (info.attempt > task.attempt) return info.status === "running" ? "claimed" : "expired"
  return info.leaseExpiresAt !== null && info.leaseExpiresAt.getTime() > now.getTime() ? "held" : "expired"
}

const noteOf = (task: Held, stage: Held["stage"], info: TaskInfo, now: Date): string => {
  const owner = info.leaseOwner?.split("/")[0] ?? "?"
  switch (stage) {
    case "held":
      return `lease held by the dead worker, expires ${
        info.leaseExpiresAt === null ? "" : Render.relative(now.getTime() - info.leaseExpiresAt.getTime())
      }`
    case "expired": {
      const due = now.getTime() - info.runAt.getTime()
      return due < 0
        ? `lease expired; claimable again in ${Render.duration(-due)} (its retry delay)`
        : `lease expired; claimable for ${Render.duration(due)}, next in line for a free worker`
    }
    case "claimed":
      return `taken over by ${owner} (attempt ${info.attempt})`
    case "succeeded":
      return Render.green(
        info.attempt === task.attempt
          ? `succeeded on attempt ${info.attempt}: the worker's last write landed before the kill`
          : `taken over and succeeded on attempt ${info.attempt}`
      )
    case "failed":
      return Render.red(`${info.status} on attempt ${info.attempt}`)
  }
}

const allTasks = Effect.flatMap(TaskStore, (store) => store.listTasks({ limit: 1_000_000 }))

interface Executions {
  readonly started: number
  readonly completed: number
  /** Completed executions beyond one per task. */
  readonly duplicates: number
  /** Started executions beyond one per task. */
  readonly reruns: number
}

const countExecutions = (schema: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const table = sql(`${schema}.example_executions`)
    const rows = yield* sql<Executions>`
      SELECT
        coalesce(sum(started), 0)::int AS started,
        coalesce(sum(completed), 0)::int AS completed,
        coalesce(sum(greatest(completed - 1, 0)), 0)::int AS duplicates,
        coalesce(sum(greatest(started - 1, 0)), 0)::int AS reruns
      FROM (
        SELECT task_id, count(*) AS started, count(finished_at) AS completed FROM ${table} GROUP BY task_id
      ) per_task`.pipe(Effect.mapError((cause) => new StoreError({ operation: "count executions", cause })))
    return rows[0] ?? { started: 0, completed: 0, duplicates: 0, reruns: 0 }
  })

// --- screen -----------------------------------------------------------------

interface View {
  readonly backend: Backend
  readonly settings: Settings
  readonly elapsed: number
  readonly snap: Snapshot
  readonly workers: ReadonlyArray<WorkerProcess>
  readonly held: ReadonlyArray<Held>
  readonly victim: WorkerProcess | undefined
  readonly events: ReadonlyArray<string>
  readonly phase: string
  /** Tasks the demo will have sent per queue, once it has sent them all. */
  readonly planned: ReadonlyMap<string, number>
  /** Successes per second over the last few frames. */
  readonly throughput: number
}

const totals = (queues: ReadonlyArray<QueueStats>) => {
  const sum = (pick: (queue: QueueStats) => number) => queues.reduce((total, queue) => total + pick(queue), 0)
  const succeeded = sum((queue) => queue.succeeded)
  const failed = sum((queue) => queue.failed + queue.cancelled)
  const pending = sum((queue) => queue.queued + queue.scheduled + queue.running)
  return { succeeded, failed, pending, all: succeeded + failed + pending }
}

const workerRow = (proc: WorkerProcess, info: WorkerInfo | undefined, now: Date, elapsedAt: (t: number) => string) => {
  const age = info === undefined ? undefined : now.getTime() - info.lastHeartbeatAt.getTime()
  const state = proc.killedAt !== undefined
    ? Render.red(`KILLED (SIGKILL at ${elapsedAt(proc.killedAt)})`)
    : proc.ended !== undefined
    ? (info?.status === "stopped" ? Render.dim(`stopped (${proc.ended})`) : Render.yellow(`exited (${proc.ended})`))
    : proc.stopping
    ? Render.yellow("draining")
    : info === undefined
    ? Render.dim("starting")
    : Render.green(info.status)
  return [
    proc.name,
    String(proc.pid),
    state,
    info === undefined || proc.killedAt !== undefined ? "-" : `${info.inFlight}/${info.concurrency}`,
    age === undefined ? "-" : proc.killedAt !== undefined && age > 1500 ? Render.red(Render.relative(age)) : Render.relative(age)
  ]
}

const render = (view: View): Array<string> => {
  const { backend, snap } = view
  const elapsedAt = (t: number) => `${(t / 1000).toFixed(1)}s`
  const lines = [
    `${Render.bold("hyrex demo")}  ${backend.description}  ${Render.dim(`elapsed ${elapsedAt(view.elapsed)}`)}`,
    Render.dim(
      `${view.settings.workers} workers × concurrency ${view.settings.concurrency}, lease ${
        Duration.format(leaseTtl)
      }, heartbeat ${Duration.format(heartbeatInterval)}`
    ),
    "",
    `${Render.bold("QUEUES")}  ${view.phase}${
      view.phase === draining && view.throughput > 0 ? `, ${view.throughput.toFixed(1)} tasks/s` : ""
    }`
  ]
  const queues = Array.from(new Set([...view.planned.keys(), ...snap.queues.map((queue) => queue.queue)])).sort()
  lines.push(...Render.table(
    ["QUEUE", "PROGRESS", "DONE>", "QUEUED>", "RUNNING>", "RETRYING>", "FAILED>"],
    queues.map((name) => {
      const queue = snap.queues.find((queue) => queue.queue === name)
      const succeeded = queue?.succeeded ?? 0
      const failed = (queue?.failed ?? 0) + (queue?.cancelled ?? 0)
      const sent = succeeded + failed + (queue === undefined ? 0 : queue.queued + queue.scheduled + queue.running)
      const all = Math.max(sent, view.planned.get(name) ?? 0)
      return [
        name,
        Render.bar(all === 0 ? 0 : succeeded / all, 30),
        `${succeeded}/${all}`,
        String(queue?.queued ?? 0),
        String(queue?.running ?? 0),
        String(queue?.scheduled ?? 0),
        failed > 0 ? Render.red(String(failed)) : "0"
      ]
    })
  ).map((line) => `  ${line}`))
  lines.push("", Render.bold("WORKERS"))
  const infoOf = (proc: WorkerProcess) => snap.workers.find((worker) => worker.pid === proc.pid && worker.name === proc.name)
  lines.push(
    ...Render.table(
      ["NAME", "PID>", "STATUS", "IN-FLIGHT>", "HEARTBEAT>"],
      view.workers.map((proc) => workerRow(proc, infoOf(proc), snap.now, elapsedAt))
    ).map((line) => `  ${line}`)
  )
  lines.push("", Render.bold("TAKEOVER"))
  if (view.victim === undefined) {
    lines.push(`  one worker will be killed with SIGKILL at ${view.settings.killAt}% of the backlog`)
  } else {
    lines.push(
      `  ${view.victim.name} was killed holding ${view.held.length} task(s); its leases expire ≤ ${
        Duration.format(leaseTtl)
      } after its last heartbeat, then other workers claim them`
    )
    for (const task of view.held) {
      const mark = task.stage === "succeeded" ? Render.green("✓") : task.stage === "failed" ? Render.red("✗") : Render.yellow("…")
      lines.push(`  ${mark} task ${task.id} (${task.name}): ${task.note}`)
    }
  }
  // The last frame leaves room for the summary below it.
  const events = view.phase === done ? 3 : 6
  lines.push("", Render.bold("EVENTS"), ...view.events.slice(-events).map((event) => `  ${event}`))
  return lines
}

// --- the run ------------------------------------------------------------------

const backendOf = (url: Option.Option<string>): Effect.Effect<Backend, CliError, Scope.Scope> =>
  Option.match(url, {
    onSome: (url) =>
      Effect.succeed({
        url,
        schema: `hyrex_demo_${randomBytes(4).toString("hex")}`,
        description: redactUrl(url),
        embedded: false
      }),
    onNone: () =>
      Effect.map(Embedded.postgres, (url) => ({
        url,
        schema: "hyrex",
        description: `embedded Postgres (PGlite) on ${new URL(url).host}`,
        embedded: true
      }))
  })

const createExecutionsTable = (schema: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql`
      CREATE TABLE IF NOT EXISTS ${sql(`${schema}.example_executions`)} (
        id bigserial PRIMARY KEY,
        task_id bigint NOT NULL,
        task text NOT NULL,
        attempt integer NOT NULL,
        worker text NOT NULL,
        pid integer NOT NULL,
        started_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz
      )`).pipe(Effect.mapError((cause) => new StoreError({ operation: "create executions table", cause })))

/** The demo's tasks: documents and invoices interleaved in proportion. */
const backlog = (settings: Settings, stamp: string) => {
  const payloads: Array<{ readonly name: string; readonly payload: unknown }> = []
  for (let d = 0, i = 0; d < settings.documents || i < settings.invoices;) {
    if (i >= settings.invoices || (d < settings.documents && d * settings.invoices <= i * settings.documents)) {
      d++
      payloads.push({ name: "parse_document", payload: { uri: `s3://uploads/${stamp}/doc-${d}.pdf` } })
    } else {
      i++
      payloads.push({
        name: "process_invoice",
        payload: { invoiceId: `inv-${stamp}-${String(i).padStart(4, "0")}`, amountCents: 1000 + ((i * 7919) % 90_000) }
      })
    }
  }
  return payloads
}

const sendAll = (registry: Registry.Registry<Task.Any>, name: string, payloads: ReadonlyArray<unknown>) =>
  Option.match(Registry.get(registry, name), {
    onNone: () => Effect.fail(new CliError({ message: `the demo module has no task "${name}"` })),
    // In batches, so that no statement holds PGlite for long.
    onSome: (task) =>
      Effect.forEach(chunks(payloads, 50), (chunk) => task.sendBatch(chunk), { discard: true })
  })

const chunks = <A>(items: ReadonlyArray<A>, size: number): Array<ReadonlyArray<A>> =>
  Array.from({ length: Math.ceil(items.length / size) }, (_, i) => items.slice(i * size, (i + 1) * size))

/** What the demo found at the end. */
interface Summary {
  readonly tasks: number
  readonly byName: ReadonlyMap<string, number>
  readonly succeeded: number
  readonly attempts: number
  /** Tasks that ran at least once. */
  readonly first: number
  /** Attempts that followed a failed attempt (error, timeout …). */
  readonly afterError: number
  /** Attempts that followed an attempt whose lease expired. */
  readonly afterTakeover: number
  /** Leases lost: attempts whose worker stopped renewing. */
  readonly takeovers: number
  readonly executions: Executions
  readonly lost: number
  readonly seconds: number
}

const summarize = (schema: string, seconds: number) =>
  Effect.gen(function*() {
    const tasks: ReadonlyArray<TaskInfo> = yield* allTasks
    const executions = yield* countExecutions(schema)
    const byName = new Map<string, number>()
    for (const task of tasks) byName.set(task.name, (byName.get(task.name) ?? 0) + 1)
    // Each attempt after the first follows the error recorded for the attempt before it.
    const followed = tasks.flatMap((task) => task.errors.filter((error) => error.attempt < task.attempt))
    return {
      tasks: tasks.length,
      byName,
      succeeded: tasks.filter((task) => task.status === "succeeded").length,
      attempts: tasks.reduce((sum, task) => sum + task.attempt, 0),
      first: tasks.filter((task) => task.attempt > 0).length,
      afterError: followed.filter((error) => error.kind !== "lease_expired").length,
      afterTakeover: followed.filter((error) => error.kind === "lease_expired").length,
      takeovers: tasks.reduce((sum, task) => sum + task.leaseLosses, 0),
      executions,
      lost: tasks.filter((task) => task.status !== "succeeded").length,
      seconds
    } satisfies Summary
  })

const renderSummary = (summary: Summary, victim: string | undefined): Array<string> => {
  const row = (label: string, value: string) => `  ${Render.bold(label.padEnd(12))}${value}`
  const names = Array.from(summary.byName).sort(([a], [b]) => a.localeCompare(b)).map(([name, n]) => `${n} ${name}`).join(", ")
  return [
    Render.bold("SUMMARY"),
    row("tasks", `${summary.tasks} (${names}), ${summary.succeeded} succeeded`),
    row(
      "attempts",
      `${summary.attempts} = ${summary.first} first + ${summary.afterError} after a failed attempt + ${summary.afterTakeover} after a takeover`
    ),
    row(
      "takeovers",
      `${summary.takeovers} (lease losses${victim === undefined ? "" : `: tasks ${victim} held when it was killed`})`
    ),
    row(
      "executions",
      `${summary.executions.started} handler runs started (${summary.executions.reruns} re-runs: retries and takeovers), ${summary.executions.completed} ran to completion`
    ),
    row(
      "duplicates",
      `${summary.executions.duplicates} (tasks whose handler ran to completion more than once: at-least-once allows one per takeover, when a worker dies after its handler finished and before its result landed)`
    ),
    row("lost", `${summary.lost} (tasks that did not succeed)`),
    row(
      "time",
      `${summary.seconds.toFixed(1)}s from enqueue to the last task, ${(summary.tasks / Math.max(summary.seconds, 0.001)).toFixed(1)} tasks/s`
    )
  ]
}

/** The demo against a backend, with the store (and its SqlClient) provided. */
const run = (backend: Backend, settings: Settings) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const screen = yield* Render.screen
    const startedAt = yield* Clock.currentTimeMillis
    const elapsed = Effect.map(Clock.currentTimeMillis, (now) => now - startedAt)
    const events: Array<string> = []
    const event = (text: string) =>
      Effect.flatMap(elapsed, (ms) =>
        Effect.sync(() => {
          const line = `${Render.dim(`${(ms / 1000).toFixed(1).padStart(5)}s`)}  ${text}`
          events.push(line)
          if (!screen.live) process.stdout.write(`${line}\n`)
        }))

    if (!backend.embedded) {
      // Registered first, so it runs last: after the workers are gone.
      yield* Effect.addFinalizer(() =>
        sql`DROP SCHEMA IF EXISTS ${sql(backend.schema)} CASCADE`.pipe(
          Effect.timeout(Duration.seconds(10)),
          Effect.catchAll((error) =>
            Effect.sync(() => process.stderr.write(`hyrex: could not drop schema ${backend.schema}: ${describe(error)}\n`))
          )
        )
      )
    }
    const module = yield* WorkerModule.load(demoModule)
    yield* createExecutionsTable(backend.schema)
    yield* event(`schema ${backend.schema} ready`)

    // Worker logs: removed after a run that lost nothing, kept (and named) otherwise.
    const logDir = mkdtempSync(join(tmpdir(), "hyrex-demo-"))
    let keepLogs = true
    yield* Effect.addFinalizer(() =>
      keepLogs ? Effect.void : Effect.promise(() => rm(logDir, { recursive: true, force: true }).catch(() => undefined))
    )
    const workers: Array<WorkerProcess> = []
    for (let i = 1; i <= settings.workers; i++) {
      workers.push(yield* spawnWorker(backend, settings, `demo-${i}`, logDir))
    }
    yield* event(`started ${workers.length} worker processes: hyrex worker examples/documents.ts (pids ${
      workers.map((w) => w.pid).join(", ")
    })`)

    const payloads = backlog(settings, startedAt.toString(36))
    const planned = new Map<string, number>()
    for (const { name } of payloads) {
      const queue = Option.match(Registry.get(module.registry, name), { onNone: () => name, onSome: (task) => task.queue })
      planned.set(queue, (planned.get(queue) ?? 0) + 1)
    }
    // (elapsed ms, tasks succeeded) of the last frames, for the throughput.
    const samples: Array<readonly [number, number]> = []

    let snap: Snapshot = yield* snapshot
    let victim: WorkerProcess | undefined = undefined
    let victimId: string | undefined = undefined
    const held: Array<Held> = []
    let phase = "waiting for the workers to start"
    const draw = Effect.flatMap(elapsed, (ms) => {
      samples.push([ms, totals(snap.queues).succeeded])
      while (samples.length > 2 && ms - samples[0]![0] > 3000) samples.shift()
      const [first, last] = [samples[0]!, samples.at(-1)!]
      const throughput = last[0] > first[0] ? (1000 * (last[1] - first[1])) / (last[0] - first[0]) : 0
      return screen.live
        ? screen.draw(
          render({ backend, settings, elapsed: ms, snap, workers, held, victim, events, phase, planned, throughput })
        )
        : Effect.void
    })
    const infoOf = (proc: WorkerProcess) =>
      snap.workers.find((info) => info.pid === proc.pid && info.name === proc.name)
    const tick = <A, E, R>(step: Effect.Effect<A, E, R>) =>
      Effect.gen(function*() {
        snap = yield* snapshot
        const result = yield* step
        yield* draw
        return result
      })
    const untilDone = <E, R>(step: Effect.Effect<boolean, E, R>) =>
      Effect.gen(function*() {
        while (!(yield* tick(step))) yield* Effect.sleep(frameInterval)
      })

    // 1. Every worker registers.
    yield* untilDone(Effect.gen(function*() {
      const early = workers.find((w) => w.ended !== undefined)
      if (early !== undefined) {
        return yield* new CliError({
          message: `worker ${early.name} exited (${early.ended}) before it started: ${early.lastLine || "no output"} (logs: ${logDir})`
        })
      }
      return workers.every((w) => infoOf(w)?.status === "running")
    })).pipe(
      Effect.timeoutFail({
        duration: Duration.seconds(60),
        onTimeout: () => new CliError({ message: "the workers did not start within 60s" })
      })
    )
    yield* event(`all ${workers.length} workers registered`)

    // 2. The backlog. A producer keeps a bounded number of tasks waiting rather
    // than sending everything at once: the claim order is by due time, so a
    // task taken over (due again when its lease expired) would otherwise wait
    // behind the whole backlog.
    const total = payloads.length
    const waiting = Math.max(10, 3 * settings.workers * settings.concurrency)
    let sent = 0
    const produce = Effect.gen(function*() {
      const ready = snap.queues.reduce((sum, queue) => sum + queue.queued, 0)
      if (sent >= total || ready >= waiting) return
      const batch = payloads.slice(sent, sent + waiting - ready)
      for (const name of ["parse_document", "process_invoice"]) {
        const some = batch.filter((entry) => entry.name === name).map((entry) => entry.payload)
        if (some.length > 0) yield* sendAll(module.registry, name, some)
      }
      sent += batch.length
      if (sent === total) yield* event(`all ${total} tasks enqueued`)
    })
    const enqueuedAt = yield* elapsed
    yield* event(
      `enqueueing ${settings.documents} documents and ${settings.invoices} invoices, ~${waiting} waiting at a time`
    )

    // 3. Drain; kill one worker on the way; follow what becomes of its tasks.
    phase = draining
    let lastProgress = -1
    const step = Effect.gen(function*() {
      yield* produce
      const counts = totals(snap.queues)
      const percent = total === 0 ? 100 : (100 * counts.succeeded) / total
      if (!screen.live && Math.floor(percent / 10) !== lastProgress) {
        lastProgress = Math.floor(percent / 10)
        yield* event(`${counts.succeeded}/${total} succeeded`)
      }
      for (const proc of workers) {
        if (proc.ended !== undefined && proc.killedAt === undefined && !proc.stopping) {
          return yield* new CliError({
            message: `worker ${proc.name} exited unexpectedly (${proc.ended}): ${proc.lastLine} (logs: ${logDir})`
          })
        }
      }
      if (victim === undefined && percent >= settings.killAt && counts.succeeded < total) {
        // The victim: the worker that claimed a task most recently, so that its
        // tasks are mid-flight (not about to complete) when it dies.
        const running = yield* Effect.flatMap(TaskStore, (store) => store.listTasks({ status: "running", limit: 1000 }))
        const newest = running.reduce<TaskInfo | undefined>(
          (best, task) => best === undefined || task.updatedAt > best.updatedAt ? task : best,
          undefined
        )
        const chosen = workers.map((proc) => ({ proc, id: infoOf(proc)?.id })).find(({ id }) =>
          id !== undefined && id === newest?.leaseOwner
        )
        if (chosen !== undefined) {
          chosen.proc.child.kill("SIGKILL")
          chosen.proc.killedAt = yield* elapsed
          victim = chosen.proc
          victimId = chosen.id
          for (const task of running.filter((task) => task.leaseOwner === chosen.id)) {
            const entry: Held = { id: task.id, name: task.name, attempt: task.attempt, stage: "held", note: "" }
            entry.note = noteOf(entry, "held", task, snap.now)
            held.push(entry)
          }
          yield* event(Render.red(
            `SIGKILL ${chosen.proc.name} (pid ${chosen.proc.pid}) while it runs task(s) ${held.map((t) => t.id).join(", ")}`
          ))
        }
      }
      for (const task of held) {
        if (task.stage === "succeeded" || task.stage === "failed") continue
        const found = yield* Effect.flatMap(TaskStore, (store) => store.getTask(task.id))
        if (Option.isNone(found)) continue
        const stage = follow(task, found.value, snap.now)
        task.note = noteOf(task, stage, found.value, snap.now)
        if (stage !== task.stage) {
          task.stage = stage
          yield* event(`task ${task.id}: ${task.note}`)
        }
      }
      return sent === total && counts.pending === 0
    })
    // A timeout still ends with the summary, which then shows what was not done.
    const drained = yield* untilDone(step).pipe(Effect.timeoutOption(settings.timeout))
    const seconds = ((yield* elapsed) - enqueuedAt) / 1000
    yield* event(
      Option.isSome(drained)
        ? Render.green(`backlog drained in ${seconds.toFixed(1)}s`)
        : Render.red(`the backlog did not drain within ${Duration.format(settings.timeout)}`)
    )

    // 4. Stop the survivors: SIGTERM, they drain (nothing left) and deregister.
    phase = "stopping the workers"
    for (const proc of workers) {
      if (proc.ended === undefined) {
        proc.stopping = true
        proc.child.kill("SIGTERM")
      }
    }
    yield* untilDone(Effect.sync(() => workers.every((proc) => proc.ended !== undefined))).pipe(
      Effect.timeout(Duration.seconds(15)),
      Effect.ignore
    )
    yield* event(`workers stopped: ${workers.map((proc) => `${proc.name} ${proc.killedAt === undefined ? proc.ended : "SIGKILL"}`).join(", ")}`)
    phase = done

    const summary = yield* summarize(backend.schema, seconds)
    yield* tick(Effect.void)
    yield* Effect.sync(() => process.stdout.write(`\n${renderSummary(summary, victim?.name).join("\n")}\n`))
    if (victimId === undefined) {
      yield* Effect.sync(() => process.stdout.write("  (no worker was killed: the backlog drained before it could be)\n"))
    }
    if (summary.lost > 0) {
      return yield* new CliError({ message: `${summary.lost} task(s) did not succeed; worker logs: ${logDir}` })
    }
    keepLogs = false
  }).pipe(Effect.scoped)

/** `hyrex demo` */
export const command = Command.make("demo", {
  // No --schema: the demo picks a fresh one and drops it at the end.
  databaseUrl: Database.databaseUrlOption,
  workers: Options.text("workers").pipe(Options.withPseudoName("n"), Options.withDescription("worker processes (default 3)"), Options.withDefault("3")),
  documents: Options.text("documents").pipe(Options.withPseudoName("n"), Options.withDescription("documents to parse (default 200)"), Options.withDefault("200")),
  invoices: Options.text("invoices").pipe(Options.withPseudoName("n"), Options.withDescription("invoices to charge (default 100)"), Options.withDefault("100")),
  concurrency: Options.text("concurrency").pipe(
    Options.withPseudoName("n"),
    Options.withDescription("tasks in flight per worker (default 2)"),
    Options.withDefault("2")
  ),
  killAt: Options.text("kill-at").pipe(
    Options.withPseudoName("percent"),
    Options.withDescription("percentage of the backlog done when a worker is killed (default 25)"),
    Options.withDefault("25")
  ),
  timeout: Options.text("timeout").pipe(
    Options.withPseudoName("duration"),
    Options.withDescription("give up after this long (default 2m)"),
    Options.withDefault("2m")
  )
}, (flags) =>
  Effect.gen(function*() {
    const settings: Settings = {
      workers: yield* Input.integer("workers", 2)(flags.workers),
      documents: yield* Input.integer("documents", 0)(flags.documents),
      invoices: yield* Input.integer("invoices", 0)(flags.invoices),
      concurrency: yield* Input.integer("concurrency", 1)(flags.concurrency),
      killAt: yield* Input.integer("kill-at", 0)(flags.killAt),
      timeout: yield* Input.parseDuration("timeout", flags.timeout)
    }
    if (settings.killAt > 100) return yield* new CliError({ message: "--kill-at: a percentage from 0 to 100" })
    if (settings.documents + settings.invoices === 0) {
      return yield* new CliError({ message: "--documents and --invoices: enqueue at least one task" })
    }
    if (!existsSync(demoModule)) {
      return yield* new CliError({ message: `the demo's worker module is missing: ${demoModule}` })
    }
    const url = yield* Database.urlOf(flags.databaseUrl)
    const backend = yield* backendOf(url)
    yield* run(backend, settings).pipe(
      Effect.provide(Database.storeLayer(backend, { migrate: true, maxConnections: 4, applicationName: "hyrex-demo" }))
    )
  }).pipe(Effect.scoped)).pipe(
    Command.withDescription("Watch a fail-over: worker processes, a backlog, one worker SIGKILLed, no task lost")
  )

