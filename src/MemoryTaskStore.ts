/**
 * A `TaskStore` held in memory, with the same semantics as the Postgres
 * store. Time comes from Effect's `Clock`, so tests drive leases, backoff and
 * takeovers with `TestClock`. Workers sharing one instance of this layer
 * behave like workers in separate processes sharing one database.
 *
 * @example
 * ```ts
 * it.effect("runs the task", () =>
 *   Effect.gen(function* () {
 *     yield* processInvoice.send({ invoiceId: "inv_1" })
 *     // ...
 *   }).pipe(Effect.provide(MemoryTaskStore.layer)))
 * ```
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { LeaseLost, TaskNotFound } from "./Errors.js"
import * as Retry from "./internal/retry.js"
import {
  type AttemptError,
  type ClaimedTask,
  type FailOutcome,
  type Lease,
  type QueueStats,
  type TaskInfo,
  TaskStore,
  type WorkerInfo
} from "./TaskStore.js"

interface Row {
  id: string
  seq: number
  name: string
  queue: string
  payload: unknown
  result: unknown
  status: TaskInfo["status"]
  priority: number
  attempt: number
  maxRetries: number
  backoff: ReadonlyArray<number>
  runAt: number
  leaseOwner: string | null
  leaseExpiresAt: number | null
  idempotencyKey: string | null
  errors: Array<AttemptError>
  leaseLosses: number
  createdAt: number
  updatedAt: number
  finishedAt: number | null
  traceParent: string | undefined
}

interface Candidate {
  readonly row: Row
  readonly dueAt: number
}

const toInfo = (row: Row): TaskInfo => ({
  id: row.id,
  name: row.name,
  queue: row.queue,
  status: row.status,
  payload: row.payload,
  result: row.result,
  priority: row.priority,
  attempt: row.attempt,
  maxRetries: row.maxRetries,
  leaseLosses: row.leaseLosses,
  leaseOwner: row.leaseOwner,
  leaseExpiresAt: row.leaseExpiresAt === null ? null : new Date(row.leaseExpiresAt),
  runAt: new Date(row.runAt),
  idempotencyKey: row.idempotencyKey,
  errors: [...row.errors],
  createdAt: new Date(row.createdAt),
  updatedAt: new Date(row.updatedAt),
  finishedAt: row.finishedAt === null ? null : new Date(row.finishedAt)
})

/** Builds an empty in-memory store. */
export const make: Effect.Effect<TaskStore["Type"], never, Scope.Scope> = Effect.gen(function*() {
  const rows = new Map<string, Row>()
  const byIdempotencyKey = new Map<string, string>()
  const idempotent = new Map<string, { readonly value: unknown; readonly taskId: string | undefined }>()
  const workers = new Map<string, WorkerInfo>()
  const wakeups = yield* Effect.acquireRelease(PubSub.unbounded<string>(), PubSub.shutdown)
  let sequence = 0

  const now = Clock.currentTimeMillis
  const holds = (row: Row | undefined, lease: Lease): row is Row =>
    row !== undefined && row.status === "running" && row.attempt === lease.attempt && row.leaseOwner === lease.owner
  const fenced = <A>(lease: Lease, f: (row: Row, at: number) => A) =>
    Effect.flatMap(now, (at) => {
      const row = rows.get(lease.taskId)
      return holds(row, lease) ? Effect.succeed(f(row, at)) : Effect.fail(new LeaseLost(lease))
    })
  const wake = (queue: string) => PubSub.publish(wakeups, queue)
  const finish = (row: Row, status: Row["status"], at: number) => {
    row.status = status
    row.leaseOwner = null
    row.leaseExpiresAt = null
    row.updatedAt = at
    row.finishedAt = at
  }
  const retryDelay = (row: Row) => Retry.retryDelay(row.backoff, row.attempt)
  // An expired lease is a failed attempt: recorded once, when it is noticed.
  const recordLeaseExpiry = (row: Row) => {
    row.errors.push({
      attempt: row.attempt,
      kind: "lease_expired",
      message: `lease of worker ${row.leaseOwner} expired`,
      worker: row.leaseOwner ?? undefined,
      at: new Date(row.leaseExpiresAt ?? row.updatedAt)
    })
    row.leaseLosses += 1
  }
  const isExpired = (row: Row, at: number) =>
    row.status === "running" && row.leaseExpiresAt !== null && row.leaseExpiresAt <= at
  const failExhausted = (row: Row, at: number) => {
    recordLeaseExpiry(row)
    finish(row, "failed", at)
  }
  /** Forgets a task, and frees its idempotency key for a new send. */
  const remove = (row: Row) => {
    rows.delete(row.id)
    if (row.idempotencyKey !== null) byIdempotencyKey.delete(`${row.name}\u0000${row.idempotencyKey}`)
  }

  const complete = (lease: Lease, result: unknown) =>
    fenced(lease, (row, at) => {
      row.result = result ?? null
      finish(row, "succeeded", at)
    })

  const completeAndDelete = (lease: Lease) => fenced(lease, remove)

  const release = (lease: Lease) =>
    Effect.flatMap(
      fenced(lease, (row, at) => {
        row.status = "queued"
        row.attempt -= 1
        row.leaseOwner = null
        row.leaseExpiresAt = null
        row.runAt = at
        row.updatedAt = at
        return row.queue
      }),
      wake
    )

  return TaskStore.of({
    enqueue: (requests) =>
      Effect.flatMap(now, (at) =>
        Effect.sync(() =>
          requests.map((request) => {
            const key = request.idempotencyKey === undefined ? undefined : `${request.name}\u0000${request.idempotencyKey}`
            const existing = key === undefined ? undefined : byIdempotencyKey.get(key)
            if (existing !== undefined) return existing
            sequence += 1
            const id = String(sequence)
            rows.set(id, {
              id,
              seq: sequence,
              name: request.name,
              queue: request.queue,
              payload: request.payload,
              result: null,
              status: "queued",
              priority: request.priority,
              attempt: 0,
              maxRetries: request.maxRetries,
              backoff: request.backoff,
              runAt: at + request.delayMillis,
              leaseOwner: null,
              leaseExpiresAt: null,
              idempotencyKey: request.idempotencyKey ?? null,
              errors: [],
              leaseLosses: 0,
              createdAt: at,
              updatedAt: at,
              finishedAt: null,
              traceParent: request.traceParent
            })
            if (key !== undefined) byIdempotencyKey.set(key, id)
            return id
          })
        ).pipe(Effect.tap(() => Effect.forEach(new Set(requests.map((r) => r.queue)), wake)))),

    claim: (request) =>
      Effect.flatMap(now, (at) =>
        Effect.sync(() => {
          const queues = new Set(request.queues)
          const names = new Set(request.names)
          const candidates: Array<Candidate> = []
          for (const row of rows.values()) {
            if (!queues.has(row.queue) || !names.has(row.name)) continue
            if (row.status === "queued" && row.runAt <= at) {
              candidates.push({ row, dueAt: row.runAt })
            } else if (isExpired(row, at)) {
              if (row.attempt > row.maxRetries) {
                failExhausted(row, at)
              } else {
                const dueAt = row.leaseExpiresAt! + retryDelay(row)
                if (dueAt <= at) candidates.push({ row, dueAt })
              }
            }
          }
          // As in Postgres: best first within a queue, round-robin across queues,
          // so a flooded queue cannot starve a quiet one (between equals, the
          // queue listed first; workers rotate the list).
          const order = (a: Candidate, b: Candidate) =>
            b.row.priority - a.row.priority || a.dueAt - b.dueAt || a.row.seq - b.row.seq
          const rank = new Map<Candidate, number>()
          for (const queue of queues) {
            candidates.filter((c) => c.row.queue === queue).sort(order).forEach((c, index) => rank.set(c, index))
          }
          const position = (c: Candidate) => request.queues.indexOf(c.row.queue)
          candidates.sort((a, b) =>
            rank.get(a)! - rank.get(b)! || b.row.priority - a.row.priority || position(a) - position(b) || order(a, b)
          )
          const running = new Map<string, number>()
          for (const row of rows.values()) {
            if (row.status === "running" && row.leaseExpiresAt !== null && row.leaseExpiresAt > at) {
              running.set(row.name, (running.get(row.name) ?? 0) + 1)
            }
          }
          const claimed: Array<ClaimedTask> = []
          for (const { dueAt, row } of candidates) {
            if (claimed.length >= request.max) break
            const limit = request.limits[row.name]
            const active = running.get(row.name) ?? 0
            if (limit !== undefined && active >= limit) continue
            running.set(row.name, active + 1)
            const takeover = row.status === "running"
            if (takeover) recordLeaseExpiry(row)
            row.status = "running"
            row.attempt += 1
            row.leaseOwner = request.workerId
            row.leaseExpiresAt = at + request.leaseTtlMillis
            row.updatedAt = at
            claimed.push({
              lease: { taskId: row.id, attempt: row.attempt, owner: request.workerId },
              name: row.name,
              queue: row.queue,
              payload: row.payload,
              priority: row.priority,
              maxRetries: row.maxRetries,
              leaseLosses: row.leaseLosses,
              takeover,
              dueAt: new Date(dueAt),
              traceParent: row.traceParent
            })
          }
          return claimed
        })),

    heartbeat: (request) =>
      Effect.flatMap(now, (at) =>
        Effect.sync(() => {
          const worker = workers.get(request.workerId)
          if (worker !== undefined) {
            workers.set(request.workerId, {
              ...worker,
              status: worker.status === "dead" ? "running" : worker.status,
              lastHeartbeatAt: new Date(at),
              inFlight: request.leases.length
            })
          }
          // An expired lease is not renewed, even if nobody took it over yet:
          // its slot may already count as free for a limited task.
          return request.leases.filter((lease) => {
            const row = rows.get(lease.taskId)
            if (!holds(row, lease) || isExpired(row, at)) return false
            row.leaseExpiresAt = at + request.leaseTtlMillis
            return true
          })
        })),

    complete,
    completeAll: (completions, options) =>
      Effect.forEach(completions, ({ lease, result }) =>
        (options?.deleteSucceeded === true ? completeAndDelete(lease) : complete(lease, result)).pipe(
          Effect.as(true),
          Effect.catchTag("LeaseLost", () => Effect.succeed(false))
        )),

    fail: (lease, failure) =>
      Effect.flatMap(
        fenced(lease, (row, at): FailOutcome => {
          row.errors.push({
            attempt: row.attempt,
            kind: failure.kind,
            message: failure.message,
            cause: failure.cause,
            worker: lease.owner,
            at: new Date(at)
          })
          if (failure.retryable && row.attempt <= row.maxRetries) {
            row.status = "queued"
            row.leaseOwner = null
            row.leaseExpiresAt = null
            row.runAt = at + retryDelay(row)
            row.updatedAt = at
            return { _tag: "Retrying", runAt: new Date(row.runAt) }
          }
          finish(row, "failed", at)
          return { _tag: "Dead" }
        }),
        (outcome): Effect.Effect<FailOutcome> =>
          outcome._tag === "Retrying" ? Effect.as(wake(rows.get(lease.taskId)!.queue), outcome) : Effect.succeed(outcome)
      ),

    release,
    releaseAll: (leases) =>
      Effect.forEach(leases, (lease) =>
        release(lease).pipe(
          Effect.as(true),
          Effect.catchTag("LeaseLost", () => Effect.succeed(false))
        )),

    cancel: (taskId) =>
      Effect.flatMap(now, (at) => {
        const row = rows.get(taskId)
        if (row === undefined) return Effect.fail(new TaskNotFound({ taskId }))
        if (row.status === "queued" || row.status === "running") finish(row, "cancelled", at)
        return Effect.succeed(toInfo(row))
      }),

    retry: (taskId) =>
      Effect.flatMap(now, (at) => {
        const row = rows.get(taskId)
        if (row === undefined) return Effect.fail(new TaskNotFound({ taskId }))
        if (row.status === "failed" || row.status === "cancelled") {
          row.status = "queued"
          // Attempts stay monotonic so that a stale lease can never match again.
          row.maxRetries = row.attempt + row.backoff.length
          row.runAt = at
          row.updatedAt = at
          row.finishedAt = null
        }
        return Effect.as(wake(row.queue), toInfo(row))
      }),

    getTask: (taskId) => Effect.sync(() => Option.map(Option.fromNullable(rows.get(taskId)), toInfo)),

    listTasks: (filter) =>
      Effect.sync(() =>
        Array.from(rows.values())
          .filter((row) =>
            (filter.status === undefined || row.status === filter.status) &&
            (filter.queue === undefined || row.queue === filter.queue) &&
            (filter.name === undefined || row.name === filter.name)
          )
          .sort((a, b) => b.seq - a.seq)
          .slice(0, filter.limit ?? 100)
          .map(toInfo)
      ),

    stats: Effect.map(now, (at) => {
      const byQueue = new Map<string, { -readonly [K in keyof QueueStats]: QueueStats[K] }>()
      for (const row of rows.values()) {
        const stats = byQueue.get(row.queue) ?? {
          queue: row.queue,
          queued: 0,
          scheduled: 0,
          running: 0,
          failed: 0,
          cancelled: 0,
          succeeded: 0,
          succeededLastHour: 0
        }
        if (row.status === "queued") {
          if (row.runAt > at) stats.scheduled += 1
          else stats.queued += 1
        } else if (row.status === "succeeded") {
          stats.succeeded += 1
          if (row.finishedAt !== null && row.finishedAt > at - 3_600_000) stats.succeededLastHour += 1
        } else {
          stats[row.status] += 1
        }
        byQueue.set(row.queue, stats)
      }
      return Array.from(byQueue.values()).sort((a, b) => a.queue.localeCompare(b.queue))
    }),

    registerWorker: (worker) =>
      Effect.flatMap(now, (at) =>
        Effect.sync(() => {
          workers.set(worker.id, {
            ...worker,
            status: "running",
            startedAt: new Date(at),
            lastHeartbeatAt: new Date(at),
            inFlight: 0
          })
        })),

    deregisterWorker: (workerId) =>
      Effect.flatMap(now, (at) =>
        Effect.sync(() => {
          const worker = workers.get(workerId)
          if (worker !== undefined) {
            workers.set(workerId, { ...worker, status: "stopped", lastHeartbeatAt: new Date(at), inFlight: 0 })
          }
        })),

    listWorkers: Effect.sync(() => Array.from(workers.values())),

    getIdempotent: (key) =>
      Effect.sync(() => Option.map(Option.fromNullable(idempotent.get(key)), (record) => record.value)),

    putIdempotent: (key, value, taskId) =>
      Effect.sync(() => {
        const existing = idempotent.get(key)
        if (existing !== undefined) return existing.value
        idempotent.set(key, { value, taskId })
        return value
      }),

    maintenance: (options) =>
      Effect.flatMap(now, (at) =>
        Effect.sync(() => {
          for (const row of rows.values()) {
            if (isExpired(row, at) && row.attempt > row.maxRetries) failExhausted(row, at)
            if (
              (row.status === "succeeded" || row.status === "cancelled") &&
              row.finishedAt !== null && row.finishedAt < at - options.retentionMillis
            ) {
              remove(row)
            }
          }
          for (const worker of workers.values()) {
            const silentFor = at - worker.lastHeartbeatAt.getTime()
            if (worker.status === "running" && silentFor > options.workerTimeoutMillis) {
              workers.set(worker.id, { ...worker, status: "dead" })
            } else if (worker.status !== "running" && silentFor > options.retentionMillis) {
              workers.delete(worker.id)
            }
          }
        })),

    wakeups: Stream.fromPubSub(wakeups)
  })
})

/** A fresh in-memory store per use of the layer. */
export const layer: Layer.Layer<TaskStore> = Layer.scoped(TaskStore, make)
