/**
 * hyrex: durable background tasks on the Postgres you already run.
 *
 * @since 0.1.0
 */
export * as Backoff from "./Backoff.js"
export * from "./Errors.js"
export * as Idempotency from "./Idempotency.js"
export * as MemoryTaskStore from "./MemoryTaskStore.js"
export * as PgTaskStore from "./PgTaskStore.js"
export * as Metrics from "./Metrics.js"
export * as Registry from "./Registry.js"
export * as Task from "./Task.js"
export * as TaskContext from "./TaskContext.js"
export * as TaskStore from "./TaskStore.js"
export * as Worker from "./Worker.js"
export * as WorkerConfig from "./WorkerConfig.js"
