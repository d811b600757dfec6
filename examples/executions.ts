/**
 * An execution log for the examples. When `HYREX_RECORD_EXECUTIONS` is set
 * (`hyrex demo` sets it for its workers, and creates the table), every
 * handler run records a row in `<schema>.example_executions` (the schema
 * comes from `HYREX_SCHEMA`, which `hyrex worker` sets): the task, the
 * attempt, the worker, when it started and, if its work completed, when it
 * finished. The demo counts these rows to show how often a handler really
 * ran: a takeover re-runs a handler that never finished, a duplicate would be
 * a handler that finished twice.
 *
 * Handlers get the `SqlClient` from `hyrex worker`, which provides its own
 * connection pool to the handlers it runs.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Config, Effect, Option } from "effect"
import { TaskContext } from "../src/index.js"

const settings = Config.all({
  enabled: Config.boolean("HYREX_RECORD_EXECUTIONS").pipe(Config.withDefault(false)),
  schema: Config.string("HYREX_SCHEMA").pipe(Config.withDefault("hyrex"))
})

/** The table's qualified name. `hyrex demo` creates it before starting its workers. */
export const tableName = (schema: string): string => `${schema}.example_executions`

/**
 * Runs a handler's work and records the execution when recording is on (and
 * an `SqlClient` is available); otherwise just runs it.
 */
export const recorded = <A, E, R>(work: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const { enabled, schema } = yield* settings
    const sql = yield* Effect.serviceOption(SqlClient.SqlClient)
    if (!enabled || Option.isNone(sql)) return yield* work
    const ctx = yield* TaskContext.TaskContext
    const table = sql.value(tableName(schema))
    const [row] = yield* sql.value<{ readonly id: string }>`
      INSERT INTO ${table} (task_id, task, attempt, worker, pid)
      VALUES (${ctx.taskId}, ${ctx.name}, ${ctx.attempt}, ${ctx.workerId}, ${process.pid})
      RETURNING id`
    const result = yield* work
    yield* sql.value`UPDATE ${table} SET finished_at = now() WHERE id = ${row!.id}`
    return result
  })
