/**
 * Traces and metrics of hyrex, exported through `@effect/opentelemetry`.
 *
 *   npx tsx examples/opentelemetry.ts
 *
 * A producer sends two invoices inside a `checkout` span; a worker runs them
 * (one fails its first attempt and is retried). The OpenTelemetry SDK is
 * wired in with `NodeSdk.layer`, with in-memory exporters standing in for a
 * collector, and the example prints what a tracing backend would receive:
 *
 * - `checkout` → `hyrex.send` (the producer's trace);
 * - one `hyrex.attempt` span per attempt, with a link to the `hyrex.send`
 *   span that enqueued the task, the handler's own `charge` span inside, and
 *   the error of a failed attempt;
 * - the `hyrex_*` metrics of the worker.
 *
 * In production, replace the in-memory exporters with OTLP ones (for example
 * `@opentelemetry/exporter-trace-otlp-http` in a `BatchSpanProcessor`), or use
 * `@effect/opentelemetry/Otlp`, which needs no OpenTelemetry SDK at all.
 */
import { NodeSdk } from "@effect/opentelemetry"
import { NodeRuntime } from "@effect/platform-node"
import { AggregationTemporality, DataPointType, InMemoryMetricExporter, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics"
import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { Effect, Layer, Option, Schedule, Schema } from "effect"
import { Backoff, MemoryTaskStore, Registry, Task, TaskContext, TaskStore, Worker } from "../src/index.js"

// --- OpenTelemetry -------------------------------------------------------------

const spanExporter = new InMemorySpanExporter()
const metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE)
const metricReader = new PeriodicExportingMetricReader({ exporter: metricExporter, exportIntervalMillis: 60_000 })

/** Effect's tracer and metrics, exported through the OpenTelemetry SDK. */
const TelemetryLive = NodeSdk.layer(() => ({
  resource: { serviceName: "hyrex-example" },
  spanProcessor: new SimpleSpanProcessor(spanExporter),
  metricReader
}))

// --- tasks -----------------------------------------------------------------------

const processInvoice = Task.make("process_invoice", {
  payload: Schema.Struct({ invoiceId: Schema.String }),
  queue: "invoices",
  retryBackoff: Backoff.fixed("100 millis"),
  handler: ({ invoiceId }) =>
    Effect.gen(function*() {
      const ctx = yield* TaskContext.TaskContext
      // Spans of the handler are children of the attempt's span.
      yield* Effect.sleep("20 millis").pipe(Effect.withSpan("charge", { attributes: { "invoice.id": invoiceId } }))
      if (invoiceId === "inv_2" && ctx.attempt === 1) {
        return yield* Effect.fail(new Error("payment provider timed out"))
      }
    })
})

const registry = Registry.make(processInvoice)

// --- producer and worker ------------------------------------------------------------

const run = Effect.gen(function*() {
  const store = yield* TaskStore.TaskStore
  // Started outside any span: each attempt's span is the root of its own trace.
  yield* Worker.start(registry, { pollInterval: "100 millis" })
  const ids = yield* processInvoice.sendBatch([{ invoiceId: "inv_1" }, { invoiceId: "inv_2" }]).pipe(
    Effect.withSpan("checkout")
  )
  yield* Effect.forEach(ids, (id) =>
    store.getTask(id).pipe(
      Effect.map(Option.getOrThrow),
      Effect.filterOrFail((task) => task.status === "succeeded"),
      Effect.retry(Schedule.spaced("50 millis"))
    ))
}).pipe(
  Effect.timeout("30 seconds"),
  // Closing the scope stops the worker, so every attempt span has ended.
  Effect.scoped
)

// --- what a backend would receive ------------------------------------------------------

const describeSpan = (span: ReadableSpan, all: ReadonlyArray<ReadableSpan>): string => {
  const name = (spanId: string) => all.find((other) => other.spanContext().spanId === spanId)?.name ?? "another process"
  const attributes = Object.entries(span.attributes)
    .filter(([key]) => key.startsWith("hyrex.") && key !== "hyrex.worker")
    .map(([key, value]) => `${key}=${String(value)}`)
  const links = span.links.map((link) => `link → ${name(link.context.spanId)} (${String(link.attributes?.["hyrex.link"])})`)
  const events = span.events.map((event) => `event "${event.name}"`)
  // SpanStatusCode.ERROR: a failed attempt's span ends failed.
  const status = span.status.code === 2 ? [`error "${span.status.message ?? ""}"`] : []
  return [span.name, ...attributes, ...links, ...events, ...status].join("  ")
}

const printTraces = Effect.sync(() => {
  const spans = spanExporter.getFinishedSpans()
  const children = (parent: ReadableSpan | undefined) =>
    spans
      .filter((span) => span.parentSpanContext?.spanId === parent?.spanContext().spanId)
      .sort((a, b) => a.startTime[0] - b.startTime[0] || a.startTime[1] - b.startTime[1])
  const print = (span: ReadableSpan, depth: number): void => {
    console.log(`${"  ".repeat(depth + 1)}${describeSpan(span, spans)}`)
    for (const child of children(span)) print(child, depth + 1)
  }
  console.log(`spans (${spans.length}):`)
  for (const root of children(undefined)) print(root, 0)
})

const printMetrics = Effect.gen(function*() {
  yield* Effect.promise(() => metricReader.forceFlush())
  const latest = metricExporter.getMetrics().at(-1)
  console.log("metrics:")
  for (const metric of latest?.scopeMetrics.flatMap((scope) => scope.metrics) ?? []) {
    const name = metric.descriptor.name
    if (!name.startsWith("hyrex_")) continue
    const value = metric.dataPointType === DataPointType.HISTOGRAM
      ? metric.dataPoints.map((point) => `count=${point.value.count}`).join(" ")
      : metric.dataPoints.map((point) => String(point.value)).join(" ")
    console.log(`  ${name} ${value}`)
  }
})

const main = Effect.gen(function*() {
  yield* run
  yield* printTraces
  yield* printMetrics
})

NodeRuntime.runMain(main.pipe(Effect.provide(Layer.merge(TelemetryLive, MemoryTaskStore.layer))))
