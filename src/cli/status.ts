/**
 * `hyrex status`: tasks per queue and state, live workers, throughput; with
 * `--watch`, redrawn in place until Ctrl-C.
 *
 * @since 0.1.0
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Console from "effect/Console"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { StoreError } from "../Errors.js"
import { type QueueStats, TaskStore, type WorkerInfo } from "../TaskStore.js"
import { describe, redactUrl } from "./CliError.js"
import * as Database from "./Database.js"
import * as Input from "./Input.js"
import * as Render from "./Render.js"

/**
 * A worker whose last heartbeat is older than this is shown as unresponsive.
 * Workers do not record their heartbeat interval, so this is a fixed guess:
 * four beats at the default lease TTL (15 s, a beat every 5 s).
 */
export const unresponsiveAfter = Duration.seconds(20)

/** What one look at the store shows. */
export interface Snapshot {
  /** The database's clock when the snapshot was taken. */
  readonly now: Date
  readonly queues: ReadonlyArray<QueueStats>
  readonly workers: ReadonlyArray<WorkerInfo>
  /** Tasks per queue that succeeded in the last minute. */
  readonly lastMinute: ReadonlyMap<string, number>
}

/**
 * `QueueStats` has no short window, so the last minute's successes are
 * counted here with one statement on the tasks table.
 */
const succeededLastMinute = (schema: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{ readonly queue: string; readonly n: number }>`
      SELECT queue, count(*)::int AS n FROM ${sql(`${schema}.tasks`)}
      WHERE status = 'succeeded' AND finished_at > now() - interval '1 minute'
      GROUP BY queue`.pipe(Effect.mapError((cause) => new StoreError({ operation: "succeededLastMinute", cause })))
    return new Map(rows.map((row) => [row.queue, row.n]))
  })

/** Takes a snapshot. */
export const snapshot = (schema: string): Effect.Effect<Snapshot, StoreError, TaskStore | SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const store = yield* TaskStore
    const [now, queues, workers, lastMinute] = yield* Effect.all([
      Database.now,
      store.stats,
      store.listWorkers,
      succeededLastMinute(schema)
    ])
    return { now, queues, workers, lastMinute }
  })

const heartbeatAge = (worker: WorkerInfo, now: Date) => now.getTime() - worker.lastHeartbeatAt.getTime()

const isUnresponsive = (worker: WorkerInfo, now: Date) =>
  heartbeatAge(worker, now) > Duration.toMillis(unresponsiveAfter)

/** Successes per second between two snapshots, per queue. */
export const rates = (older: Snapshot, newer: Snapshot): ReadonlyMap<string, number> => {
  const seconds = (newer.now.getTime() - older.now.getTime()) / 1000
  const before = new Map(older.queues.map((queue) => [queue.queue, queue.succeeded]))
  return new Map(newer.queues.map((queue) => [
    queue.queue,
    seconds <= 0 ? 0 : Math.max(0, queue.succeeded - (before.get(queue.queue) ?? 0)) / seconds
  ]))
}

interface Counts {
  readonly queued: number
  readonly scheduled: number
  readonly running: number
  readonly failed: number
  readonly succeededLastHour: number
  readonly succeededLastMinute: number
  readonly rate: number
}

/** The lines of a status screen. */
export const render = (
  header: string,
  snap: Snapshot,
  rate: ReadonlyMap<string, number> | undefined
): Array<string> => {
  const lines = [header, ""]
  if (snap.queues.length === 0) {
    lines.push("no tasks yet")
  } else {
    const counts = (queue: QueueStats): Counts => ({
      queued: queue.queued,
      scheduled: queue.scheduled,
      running: queue.running,
      failed: queue.failed,
      succeededLastHour: queue.succeededLastHour,
      succeededLastMinute: snap.lastMinute.get(queue.queue) ?? 0,
      rate: rate?.get(queue.queue) ?? 0
    })
    const rows = snap.queues.map((queue) => [queue.queue, counts(queue)] as const)
    if (rows.length > 1) {
      const all = rows.reduce<Counts>((sum, [, row]) => ({
        queued: sum.queued + row.queued,
        scheduled: sum.scheduled + row.scheduled,
        running: sum.running + row.running,
        failed: sum.failed + row.failed,
        succeededLastHour: sum.succeededLastHour + row.succeededLastHour,
        succeededLastMinute: sum.succeededLastMinute + row.succeededLastMinute,
        rate: sum.rate + row.rate
      }), { queued: 0, scheduled: 0, running: 0, failed: 0, succeededLastHour: 0, succeededLastMinute: 0, rate: 0 })
      rows.push([Render.dim("(all)"), all])
    }
    lines.push(...Render.table(
      [
        "QUEUE",
        "QUEUED>",
        "SCHEDULED>",
        "RUNNING>",
        "FAILED>",
        "SUCCEEDED 1H>",
        "SUCCEEDED 1MIN>",
        ...(rate === undefined ? [] : ["THROUGHPUT>"])
      ],
      rows.map(([name, row]) => [
        name,
        String(row.queued),
        String(row.scheduled),
        String(row.running),
        row.failed > 0 ? Render.red(String(row.failed)) : "0",
        String(row.succeededLastHour),
        String(row.succeededLastMinute),
        ...(rate === undefined ? [] : [`${row.rate.toFixed(1)}/s`])
      ])
    ))
  }
  lines.push("")
  const live = snap.workers.filter((worker) => worker.status === "running")
  const unresponsive = live.filter((worker) => isUnresponsive(worker, snap.now)).length
  const stopped = snap.workers.filter((worker) => worker.status === "stopped").length
  const dead = snap.workers.filter((worker) => worker.status === "dead").length
  lines.push(
    Render.bold(`WORKERS: ${live.length - unresponsive} live`) +
      (unresponsive > 0 ? Render.yellow(`, ${unresponsive} unresponsive`) : "") +
      Render.dim(` (${stopped} stopped, ${dead} dead not shown)`)
  )
  if (live.length === 0) {
    lines.push("no live workers")
  } else {
    lines.push(...Render.table(
      ["NAME", "ID", "PID>", "HOST", "QUEUES", "IN-FLIGHT>", "HEARTBEAT>", "STATE", "UP>"],
      live.map((worker) => [
        worker.name,
        worker.id,
        String(worker.pid),
        worker.host,
        worker.queues.join(","),
        `${worker.inFlight}/${worker.concurrency}`,
        Render.relative(heartbeatAge(worker, snap.now)),
        isUnresponsive(worker, snap.now) ? Render.yellow("unresponsive") : Render.green("running"),
        Render.duration(snap.now.getTime() - worker.startedAt.getTime())
      ])
    ))
  }
  return lines
}

/** `hyrex status [--watch] [--interval 1s]` */
export const command = Command.make("status", {
  ...Database.options,
  watch: Options.boolean("watch").pipe(
    Options.withAlias("w"),
    Options.withDescription("refresh in place until Ctrl-C")
  ),
  interval: Options.text("interval").pipe(
    Options.withPseudoName("duration"),
    Options.withDescription("refresh interval with --watch (default 1s)"),
    Options.withDefault("1s")
  )
}, (flags) =>
  Effect.gen(function*() {
    const target = yield* Database.target(flags)
    const interval = yield* Input.parseDuration("interval", flags.interval)
    const header = (now: Date) =>
      `${Render.bold("hyrex status")}  ${redactUrl(target.url)}  schema ${target.schema}  ${now.toISOString()}`
    yield* Effect.gen(function*() {
      const first = yield* snapshot(target.schema)
      if (!flags.watch) return yield* Console.log(render(header(first.now), first, undefined).join("\n"))
      const screen = yield* Render.screen
      // Throughput over the last ~10 s of samples.
      const history: Array<Snapshot> = [first]
      yield* screen.draw([...render(header(first.now), first, rates(first, first)), "", Render.dim("Ctrl-C to exit")])
      yield* snapshot(target.schema).pipe(
        Effect.matchEffect({
          onFailure: (error) =>
            screen.draw([
              header(history.at(-1)!.now),
              "",
              Render.red(`refresh failed: ${describe(error)}`),
              Render.dim("retrying; Ctrl-C to exit")
            ]),
          onSuccess: (snap) => {
            history.push(snap)
            while (history.length > 2 && snap.now.getTime() - history[0]!.now.getTime() > 10_000) history.shift()
            return screen.draw([
              ...render(header(snap.now), snap, rates(history[0]!, snap)),
              "",
              Render.dim(`every ${Duration.format(interval)}; Ctrl-C to exit`)
            ])
          }
        }),
        Effect.delay(interval),
        Effect.forever
      )
    }).pipe(Effect.scoped, Effect.provide(Database.existingStore(target)))
  })).pipe(Command.withDescription("Tasks per queue and state, live workers and throughput"))
