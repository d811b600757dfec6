/**
 * Plain `pg` helpers for the harness: databases per system, schema names,
 * counts, and the statement counter of the heartbeat scenario.
 */
import { randomBytes } from "node:crypto"
import pg from "pg"

/** The same server, another database. */
export const withDatabase = (url: string, database: string): string => {
  const parsed = new URL(url)
  parsed.pathname = `/${database}`
  return parsed.toString()
}

/** `bench_<random>`: a fresh schema name. */
export const freshSchema = (): string => `bench_${randomBytes(4).toString("hex")}`

/** Runs one statement on a short-lived connection. */
export const query = async <R extends pg.QueryResultRow = pg.QueryResultRow>(
  url: string,
  text: string,
  values: ReadonlyArray<unknown> = []
): Promise<Array<R>> => {
  const client = new pg.Client({ connectionString: url, application_name: "hyrex-bench" })
  await client.connect()
  try {
    return (await client.query<R>(text, values as Array<unknown>)).rows
  } finally {
    await client.end()
  }
}

const ident = (name: string) => {
  if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`not a plain identifier: ${name}`)
  return name
}

export const createDatabase = async (adminUrl: string, database: string): Promise<void> => {
  await dropDatabase(adminUrl, database)
  await query(adminUrl, `CREATE DATABASE ${ident(database)}`)
}

export const dropDatabase = async (adminUrl: string, database: string): Promise<void> => {
  await query(adminUrl, `DROP DATABASE IF EXISTS ${ident(database)} WITH (FORCE)`)
}

export const dropSchema = async (url: string, schema: string): Promise<void> => {
  await query(url, `DROP SCHEMA IF EXISTS ${ident(schema)} CASCADE`)
}

/**
 * Transactions committed or rolled back in `database` so far, read from the
 * admin database so that reading it adds nothing. Every autocommit statement
 * is one transaction, so over a window this counts statements (a multi-statement
 * transaction counts once).
 */
export const transactions = async (adminUrl: string, database: string): Promise<number> => {
  const rows = await query<{ readonly n: string }>(
    adminUrl,
    "SELECT (xact_commit + xact_rollback)::text AS n FROM pg_stat_database WHERE datname = $1",
    [database]
  )
  return Number(rows[0]?.n ?? 0)
}

/** A single count on a pool the installation keeps for itself. */
export const counter = (url: string, text: string) => {
  const pool = new pg.Pool({ connectionString: url, max: 1, application_name: "hyrex-bench" })
  return {
    count: async (): Promise<number> => Number((await pool.query<{ readonly n: string }>(text)).rows[0]?.n ?? 0),
    close: () => pool.end()
  }
}
