/**
 * `npm run bench`: for each system, a database of its own, then one child
 * process per phase (throughput runs, heartbeat cost, and per backlog a
 * filler and a worker whose memory is sampled). Prints the table and writes
 * docs/benchmarks.md.
 */
import { fork } from "node:child_process"
import { randomBytes } from "node:crypto"
import { mkdirSync, readFileSync, writeFileSync } from "node:fs"
import * as os from "node:os"
import { fileURLToPath } from "node:url"
import type { Job, Reply, ThroughputResult } from "./child.js"
import { createDatabase, dropDatabase, freshSchema, query, withDatabase } from "./db.js"
import { type Options, parse } from "./options.js"
import * as Report from "./report.js"
import type { HeartbeatFigure, MemoryFigure, Place, ThroughputRun } from "./scenarios.js"
import type { Name } from "./systems/index.js"

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url))

/** Runs one phase in a fresh process (with tsx, as this one) and returns its result. */
const inChild = <A>(job: Job, extraArgv: ReadonlyArray<string> = []): Promise<A> =>
  new Promise((resolve, reject) => {
    const execArgv = [...process.execArgv, ...extraArgv]
    const child = fork(here("./child.ts"), [], { execArgv, stdio: ["ignore", "inherit", "inherit", "ipc"] })
    let reply: Reply | undefined
    child.on("message", (message: Reply) => {
      reply = message
    })
    child.on("error", reject)
    child.on("exit", (code, signal) => {
      if (reply?.ok === true) resolve(reply.result as A)
      else reject(new Error(reply?.ok === false ? reply.error : `child exited with ${code ?? signal} before answering`))
    })
    child.send(job)
  })

let interrupted = false

const log = (message: string) => console.log(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}`)

/** One system's database and what went wrong for it, over the whole run. */
interface Bench {
  readonly name: Name
  readonly place: Place
  readonly errors: Array<string>
  settings?: string | undefined
  renewsLeases?: boolean | undefined
  readonly runs: Array<ThroughputRun>
}

const prepare = async (name: Name, options: Options, runId: string): Promise<Bench> => {
  const adminUrl = options.databaseUrl
  const database = `hyrex_bench_${name.replace(/-/g, "_")}_${runId}`
  await createDatabase(adminUrl, database)
  return { name, place: { url: withDatabase(adminUrl, database), database, adminUrl }, errors: [], runs: [] }
}

/** Runs `body`, logging and recording its failure instead of throwing (unless the run was interrupted). */
const attempt = async <A>(bench: Bench, what: string, body: () => Promise<A>): Promise<A | undefined> => {
  if (interrupted) throw new Error("interrupted")
  try {
    return await body()
  } catch (error) {
    if (interrupted) throw new Error("interrupted")
    const message = error instanceof Error ? error.message : String(error)
    log(`${bench.name}: ${what} failed: ${message}`)
    bench.errors.push(`${what}: ${message}`)
    return undefined
  }
}

/** Measured run `run` of one system: a fresh process, its warm-up, then the run. */
const throughputRound = async (bench: Bench, options: Options, run: number): Promise<void> => {
  const { name, place } = bench
  const result = await attempt(bench, `throughput run ${run}`, () =>
    inChild<ThroughputResult>({ phase: "throughput", system: name, place, options, run }))
  if (result === undefined) return
  bench.settings = result.settings
  bench.renewsLeases = result.renewsLeases
  bench.runs.push(result.run)
  log(
    `${name}: run ${run}: enqueue ${result.run.enqueue.toFixed(0)}/s, burn-down ${result.run.burnDown.toFixed(0)}/s, ` +
      `latency p50 ${result.run.latencyP50.toFixed(2)} ms p99 ${result.run.latencyP99.toFixed(2)} ms`
  )
}

/** The heartbeat and memory figures of one system, then its database goes. */
const finish = async (bench: Bench, options: Options): Promise<Report.SystemResult> => {
  const { name, place } = bench
  try {
    let heartbeat: ReadonlyArray<HeartbeatFigure> | undefined
    if (!options.skip.includes("heartbeat")) {
      log(`${name}: statements per second with ${options.inFlight.join(" and ")} jobs in flight`)
      heartbeat = await attempt(bench, "heartbeat", () => inChild({ phase: "heartbeat", system: name, place, options }))
      for (const h of heartbeat ?? []) log(`${name}: ${h.inFlight} in flight: ${h.statementsPerSecond.toFixed(1)} stmts/s`)
    }
    const memory: Array<MemoryFigure> = []
    if (!options.skip.includes("memory")) {
      for (const backlog of options.backlogs) {
        log(`${name}: memory of one worker on a ${backlog}-job backlog`)
        const schema = freshSchema()
        const figure = await attempt(bench, `memory at ${backlog}`, async () => {
          await inChild({ phase: "fill", system: name, place, options, schema, backlog })
          return inChild<MemoryFigure>({ phase: "memory", system: name, place, options, schema, backlog }, ["--expose-gc"])
        })
        if (figure !== undefined) {
          memory.push(figure)
          log(
            `${name}: peak RSS ${figure.peakRss.toFixed(0)} MB over the first ${figure.jobs} jobs, ${
              figure.windowPeakRss.toFixed(0)
            } MB over the window, live heap ${figure.liveHeap.toFixed(1)} MB (${figure.processed} jobs done)`
          )
        }
      }
    }
    return {
      name,
      settings: bench.settings,
      renewsLeases: bench.renewsLeases,
      runs: bench.runs.length > 0 ? bench.runs : undefined,
      heartbeat,
      memory,
      errors: bench.errors
    }
  } finally {
    await dropDatabase(place.adminUrl, place.database)
  }
}

const machine = async (options: Options, argv: ReadonlyArray<string>): Promise<Report.Machine> => {
  const [row] = await query<{ readonly version: string }>(options.databaseUrl, "SELECT version()")
  return {
    cpu: os.cpus()[0]?.model ?? "unknown",
    cores: os.cpus().length,
    memoryGiB: Math.round(os.totalmem() / 1024 ** 3),
    postgres: row?.version.replace(/ on .*/, "") ?? "unknown",
    node: process.version,
    date: new Date().toISOString().slice(0, 16).replace("T", " ") + " UTC",
    command: ["npm run bench", ...(argv.length > 0 ? ["--", ...argv] : [])].join(" ")
  }
}

const main = async () => {
  const argv = process.argv.slice(2)
  const options = parse(argv)
  if (options.cpuProf !== undefined) mkdirSync(options.cpuProf, { recursive: true })
  const info = await machine(options, argv)
  log(`${info.cpu} (${info.cores} cores), ${info.postgres}, Node ${info.node}`)
  const runId = randomBytes(3).toString("hex")
  const benches: Array<Bench> = []
  try {
    for (const name of options.systems) benches.push(await prepare(name, options, runId))
  } catch (error) {
    for (const bench of benches) await dropDatabase(bench.place.adminUrl, bench.place.database)
    throw error
  }
  // The systems take turns, one measured run each per round: this machine's
  // speed drifts over minutes, and a system measured all at once would
  // catch a fast or a slow stretch alone.
  log(`${options.runs} round(s) of ${options.jobs} jobs: ${options.systems.join(", ")} in turn, each run after its own warm-up`)
  const results: Array<Report.SystemResult> = []
  try {
    for (let run = 1; run <= options.runs; run++) {
      for (const bench of benches) await throughputRound(bench, options, run)
    }
  } finally {
    // Heartbeat and memory figures, system by system; every database is
    // dropped, also those after a system interrupted in its turn.
    for (const bench of benches) {
      if (interrupted) {
        await dropDatabase(bench.place.adminUrl, bench.place.database)
        continue
      }
      try {
        results.push(await finish(bench, options))
      } catch (error) {
        if (!interrupted) throw error
      }
    }
  }
  if (interrupted) throw new Error("interrupted")

  console.log(`\n${Report.table(results, options)}\n`)
  console.log(`${Report.verdictTable(Report.verdicts(results))}\n`)
  if (options.write) {
    const settings = results
      .filter((r) => r.settings !== undefined)
      .map((r) => `- **${r.name}**: ${r.settings}`)
      .join("\n")
    const method = readFileSync(here("./METHOD.md"), "utf8").replace("{{settings}}", settings)
    const target = here("../docs/benchmarks.md")
    writeFileSync(target, Report.markdown(results, options, info, method))
    log(`wrote ${target}`)
  }
  if (results.some((r) => r.errors.length > 0)) process.exitCode = 1
}

// Ctrl-C reaches the children too; the run then stops, but still drops its
// database on the way out.
process.on("SIGINT", () => {
  interrupted = true
  log("interrupted; dropping the benchmark database")
})

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
