/**
 * A real hyrex worker process for the fail-over tests:
 *
 *   DATABASE_URL=postgres://… node --import tsx test/failover/workerProcess.ts --leaseTtl=2000 --concurrency=4
 *
 * - `DATABASE_URL` (required) and `HYREX_SCHEMA` (default `hyrex`) pick the store;
 *   the handlers write their side effects (`executions`) to the same database.
 * - Worker options come from the environment (`WorkerConfig.fromEnv`:
 *   `HYREX_LEASE_TTL`, `HYREX_HEARTBEAT_INTERVAL`, `HYREX_POLL_INTERVAL`,
 *   `HYREX_DRAIN_TIMEOUT`, `HYREX_CONCURRENCY`, `HYREX_QUEUES`,
 *   `HYREX_WORKER_NAME`), overridden by `--option=value` arguments
 *   (`--leaseTtl`, `--heartbeatInterval`, `--pollInterval`, `--drainTimeout`,
 *   `--fenceMargin`, `--concurrency`, `--name`); a bare number is milliseconds.
 * - Logs are JSON lines on stdout (`Logger.json`), so the harness can read them.
 * - It runs `Worker.layer` under `NodeRuntime.runMain`: SIGTERM / SIGINT drain it.
 */
import { NodeRuntime } from "@effect/platform-node"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as PgTaskStore from "../../src/PgTaskStore.js"
import * as Worker from "../../src/Worker.js"
import * as WorkerConfig from "../../src/WorkerConfig.js"
import { registry } from "./tasks.js"

/** `--option=value` arguments; they win over the environment. */
const fromArgv = (argv: ReadonlyArray<string>): Effect.Effect<WorkerConfig.WorkerOptions, Error> =>
  Effect.gen(function*() {
    const args = new Map<string, string>()
    for (const arg of argv) {
      const match = /^--([A-Za-z]+)=(.*)$/.exec(arg)
      if (match === null) return yield* Effect.fail(new Error(`unexpected argument ${JSON.stringify(arg)}; use --option=value`))
      args.set(match[1]!, match[2]!)
    }
    const duration = (key: string): Effect.Effect<Duration.Duration | undefined, Error> => {
      const raw = args.get(key)
      if (raw === undefined) return Effect.succeed(undefined)
      return Option.match(Duration.decodeUnknown(/^\d+(\.\d+)?$/.test(raw) ? Number(raw) : raw), {
        onNone: () => Effect.fail(new Error(`--${key}=${raw} is not a duration`)),
        onSome: Effect.succeed
      })
    }
    const concurrency = args.get("concurrency")
    return {
      leaseTtl: yield* duration("leaseTtl"),
      heartbeatInterval: yield* duration("heartbeatInterval"),
      pollInterval: yield* duration("pollInterval"),
      drainTimeout: yield* duration("drainTimeout"),
      fenceMargin: yield* duration("fenceMargin"),
      concurrency: concurrency === undefined ? undefined : yield* Schema.decodeUnknown(Schema.NumberFromString)(concurrency),
      name: args.get("name")
    }
  }).pipe(Effect.mapError((error) => new Error(`invalid worker arguments: ${error.message}`)))

const WorkerLive = Layer.unwrapEffect(Effect.gen(function*() {
  const url = yield* Config.redacted("DATABASE_URL")
  const schema = yield* Config.string("HYREX_SCHEMA").pipe(Config.withDefault(PgTaskStore.defaults.schema))
  const env = yield* WorkerConfig.fromEnv
  const argv = yield* fromArgv(process.argv.slice(2))
  const options: WorkerConfig.WorkerOptions = {
    queues: env.queues,
    concurrency: argv.concurrency ?? env.concurrency,
    leaseTtl: argv.leaseTtl ?? env.leaseTtl,
    heartbeatInterval: argv.heartbeatInterval ?? env.heartbeatInterval,
    pollInterval: argv.pollInterval ?? env.pollInterval,
    drainTimeout: argv.drainTimeout ?? env.drainTimeout,
    fenceMargin: argv.fenceMargin,
    name: argv.name ?? env.name
  }
  yield* Effect.logInfo("worker process starting").pipe(
    Effect.annotateLogs({
      pid: process.pid,
      options: Object.entries(options)
        .filter(([, value]) => value !== undefined)
        .map(([key, value]) => `${key}=${Duration.isDuration(value) ? Duration.format(value) : String(value)}`)
        .join(" ")
    })
  )
  // The handlers' side-effect writes get their own small pool on the same
  // URL, so a cut link (the tests' proxy) cuts them off as well.
  const Executions = PgClient.layer({ url, maxConnections: 3, applicationName: "hyrex-failover-executions" })
  return Worker.layer(registry, options).pipe(
    Layer.provide(Layer.merge(PgTaskStore.layerFromUrl(Redacted.value(url), { schema }), Executions))
  )
}))

Layer.launch(WorkerLive).pipe(
  Effect.tapErrorCause((cause) => Effect.logError("worker process failed", cause)),
  Effect.provide(Logger.json),
  NodeRuntime.runMain({ disablePrettyLogger: true })
)
