/**
 * How the exit of a handler becomes the failure a store records.
 */
import * as Cause from "effect/Cause"
import * as Option from "effect/Option"
import { DecodeError, PermanentError, TaskTimeout } from "../Errors.js"
import type { AttemptFailure } from "../TaskStore.js"

const messageOf = (error: unknown): string => {
  if (error instanceof Error) return error.message || error.name
  if (typeof error === "object" && error !== null && "_tag" in error) {
    const tag = String(error._tag)
    try {
      return `${tag}: ${JSON.stringify(error)}`
    } catch {
      return tag
    }
  }
  if (typeof error === "string") return error
  try {
    return JSON.stringify(error) ?? String(error)
  } catch {
    return String(error)
  }
}

/**
 * Classifies a failed (not interrupted) attempt: permanent errors and
 * payloads that do not decode skip the remaining retries; defects keep their
 * pretty cause.
 */
export const fromCause = (cause: Cause.Cause<unknown>): AttemptFailure => {
  const failure = Cause.failureOption(cause)
  if (Option.isNone(failure)) {
    const defect = Cause.dieOption(cause)
    return {
      kind: "defect",
      message: Option.match(defect, { onNone: () => "attempt was interrupted", onSome: messageOf }),
      cause: Cause.pretty(cause),
      retryable: true
    }
  }
  const error = failure.value
  if (error instanceof PermanentError) {
    return { kind: "permanent", message: messageOf(error), cause: Cause.pretty(cause), retryable: false }
  }
  if (error instanceof TaskTimeout) return { kind: "timeout", message: messageOf(error), retryable: true }
  if (error instanceof DecodeError) return { kind: "decode", message: messageOf(error), retryable: false }
  return { kind: "error", message: messageOf(error), cause: Cause.pretty(cause), retryable: true }
}
