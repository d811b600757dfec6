/**
 * Summarises a `.cpuprofile` written by `npm run bench -- --cpu-prof DIR`
 * (one per measured burn-down): the functions and the packages with the most
 * self time.
 *
 *   npx tsx bench/cpu-profile.ts DIR/hyrex-run1.cpuprofile [top]
 */
import { readFileSync } from "node:fs"

interface Node {
  readonly id: number
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number }
}

interface Profile {
  readonly nodes: ReadonlyArray<Node>
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

const [file, topArg] = process.argv.slice(2)
if (file === undefined) {
  console.error("usage: tsx bench/cpu-profile.ts FILE.cpuprofile [top]")
  process.exit(2)
}
const top = Number(topArg ?? 30)
const profile = JSON.parse(readFileSync(file, "utf8")) as Profile
const byId = new Map(profile.nodes.map((node) => [node.id, node]))

/** Where a frame comes from: a package under node_modules, hyrex's src/, node itself, or V8. */
const origin = (url: string) => {
  if (url === "") return "(v8 / native)"
  if (url.startsWith("node:")) return "node:internal"
  const pkg = url.match(/node_modules\/((?:@[^/]+\/)?[^/]+)/)
  if (pkg) return pkg[1]!
  const src = url.match(/\/(src\/.*)$/)
  return src ? `hyrex ${src[1]}` : url.replace(/^file:\/\//, "")
}

const selfByFunction = new Map<string, number>()
const selfByOrigin = new Map<string, number>()
let total = 0
profile.samples.forEach((id, i) => {
  const node = byId.get(id)
  const delta = profile.timeDeltas[i] ?? 0
  if (node === undefined) return
  total += delta
  const { functionName, lineNumber, url } = node.callFrame
  const where = url === "" ? "" : `  ${url.replace(/^.*node_modules\//, "").replace(/^.*\/(src\/)/, "$1")}:${lineNumber + 1}`
  const fn = `${functionName || "(anonymous)"}${where}`
  selfByFunction.set(fn, (selfByFunction.get(fn) ?? 0) + delta)
  selfByOrigin.set(origin(url), (selfByOrigin.get(origin(url)) ?? 0) + delta)
})

const print = (title: string, entries: Map<string, number>) => {
  console.log(`\n${title}`)
  for (const [name, us] of [...entries].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`${((100 * us) / total).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(6)} ms  ${name}`)
  }
}

console.log(`${(total / 1e6).toFixed(1)} s sampled`)
print("self time by function", selfByFunction)
print("self time by package", selfByOrigin)
