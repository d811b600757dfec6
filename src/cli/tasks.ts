/**
 * `hyrex tasks list | show | retry | cancel`: inspecting and operating on
 * single tasks.
 *
 * @since 0.1.0
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { TaskNotFound } from "../Errors.js"
import { type TaskInfo, TaskStore } from "../TaskStore.js"
import { CliError } from "./CliError.js"
import * as Database from "./Database.js"
import * as Input from "./Input.js"
import * as Render from "./Render.js"

const statuses = ["queued", "running", "succeeded", "failed", "cancelled"] as const

const idArg = Args.text({ name: "id" }).pipe(Args.withDescription("the task's id (see `hyrex tasks list`)"))

const jsonOption = Options.boolean("json").pipe(Options.withDescription("print JSON instead of text"))

const attempts = (task: TaskInfo) => `${task.attempt}/${task.maxRetries + 1}`

const lastError = (task: TaskInfo) => {
  const last = task.errors.at(-1)
  return last === undefined ? "" : `${last.kind}: ${Render.oneLineText(last.message)}`
}

const stateOf = (task: TaskInfo, now: Date): string => {
  switch (task.status) {
    case "queued":
      return task.runAt.getTime() > now.getTime() ? "scheduled" : "queued"
    case "running":
      return "running"
    case "succeeded":
      return Render.green("succeeded")
    case "failed":
      return Render.red("failed")
    case "cancelled":
      return Render.yellow("cancelled")
  }
}

const findTask = (id: string) =>
  Effect.flatMap(TaskStore, (store) => store.getTask(id)).pipe(
    Effect.flatMap(Option.match({
      onNone: () => Effect.fail(new TaskNotFound({ taskId: id })),
      onSome: Effect.succeed
    }))
  )

const withStore = <A, E, R>(flags: Parameters<typeof Database.target>[0], body: Effect.Effect<A, E, R>) =>
  Effect.flatMap(Database.target(flags), (target) => Effect.provide(body, Database.existingStore(target)))

/** `hyrex tasks list` */
export const list = Command.make("list", {
  ...Database.options,
  status: Options.text("status").pipe(
    Options.withPseudoName("state"),
    Options.withDescription(`only tasks in this state: ${statuses.join(", ")}`),
    Options.optional
  ),
  queue: Options.text("queue").pipe(Options.withPseudoName("queue"), Options.withDescription("only tasks of this queue"), Options.optional),
  name: Options.text("name").pipe(Options.withPseudoName("name"), Options.withDescription("only tasks with this task name"), Options.optional),
  limit: Options.text("limit").pipe(Options.withPseudoName("n"), Options.withDescription("at most this many, newest first (default 20)"), Options.withDefault("20")),
  json: jsonOption
}, (flags) =>
  Effect.gen(function*() {
    const limit = yield* Input.integer("limit", 1)(flags.limit)
    const status = yield* Effect.transposeMapOption(flags.status, Input.oneOf("status", statuses))
    yield* withStore(
      flags,
      Effect.gen(function*() {
        const store = yield* TaskStore
        const tasks = yield* store.listTasks({
          status: Option.getOrUndefined(status),
          queue: Option.getOrUndefined(flags.queue),
          name: Option.getOrUndefined(flags.name),
          limit
        })
        if (flags.json) return yield* Console.log(JSON.stringify(tasks, null, 2))
        if (tasks.length === 0) return yield* Console.log("no tasks")
        const now = yield* Database.now
        const rows = tasks.map((task) => [
          task.id,
          task.name,
          task.queue,
          stateOf(task, now),
          attempts(task),
          String(task.leaseLosses),
          Render.relative(now.getTime() - task.updatedAt.getTime()),
          Render.ellipsis(lastError(task), 60)
        ])
        yield* Console.log(
          Render.table(["ID>", "NAME", "QUEUE", "STATUS", "ATTEMPT>", "LEASE LOSSES>", "UPDATED", "LAST ERROR"], rows)
            .join("\n")
        )
      })
    )
  })).pipe(Command.withDescription("List tasks, newest first"))

const describeTask = (task: TaskInfo, now: Date): Array<string> => {
  const lines: Array<string> = []
  const row = (label: string, value: string) => lines.push(`${Render.bold(label.padEnd(16))}${value}`)
  lines.push(`${Render.bold(`task ${task.id}`)}  ${task.name}  (queue ${task.queue})`)
  row("status", `${stateOf(task, now)}, attempt ${attempts(task)}`)
  if (task.status === "running") {
    row(
      "lease",
      task.leaseOwner === null
        ? "-"
        : `held by ${task.leaseOwner}, expires ${
          task.leaseExpiresAt === null ? "-" : Render.relative(now.getTime() - task.leaseExpiresAt.getTime())
        }`
    )
  }
  if (task.status === "queued") row("due", Render.timestamp(task.runAt, now))
  row("lease losses", String(task.leaseLosses))
  row("priority", String(task.priority))
  row("payload", JSON.stringify(task.payload))
  if (task.result !== null && task.result !== undefined) row("result", JSON.stringify(task.result))
  if (task.idempotencyKey !== null) row("idempotency key", task.idempotencyKey)
  row("created", Render.timestamp(task.createdAt, now))
  row("updated", Render.timestamp(task.updatedAt, now))
  if (task.finishedAt !== null) row("finished", Render.timestamp(task.finishedAt, now))
  if (task.errors.length === 0) {
    row("errors", "none")
  } else {
    lines.push(Render.bold(`errors (${task.errors.length})`))
    lines.push(
      ...Render.table(
        ["ATTEMPT>", "KIND", "AT", "WORKER", "MESSAGE"],
        task.errors.map((error) => [
          String(error.attempt),
          error.kind,
          error.at.toISOString(),
          error.worker ?? "-",
          Render.oneLineText(error.message)
        ])
      ).map((line) => `  ${line}`)
    )
    const withCause = task.errors.filter((error) => error.cause !== undefined)
    for (const error of withCause.slice(-1)) {
      lines.push(Render.bold(`cause of attempt ${error.attempt}`))
      lines.push(...(error.cause ?? "").split("\n").slice(0, 12).map((line) => `  ${line}`))
    }
  }
  return lines
}

/** `hyrex tasks show <id>` */
export const show = Command.make("show", { ...Database.options, id: idArg, json: jsonOption }, (flags) =>
  withStore(
    flags,
    Effect.gen(function*() {
      const task = yield* findTask(flags.id)
      if (flags.json) return yield* Console.log(JSON.stringify(task, null, 2))
      const now = yield* Database.now
      yield* Console.log(describeTask(task, now).join("\n"))
    })
  )).pipe(Command.withDescription("Show one task: state, lease, attempts and its error history"))

/** `hyrex tasks retry <id>` */
export const retry = Command.make("retry", { ...Database.options, id: idArg }, (flags) =>
  withStore(
    flags,
    Effect.gen(function*() {
      const store = yield* TaskStore
      const before = yield* findTask(flags.id)
      if (before.status !== "failed" && before.status !== "cancelled") {
        return yield* new CliError({
          message: `task ${before.id} is ${before.status}: only failed or cancelled tasks can be retried`
        })
      }
      const after = yield* store.retry(flags.id)
      yield* Console.log(
        `task ${after.id} (${after.name}) is ${after.status} again: ${after.maxRetries + 1 - after.attempt} more attempt(s) allowed`
      )
    })
  )).pipe(Command.withDescription("Re-queue a failed or cancelled task with a fresh budget of retries"))

/** `hyrex tasks cancel <id>` */
export const cancel = Command.make("cancel", { ...Database.options, id: idArg }, (flags) =>
  withStore(
    flags,
    Effect.gen(function*() {
      const store = yield* TaskStore
      const before = yield* findTask(flags.id)
      if (before.status !== "queued" && before.status !== "running") {
        return yield* new CliError({
          message: `task ${before.id} is ${before.status}: only queued or running tasks can be cancelled`
        })
      }
      const after = yield* store.cancel(flags.id)
      yield* Console.log(
        before.status === "running" && before.leaseOwner !== null
          ? `task ${after.id} (${after.name}) is ${after.status}; worker ${before.leaseOwner} lost its lease and stops it at its next heartbeat`
          : `task ${after.id} (${after.name}) is ${after.status}`
      )
    })
  )).pipe(Command.withDescription("Cancel a queued or running task (a running one loses its lease)"))

/** `hyrex tasks …` */
export const command = Command.make("tasks").pipe(
  Command.withDescription("Inspect and operate on tasks"),
  Command.withSubcommands([list, show, retry, cancel])
)
