/**
 * Where the commands find Postgres: `--database-url` (else `DATABASE_URL`)
 * and `--schema` (else `HYREX_SCHEMA`, else `hyrex`), and the store built on
 * them.
 *
 * @since 0.1.0
 */
import * as Options from "@effect/cli/Options"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { StoreError } from "../Errors.js"
import * as PgTaskStore from "../PgTaskStore.js"
import type { TaskStore } from "../TaskStore.js"
import { CliError, redactUrl, rootMessage } from "./CliError.js"

/** `--database-url`. */
export const databaseUrlOption = Options.text("database-url").pipe(
  Options.withPseudoName("url"),
  Options.withDescription("Postgres connection URL (default: $DATABASE_URL)"),
  Options.optional
)

/** `--schema`. */
export const schemaOption = Options.text("schema").pipe(
  Options.withPseudoName("name"),
  Options.withDescription("Postgres schema of hyrex's tables (default: $HYREX_SCHEMA, else \"hyrex\")"),
  Options.optional
)

/** The database options every command accepts. */
export const options = { databaseUrl: databaseUrlOption, schema: schemaOption } as const

/** A database a command talks to. */
export interface Target {
  readonly url: string
  readonly schema: string
}

const env = (name: string): string | undefined => {
  const value = process.env[name]
  return value === undefined || value.trim() === "" ? undefined : value.trim()
}

/** Checks a connection URL without connecting. */
export const validateUrl = (url: string): Effect.Effect<string, CliError> => {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return Effect.fail(
      new CliError({ message: `invalid database URL "${url}": expected postgres://user[:password]@host[:port]/database` })
    )
  }
  if (parsed.protocol !== "postgres:" && parsed.protocol !== "postgresql:") {
    return Effect.fail(
      new CliError({
        message: `invalid database URL "${redactUrl(url)}": the scheme must be postgres:// or postgresql://`
      })
    )
  }
  if (parsed.hostname === "") {
    return Effect.fail(new CliError({ message: `invalid database URL "${redactUrl(url)}": it names no host` }))
  }
  return Effect.succeed(url)
}

/** The schema from `--schema`, `HYREX_SCHEMA` or the default. */
export const schemaOf = (schema: Option.Option<string>): string =>
  Option.getOrElse(schema, () => env("HYREX_SCHEMA") ?? PgTaskStore.defaults.schema)

/** The URL from `--database-url` or `DATABASE_URL`, if any (validated). */
export const urlOf = (url: Option.Option<string>): Effect.Effect<Option.Option<string>, CliError> =>
  Option.match(Option.orElse(url, () => Option.fromNullable(env("DATABASE_URL"))), {
    onNone: () => Effect.succeed(Option.none()),
    onSome: (value) => Effect.map(validateUrl(value), Option.some)
  })

/** The database of a command: a URL is required. */
export const target = (flags: {
  readonly databaseUrl: Option.Option<string>
  readonly schema: Option.Option<string>
}): Effect.Effect<Target, CliError> =>
  Effect.flatMap(urlOf(flags.databaseUrl), (url) =>
    Option.match(url, {
      onNone: () => Effect.fail(new CliError({ message: "no database: pass --database-url or set DATABASE_URL" })),
      onSome: (url) => Effect.succeed({ url, schema: schemaOf(flags.schema) })
    }))

/** How long connecting may take before the command gives up. */
export const connectTimeout = Duration.seconds(5)

/** A connection pool to `url`; fails with a `CliError` naming the server when it cannot be reached. */
export const clientLayer = (
  url: string,
  options: { readonly maxConnections?: number | undefined; readonly applicationName?: string | undefined } = {}
): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, CliError> =>
  PgClient.layer({
    url: Redacted.make(url),
    maxConnections: options.maxConnections ?? 4,
    connectTimeout,
    applicationName: options.applicationName ?? "hyrex-cli"
  }).pipe(Layer.mapError((cause) => new CliError({ message: `cannot connect to ${redactUrl(url)}: ${rootMessage(cause)}` })))

/**
 * The store on `target`, with the `SqlClient` it runs on. Read-only commands
 * pass `migrate: false` and check that the schema exists first.
 */
export const storeLayer = (
  target: Target,
  options: {
    readonly migrate: boolean
    readonly maxConnections?: number | undefined
    readonly applicationName?: string | undefined
  }
): Layer.Layer<TaskStore | SqlClient.SqlClient | PgClient.PgClient, StoreError | CliError> =>
  PgTaskStore.layer({ schema: target.schema, migrate: options.migrate }).pipe(
    Layer.mapError((error) =>
      error._tag === "ConfigurationError"
        ? new CliError({ message: `invalid --schema "${target.schema}": ${error.issue}` })
        : error
    ),
    Layer.provideMerge(clientLayer(target.url, options))
  )

/** Fails with a clear message when hyrex's tables are not in `schema`. */
export const requireSchema = (schema: string): Effect.Effect<void, CliError | StoreError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{ readonly found: boolean }>`SELECT to_regclass(${`${schema}.tasks`}) IS NOT NULL AS found`.pipe(
      Effect.mapError((cause) => new StoreError({ operation: "inspect schema", cause }))
    )
    if (rows[0]?.found !== true) {
      return yield* new CliError({
        message: `no hyrex tables in schema "${schema}" of this database: run \`hyrex migrate${
          schema === PgTaskStore.defaults.schema ? "" : ` --schema ${schema}`
        }\` first`
      })
    }
  })

/** The store for a read or operator command: no migration, the schema must exist. */
export const existingStore = (
  target: Target,
  options: Omit<Parameters<typeof storeLayer>[1], "migrate"> = {}
): Layer.Layer<TaskStore | SqlClient.SqlClient | PgClient.PgClient, StoreError | CliError> =>
  Layer.effectDiscard(requireSchema(target.schema)).pipe(
    Layer.provideMerge(storeLayer(target, { ...options, migrate: false }))
  )

/** The database's clock: ages (heartbeats, leases) are measured against it, not against this machine's. */
export const now: Effect.Effect<Date, StoreError, SqlClient.SqlClient> = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const rows = yield* sql<{ readonly now: Date }>`SELECT now() AS now`.pipe(
    Effect.mapError((cause) => new StoreError({ operation: "now", cause }))
  )
  return rows[0]?.now ?? new Date()
})
