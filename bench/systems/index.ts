/**
 * The systems, in the order of the report. Each adapter is imported only by
 * the process that benchmarks it, so a worker's memory holds one library only.
 */
import type { System } from "../system.js"

export const names = ["hyrex", "hyrex-retention0", "graphile", "graphile-batched", "pgboss", "bullmq", "raw", "raw-ahead"] as const

export type Name = (typeof names)[number]

export const isName = (name: string): name is Name => (names as ReadonlyArray<string>).includes(name)

export const load = async (name: Name): Promise<System> => {
  switch (name) {
    case "hyrex":
      return (await import("./hyrex.js")).hyrex
    case "hyrex-retention0":
      return (await import("./hyrex.js")).hyrexRetention0
    case "graphile":
      return (await import("./graphile.js")).graphile
    case "graphile-batched":
      return (await import("./graphile.js")).graphileBatched
    case "pgboss":
      return (await import("./pgboss.js")).pgboss
    case "bullmq":
      return (await import("./bullmq.js")).bullmq
    case "raw":
      return (await import("./raw.js")).raw
    case "raw-ahead":
      return (await import("./raw.js")).rawAhead
  }
}
