/**
 * How the CLI fails: every error a command can meet becomes one line on
 * stderr and a non-zero exit code, never a stack trace.
 *
 * @since 0.1.0
 */
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as ValidationError from "@effect/cli/ValidationError"
import * as Cause from "effect/Cause"
import * as Data from "effect/Data"
import * as Option from "effect/Option"

/** A failure the CLI explains itself (bad input, missing module, …). */
export class CliError extends Data.TaggedError("CliError")<{ readonly message: string }> {}

/** Fails with a `CliError`. */
export const fail = (message: string): CliError => new CliError({ message })

const ansi = /\u001b\[[0-9;?]*[A-Za-z]/g

/** Collapses text (possibly multi-line, possibly coloured) into one plain line. */
export const oneLine = (text: string): string => text.replace(ansi, "").replace(/\s+/g, " ").trim()

/** Hides the password of a connection URL. */
export const redactUrl = (url: string): string => {
  try {
    const parsed = new URL(url)
    if (parsed.password !== "") parsed.password = "***"
    return parsed.toString()
  } catch {
    return "<unparsable url>"
  }
}

interface ErrorLike {
  readonly message?: unknown
  readonly operation?: unknown
  readonly code?: unknown
  readonly cause?: unknown
  readonly errors?: unknown
}

const field = (u: unknown, key: keyof ErrorLike): unknown =>
  typeof u === "object" && u !== null && key in u ? (u as ErrorLike)[key] : undefined

/**
 * The most specific message in a chain of causes: driver errors are wrapped
 * by `SqlError`, which is wrapped by `StoreError`; the innermost one says
 * what actually happened (`connect ECONNREFUSED 127.0.0.1:5432`).
 */
export const rootMessage = (error: unknown): string => {
  const messages: Array<string> = []
  let current: unknown = error
  for (let depth = 0; depth < 6 && current !== undefined && current !== null; depth++) {
    const errors = field(current, "errors")
    // node's AggregateError (several addresses refused) has an empty message.
    if (Array.isArray(errors) && errors.length > 0) current = errors[0]
    const message = field(current, "message")
    const code = field(current, "code")
    if (typeof message === "string" && message.trim() !== "") messages.push(message)
    else if (typeof code === "string") messages.push(code)
    else if (typeof current !== "object") messages.push(String(current))
    current = field(current, "cause")
  }
  return oneLine(messages.at(-1) ?? String(error))
}

/** The Postgres error code (SQLSTATE) somewhere in a chain of causes. */
export const sqlState = (error: unknown): string | undefined => {
  let current: unknown = error
  for (let depth = 0; depth < 6 && current !== undefined && current !== null; depth++) {
    const code = field(current, "code")
    if (typeof code === "string" && /^[0-9A-Z]{5}$/.test(code)) return code
    current = field(current, "cause")
  }
  return undefined
}

const tagOf = (error: unknown): string | undefined => {
  const tag = typeof error === "object" && error !== null && "_tag" in error ? error._tag : undefined
  return typeof tag === "string" ? tag : undefined
}

/** One line for any failure of a command. */
export const describe = (error: unknown): string => {
  if (ValidationError.isValidationError(error)) {
    return "error" in error ? oneLine(HelpDoc.toAnsiText(error.error)) : "invalid command line"
  }
  switch (tagOf(error)) {
    case "CliError":
    case "TaskNotFound":
    case "ConfigurationError":
    case "UnknownTask":
    case "PayloadError":
    case "DuplicateTaskName":
      return oneLine(String(field(error, "message")))
    case "StoreError": {
      const operation = String(field(error, "operation"))
      const cause = field(error, "cause")
      if (operation === "connect") return `cannot connect to the database: ${rootMessage(cause)}`
      if (sqlState(cause) === "42P01" || sqlState(cause) === "3F000") {
        return `the hyrex tables do not exist in this database (run \`hyrex migrate\` first): ${rootMessage(cause)}`
      }
      return `database operation "${operation}" failed: ${rootMessage(cause)}`
    }
    case "SqlError":
      return `database error: ${rootMessage(error)}`
  }
  return rootMessage(error)
}

/** One line for a failed command's cause (its first failure, else its first defect). */
export const describeCause = (cause: Cause.Cause<unknown>): string =>
  Option.match(Cause.failureOption(cause), {
    onSome: describe,
    onNone: () =>
      Option.match(Cause.dieOption(cause), {
        onSome: (defect) => `unexpected error: ${describe(defect)}`,
        onNone: () => "interrupted"
      })
  })
