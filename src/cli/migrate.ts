/**
 * `hyrex migrate`: creates or upgrades hyrex's schema.
 *
 * @since 0.1.0
 */
import * as Command from "@effect/cli/Command"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as PgTaskStore from "../PgTaskStore.js"
import { CliError, redactUrl } from "./CliError.js"
import * as Database from "./Database.js"

/** `hyrex migrate [--database-url url] [--schema name]` */
export const command = Command.make("migrate", Database.options, (flags) =>
  Effect.gen(function*() {
    const target = yield* Database.target(flags)
    yield* PgTaskStore.migrate({ schema: target.schema }).pipe(
      Effect.catchTag("ConfigurationError", (error) =>
        Effect.fail(new CliError({ message: `invalid --schema "${target.schema}": ${error.issue}` }))),
      Effect.provide(Database.clientLayer(target.url, { maxConnections: 2 }))
    )
    yield* Console.log(`schema "${target.schema}" is up to date on ${redactUrl(target.url)}`)
  })).pipe(Command.withDescription("Create or upgrade hyrex's tables (safe to run from many processes at once)"))
