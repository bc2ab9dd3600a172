// The browser peer: js-libp2p with WebSockets + the circuit relay v2
// transport + Noise + Yamux + identify, the library defaults otherwise. It
// reserves on a relay (so other peers can reach it through the relay), serves
// the transfer protocol of interop/js (hash-checked, both ways at once), and
// dials peers through the relay. driver.mjs calls window.macula.* from
// Playwright; events it did not ask for (inbound transfers, reservation
// changes) go to window.maculaEmit, which the driver exposes.
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { identify } from '@libp2p/identify'
import { peerIdFromString } from '@libp2p/peer-id'
import { webSockets } from '@libp2p/websockets'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { TRANSFER_PROTOCOL, runDialer, runListener } from '../../js/lib/transfer.mjs'

let node = null

function emit (obj) {
  const line = JSON.stringify(obj)
  document.getElementById('log')?.append(line + '\n')
  if (typeof window.maculaEmit === 'function') window.maculaEmit(obj)
}

function describeError (err) {
  const parts = []
  const walk = (e, depth) => {
    if (e == null || depth > 4) return
    parts.push(String(e.message ?? e))
    if (Array.isArray(e.errors)) e.errors.forEach(x => walk(x, depth + 1))
    if (e.cause != null) walk(e.cause, depth + 1)
  }
  walk(err, 0)
  return { message: [...new Set(parts.filter(Boolean))].join(' | ') || String(err), name: err?.name ?? 'Error' }
}

function limitsSnapshot (conn) {
  const l = conn?.limits
  if (l == null) return null
  const out = {}
  if ('bytes' in l) out.bytes = l.bytes
  if ('seconds' in l) out.seconds = l.seconds
  return out
}

const round = (x) => Math.round(x * 1000) / 1000

/**
 * Starts the node and reserves on `relay` (a ws / wss multiaddr ending in
 * /p2p/<relay id>). `allowInsecureLoopback`: js-libp2p's browser connection
 * gater refuses plain `ws://` and private addresses by default; the loopback
 * tests turn that off (a public relay behind `wss://` on a domain needs no
 * such setting).
 */
async function start ({ relay, allowInsecureLoopback = true, reserveTimeoutMs = 10000 }) {
  if (node != null) throw new Error('already started')
  const relayAddr = multiaddr(relay)
  const relayId = relayAddr.getComponents().findLast(c => c.name === 'p2p')?.value
  if (relayId == null) throw new Error('relay multiaddr must end in /p2p/<relay peer id>')
  const relayPeer = peerIdFromString(relayId)

  node = await createLibp2p({
    addresses: { listen: [] },
    transports: [webSockets(), circuitRelayTransport({ reservationCompletionTimeout: reserveTimeoutMs })],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionGater: allowInsecureLoopback ? { denyDialMultiaddr: () => false } : {},
    services: { identify: identify() }
  })

  await node.handle(TRANSFER_PROTOCOL, async (stream, connection) => {
    const started = performance.now()
    const base = { remote_peer: connection.remotePeer.toString(), remote_addr: connection.remoteAddr.toString() }
    try {
      const result = await runListener(stream)
      emit({ event: 'transfer', ...base, ...result, elapsed_ms: round(performance.now() - started), limits: limitsSnapshot(connection) })
    } catch (err) {
      stream.abort(err)
      emit({ event: 'transfer_error', ...base, ...describeError(err), elapsed_ms: round(performance.now() - started) })
    }
  }, { runOnLimitedConnection: true })

  node.addEventListener('connection:open', (evt) => {
    const c = evt.detail
    emit({ event: 'connection_open', remote_peer: c.remotePeer.toString(), remote_addr: c.remoteAddr.toString(), direction: c.direction, limits: limitsSnapshot(c) })
  })

  const t0 = performance.now()
  await node.components.transportManager.listen([relayAddr.encapsulate('/p2p-circuit')])
  const reserveMs = performance.now() - t0
  let circuitAddrs = []
  for (let i = 0; i < 250 && circuitAddrs.length === 0; i++) {
    circuitAddrs = node.getMultiaddrs().map(String).filter(s => s.includes('/p2p-circuit'))
    if (circuitAddrs.length === 0) await new Promise(resolve => setTimeout(resolve, 20))
  }
  if (circuitAddrs.length === 0) throw new Error('reserved, but no /p2p-circuit address was announced')
  const relayConn = node.getConnections(relayPeer).find(c => !c.remoteAddr.toString().includes('/p2p-circuit'))
  return {
    peer_id: node.peerId.toString(),
    relay: relayPeer.toString(),
    relay_conn_addr: relayConn?.remoteAddr.toString() ?? null,
    circuit_addrs: circuitAddrs,
    reserve_ms: round(reserveMs),
    user_agent: navigator.userAgent
  }
}

/** Dials `target` (a circuit address) and runs one transfer of `up` / `down` bytes. */
async function dial ({ target, up, down, timeoutMs = 60000 }) {
  if (node == null) throw new Error('not started')
  const signal = AbortSignal.timeout(timeoutMs)
  const t0 = performance.now()
  const conn = await node.dial(multiaddr(target), { signal })
  const connectMs = performance.now() - t0
  const stream = await conn.newStream(TRANSFER_PROTOCOL, { signal, runOnLimitedConnection: true })
  const result = await runDialer(stream, { up, down, signal })
  return {
    ...result,
    connect_ms: round(connectMs),
    elapsed_ms: round(performance.now() - t0),
    remote_peer: conn.remotePeer.toString(),
    remote_addr: conn.remoteAddr.toString(),
    limits: limitsSnapshot(conn)
  }
}

async function stop () {
  if (node != null) await node.stop()
  node = null
}

// Every call resolves (never rejects) so Playwright hands the error over as data.
const wrap = (fn) => async (opts) => {
  try {
    return { ok: true, value: await fn(opts ?? {}) }
  } catch (err) {
    return { ok: false, error: describeError(err) }
  }
}

window.macula = { start: wrap(start), dial: wrap(dial), stop: wrap(stop), ready: true }
