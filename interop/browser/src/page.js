// The browser peer: js-libp2p with WebSockets + the circuit relay v2
// transport + Noise + Yamux + identify, the library defaults otherwise. It
// reserves on a relay (so other peers can reach it through the relay), serves
// the transfer protocol of interop/js (hash-checked, both ways at once), and
// dials peers through the relay. driver.mjs calls window.macula.* from
// Playwright; with `webrtc: true` a page also runs js-libp2p's WebRTC
// transport and listens on /webrtc, so another page reaches it at
// <relay>/p2p-circuit/webrtc/p2p/<id>: SDP and ICE go over a relayed stream,
// the connection itself is direct browser to browser. Events it did not ask for (inbound transfers, reservation
// changes) go to window.maculaEmit, which the driver exposes.
import { connectedSince, peerConnections, selectedPair } from './rtc-spy.js'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { identify } from '@libp2p/identify'
import { peerIdFromString } from '@libp2p/peer-id'
import { webRTC, webRTCDirect } from '@libp2p/webrtc'
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
 * Starts the node and reserves on `relay` (a ws / wss or webrtc-direct
 * multiaddr ending in /p2p/<relay id>; WebRTC-direct needs no certificate). `allowInsecureLoopback`: js-libp2p's browser connection
 * gater refuses plain `ws://` and private addresses by default; the loopback
 * tests turn that off (a public relay behind `wss://` on a domain needs no
 * such setting).
 */
async function start ({ relay, allowInsecureLoopback = true, reserveTimeoutMs = 10000, webrtc = false }) {
  if (node != null) throw new Error('already started')
  const relayAddr = multiaddr(relay)
  const relayId = relayAddr.getComponents().findLast(c => c.name === 'p2p')?.value
  if (relayId == null) throw new Error('relay multiaddr must end in /p2p/<relay peer id>')
  const relayPeer = peerIdFromString(relayId)
  const direct = relayAddr.getComponents().some(c => c.name === 'webrtc-direct')

  node = await createLibp2p({
    addresses: { listen: [] },
    transports: [
      webSockets(),
      ...(direct ? [webRTCDirect({ rtcConfiguration: { iceServers: [] } })] : []),
      circuitRelayTransport({
        reservationCompletionTimeout: reserveTimeoutMs,
        // reserve on the relay given, never on relays found through identify (over
        // WebRTC-direct the page connects before it reserves: see below)
        ...(direct ? { discoveryFilter: { has: () => true, add: () => {} } } : {})
      }),
      // no ICE servers: host candidates only, nothing tries a public STUN server
      ...(webrtc ? [webRTC({ rtcConfiguration: { iceServers: [] } })] : [])
    ],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionGater: allowInsecureLoopback ? { denyDialMultiaddr: () => false } : {},
    // js-libp2p pings every connection every 10 s and aborts one whose ping fails. A ping on
    // the relayed connection that carried the signalling fails with a stream reset when the
    // other page hangs up (each try ends with one), and aborting that relayed connection
    // takes the page's WebSocket connection to the relay, and its reservation, with it (seen
    // with js-libp2p 3.3.11): the next try then gets NO_RESERVATION. In this mode a failed
    // ping is logged, not fatal.
    ...(webrtc ? { connectionMonitor: { abortConnectionOnPingFailure: false } } : {}),
    // js-libp2p gives each address 6 s and a dial 10 s; a loaded two-core machine gets more
    // (a set-up that works takes well under 1 s; one that stalls, about once in 10-30 tries
    // here, does not complete in 30 s either).
    ...(webrtc ? { connectionManager: { addressDialTimeout: 15000, dialTimeout: 20000 } } : {}),
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

  node.addEventListener('connection:close', (evt) => {
    const c = evt.detail
    emit({ event: 'connection_close', remote_peer: c.remotePeer.toString(), remote_addr: c.remoteAddr.toString(), direction: c.direction, status: c.status ?? null })
  })

  let t0 = performance.now()
  let connectMs = null
  if (direct) {
    // Over WebRTC-direct, connect first and reserve once identify ran with the relay (at most
    // 2 s): a data channel the browser opens in the first milliseconds after the handshake can
    // be lost (libp2p-webrtc 0.10 registers its handler for incoming data channels only after
    // the Noise handshake), and a lost reservation request times out after 10 s.
    const identified = new Promise(resolve => {
      const done = (evt) => {
        if (evt.detail.peerId.equals(relayPeer)) {
          node.removeEventListener('peer:identify', done)
          resolve()
        }
      }
      node.addEventListener('peer:identify', done)
    })
    await node.dial(relayAddr)
    await Promise.race([identified, new Promise(resolve => setTimeout(resolve, 2000))])
    connectMs = performance.now() - t0
    t0 = performance.now()
  }
  await node.components.transportManager.listen([relayAddr.encapsulate('/p2p-circuit')])
  const reserveMs = performance.now() - t0
  let circuitAddrs = []
  for (let i = 0; i < 250 && circuitAddrs.length === 0; i++) {
    circuitAddrs = node.getMultiaddrs().map(String).filter(s => s.includes('/p2p-circuit'))
    if (circuitAddrs.length === 0) await new Promise(resolve => setTimeout(resolve, 20))
  }
  if (circuitAddrs.length === 0) throw new Error('reserved, but no /p2p-circuit address was announced')
  let webrtcAddrs = []
  if (webrtc) {
    await node.components.transportManager.listen([multiaddr('/webrtc')])
    for (let i = 0; i < 250 && webrtcAddrs.length === 0; i++) {
      webrtcAddrs = node.getMultiaddrs().map(String).filter(s => s.includes('/p2p-circuit/webrtc'))
      if (webrtcAddrs.length === 0) await new Promise(resolve => setTimeout(resolve, 20))
    }
    if (webrtcAddrs.length === 0) throw new Error('listening on /webrtc, but no /p2p-circuit/webrtc address was announced')
  }
  const relayConn = node.getConnections(relayPeer).find(c => !c.remoteAddr.toString().includes('/p2p-circuit'))
  return {
    peer_id: node.peerId.toString(),
    relay: relayPeer.toString(),
    relay_conn_addr: relayConn?.remoteAddr.toString() ?? null,
    circuit_addrs: circuitAddrs,
    webrtc_addrs: webrtcAddrs,
    reserve_ms: round(reserveMs),
    // over WebRTC-direct: connecting and waiting for identify, before reserve_ms
    connect_ms: connectMs == null ? null : round(connectMs),
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

/**
 * Dials `target` (a <relay>/p2p-circuit/webrtc/p2p/<id> address): js-libp2p signals over the
 * relay and returns the direct WebRTC connection. Runs one transfer of `up` / `down` bytes over
 * it (not allowed on a limited connection: a relayed one would fail here), then hangs up on the
 * peer so that the next try sets up a new connection.
 */
async function dialWebRTC ({ target, up, down, timeoutMs = 60000 }) {
  if (node == null) throw new Error('not started')
  const signal = AbortSignal.timeout(timeoutMs)
  const addr = multiaddr(target)
  const known = new Set(peerConnections)
  const t0 = performance.now()
  let conn
  try {
    conn = await node.dial(addr, { signal })
  } catch (err) {
    throw new Error(`dial failed after ${round(performance.now() - t0)} ms (${peerConnections.filter(pc => !known.has(pc)).map(pc => `${pc.connectionState}/${pc.iceConnectionState}/${pc.signalingState}`).join(', ') || 'no peer connection'})`, { cause: err })
  }
  const setupMs = performance.now() - t0
  const remoteAddr = conn.remoteAddr.toString()
  // The dialer's connection keeps the address it dialed (<relay>/p2p-circuit/webrtc/p2p/<id>):
  // what makes it direct is the transport after the circuit (webrtc), no relay limits, and an
  // ICE candidate pair Chromium selected for the peer connection it made for this dial.
  const pc = await connectedSince(known, 10000)
  const ice = pc != null ? await selectedPair(pc) : null
  const afterCircuit = remoteAddr.split('/p2p-circuit').pop()
  const direct = afterCircuit.startsWith('/webrtc') && conn.limits == null && ice?.state === 'succeeded'
  const base = {
    ice,
    setup_ms: round(setupMs),
    remote_peer: conn.remotePeer.toString(),
    remote_addr: remoteAddr,
    direct,
    limits: limitsSnapshot(conn),
    connections: node.getConnections(conn.remotePeer).map(c => c.remoteAddr.toString())
  }
  try {
    if (!direct) return { ...base, ok: false, message: `not a direct WebRTC connection: ${remoteAddr} ${JSON.stringify(ice)}` }
    const stream = await conn.newStream(TRANSFER_PROTOCOL, { signal })
    const t1 = performance.now()
    const result = await runDialer(stream, { up, down, signal })
    // the transfer went over the selected pair: its counters include the bytes moved
    const after = await selectedPair(pc).catch(() => null)
    return { ...base, ...result, elapsed_ms: round(performance.now() - t1), ice_after: after }
  } finally {
    await node.hangUp(conn.remotePeer, { signal: AbortSignal.timeout(10000) }).catch(() => {})
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

window.macula = { start: wrap(start), dial: wrap(dial), dialWebRTC: wrap(dialWebRTC), stop: wrap(stop), ready: true }
