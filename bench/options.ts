/**
 * The benchmark's flags. `--quick` changes the defaults of the others into a
 * short smoke run; a flag given explicitly always wins.
 */
import { parseArgs } from "node:util"
import { isName, type Name, names } from "./systems/index.js"

export interface Options {
  /** Jobs per run for the enqueue and burn-down figures. */
  readonly jobs: number
  /** Jobs in flight per worker instance (burn-down, latency, memory). */
  readonly concurrency: number
  /** Worker instances for burn-down and latency. */
  readonly workers: number
  /** Measured runs per system, in rounds where the systems take turns (each after a warm-up run); figures are their medians. */
  readonly runs: number
  readonly systems: ReadonlyArray<Name>
  readonly databaseUrl: string
  /** Jobs per bulk-enqueue call. */
  readonly batch: number
  /** Sequential sends for the latency figure. */
  readonly latencySamples: number
  /** Long-running jobs in flight across `heartbeatWorkers` workers, one measurement per value. */
  readonly inFlight: ReadonlyArray<number>
  readonly heartbeatWorkers: number
  /** Lease (lock, heartbeat timeout) in the heartbeat scenario, seconds. */
  readonly leaseSeconds: number
  /** Length of the statement-count window, seconds. */
  readonly windowSeconds: number
  /** Backlogs under which one worker's memory is sampled. */
  readonly backlogs: ReadonlyArray<number>
  /** How long memory is sampled while the worker burns the backlog, seconds. */
  readonly memorySeconds: number
  /** Jobs over which the backlogs are compared: every backlog's worker is measured over the same work. */
  readonly memoryJobs: number
  readonly skip: ReadonlyArray<"heartbeat" | "memory">
  readonly quick: boolean
  /** Write docs/benchmarks.md. */
  readonly write: boolean
  /** Directory for CPU profiles of the measured burn-downs (`<system>-run<n>.cpuprofile`), if set. */
  readonly cpuProf: string | undefined
}

const usage = `npm run bench -- [flags]

  --jobs N              jobs per run for enqueue and burn-down      (10000; quick 2000)
  --concurrency N       jobs in flight per worker                   (50)
  --workers N           worker instances for burn-down and latency  (1)
  --runs N              measured runs per system, in turns, each after a warm-up (3; quick 1)
  --systems a,b         ${names.join(",")}  (all)
  --database-url URL    (DATABASE_URL, else postgres://postgres@127.0.0.1:5432/postgres)
  --batch N             jobs per bulk-enqueue call                  (1000)
  --latency-samples N   sequential sends for the latency figure     (1000; quick 100)
  --in-flight a,b       long-running jobs across 4 workers          (100,1000; quick 200)
  --window S            statement-count window, seconds             (10; quick 3)
  --backlogs a,b        backlogs for the memory figure              (10000,100000; quick 2000,10000)
  --memory-seconds S    memory sampling window, seconds             (5; quick 2)
  --memory-jobs N       jobs over which backlogs are compared       (the smallest backlog)
  --skip a,b            leave out heartbeat and/or memory
  --quick               a short smoke run (does not write docs/benchmarks.md)
  --write / --no-write  write docs/benchmarks.md                    (written unless --quick)
  --cpu-prof DIR        write a CPU profile of each measured burn-down into DIR
                        (summarise one with: npx tsx bench/cpu-profile.ts FILE)
`

const list = (value: string) => value.split(",").map((s) => s.trim()).filter((s) => s.length > 0)

const positive = (flag: string, value: string) => {
  const n = Number(value)
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${flag} must be a positive number, got "${value}"\n\n${usage}`)
  return n
}

export const parse = (argv: ReadonlyArray<string>): Options => {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      jobs: { type: "string" },
      concurrency: { type: "string" },
      workers: { type: "string" },
      runs: { type: "string" },
      systems: { type: "string" },
      "database-url": { type: "string" },
      batch: { type: "string" },
      "latency-samples": { type: "string" },
      "in-flight": { type: "string" },
      window: { type: "string" },
      backlogs: { type: "string" },
      "memory-seconds": { type: "string" },
      "memory-jobs": { type: "string" },
      skip: { type: "string" },
      quick: { type: "boolean", default: false },
      write: { type: "boolean" },
      "no-write": { type: "boolean" },
      "cpu-prof": { type: "string" },
      help: { type: "boolean", default: false }
    }
  })
  if (values.help) {
    console.log(usage)
    process.exit(0)
  }
  const quick = values.quick ?? false
  const number = (flag: keyof typeof values, full: number, short: number) => {
    const value = values[flag]
    return typeof value === "string" ? positive(flag, value) : quick ? short : full
  }
  const numbers = (flag: keyof typeof values, full: string, short: string) => {
    const value = values[flag]
    return list(typeof value === "string" ? value : quick ? short : full).map((v) => positive(flag, v))
  }
  const systems = list(values.systems ?? names.join(","))
  const unknown = systems.filter((name) => !isName(name))
  if (unknown.length > 0) throw new Error(`unknown system(s) ${unknown.join(", ")} (known: ${names.join(", ")})`)
  const skip = list(values.skip ?? "")
  for (const s of skip) if (s !== "heartbeat" && s !== "memory") throw new Error(`--skip takes heartbeat and/or memory, got "${s}"`)
  const heartbeatWorkers = 4
  const inFlight = numbers("in-flight", "100,1000", "200")
  const backlogs = numbers("backlogs", "10000,100000", "2000,10000")
  for (const n of inFlight) {
    if (n % heartbeatWorkers !== 0) throw new Error(`--in-flight values must be multiples of ${heartbeatWorkers}, got ${n}`)
  }
  return {
    jobs: number("jobs", 10_000, 2_000),
    concurrency: number("concurrency", 50, 50),
    workers: number("workers", 1, 1),
    runs: number("runs", 3, 1),
    systems: systems.filter(isName),
    databaseUrl: values["database-url"] ?? process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres",
    batch: number("batch", 1000, 1000),
    latencySamples: number("latency-samples", 1000, 100),
    inFlight,
    heartbeatWorkers,
    leaseSeconds: 15,
    windowSeconds: number("window", 10, 3),
    backlogs,
    memorySeconds: number("memory-seconds", 5, 2),
    memoryJobs: values["memory-jobs"] === undefined ? Math.min(...backlogs) : positive("memory-jobs", values["memory-jobs"]),
    skip: skip as Array<"heartbeat" | "memory">,
    quick,
    write: values["no-write"] === true ? false : values.write ?? !quick,
    cpuProf: values["cpu-prof"]
  }
}
