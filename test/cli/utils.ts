/**
 * Running the `hyrex` CLI as a subprocess (the package's bin, as a user
 * would), seeding its database through the library, and driving a real
 * terminal through tmux.
 */
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { fileURLToPath } from "node:url"
import { PgTaskStore } from "../../src/index.js"
import type { TaskStore } from "../../src/TaskStore.js"

/** The package's bin. */
export const bin = fileURLToPath(new URL("../../bin/hyrex.mjs", import.meta.url))

/** The repository root (commands run from there, so relative module paths work). */
export const root = fileURLToPath(new URL("../..", import.meta.url))

/** A fixture module of test/cli/fixtures, relative to the repository root. */
export const fixture = (name: string): string => `test/cli/fixtures/${name}`

/** How a command ended. */
export interface Result {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

/** Environment of the subprocesses: no DATABASE_URL or worker settings inherited unless given. */
const baseEnv = (): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: "1" }
  for (const key of Object.keys(env)) {
    if (key === "DATABASE_URL" || key.startsWith("HYREX_")) delete env[key]
  }
  return env
}

/** The takeovers and duplicates a `hyrex demo` summary printed (NaN when missing). */
export const demoSummary = (output: string): { readonly takeovers: number; readonly duplicates: number } => ({
  takeovers: Number(/takeovers\s+(\d+) /.exec(output)?.[1]),
  duplicates: Number(/duplicates\s+(\d+) /.exec(output)?.[1])
})

/** A running CLI process. */
export interface Running {
  readonly child: ChildProcess
  readonly stdout: () => string
  readonly stderr: () => string
  /** Completes when the process has exited. */
  readonly exit: Effect.Effect<Result>
  readonly signal: (signal: NodeJS.Signals) => Effect.Effect<void>
}

/** Starts `hyrex ...args`; killed (SIGKILL) when the scope closes if it still runs. */
export const start = (
  args: ReadonlyArray<string>,
  env: Record<string, string> = {}
): Effect.Effect<Running, never, Scope.Scope> =>
  Effect.gen(function*() {
    const done = yield* Deferred.make<Result>()
    let stdout = ""
    let stderr = ""
    const child = yield* Effect.acquireRelease(
      Effect.sync(() => spawn(process.execPath, [bin, ...args], { cwd: root, env: { ...baseEnv(), ...env } })),
      (child) => Effect.sync(() => child.exitCode === null && child.signalCode === null && child.kill("SIGKILL"))
    )
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString("utf8")))
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")))
    child.on("close", (code, signal) => Deferred.unsafeDone(done, Effect.succeed({ code, signal, stdout, stderr })))
    return {
      child,
      stdout: () => stdout,
      stderr: () => stderr,
      exit: Deferred.await(done),
      signal: (signal) => Effect.sync(() => void child.kill(signal))
    }
  })

/** Runs `hyrex ...args` to its end (at most `timeout`). */
export const run = (
  args: ReadonlyArray<string>,
  env: Record<string, string> = {},
  timeout: Duration.DurationInput = "30 seconds"
): Effect.Effect<Result> =>
  Effect.scoped(
    Effect.flatMap(start(args, env), (running) =>
      running.exit.pipe(
        Effect.timeoutFail({
          duration: timeout,
          onTimeout: () => new Error(`hyrex ${args.join(" ")} did not end within ${Duration.format(Duration.decode(timeout))}`)
        }),
        Effect.orDie
      ))
  )

/** A store on `url` for seeding and checking, for the scope's lifetime. */
export const store = (url: string): Layer.Layer<TaskStore> =>
  PgTaskStore.layerFromUrl(url, { maxConnections: 3 }).pipe(Layer.orDie)

/** Retries `check` every 100 ms until it holds, at most `timeout`. */
export const eventually = <E, R>(
  check: Effect.Effect<boolean, E, R>,
  timeout: Duration.DurationInput = "15 seconds",
  what = "condition"
): Effect.Effect<void, E | Error, R> =>
  check.pipe(
    Effect.repeat({ schedule: Schedule.spaced("100 millis"), until: (ok) => ok }),
    Effect.timeoutFail({ duration: timeout, onTimeout: () => new Error(`timed out waiting for ${what}`) }),
    Effect.asVoid
  )

/** Whether tmux is installed. */
export const hasTmux: boolean = (() => {
  try {
    execFileSync("tmux", ["-V"], { stdio: "ignore" })
    return true
  } catch {
    return false
  }
})()

/** A tmux server of our own (its own socket) with one 120×40 window running a shell command. */
export interface Terminal {
  /** The screen as text. */
  readonly screen: Effect.Effect<string>
  readonly keys: (...keys: ReadonlyArray<string>) => Effect.Effect<void>
  /** Waits until the screen matches, returns it. */
  readonly waitFor: (pattern: RegExp, timeout?: Duration.DurationInput | undefined) => Effect.Effect<string, Error>
}

const shellQuote = (word: string) => `'${word.replace(/'/g, `'\\''`)}'`

/**
 * Runs `hyrex ...args` in a fresh tmux session (120×40); after it exits the
 * window shows `EXIT=<code>` and stays. The server is killed when the scope closes.
 */
export const terminal = (
  args: ReadonlyArray<string>,
  env: Record<string, string> = {}
): Effect.Effect<Terminal, never, Scope.Scope> =>
  Effect.gen(function*() {
    const socket = `hyrex-test-${randomBytes(4).toString("hex")}`
    const tmux = (...tmuxArgs: ReadonlyArray<string>) =>
      execFileSync("tmux", ["-L", socket, ...tmuxArgs], { encoding: "utf8", env: { ...baseEnv(), ...env, TERM: "xterm-256color" } })
    const command = [process.execPath, bin, ...args].map(shellQuote).join(" ")
    yield* Effect.acquireRelease(
      Effect.sync(() =>
        tmux(
          "new-session",
          "-d",
          "-x",
          "120",
          "-y",
          "40",
          "-c",
          root,
          `${Object.entries(env).map(([k, v]) => `${k}=${shellQuote(v)}`).join(" ")} ${command}; echo EXIT=$?; sleep 600`
        )
      ),
      () => Effect.sync(() => tmux("kill-server")).pipe(Effect.ignore)
    )
    const screen = Effect.sync(() => tmux("capture-pane", "-p"))
    return {
      screen,
      keys: (...keys) => Effect.sync(() => void tmux("send-keys", ...keys)),
      waitFor: (pattern, timeout = "30 seconds") =>
        screen.pipe(
          Effect.filterOrFail((text) => pattern.test(text), () => new Error("not yet")),
          Effect.retry(Schedule.spaced("200 millis")),
          Effect.timeoutFail({
            duration: timeout,
            onTimeout: () => new Error(`the terminal never showed ${pattern}`)
          }),
          Effect.catchAll((error) =>
            Effect.flatMap(screen, (text) => Effect.fail(new Error(`${error.message}; it shows:\n${text}`))))
        )
    }
  })
