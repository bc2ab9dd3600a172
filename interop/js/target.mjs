#!/usr/bin/env node
// Relay client that reserves a slot on a relay and serves the transfer
// protocol to peers dialing it through the relay.
import './lib/check-node.mjs'
import { multiaddr } from '@multiformats/multiaddr'
import { peerIdFromString } from '@libp2p/peer-id'
import { armTimeout, describeError, emit, fail, limitsSnapshot, loadOrCreateKey, makeNode, parseArgs, relayTransportOf, stopOnSignals } from './lib/common.mjs'
import { probeReserve } from './lib/hop-probe.mjs'
import { TRANSFER_PROTOCOL, runListener } from './lib/transfer.mjs'

const USAGE = `usage: target.mjs --relay /ip4/127.0.0.1/tcp/PORT/p2p/RELAYID
    [--probe-reserve] [--reserve-timeout SECONDS] [--max-transfers N]
    [--lifetime SECONDS] [--key-file FILE] [--no-verify]`

const args = parseArgs(process.argv.slice(2), {
  relay: { type: 'string', required: true },
  'probe-reserve': { type: 'bool', default: false },
  'reserve-timeout': { type: 'int', default: 10 },
  'max-transfers': { type: 'int', default: 0 },
  lifetime: { type: 'int', default: 0 },
  'key-file': { type: 'string' },
  'no-verify': { type: 'bool', default: false }
}, USAGE)

let relayAddr, relayPeer
try {
  relayAddr = multiaddr(args.relay)
  const id = relayAddr.getComponents().findLast(c => c.name === 'p2p')?.value
  if (id == null) throw new Error('relay multiaddr must end in /p2p/<relay peer id>')
  relayPeer = peerIdFromString(id)
} catch (err) {
  fail('BAD_ARGS', `--relay: ${err.message}`)
}

function reservationInfo (res) {
  if (res == null) return null
  const now = Math.floor(Date.now() / 1000)
  const v = res.voucher
  return {
    expire: res.expire,
    expire_in_s: Number(res.expire) - now,
    // js adds the address it dialed the relay on to the relay's list
    addrs: res.addrs.map(b => multiaddr(b).toString()),
    voucher: v == null
      ? null
      : {
          payload_type: Buffer.from(v.payloadType ?? []).toString('hex'),
          relay_multihash: Buffer.from(v.payload?.relay ?? []).toString('hex'),
          peer_multihash: Buffer.from(v.payload?.peer ?? []).toString('hex'),
          expiration: v.payload?.expiration ?? null
        }
  }
}

try {
  const node = await makeNode({
    privateKey: await loadOrCreateKey(args['key-file']),
    relayTransport: { reservationCompletionTimeout: args['reserve-timeout'] * 1000 }
  })
  stopOnSignals(node)
  if (args.lifetime > 0) setTimeout(() => process.kill(process.pid, 'SIGTERM'), args.lifetime * 1000)

  const relayTransport = relayTransportOf(node)
  const store = relayTransport.reservationStore

  let transfers = 0
  await node.handle(TRANSFER_PROTOCOL, async (stream, connection) => {
    const started = Date.now()
    const base = {
      remote_peer: connection.remotePeer.toString(),
      remote_addr: connection.remoteAddr.toString(),
      connection_id: connection.id,
      stream_id: stream.id
    }
    try {
      const result = await runListener(stream, {
        verifyUp: !args['no-verify'],
        onHeader: (h) => emit({ event: 'transfer_start', ...base, up_bytes: h.up, down_bytes: h.down, limits: limitsSnapshot(connection) })
      })
      emit({ event: 'transfer', ...base, ...result, elapsed_ms: Date.now() - started, limits: limitsSnapshot(connection) })
    } catch (err) {
      stream.abort(err)
      const d = describeError(err)
      emit({ event: 'transfer_error', ...base, message: d.message, code: d.code, elapsed_ms: Date.now() - started })
    }
    transfers++
    if (args['max-transfers'] > 0 && transfers >= args['max-transfers']) {
      process.kill(process.pid, 'SIGTERM')
    }
  }, {
    runOnLimitedConnection: true,
    maxInboundStreams: 1024
  })

  // Relayed connections come in over STOP; show the Limit js derived from it.
  node.addEventListener('connection:open', (evt) => {
    const c = evt.detail
    if (!c.remoteAddr.toString().includes('/p2p-circuit')) return
    emit({ event: 'relayed_connection', remote_peer: c.remotePeer.toString(), remote_addr: c.remoteAddr.toString(), connection_id: c.id, direction: c.direction, limits: limitsSnapshot(c) })
  })
  node.addEventListener('connection:close', (evt) => {
    const c = evt.detail
    if (c.remotePeer.equals(relayPeer) && !c.remoteAddr.toString().includes('/p2p-circuit')) {
      emit({ event: 'relay_connection_closed', connection_id: c.id })
    }
  })
  store.addEventListener('relay:created-reservation', (evt) => {
    // also fires on each refresh
    emit({ event: 'reservation', relay: evt.detail.relay.toString(), ...reservationInfo(evt.detail.details.reservation) })
  })
  store.addEventListener('relay:removed', (evt) => {
    emit({ event: 'reservation_removed', relay: evt.detail.relay.toString() })
  })

  // make the reservation: listen on <relay>/p2p-circuit
  const cancel = armTimeout(args['reserve-timeout'] + 5, 'reservation')
  const t0 = performance.now()
  await node.components.transportManager.listen([relayAddr.encapsulate('/p2p-circuit')])
  const reserveMs = performance.now() - t0

  // the listener confirms its addresses in a microtask; wait for them
  let circuitAddrs = []
  for (let i = 0; i < 100; i++) {
    circuitAddrs = node.getMultiaddrs().map(ma => ma.toString()).filter(s => s.includes('/p2p-circuit'))
    if (circuitAddrs.length > 0) break
    await new Promise(resolve => setTimeout(resolve, 20))
  }
  cancel()
  if (circuitAddrs.length === 0) fail('NO_CIRCUIT_ADDRS', 'reservation succeeded but no /p2p-circuit address was announced')

  const res = store.getReservation(relayPeer)
  let probe
  if (args['probe-reserve']) {
    const conn = node.getConnections(relayPeer).find(c => !c.remoteAddr.toString().includes('/p2p-circuit'))
    try {
      probe = await probeReserve(conn, { signal: AbortSignal.timeout(args['reserve-timeout'] * 1000) })
    } catch (err) {
      probe = { error: describeError(err).message }
    }
  }
  emit({
    event: 'ready',
    role: 'target',
    peer_id: node.peerId.toString(),
    relay: relayPeer.toString(),
    circuit_addrs: circuitAddrs,
    reserve_ms: Math.round(reserveMs * 1000) / 1000,
    reservation: reservationInfo(res),
    ...(probe !== undefined ? { reserve_probe: probe } : {})
  })
} catch (err) {
  const d = describeError(err)
  fail(d.code, d.message, { name: d.name, status: d.status })
}
