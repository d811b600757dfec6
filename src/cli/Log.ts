/**
 * The CLI's logger: one line per entry on stderr, written directly (not
 * through the `Console` service, whose stderr the CLI silences while
 * @effect/cli parses the command line).
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as HashMap from "effect/HashMap"
import * as Logger from "effect/Logger"
import { inspect } from "node:util"
import { oneLine, rootMessage } from "./CliError.js"
import * as Render from "./Render.js"

const show = (value: unknown): string => {
  if (typeof value === "string") return value
  if (value instanceof Error) {
    // The innermost cause says what happened (`connect ECONNREFUSED …`), the outer message where.
    const root = rootMessage(value)
    return root === oneLine(value.message) ? root : `${oneLine(value.message)}: ${root}`
  }
  return inspect(value, { depth: 3, breakLength: Infinity })
}

const colorOf = (level: string) =>
  level === "ERROR" || level === "FATAL" ? Render.red : level === "WARN" ? Render.yellow : Render.dim

/** `12:00:01.234 INFO  worker started … worker=host:1/ab12cd34` */
export const logger: Logger.Logger<unknown, void> = Logger.make(({ annotations, cause, date, logLevel, message }) => {
  const parts = (Array.isArray(message) ? message : [message]).map(show)
  const fields = Array.from(HashMap.toEntries(annotations), ([key, value]) => `${key}=${show(value)}`)
  const time = date.toISOString().slice(11, 23)
  const level = colorOf(logLevel.label)(logLevel.label.padEnd(5))
  const failure = Cause.isEmpty(cause) ? "" : ` cause=${JSON.stringify(oneLine(Cause.pretty(cause)))}`
  process.stderr.write(`${Render.dim(time)} ${level} ${parts.join(" ")}${fields.length > 0 ? ` ${Render.dim(fields.join(" "))}` : ""}${failure}\n`)
})

/** Replaces the default logger. */
export const layer = Logger.replace(Logger.defaultLogger, logger)
