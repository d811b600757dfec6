/**
 * The results table (terminal and markdown are the same text), the check of
 * hyrex's targets, and docs/benchmarks.md.
 */
import type { Options } from "./options.js"
import type { HeartbeatFigure, MemoryFigure, ThroughputRun } from "./scenarios.js"

export interface SystemResult {
  readonly name: string
  readonly settings?: string | undefined
  readonly renewsLeases?: boolean | undefined
  readonly runs?: ReadonlyArray<ThroughputRun> | undefined
  readonly heartbeat?: ReadonlyArray<HeartbeatFigure> | undefined
  readonly memory?: ReadonlyArray<MemoryFigure> | undefined
  readonly errors: ReadonlyArray<string>
}

export interface Machine {
  readonly cpu: string
  readonly cores: number
  readonly memoryGiB: number
  readonly postgres: string
  readonly node: string
  readonly date: string
  readonly command: string
}

export const median = (values: ReadonlyArray<number>): number | undefined => {
  if (values.length === 0) return undefined
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1]! + sorted[mid]!) / 2
}

type Figure = (result: SystemResult) => number | undefined

const ofRuns = (pick: (run: ThroughputRun) => number): Figure => (result) => median((result.runs ?? []).map(pick))

const columns: ReadonlyArray<{ readonly title: (options: Options) => ReadonlyArray<string>; readonly figures: (options: Options) => ReadonlyArray<Figure>; readonly digits: number }> = [
  { title: () => ["enqueue jobs/s"], figures: () => [ofRuns((r) => r.enqueue)], digits: 0 },
  { title: () => ["burn-down jobs/s"], figures: () => [ofRuns((r) => r.burnDown)], digits: 0 },
  { title: () => ["latency p50 ms"], figures: () => [ofRuns((r) => r.latencyP50)], digits: 1 },
  { title: () => ["latency p99 ms"], figures: () => [ofRuns((r) => r.latencyP99)], digits: 1 },
  {
    title: (o) => o.inFlight.map((n) => `stmts/s, ${n} in flight`),
    figures: (o) => o.inFlight.map((n) => (result: SystemResult) => result.heartbeat?.find((h) => h.inFlight === n)?.statementsPerSecond),
    digits: 1
  },
  {
    title: (o) => o.backlogs.map((n) => `worker RSS MB, ${n / 1000}k backlog, first ${o.memoryJobs / 1000}k jobs`),
    figures: (o) => o.backlogs.map((n) => (result: SystemResult) => result.memory?.find((m) => m.backlog === n)?.peakRss),
    digits: 0
  },
  {
    title: (o) => o.backlogs.map((n) => `live heap MB, ${n / 1000}k backlog`),
    figures: (o) => o.backlogs.map((n) => (result: SystemResult) => result.memory?.find((m) => m.backlog === n)?.liveHeap),
    digits: 1
  }
]

const format = (value: number | undefined, digits: number) =>
  value === undefined ? "—" : value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })

const ratio = (value: number | undefined, base: number | undefined) =>
  value === undefined || base === undefined || base === 0 ? "" : ` (${(value / base).toFixed(2)}×)`

const markdownTable = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>) =>
  [
    `| ${header.join(" | ")} |`,
    `| ${header.map((_, i) => (i === 0 ? "---" : "---:")).join(" | ")} |`,
    ...rows.map((row) => `| ${row.join(" | ")} |`)
  ].join("\n")

/** Each system's figures with, in brackets, its ratio to hyrex's (system ÷ hyrex). */
export const table = (results: ReadonlyArray<SystemResult>, options: Options): string => {
  const header = ["system", ...columns.flatMap((c) => c.title(options))]
  const hyrex = results.find((r) => r.name === "hyrex")
  const rows = results.map((result) => [
    result.name,
    ...columns.flatMap((c) =>
      c.figures(options).map((figure, i) => {
        const value = figure(result)
        const base = result.name === "hyrex" || hyrex === undefined ? undefined : figure(hyrex)
        // Statement counts of systems that renew no lease get a footnote.
        const note = c.title(options)[i]!.startsWith("stmts") && result.renewsLeases === false && value !== undefined ? " ¹" : ""
        return format(value, c.digits) + ratio(value, base) + note
      })
    )
  ])
  return markdownTable(header, rows)
}

export interface Verdict {
  readonly target: string
  readonly measured: string
  readonly met: boolean | undefined
}

const peers = ["graphile", "graphile-batched", "pgboss", "bullmq"]

/** hyrex's targets, checked against this run's figures (`met` is undefined when a figure is missing). */
export const verdicts = (results: ReadonlyArray<SystemResult>): ReadonlyArray<Verdict> => {
  const hyrex = results.find((r) => r.name === "hyrex")
  if (hyrex === undefined) return []
  const best = (figure: Figure) => {
    const values = results
      .filter((r) => peers.includes(r.name))
      .map((r) => ({ name: r.name, value: figure(r) }))
      .filter((v): v is { name: string; value: number } => v.value !== undefined)
    return values.sort((a, b) => b.value - a.value)[0]
  }
  const burn = ofRuns((r) => r.burnDown)
  const enqueue = ofRuns((r) => r.enqueue)
  const out: Array<Verdict> = []
  const h = (figure: Figure) => figure(hyrex)
  const bestBurn = best(burn)
  const hb = h(burn)
  out.push({
    target: "burn-down ≥ 1.25× the best peer",
    measured: bestBurn === undefined || hb === undefined ? "—" : `${(hb / bestBurn.value).toFixed(2)}× ${bestBurn.name}`,
    met: bestBurn === undefined || hb === undefined ? undefined : hb >= 1.25 * bestBurn.value
  })
  // The limit is the faster raw loop; the same-shape one (`raw`) is shown beside it.
  const rawBurns = results
    .filter((r) => r.name === "raw" || r.name === "raw-ahead")
    .map((r) => ({ name: r.name, value: burn(r) }))
    .filter((v): v is { name: string; value: number } => v.value !== undefined)
  const limit = rawBurns.sort((a, b) => b.value - a.value)[0]
  out.push({
    target: "burn-down ≥ 85% of raw SQL",
    measured: limit === undefined || hb === undefined
      ? "—"
      : rawBurns.map((r) => `${((100 * hb) / r.value).toFixed(0)}% of ${r.name}`).join(", "),
    met: limit === undefined || hb === undefined ? undefined : hb >= 0.85 * limit.value
  })
  const bestEnqueue = best(enqueue)
  const he = h(enqueue)
  out.push({
    target: "enqueue ≥ the best peer",
    measured: bestEnqueue === undefined || he === undefined ? "—" : `${(he / bestEnqueue.value).toFixed(2)}× ${bestEnqueue.name}`,
    met: bestEnqueue === undefined || he === undefined ? undefined : he >= bestEnqueue.value
  })
  const p50 = h(ofRuns((r) => r.latencyP50))
  const p99 = h(ofRuns((r) => r.latencyP99))
  out.push({ target: "idle latency p50 ≤ 3 ms", measured: `${format(p50, 1)} ms`, met: p50 === undefined ? undefined : p50 <= 3 })
  out.push({ target: "idle latency p99 ≤ 20 ms", measured: `${format(p99, 1)} ms`, met: p99 === undefined ? undefined : p99 <= 20 })
  const beats = hyrex.heartbeat ?? []
  const [low, high] = [beats[0], beats[beats.length - 1]]
  out.push({
    target: "heartbeat cost independent of the jobs in flight",
    measured: low === undefined || high === undefined || low === high
      ? "—"
      : `${format(low.statementsPerSecond, 1)} stmts/s at ${low.inFlight}, ${format(high.statementsPerSecond, 1)} at ${high.inFlight}`,
    // Within noise: the statistics are flushed about once a second per connection.
    met: low === undefined || high === undefined || low === high
      ? undefined
      : high.statementsPerSecond <= low.statementsPerSecond * 1.25 + 0.5
  })
  const mem = hyrex.memory ?? []
  const [small, large] = [mem[0], mem[mem.length - 1]]
  out.push({
    target: "flat worker memory under a growing backlog",
    measured: small === undefined || large === undefined || small === large
      ? "—"
      : `RSS ${format(small.peakRss, 0)} → ${format(large.peakRss, 0)} MB over the first ${format(large.jobs, 0)} jobs, live heap ${
        format(small.liveHeap, 1)
      } → ${format(large.liveHeap, 1)} MB (${small.backlog} → ${large.backlog} backlog)`,
    // The live heap is what a leak would grow; RSS also follows the GC's mood.
    met: small === undefined || large === undefined || small === large
      ? undefined
      : large.liveHeap <= small.liveHeap * 1.15 && large.peakRss <= small.peakRss * 1.25
  })
  return out
}

export const verdictTable = (list: ReadonlyArray<Verdict>): string =>
  markdownTable(
    ["hyrex target", "measured", "met"],
    list.map((v) => [v.target, v.measured, v.met === undefined ? "—" : v.met ? "yes" : "**no**"])
  )

const runsTable = (results: ReadonlyArray<SystemResult>) =>
  markdownTable(
    ["system", "run", "enqueue jobs/s", "burn-down jobs/s", "p50 ms", "p99 ms"],
    results.flatMap((r) =>
      (r.runs ?? []).map((run, i) => [
        r.name,
        String(i + 1),
        format(run.enqueue, 0),
        format(run.burnDown, 0),
        format(run.latencyP50, 2),
        format(run.latencyP99, 2)
      ])
    )
  )

const memoryTable = (results: ReadonlyArray<SystemResult>) =>
  markdownTable(
    [
      "system",
      "backlog",
      "RSS before start MB",
      "peak RSS MB, first jobs",
      "jobs",
      "peak RSS MB, whole window",
      "live heap after GC MB",
      "jobs done while sampled"
    ],
    results.flatMap((r) =>
      (r.memory ?? []).map((m) => [
        r.name,
        m.backlog.toLocaleString("en-US"),
        format(m.baselineRss, 0),
        format(m.peakRss, 0),
        m.jobs.toLocaleString("en-US"),
        format(m.windowPeakRss, 0),
        format(m.liveHeap, 1),
        m.processed.toLocaleString("en-US")
      ])
    )
  )

export const markdown = (results: ReadonlyArray<SystemResult>, options: Options, machine: Machine, method: string): string => {
  const errors = results.flatMap((r) => r.errors.map((e) => `- **${r.name}**: ${e.split("\n")[0]}`))
  return `# Benchmarks

hyrex against its Postgres-backed peers and against a hand-written SQL loop, on
one Postgres in one run, with the same job count and concurrency for every
system. Generated by \`npm run bench\` (see [bench/](../bench)); rerun it to
refresh this page.

## Machine and command

- CPU: ${machine.cpu}, ${machine.cores} cores (shared with other work; runs are noisy)
- Memory: ${machine.memoryGiB} GiB
- PostgreSQL: ${machine.postgres}
- Node.js: ${machine.node}
- Date: ${machine.date}
- Command: \`${machine.command}\`
- Settings: ${options.jobs.toLocaleString("en-US")} jobs per run, concurrency ${options.concurrency} per worker, ${options.workers} worker(s) for burn-down and latency, ${options.runs} measured run(s) per system, the systems taking turns, each after a warm-up (medians shown), bulk batches of ${options.batch}, ${options.latencySamples} latency samples per run, heartbeat window ${options.windowSeconds} s across ${options.heartbeatWorkers} workers, memory sampled for ${options.memorySeconds} s and compared over the first ${options.memoryJobs.toLocaleString("en-US")} jobs

## Results

Ratios in brackets are the system's figure divided by hyrex's: above 1 is
better for the rates, worse for latency, statements and memory.

${table(results, options)}

¹ This system does not renew leases of running jobs: the figure is its other
periodic work only, and a job of a crashed worker waits for a long lock timeout
(graphile-worker: 4 hours) or forever (raw). "—": not measured, see the method
below (a system that locks jobs ahead cannot spread them over 4 workers).
${errors.length === 0 ? "" : `\nErrors in this run:\n\n${errors.join("\n")}\n`}
## hyrex's targets

${verdictTable(verdicts(results))}

## Per run

${runsTable(results)}

## Memory

${memoryTable(results)}

${method}`
}
