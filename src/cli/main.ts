/**
 * The `hyrex` command line: `migrate`, `worker`, `status`, `tasks`, `demo`.
 *
 * Run through `bin/hyrex.mjs` (the package's bin), which registers tsx so
 * that worker modules may be TypeScript. Every failure ends as one line on
 * stderr (`hyrex: …`) and exit code 1; the first SIGINT / SIGTERM interrupts
 * the command (a worker drains), a second one exits at once with code 130.
 *
 * @since 0.1.0
 */
import * as Command from "@effect/cli/Command"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeTerminal from "@effect/platform-node/NodeTerminal"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import { readFileSync } from "node:fs"
import { describeCause } from "./CliError.js"
import * as Demo from "./demo.js"
import * as Log from "./Log.js"
import * as Migrate from "./migrate.js"
import * as Status from "./status.js"
import * as Tasks from "./tasks.js"
import * as WorkerCommand from "./worker.js"

const version = (() => {
  try {
    const pkg = Schema.decodeUnknownSync(Schema.parseJson(Schema.Struct({ version: Schema.String })))(
      readFileSync(new URL("../../package.json", import.meta.url), "utf8")
    )
    return pkg.version
  } catch {
    return "0.0.0"
  }
})()

const root = Command.make("hyrex").pipe(
  Command.withDescription("Durable background tasks on Postgres"),
  Command.withSubcommands([
    Migrate.command,
    WorkerCommand.command,
    Status.command,
    Tasks.command,
    Demo.command
  ])
)

const app = Command.run(root, { name: "hyrex", version })

/**
 * @effect/cli prints its own (multi-line, coloured) account of a bad command
 * line on stderr through `Console.error`; we print one line instead, so its
 * stderr output is dropped. Commands print results with `Console.log`; the
 * logger (Log.ts) and the error line below write to stderr directly.
 */
const withoutCliErrors = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.flatMap(Effect.console, (console) =>
    Effect.withConsole(self, {
      ...console,
      error: () => Effect.void,
      unsafe: { ...console.unsafe, error: () => {} }
    }))

/** Runs the CLI on `argv` (`process.argv`): the exit code is 0 on success and on a first signal, 1 on failure. */
const run = (argv: ReadonlyArray<string>): Effect.Effect<void, unknown> => {
  // `hyrex` and `hyrex tasks` alone show their help rather than doing nothing.
  const args = argv.length === 2 || (argv.length === 3 && argv[2] === "tasks") ? [...argv, "--help"] : argv
  return withoutCliErrors(app(args)).pipe(
    Effect.tapErrorCause((cause) =>
      Cause.isInterruptedOnly(cause)
        ? Effect.void
        : Effect.sync(() => process.stderr.write(`hyrex: ${describeCause(cause)}\n`))
    ),
    // What @effect/cli needs (not all of NodeContext: every module costs start-up time).
    Effect.provide(Layer.mergeAll(NodeFileSystem.layer, NodePath.layer, NodeTerminal.layer)),
    Effect.provide(Log.layer)
  )
}

// The first signal interrupts the command through NodeRuntime.runMain (a
// worker drains); a second one does not wait for that.
let signals = 0
const onSignal = (signal: NodeJS.Signals) => {
  signals += 1
  if (signals >= 2) {
    process.stderr.write(`hyrex: second ${signal}, exiting now\n`)
    process.exit(130)
  }
}
process.on("SIGINT", onSignal)
process.on("SIGTERM", onSignal)

NodeRuntime.runMain(run(process.argv), {
  disableErrorReporting: true,
  disablePrettyLogger: true,
  teardown: (exit, onExit) => {
    const code = Exit.isSuccess(exit) || Cause.isInterruptedOnly(exit.cause) ? 0 : 1
    process.exitCode = code
    // Whatever still holds the event loop open (a socket closing slowly) may not delay the exit for long.
    setTimeout(() => process.exit(code), 2000).unref()
    onExit(code)
  }
})
