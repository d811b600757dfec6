/**
 * Durations as people write them in flags and environment variables:
 * `500ms`, `15s`, `2m`, `1h`, `1.5 seconds`, `3 days`.
 */
import * as Duration from "effect/Duration"
import * as Option from "effect/Option"

const units: Record<string, (n: number) => Duration.Duration> = {
  ms: Duration.millis,
  millis: Duration.millis,
  millisecond: Duration.millis,
  milliseconds: Duration.millis,
  s: Duration.seconds,
  sec: Duration.seconds,
  secs: Duration.seconds,
  second: Duration.seconds,
  seconds: Duration.seconds,
  m: Duration.minutes,
  min: Duration.minutes,
  mins: Duration.minutes,
  minute: Duration.minutes,
  minutes: Duration.minutes,
  h: Duration.hours,
  hour: Duration.hours,
  hours: Duration.hours,
  d: Duration.days,
  day: Duration.days,
  days: Duration.days
}

/** The duration `text` names, if it names one. */
export const parse = (text: string): Option.Option<Duration.Duration> => {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$/i.exec(text)
  const unit = match === null ? undefined : units[match[2]!.toLowerCase()]
  return match === null || unit === undefined ? Option.none() : Option.some(unit(Number(match[1])))
}

/** What the error says a duration looks like. */
export const examples = "500ms, 15s, 2m, 1h, 3 days"
