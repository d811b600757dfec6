/**
 * Parsing and checking flag values, with messages that name the flag.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as DurationText from "../internal/durationText.js"
import { CliError } from "./CliError.js"

/** `15s`, `500ms`, `2m`, `1.5 seconds` … */
export const parseDuration = (flag: string, text: string): Effect.Effect<Duration.Duration, CliError> =>
  Option.match(DurationText.parse(text), {
    onNone: () =>
      Effect.fail(new CliError({ message: `--${flag}: "${text}" is not a duration (examples: ${DurationText.examples})` })),
    onSome: (duration) =>
      Duration.greaterThan(duration, Duration.zero)
        ? Effect.succeed(duration)
        : Effect.fail(new CliError({ message: `--${flag}: must be longer than zero` }))
  })

/** An optional duration flag. */
export const optionalDuration = (
  flag: string,
  text: Option.Option<string>
): Effect.Effect<Duration.Duration | undefined, CliError> =>
  Option.match(text, {
    onNone: () => Effect.succeed(undefined),
    onSome: (value) => parseDuration(flag, value)
  })

/** Checks an integer flag is at least `min`. */
const atLeast = (flag: string, min: number) => (value: number): Effect.Effect<number, CliError> =>
  Number.isInteger(value) && value >= min
    ? Effect.succeed(value)
    : Effect.fail(new CliError({ message: `--${flag}: must be an integer of at least ${min}, got ${value}` }))

/** An integer flag given as text, at least `min`. */
export const integer = (flag: string, min: number) => (text: string): Effect.Effect<number, CliError> =>
  /^\s*-?\d+\s*$/.test(text)
    ? atLeast(flag, min)(Number(text))
    : Effect.fail(new CliError({ message: `--${flag}: "${text}" is not an integer` }))

/** An optional integer flag given as text, at least `min`. */
export const optionalInteger = (
  flag: string,
  min: number,
  text: Option.Option<string>
): Effect.Effect<number | undefined, CliError> =>
  Option.match(text, {
    onNone: () => Effect.succeed(undefined),
    onSome: integer(flag, min)
  })

/** One of `choices`. */
export const oneOf = <const A extends string>(flag: string, choices: ReadonlyArray<A>) =>
(text: string): Effect.Effect<A, CliError> => {
  const found = choices.find((choice) => choice === text)
  return found === undefined
    ? Effect.fail(new CliError({ message: `--${flag}: "${text}" is not one of ${choices.join(", ")}` }))
    : Effect.succeed(found)
}

/** A comma separated list, without empty entries. */
export const commaList = (text: string): ReadonlyArray<string> =>
  text.split(",").map((entry) => entry.trim()).filter((entry) => entry !== "")
