/**
 * The typed errors of hyrex. Every failure a caller can see is one of these,
 * with a message that says what went wrong and what was kept.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * The store could not be reached or a statement failed. Nothing was lost:
 * the operation either happened entirely or not at all.
 */
export class StoreError extends Schema.TaggedError<StoreError>()("StoreError", {
  operation: Schema.String,
  cause: Schema.Defect
}) {
  override get message(): string {
    const detail = this.cause instanceof Error ? this.cause.message : String(this.cause)
    return `task store operation "${this.operation}" failed: ${detail}`
  }
}

/**
 * A fenced write (complete, fail, renew, release) was rejected because the
 * caller no longer holds the lease of that attempt: it expired and was taken
 * over, or the task was cancelled. The caller's result is discarded.
 */
export class LeaseLost extends Schema.TaggedError<LeaseLost>()("LeaseLost", {
  taskId: Schema.String,
  attempt: Schema.Number,
  owner: Schema.String
}) {
  override get message(): string {
    return `worker ${this.owner} no longer holds the lease of task ${this.taskId} attempt ${this.attempt}`
  }
}

/** A payload did not match the task's Schema; nothing was enqueued. */
export class PayloadError extends Schema.TaggedError<PayloadError>()("PayloadError", {
  taskName: Schema.String,
  issue: Schema.String
}) {
  override get message(): string {
    return `invalid payload for task "${this.taskName}": ${this.issue}`
  }
}

/** No task with this id exists in the store. */
export class TaskNotFound extends Schema.TaggedError<TaskNotFound>()("TaskNotFound", {
  taskId: Schema.String
}) {
  override get message(): string {
    return `no task with id ${this.taskId}`
  }
}

/** A task name that the registry does not know. */
export class UnknownTask extends Schema.TaggedError<UnknownTask>()("UnknownTask", {
  name: Schema.String,
  known: Schema.Array(Schema.String)
}) {
  override get message(): string {
    return `unknown task "${this.name}" (registered: ${this.known.join(", ") || "none"})`
  }
}

/** Two tasks with the same name were given to `Registry.make`. */
export class DuplicateTaskName extends Schema.TaggedError<DuplicateTaskName>()("DuplicateTaskName", {
  name: Schema.String
}) {
  override get message(): string {
    return `two tasks are named "${this.name}"; task names must be unique within a registry`
  }
}

/** An option given to a task, a worker or a store is out of range. */
export class ConfigurationError extends Schema.TaggedError<ConfigurationError>()("ConfigurationError", {
  option: Schema.String,
  issue: Schema.String
}) {
  override get message(): string {
    return `invalid option "${this.option}": ${this.issue}`
  }
}

/**
 * A handler fails with this to skip the remaining retries: the task ends
 * `failed` at once, with the cause recorded.
 */
export class PermanentError extends Schema.TaggedError<PermanentError>()("PermanentError", {
  cause: Schema.Defect
}) {
  override get message(): string {
    const detail = this.cause instanceof Error ? this.cause.message : String(this.cause)
    return `permanent failure: ${detail}`
  }
}

/** One attempt ran longer than the task's `timeout`. */
export class TaskTimeout extends Schema.TaggedError<TaskTimeout>()("TaskTimeout", {
  taskName: Schema.String,
  timeoutMillis: Schema.Number
}) {
  override get message(): string {
    return `attempt of task "${this.taskName}" timed out after ${this.timeoutMillis} ms`
  }
}

/** A stored value (payload, idempotent result) no longer decodes with its Schema. */
export class DecodeError extends Schema.TaggedError<DecodeError>()("DecodeError", {
  what: Schema.String,
  issue: Schema.String
}) {
  override get message(): string {
    return `stored ${this.what} does not decode: ${this.issue}`
  }
}
