/**
 * W3C `traceparent` of the span that sent a task, stored with the task, so
 * the span of each attempt links to it across processes.
 */
import * as Context from "effect/Context"
import * as DefaultServices from "effect/DefaultServices"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"

const format = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/

/** Effect's built-in tracer: its spans are not exported anywhere. */
export const builtInTracer = Context.get(DefaultServices.liveServices, Tracer.Tracer)

/**
 * The `traceparent` of the current span (a send's own span), when the task
 * is sent within a trace: the span has a parent (the caller's), or a tracer
 * that exports spans made it. A root span of Effect's built-in tracer is
 * seen by nothing: nothing is stored (56 bytes less in every row, written
 * again by each claim and completion).
 */
export const current: Effect.Effect<string | undefined> = Effect.flatMap(Effect.tracer, (tracer) =>
  Effect.map(
    Effect.option(Effect.currentSpan),
    Option.match({
      onNone: () => undefined,
      onSome: (span) =>
        tracer === builtInTracer && Option.isNone(span.parent)
          ? undefined
          : `00-${span.traceId}-${span.spanId}-${span.sampled ? "01" : "00"}`
    })
  ))

/** The links an attempt's span gets: to the sender's span, when it was traced. */
export const links = (traceParent: string | undefined): ReadonlyArray<Tracer.SpanLink> => {
  const match = traceParent === undefined ? null : format.exec(traceParent)
  if (match === null) return []
  const span = Tracer.externalSpan({ traceId: match[1]!, spanId: match[2]!, sampled: match[3] === "01" })
  return [{ _tag: "SpanLink", span, attributes: { "hyrex.link": "sent_by" } }]
}
