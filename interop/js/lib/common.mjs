// Shared helpers for the interop drivers: argument parsing, JSON-lines
// output, libp2p node construction and error reporting.
import { readFile, writeFile } from 'node:fs/promises'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'

/** Spec status names a relay can answer with (circuit v2 `Status` enum). */
export const RELAY_STATUS_NAMES = [
  'RESERVATION_REFUSED',
  'RESOURCE_LIMIT_EXCEEDED',
  'PERMISSION_DENIED',
  'CONNECTION_FAILED',
  'NO_RESERVATION',
  'MALFORMED_MESSAGE',
  'UNEXPECTED_MESSAGE'
]

/**
 * Minimal `--flag value` / `--flag=value` / `--bool-flag` parser.
 * `spec` maps flag name -> { type: 'string'|'int'|'bool', default }.
 */
export function parseArgs (argv, spec, usage) {
  const out = {}
  for (const [k, v] of Object.entries(spec)) out[k] = v.default
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i]
    if (a === '-h' || a === '--help') {
      process.stderr.write(usage + '\n')
      process.exit(0)
    }
    if (!a.startsWith('--')) fail('BAD_ARGS', `unexpected argument ${a}\n${usage}`)
    a = a.slice(2)
    let val
    const eq = a.indexOf('=')
    if (eq >= 0) { val = a.slice(eq + 1); a = a.slice(0, eq) }
    const s = spec[a]
    if (s == null) fail('BAD_ARGS', `unknown flag --${a}\n${usage}`)
    if (s.type === 'bool') {
      out[a] = val == null ? true : !['0', 'false', 'no'].includes(val)
      continue
    }
    if (val == null) {
      if (i + 1 >= argv.length) fail('BAD_ARGS', `flag --${a} needs a value`)
      val = argv[++i]
    }
    if (s.type === 'int') {
      const n = Number(val)
      if (!Number.isSafeInteger(n) || n < 0) fail('BAD_ARGS', `flag --${a}: not a non-negative integer: ${val}`)
      out[a] = n
    } else if (s.type === 'list') {
      out[a] = [...(out[a] ?? []), val]
    } else {
      out[a] = val
    }
  }
  for (const [k, v] of Object.entries(spec)) {
    if (v.required && (out[k] == null || (Array.isArray(out[k]) && out[k].length === 0))) fail('BAD_ARGS', `missing --${k}\n${usage}`)
  }
  return out
}

/** JSON.stringify that renders bigint as a number when exact, else a string. */
export function toJson (obj) {
  return JSON.stringify(obj, (_k, v) => {
    if (typeof v === 'bigint') return (v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= -BigInt(Number.MAX_SAFE_INTEGER)) ? Number(v) : v.toString()
    return v
  })
}

/** Print one JSON object as one line on stdout. */
export function emit (obj) {
  process.stdout.write(toJson(obj) + '\n')
}

/** Print an error line and exit (never returns). */
export function fail (code, message, extra = {}, exitCode = 2) {
  emit({ event: 'error', code, message, ...extra })
  process.exit(exitCode)
}

/** Turn any thrown value into { message, code, status, name }. */
export function describeError (err) {
  const parts = []
  const walk = (e, depth) => {
    if (e == null || depth > 4) return
    if (typeof Event !== 'undefined' && e instanceof Event) {
      // e.g. an AbortSignal's 'abort' event given as the reason
      parts.push(`${e.type} event${e.target?.reason != null ? `: ${e.target.reason.message ?? e.target.reason}` : ''}`)
      return
    }
    parts.push(String(e.message ?? e))
    if (Array.isArray(e.errors)) e.errors.forEach(x => walk(x, depth + 1))
    if (e.cause != null) walk(e.cause, depth + 1)
  }
  walk(err, 0)
  const message = [...new Set(parts.filter(Boolean))].join(' | ')
    .split('\n').filter(line => !/^\s+at /.test(line)).join('\n').trim() || String(err)
  const status = RELAY_STATUS_NAMES.find(s => message.includes(s)) ?? null
  const errno = message.match(/\b(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|EPIPE)\b/)?.[1] ?? null
  const name = err?.name ?? 'Error'
  return { message, code: status ?? errno ?? name, status, name }
}

/** A connection's `limits` as a plain object (getters snapshotted), or null. */
export function limitsSnapshot (conn) {
  const l = conn?.limits
  if (l == null) return null
  const out = {}
  if ('bytes' in l) out.bytes = l.bytes
  if ('seconds' in l) out.seconds = l.seconds
  return out
}

/** Load (or create and save) a protobuf-encoded libp2p private key. */
export async function loadOrCreateKey (file) {
  if (file == null) return generateKeyPair('Ed25519')
  try {
    return privateKeyFromProtobuf(new Uint8Array(await readFile(file)))
  } catch (err) {
    if (err.code !== 'ENOENT') throw err
  }
  const key = await generateKeyPair('Ed25519')
  await writeFile(file, privateKeyToProtobuf(key), { mode: 0o600 })
  return key
}

/**
 * A js-libp2p node with the library defaults: TCP + Noise + Yamux, identify,
 * ping, and the circuit relay v2 transport. Extra services (e.g. the relay
 * server) can be passed in `services`.
 */
export async function makeNode ({ listen = [], privateKey, services = {}, connectionManager, relayTransport = {} } = {}) {
  return createLibp2p({
    privateKey,
    addresses: { listen },
    transports: [tcp(), circuitRelayTransport(relayTransport)],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionManager,
    services: {
      identify: identify(),
      ping: ping(),
      ...services
    }
  })
}

/** The circuit relay v2 transport instance inside a node (for its reservation store). */
export function relayTransportOf (node) {
  return node.components.transportManager.getTransports()
    .find(t => t[Symbol.toStringTag] === '@libp2p/circuit-relay-v2-transport')
}

/** Exit with a JSON error after `seconds` (0 = never). Returns a cancel function. */
export function armTimeout (seconds, what) {
  if (!(seconds > 0)) return () => {}
  const t = setTimeout(() => {
    fail('TIMEOUT', `${what} did not finish within ${seconds} s`, {}, 3)
  }, seconds * 1000)
  return () => clearTimeout(t)
}

/** Stop the node on SIGINT/SIGTERM and exit 0. */
export function stopOnSignals (node, extra = () => {}) {
  let stopping = false
  const onSignal = (sig) => {
    if (stopping) process.exit(0)
    stopping = true
    extra()
    emit({ event: 'stopping', signal: sig })
    const force = setTimeout(() => process.exit(0), 2000)
    force.unref()
    node.stop().catch(() => {}).finally(() => process.exit(0))
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
}
