#!/usr/bin/env node
// The `hyrex` command. The CLI is TypeScript (src/cli/main.ts) and so may be
// the worker modules it loads, so tsx's loader is registered first.
//
// tsx's hooks slow down every module they see (node_modules included), so
// the heavy dependencies are loaded before registering it: they are then
// taken from the module cache and never go through the hooks. Worker
// modules usually import the `effect` barrel, so `worker` and `demo` load
// all of it up front as well.
const command = process.argv[2]
await Promise.all([
  ...(command === "worker" || command === "demo" ? [import("effect")] : []),
  import("@effect/cli/Command"),
  import("@effect/platform-node/NodeFileSystem"),
  import("@effect/platform-node/NodePath"),
  import("@effect/platform-node/NodeTerminal"),
  import("@effect/platform-node/NodeRuntime"),
  import("@effect/sql-pg/PgClient"),
  import("@effect/sql/Migrator"),
  import("pg")
])
const { register } = await import("tsx/esm/api")
register()
await import("../src/cli/main.ts")
