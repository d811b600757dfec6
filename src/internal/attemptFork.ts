/**
 * Starts one attempt's fiber with everything it runs under set up front: its
 * span (the attempt's own root span), its log annotations and its extra
 * services. The same as `Effect.withSpan`, `Effect.annotateLogs` and
 * `Effect.provideService` around the handler, without the Effects each of
 * them runs per call: for short tasks those cost more than the handler.
 */
import * as Context from "effect/Context"
import * as DefaultServices from "effect/DefaultServices"
import type * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as FiberRef from "effect/FiberRef"
import * as FiberRefs from "effect/FiberRefs"
import * as HashMap from "effect/HashMap"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as Tracer from "effect/Tracer"
import * as Clock from "effect/Clock"
import { builtInTracer } from "./traceParent.js"

export interface AttemptOptions<I, S> {
  /** A service added to the runtime's services (one: adding it copies them once). */
  readonly tag: Context.Tag<I, S>
  readonly service: S
  /** Added to the runtime's log annotations. */
  readonly annotations: Readonly<Record<string, unknown>>
  /** The attempt's span: give one only when `tracing` says a span is made. */
  readonly span?: SpanOptions | undefined
}

export interface SpanOptions {
  readonly name: string
  readonly attributes: Readonly<Record<string, unknown>>
  readonly links: ReadonlyArray<Tracer.SpanLink>
}

/**
 * Built once from the runtime attempts run under (its tracer, clock and
 * annotations are read once). `fork` starts the effect at once and calls
 * `onExit` when it ends, after the span has ended with the same exit;
 * `tracing` tells whether it makes spans, so callers build span options only
 * then.
 *
 * No span is made while tracing is disabled, nor under Effect's built-in
 * tracer, which exports nothing: an attempt's span exists when something
 * (an OpenTelemetry layer, a custom `Tracer`) can receive it.
 */
export const make = <R>(runtime: Runtime.Runtime<R>) => {
  const services = FiberRefs.getOrDefault(runtime.fiberRefs, DefaultServices.currentServices)
  const tracer = Context.get(services, Tracer.Tracer)
  const clock = Context.get(services, Clock.Clock)
  const tracing = FiberRefs.getOrDefault(runtime.fiberRefs, FiberRef.currentTracerEnabled) && tracer !== builtInTracer
  const timing = FiberRefs.getOrDefault(runtime.fiberRefs, FiberRef.currentTracerTimingEnabled)
  const annotations = FiberRefs.getOrDefault(runtime.fiberRefs, FiberRef.currentLogAnnotations)
  const now = () => timing ? clock.unsafeCurrentTimeNanos() : BigInt(0)

  const fork = <A, E, I, S>(
    effect: Effect.Effect<A, E, R | I>,
    options: AttemptOptions<I, S>,
    onExit: (exit: Exit.Exit<A, E>) => void
  ): Fiber.RuntimeFiber<A, E> => {
    let context = Context.add(runtime.context, options.tag, options.service)
    let span: Tracer.Span | undefined
    if (tracing && options.span !== undefined) {
      const { attributes, links, name } = options.span
      span = tracer.span(name, Option.none(), Context.empty(), links, now(), "internal")
      for (const key in attributes) span.attribute(key, attributes[key])
      context = Context.add(context, Tracer.ParentSpan, span)
    }
    // One copy of the map for all the annotations, not one per key.
    const annotated = HashMap.mutate(annotations, (map) => {
      for (const key in options.annotations) HashMap.set(map, key, options.annotations[key])
    })
    const fiber = Runtime.runFork(
      Runtime.make({
        context,
        fiberRefs: FiberRefs.updateAs(runtime.fiberRefs, {
          fiberId: FiberId.none,
          fiberRef: FiberRef.currentLogAnnotations,
          value: annotated
        }),
        runtimeFlags: runtime.runtimeFlags
      })
    )(effect)
    fiber.addObserver((exit) => {
      span?.end(now(), exit)
      onExit(exit)
    })
    return fiber
  }
  return { fork, tracing }
}
