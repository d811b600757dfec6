import { configDefaults, defineConfig } from "vitest/config"

// Minimal config for the Postgres-backed tests (see test/utils/TestDatabase.ts).
export default defineConfig({
  test: {
    pool: "forks",
    testTimeout: 60_000,
    // `it.layer` builds its layer in a hook; a first container pull or PGlite initdb can be slow.
    hookTimeout: 120_000,
    projects: [
      {
        extends: true,
        test: {
          name: "unit",
          include: ["test/**/*.test.ts"],
          exclude: [...configDefaults.exclude, "test/failover/**"]
        }
      },
      {
        // Real worker processes and real faults (one restarts the local
        // Postgres): run after every other test, one file at a time, so
        // they neither starve a 2-core machine nor break other suites.
        extends: true,
        test: {
          name: "failover",
          include: ["test/failover/**/*.test.ts"],
          sequence: { groupOrder: 1 },
          fileParallelism: false,
          testTimeout: 180_000
        }
      }
    ]
  }
})
