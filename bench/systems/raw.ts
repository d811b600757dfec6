/**
 * The raw SQL limit: a bare table and a hand-written loop that claims a batch
 * (`UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED LIMIT n) RETURNING`),
 * runs it, and completes finished jobs in batches. No retries, leases that are
 * never renewed, no bookkeeping. Two variants: `raw` claims only free slots
 * (at most `concurrency` jobs claimed and not yet run: hyrex with `prefetch: 0`), and
 * `raw-ahead` also locks jobs ahead into a local buffer, as graphile-worker's
 * local queue does, so it claims in batches of up to 2,000.
 */
import { randomUUID } from "node:crypto"
import pg from "pg"
import type { Handler, Installation, Payload, System, Target } from "../system.js"

/** A wake-up that can be awaited with a timeout; a signal with no waiter is kept for the next wait. */
const signal = () => {
  let wake: (() => void) | undefined
  let pending = false
  return {
    notify: () => {
      if (wake === undefined) pending = true
      else wake()
    },
    wait: (ms: number) =>
      new Promise<void>((resolve) => {
        if (pending) {
          pending = false
          return resolve()
        }
        const timer = setTimeout(done, ms)
        function done() {
          clearTimeout(timer)
          wake = undefined
          resolve()
        }
        wake = done
      })
  }
}

const schemaSql = (s: string) => `
  CREATE SCHEMA IF NOT EXISTS ${s};
  CREATE TABLE IF NOT EXISTS ${s}.jobs (
    id bigserial PRIMARY KEY,
    payload jsonb NOT NULL,
    status text NOT NULL DEFAULT 'queued',
    run_at timestamptz NOT NULL DEFAULT now(),
    attempts int NOT NULL DEFAULT 0,
    locked_by text,
    locked_until timestamptz,
    finished_at timestamptz
  );
  CREATE INDEX IF NOT EXISTS jobs_due ON ${s}.jobs (run_at, id) WHERE status = 'queued';`

/** `lockAhead`: jobs claimed beyond the running ones, waiting in memory for a free slot. */
const startWorker = async (target: Target, concurrency: number, handler: Handler, lockAhead: number) => {
  const s = target.schema
  const owner = randomUUID()
  const pool = new pg.Pool({ connectionString: target.url, max: 10, application_name: "bench-raw" })
  const listener = new pg.Client({ connectionString: target.url, application_name: "bench-raw-listen" })
  const wake = signal()
  await listener.connect()
  listener.on("notification", wake.notify)
  await listener.query(`LISTEN raw_${s}`)

  const waiting: Array<{ readonly id: string; readonly payload: Payload }> = []
  let running = 0
  let recording = 0
  let stopped = false
  let flushing = 0
  const finished: Array<string> = []

  // A slot is free again as soon as its handler returns; finished jobs are
  // completed in batches (≤ 1,000 ids, ≤ 3 statements in flight) while the
  // next claim is already on its way.
  const flush = () => {
    if (flushing >= 3 || finished.length === 0) return
    flushing++
    const ids = finished.splice(0, 1000)
    pool
      .query(
        `UPDATE ${s}.jobs SET status = 'succeeded', locked_by = NULL, locked_until = NULL, finished_at = now()
         WHERE id = ANY($1::bigint[]) AND locked_by = $2 AND status = 'running'`,
        [ids, owner]
      )
      .catch((error) => console.error("raw complete:", error))
      .finally(() => {
        flushing--
        recording -= ids.length
        flush()
      })
  }

  const pump = () => {
    while (running < concurrency && waiting.length > 0) {
      const job = waiting.shift()!
      running++
      void execute(job.payload, job.id)
    }
  }

  // Once per turn of the event loop, so jobs finishing together share a batch.
  let scheduled = false
  const afterFinish = () => {
    if (scheduled) return
    scheduled = true
    setImmediate(() => {
      scheduled = false
      pump()
      flush()
      wake.notify()
    })
  }

  const execute = async (payload: Payload, id: string) => {
    try {
      await handler(payload)
    } finally {
      running--
      recording++
      finished.push(id)
      afterFinish()
    }
  }

  // Claims up to the room left under `concurrency + lockAhead` locked jobs,
  // once the local buffer runs low.
  const loop = (async () => {
    while (!stopped) {
      const free = concurrency + lockAhead - running - waiting.length
      if (free > 0 && waiting.length < concurrency) {
        const { rows } = await pool.query<{ id: string; payload: Payload }>(
          `UPDATE ${s}.jobs SET status = 'running', attempts = attempts + 1, locked_by = $2,
             locked_until = now() + interval '15 seconds'
           WHERE id IN (
             SELECT id FROM ${s}.jobs WHERE status = 'queued' AND run_at <= now()
             ORDER BY run_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)
           RETURNING id, payload`,
          [free, owner]
        )
        waiting.push(...rows)
        pump()
        if (rows.length === free) continue
      }
      await wake.wait(1000)
    }
  })()

  return {
    stop: async () => {
      stopped = true
      wake.notify()
      await loop
      while (running > 0 || waiting.length > 0 || recording > 0) await new Promise((resolve) => setTimeout(resolve, 10))
      await listener.end()
      await pool.end()
    }
  }
}

const variant = (name: string, settings: string, lockAhead: (concurrency: number) => number, noHeartbeatFigure?: string): System => ({
  name,
  settings,
  renewsLeases: false,
  noHeartbeatFigure,
  install: async (target) => {
    const s = target.schema
    const pool = new pg.Pool({ connectionString: target.url, max: 2, application_name: "bench-raw" })
    await pool.query(schemaSql(s))
    const insert = `
      WITH inserted AS (INSERT INTO ${s}.jobs (payload) SELECT p FROM unnest($1::jsonb[]) AS p RETURNING 1)
      SELECT pg_notify('raw_${s}', '') FROM (SELECT count(*) FROM inserted) n`
    const installation: Installation = {
      enqueue: async (payloads) => {
        await pool.query(insert, [payloads.map((payload) => JSON.stringify(payload))])
      },
      send: async (payload) => {
        await pool.query(insert, [[JSON.stringify(payload)]])
      },
      unfinished: async () =>
        Number((await pool.query<{ n: string }>(`SELECT count(*) AS n FROM ${s}.jobs WHERE status <> 'succeeded'`)).rows[0]?.n),
      startWorker: ({ concurrency, handler }) => startWorker(target, concurrency, handler, lockAhead(concurrency)),
      close: () => pool.end()
    }
    return installation
  }
})

const common = "completions batched (≤ 1,000 ids, as hyrex, ≤ 3 statements in flight) alongside the next claim, a slot free as soon as its handler returns, LISTEN/NOTIFY + 1 s poll; no lease renewal"

export const raw = variant(
  "raw",
  `hand-written SQL on a bare table: one \`UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED LIMIT free) RETURNING\` claims up to the free slots (never more than \`concurrency\` jobs claimed and not yet run, as hyrex with \`prefetch: 0\`); ${common}`,
  () => 0
)

export const rawAhead = variant(
  "raw-ahead",
  `as \`raw\`, but locking up to 40 × \`concurrency\` jobs (2,000 for 50: hyrex's default \`prefetch\` plus the slots) into a local buffer, refilled when fewer than \`concurrency\` wait (graphile-worker's local queue, by hand)`,
  (concurrency) => 39 * concurrency,
  "its buffer holds the jobs in one worker, so they cannot spread over 4; no lease renewal"
)
