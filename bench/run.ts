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
import type { HeartbeatFigure, MemoryFigure, Place } from "./scenarios.js"
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

const benchSystem = async (name: Name, options: Options, runId: string): Promise<Report.SystemResult> => {
  const adminUrl = options.databaseUrl
  const database = `hyrex_bench_${name.replace(/-/g, "_")}_${runId}`
  const place: Place = { url: withDatabase(adminUrl, database), database, adminUrl }
  const errors: Array<string> = []
  const attempt = async <A>(what: string, body: () => Promise<A>): Promise<A | undefined> => {
    if (interrupted) throw new Error("interrupted")
    try {
      return await body()
    } catch (error) {
      if (interrupted) throw new Error("interrupted")
      const message = error instanceof Error ? error.message : String(error)
      log(`${name}: ${what} failed: ${message}`)
      errors.push(`${what}: ${message}`)
      return undefined
    }
  }
  await createDatabase(adminUrl, database)
  try {
    log(`${name}: warm-up and ${options.runs} run(s) of ${options.jobs} jobs`)
    const throughput = await attempt("throughput", () =>
      inChild<ThroughputResult>({ phase: "throughput", system: name, place, options }))
    for (const [i, run] of (throughput?.runs ?? []).entries()) {
      log(
        `${name}: run ${i + 1}: enqueue ${run.enqueue.toFixed(0)}/s, burn-down ${run.burnDown.toFixed(0)}/s, ` +
          `latency p50 ${run.latencyP50.toFixed(2)} ms p99 ${run.latencyP99.toFixed(2)} ms`
      )
    }
    let heartbeat: ReadonlyArray<HeartbeatFigure> | undefined
    if (!options.skip.includes("heartbeat")) {
      log(`${name}: statements per second with ${options.inFlight.join(" and ")} jobs in flight`)
      heartbeat = await attempt("heartbeat", () => inChild({ phase: "heartbeat", system: name, place, options }))
      for (const h of heartbeat ?? []) log(`${name}: ${h.inFlight} in flight: ${h.statementsPerSecond.toFixed(1)} stmts/s`)
    }
    const memory: Array<MemoryFigure> = []
    if (!options.skip.includes("memory")) {
      for (const backlog of options.backlogs) {
        log(`${name}: memory of one worker on a ${backlog}-job backlog`)
        const schema = freshSchema()
        const figure = await attempt(`memory at ${backlog}`, async () => {
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
      settings: throughput?.settings,
      renewsLeases: throughput?.renewsLeases,
      runs: throughput?.runs,
      heartbeat,
      memory,
      errors
    }
  } finally {
    await dropDatabase(adminUrl, database)
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
  const results: Array<Report.SystemResult> = []
  for (const name of options.systems) results.push(await benchSystem(name, options, runId))

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
