#!/usr/bin/env node
// Relay client that reserves a slot on a relay and serves the transfer
// protocol to peers dialing it through the relay.
import './lib/check-node.mjs'
import { multiaddr } from '@multiformats/multiaddr'
import { peerIdFromString } from '@libp2p/peer-id'
import { armTimeout, describeError, emit, fail, limitsSnapshot, loadOrCreateKey, makeNode, parseArgs, relayTransportOf, stopOnSignals } from './lib/common.mjs'
import { probeReserve } from './lib/hop-probe.mjs'
import { certifyClientVoucher, certifyVoucher } from './lib/voucher.mjs'
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

const STOP_PROTOCOL = '/libp2p/circuit/relay/0.2.0/stop'

/**
 * Counts the bytes the relay delivers on each inbound STOP stream: the relay's StopMessage (one
 * length-prefixed frame), then the circuit, every byte of which the relay counts against its
 * data cap (per direction). Wraps js-libp2p's own STOP handler (the registrar's record, handed
 * every stream unchanged); the counts are keyed by the stream, which a relayed connection keeps
 * as its `maConn.stream`.
 */
const circuitCounts = new WeakMap()
async function countCircuitBytes (node) {
  const registrar = node.components.registrar
  const { handler, options } = registrar.getHandler(STOP_PROTOCOL)
  await registrar.handle(STOP_PROTOCOL, (stream, connection) => {
    const count = { stop_message_bytes: null, circuit_bytes_received: 0 }
    const header = []
    let skip = null // bytes of the StopMessage still to pass over
    stream.addEventListener('message', (evt) => {
      const data = evt.data instanceof Uint8Array ? evt.data : evt.data.subarray()
      let i = 0
      while (skip == null && i < data.length) {
        const b = data[i++]
        header.push(b)
        if ((b & 0x80) === 0) {
          skip = header.reduce((n, x, k) => n + (x & 0x7f) * 2 ** (7 * k), 0)
          count.stop_message_bytes = header.length + skip
        }
      }
      if (skip == null) return
      const passed = Math.min(skip, data.length - i)
      skip -= passed
      count.circuit_bytes_received += data.length - i - passed
    })
    circuitCounts.set(stream, count)
    return handler(stream, connection)
  }, { ...options, force: true })
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

  await countCircuitBytes(node)
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
    const progress = {}
    try {
      const result = await runListener(stream, {
        progress,
        verifyUp: !args['no-verify'],
        onHeader: (h) => emit({ event: 'transfer_start', ...base, up_bytes: h.up, down_bytes: h.down, limits: limitsSnapshot(connection) })
      })
      emit({ event: 'transfer', ...base, ...result, elapsed_ms: Date.now() - started, limits: limitsSnapshot(connection) })
    } catch (err) {
      stream.abort(err)
      const d = describeError(err)
      emit({
        event: 'transfer_error',
        ...base,
        message: d.message,
        code: d.code,
        elapsed_ms: Date.now() - started,
        // payload bytes (after the 16-byte header) received from / sent to the source before
        // the error; null = the header never came in
        up_received_bytes: progress.up?.received ?? null,
        down_sent_bytes: progress.down?.sent ?? null
      })
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
    if (c.remoteAddr.toString().includes('/p2p-circuit')) {
      // `maConn` is the connection's transport (for a relayed one, over the STOP stream): not
      // public API, so a js-libp2p that renames it gives null here (and the test says so)
      const count = circuitCounts.get(c.maConn?.stream) ?? null
      emit({ event: 'relayed_connection_closed', remote_peer: c.remotePeer.toString(), connection_id: c.id, ...(count ?? { circuit_bytes_received: null }) })
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
  // The reservation voucher, opened and its signature checked with js-libp2p's envelope code
  // against the relay we reserved on, our own id and the reservation's expiry: the one js's
  // relay client kept, and (with --probe-reserve) the one in the raw RESERVE reply, exactly as
  // it was on the wire.
  const self = node.peerId
  const clientVoucher = res?.voucher == null
    ? null
    : await certifyClientVoucher(res.voucher, { relay: relayPeer, self, expire: res.expire })
  const probed = probe?.reservation?.voucher
  const wireVoucher = probed?.raw_hex == null
    ? null
    : await certifyVoucher(Buffer.from(probed.raw_hex, 'hex'), { relay: relayPeer, self, expire: probe.reservation.expire })
  emit({
    event: 'ready',
    role: 'target',
    peer_id: node.peerId.toString(),
    relay: relayPeer.toString(),
    circuit_addrs: circuitAddrs,
    reserve_ms: Math.round(reserveMs * 1000) / 1000,
    reservation: reservationInfo(res),
    client_voucher_check: clientVoucher,
    ...(probe !== undefined ? { reserve_probe: probe, voucher_check: wireVoucher } : {})
  })
} catch (err) {
  const d = describeError(err)
  fail(d.code, d.message, { name: d.name, status: d.status })
}
