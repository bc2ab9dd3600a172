#!/usr/bin/env node
// End-to-end check: relay (js by default, or any command / address) +
// target.mjs + source.mjs for each --bytes size. Prints JSON lines and a
// closing "N passed, N failed" line; exit 0 only if every transfer hash-checked.
import './lib/check-node.mjs'
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'
import { emit, parseArgs } from './lib/common.mjs'

const HERE = dirname(fileURLToPath(import.meta.url))
const NODE = process.execPath

const USAGE = `usage: e2e.mjs [--relay-addr MULTIADDR | --relay-cmd "CMD ARGS..."]
    [--bytes N]... [--timeout SECONDS] [--relay-args "ARGS for relay-server.mjs"]
  Without --relay-addr/--relay-cmd, starts relay-server.mjs.
  --relay-cmd runs CMD (split on spaces) and takes the first stdout line with a
  /ip4/127.0.0.1/tcp/PORT/p2p/ID multiaddr (plain text or JSON) as the relay.
  Default sizes: 1024 and 67108864.`

const args = parseArgs(process.argv.slice(2), {
  'relay-addr': { type: 'string' },
  'relay-cmd': { type: 'string' },
  'relay-args': { type: 'string', default: '' },
  bytes: { type: 'list', default: [] },
  timeout: { type: 'int', default: 120 }
}, USAGE)
const sizes = args.bytes.length > 0 ? args.bytes.map(Number) : [1024, 64 * 1024 * 1024]

const children = []
function cleanup () {
  for (const c of children) {
    if (c.exitCode == null && c.signalCode == null) {
      // each child leads its own process group (detached), so wrappers such
      // as shell scripts take their children down with them
      try { process.kill(-c.pid, 'SIGTERM') } catch { c.kill('SIGTERM') }
    }
  }
}
process.on('exit', cleanup)
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { cleanup(); process.exit(130) })
// safety net: children outlive a SIGKILLed e2e by at most this long
const LIFETIME = String(args.timeout + 30)
const overall = setTimeout(() => {
  emit({ event: 'error', code: 'TIMEOUT', message: `e2e did not finish within ${args.timeout} s` })
  cleanup()
  process.exit(3)
}, args.timeout * 1000)

/** Spawn and resolve with the first stdout line for which pick(line) returns non-null. */
function startAndWait (name, cmd, argv, pick, waitSeconds = 60) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], detached: true })
    children.push(child)
    const lines = []
    let done = false
    const timer = setTimeout(() => finish(new Error(`${name}: no ready line within ${waitSeconds} s`)), waitSeconds * 1000)
    function finish (err, val) {
      if (done) return
      done = true
      clearTimeout(timer)
      err != null ? reject(err) : resolve({ child, value: val, lines })
    }
    createInterface({ input: child.stdout }).on('line', (line) => {
      lines.push(line)
      if (!done) {
        let v
        try { v = pick(line) } catch (e) { return finish(e) }
        if (v != null) finish(null, v)
      }
    })
    let stderr = ''
    child.stderr.on('data', d => { stderr = (stderr + d).slice(-4000) })
    child.on('exit', (code, sig) => finish(new Error(`${name} exited (${code ?? sig}) before ready: ${lines.slice(-3).join(' ')} ${stderr.slice(-1000)}`)))
  })
}

function jsonEvent (line, name) {
  if (!line.startsWith('{')) return null
  const o = JSON.parse(line)
  if (o.event === 'error') throw new Error(`${o.code}: ${o.message}`)
  return o.event === name ? o : null
}

const MA_RE = /\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\/[1-9A-HJ-NP-Za-km-z]+/

let passed = 0
let failed = 0
try {
  let relayAddr = args['relay-addr']
  if (relayAddr == null) {
    let cmd, argv
    if (args['relay-cmd'] != null) {
      [cmd, ...argv] = args['relay-cmd'].split(/\s+/).filter(Boolean)
    } else {
      cmd = NODE
      argv = [join(HERE, 'relay-server.mjs'), '--lifetime', LIFETIME, ...args['relay-args'].split(/\s+/).filter(Boolean)]
    }
    const r = await startAndWait('relay', cmd, argv, line => {
      if (line.startsWith('{')) {
        const o = jsonEvent(line, 'ready')
        return o?.addrs?.find(a => MA_RE.test(a)) ?? null
      }
      return line.match(MA_RE)?.[0] ?? null
    }, 300)
    relayAddr = r.value
  }
  emit({ event: 'relay', addr: relayAddr })

  const t = await startAndWait('target', NODE, [join(HERE, 'target.mjs'), '--relay', relayAddr, '--probe-reserve', '--lifetime', LIFETIME], line => jsonEvent(line, 'ready'))
  const ready = t.value
  emit({ event: 'target_ready', circuit_addrs: ready.circuit_addrs, reservation: ready.reservation, reserve_probe: ready.reserve_probe })
  const circuit = ready.circuit_addrs.find(a => a.startsWith(relayAddr)) ?? ready.circuit_addrs[0]

  for (const n of sizes) {
    const out = await new Promise((resolve) => {
      const c = spawn(NODE, [join(HERE, 'source.mjs'), '--target', circuit, '--bytes', String(n), '--timeout', '60'], { stdio: ['ignore', 'pipe', 'inherit'], detached: true })
      children.push(c)
      let buf = ''
      c.stdout.on('data', d => { buf += d })
      c.on('exit', code => resolve({ code, lines: buf.split('\n').filter(Boolean) }))
    })
    const last = out.lines.length > 0 ? JSON.parse(out.lines[out.lines.length - 1]) : { event: 'error', message: 'no output' }
    const ok = out.code === 0 && last.event === 'result' && last.ok === true
    ok ? passed++ : failed++
    emit({ event: 'case', bytes: n, ok, exit_code: out.code, result: last })
  }
} catch (err) {
  failed++
  emit({ event: 'error', code: 'E2E', message: err.message })
}
clearTimeout(overall)
cleanup()
console.log(`${passed} passed, ${failed} failed`)
process.exit(failed === 0 ? 0 : 1)
