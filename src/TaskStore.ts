/**
 * The storage service every hyrex worker and producer talks to. A store keeps
 * tasks, their leases and attempts, the worker registry and idempotency
 * records. `MemoryTaskStore` implements it in memory for tests, `PgTaskStore`
 * in Postgres for production; both pass the same test suite.
 *
 * Every write that ends or extends an attempt (`complete`, `fail`,
 * `heartbeat`, `release`) is fenced on the lease (task id, attempt, owner): a
 * caller that lost its lease gets `LeaseLost` (or, for `heartbeat`, does not
 * find the lease among those it still holds).
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type * as Stream from "effect/Stream"
import type { LeaseLost, StoreError, TaskNotFound } from "./Errors.js"

/** The life cycle of a task. `queued` includes tasks scheduled for later. */
export const TaskStatus = Schema.Literal("queued", "running", "succeeded", "failed", "cancelled")
export type TaskStatus = typeof TaskStatus.Type

/** Why an attempt failed. `lease_expired` is recorded when a worker's lease ran out. */
export const FailureKind = Schema.Literal(
  "error",
  "defect",
  "timeout",
  "permanent",
  "decode",
  "lease_expired"
)
export type FailureKind = typeof FailureKind.Type

/** One entry of a task's error history. */
export const AttemptError = Schema.Struct({
  attempt: Schema.Number,
  kind: FailureKind,
  message: Schema.String,
  cause: Schema.optional(Schema.String),
  worker: Schema.optional(Schema.String),
  at: Schema.DateFromString
})
export type AttemptError = typeof AttemptError.Type

/** A lease: the right of `owner` to run `attempt` of task `taskId`. */
export interface Lease {
  readonly taskId: string
  readonly attempt: number
  readonly owner: string
}

/** What a producer asks the store to enqueue. The payload is already encoded. */
export interface EnqueueRequest {
  readonly name: string
  readonly queue: string
  readonly payload: unknown
  readonly priority: number
  readonly maxRetries: number
  /** Delay in milliseconds after each failed attempt: `backoff[k - 1]` follows attempt `k`. */
  readonly backoff: ReadonlyArray<number>
  /** Milliseconds from the store's clock until the task is due. */
  readonly delayMillis: number
  readonly idempotencyKey?: string | undefined
  /** W3C trace context of the producer, so the attempt's span links to it. */
  readonly traceParent?: string | undefined
}

/** What a worker asks for when it has free capacity. */
export interface ClaimRequest {
  readonly workerId: string
  /**
   * Served round-robin: the best task of each queue, then the second best,
   * and so on; at equal rank and priority the queue listed first wins.
   */
  readonly queues: ReadonlyArray<string>
  /** Only tasks with these names are claimed: the worker can run nothing else. */
  readonly names: ReadonlyArray<string>
  /** Fleet-wide limits: at most `limits[name]` attempts of that task run at once. */
  readonly limits: Readonly<Record<string, number>>
  readonly max: number
  readonly leaseTtlMillis: number
}

/** A task a worker now holds a lease on. */
export interface ClaimedTask {
  readonly lease: Lease
  readonly name: string
  readonly queue: string
  readonly payload: unknown
  readonly priority: number
  readonly maxRetries: number
  readonly leaseLosses: number
  /** Whether this claim took over an expired lease. */
  readonly takeover: boolean
  /** When the task became due: queue wait is claim time minus this. */
  readonly dueAt: Date
  readonly traceParent?: string | undefined
}

/** A successful attempt and its encoded result. */
export interface Completion {
  readonly lease: Lease
  readonly result: unknown
}

/** How `completeAll` records successes. */
export interface CompleteOptions {
  /**
   * Delete each task instead of keeping it `succeeded`: nothing to read back
   * (no `TaskInfo`, no result), and its idempotency key is free for a new
   * send at once. A worker with `retention: 0` completes this way. Fenced
   * like a kept completion. Default `false`.
   */
  readonly deleteSucceeded?: boolean | undefined
}

/** The renewal a worker sends once per heartbeat, for all its leases. */
export interface HeartbeatRequest {
  readonly workerId: string
  readonly leases: ReadonlyArray<Lease>
  readonly leaseTtlMillis: number
}

/** A failed attempt, as the worker reports it. */
export interface AttemptFailure {
  readonly kind: FailureKind
  readonly message: string
  readonly cause?: string | undefined
  /** `false` skips the remaining retries: the task ends `failed`. */
  readonly retryable: boolean
}

/** What became of a task after a failed attempt. */
export type FailOutcome =
  | { readonly _tag: "Retrying"; readonly runAt: Date }
  | { readonly _tag: "Dead" }

/** A worker as it registers itself. */
export interface WorkerRegistration {
  readonly id: string
  readonly name: string
  readonly host: string
  readonly pid: number
  readonly queues: ReadonlyArray<string>
  readonly concurrency: number
}

/** A worker as the store sees it. */
export interface WorkerInfo extends WorkerRegistration {
  readonly status: "running" | "stopped" | "dead"
  readonly startedAt: Date
  readonly lastHeartbeatAt: Date
  readonly inFlight: number
}

/** A task as stored, for inspection. */
export interface TaskInfo {
  readonly id: string
  readonly name: string
  readonly queue: string
  readonly status: TaskStatus
  readonly payload: unknown
  readonly result: unknown
  readonly priority: number
  /** The number of the current or last attempt, 1-based; 0 before the first. */
  readonly attempt: number
  readonly maxRetries: number
  readonly leaseLosses: number
  readonly leaseOwner: string | null
  readonly leaseExpiresAt: Date | null
  /** For a queued task: when it is due. */
  readonly runAt: Date
  readonly idempotencyKey: string | null
  readonly errors: ReadonlyArray<AttemptError>
  readonly createdAt: Date
  readonly updatedAt: Date
  readonly finishedAt: Date | null
}

/** Which tasks `listTasks` returns, newest first. */
export interface TaskFilter {
  readonly status?: TaskStatus | undefined
  readonly queue?: string | undefined
  readonly name?: string | undefined
  readonly limit?: number | undefined
}

/** Counts of tasks per queue and status. */
export interface QueueStats {
  readonly queue: string
  readonly queued: number
  readonly scheduled: number
  readonly running: number
  readonly failed: number
  readonly cancelled: number
  readonly succeeded: number
  readonly succeededLastHour: number
}

/** Housekeeping that any worker may run; stores make sure it runs once at a time. */
export interface MaintenanceOptions {
  /** Succeeded and cancelled tasks older than this are deleted. */
  readonly retentionMillis: number
  /** Workers silent for longer than this are marked dead; dead rows older than `retentionMillis` are deleted. */
  readonly workerTimeoutMillis: number
}

/**
 * @example
 * ```ts
 * const store = yield* TaskStore
 * const [id] = yield* store.enqueue([request])
 * ```
 */
export class TaskStore extends Context.Tag("hyrex/TaskStore")<TaskStore, {
  /** Adds tasks. A request whose idempotency key already exists for its task name returns the existing id and adds nothing. */
  readonly enqueue: (requests: ReadonlyArray<EnqueueRequest>) => Effect.Effect<ReadonlyArray<string>, StoreError>

  /**
   * Leases up to `max` tasks: queued tasks that are due, and running tasks whose
   * lease expired and whose backoff has passed (the lost attempt is recorded as
   * failed with kind `lease_expired`). An expired task with no retries left ends
   * `failed` instead of being claimed. Higher priority first, then earliest due.
   */
  readonly claim: (request: ClaimRequest) => Effect.Effect<ReadonlyArray<ClaimedTask>, StoreError>

  /**
   * Renews every lease in the request that the worker still holds, records the
   * worker's heartbeat, and returns the leases it still holds: a lease missing
   * from the answer was lost.
   */
  readonly heartbeat: (request: HeartbeatRequest) => Effect.Effect<ReadonlyArray<Lease>, StoreError>

  /** Ends an attempt successfully. Fenced. */
  readonly complete: (lease: Lease, result: unknown) => Effect.Effect<void, LeaseLost | StoreError>

  /**
   * Ends many attempts successfully in one write, each fenced by its own
   * lease. Answers, in order, whether each was recorded (`false`: the lease
   * was lost). A lease listed twice is recorded once.
   */
  readonly completeAll: (
    completions: ReadonlyArray<Completion>,
    options?: CompleteOptions
  ) => Effect.Effect<ReadonlyArray<boolean>, StoreError>

  /** Ends an attempt with a failure: re-queues with backoff, or ends the task `failed`. Fenced. */
  readonly fail: (lease: Lease, failure: AttemptFailure) => Effect.Effect<FailOutcome, LeaseLost | StoreError>

  /** Gives a lease back without charging the attempt: the task is due again at once. Fenced. */
  readonly release: (lease: Lease) => Effect.Effect<void, LeaseLost | StoreError>

  /**
   * Gives many leases back in one write (a draining worker's buffer), each
   * fenced by its own lease, as `release` does. Answers, in order, whether
   * each was released (`false`: the lease was lost). A lease listed twice is
   * released once.
   */
  readonly releaseAll: (leases: ReadonlyArray<Lease>) => Effect.Effect<ReadonlyArray<boolean>, StoreError>

  /** Cancels a queued or running task (a running one loses its lease). Returns the task as it now is. */
  readonly cancel: (taskId: string) => Effect.Effect<TaskInfo, TaskNotFound | StoreError>

  /** Re-queues a failed or cancelled task with a fresh budget of retries. */
  readonly retry: (taskId: string) => Effect.Effect<TaskInfo, TaskNotFound | StoreError>

  readonly getTask: (taskId: string) => Effect.Effect<Option.Option<TaskInfo>, StoreError>
  readonly listTasks: (filter: TaskFilter) => Effect.Effect<ReadonlyArray<TaskInfo>, StoreError>
  readonly stats: Effect.Effect<ReadonlyArray<QueueStats>, StoreError>

  readonly registerWorker: (worker: WorkerRegistration) => Effect.Effect<void, StoreError>
  /** Marks a worker stopped. */
  readonly deregisterWorker: (workerId: string) => Effect.Effect<void, StoreError>
  readonly listWorkers: Effect.Effect<ReadonlyArray<WorkerInfo>, StoreError>

  /** The stored result for an idempotency key, if any. */
  readonly getIdempotent: (key: string) => Effect.Effect<Option.Option<unknown>, StoreError>
  /** Stores a result unless one exists; returns whichever result is stored (the first writer wins). */
  readonly putIdempotent: (key: string, value: unknown, taskId: string | undefined) => Effect.Effect<unknown, StoreError>

  /** Prunes old tasks and marks silent workers dead. */
  readonly maintenance: (options: MaintenanceOptions) => Effect.Effect<void, StoreError>

  /** Hints that work arrived on a queue. Lossy: workers also poll. */
  readonly wakeups: Stream.Stream<string>
}>() {}
