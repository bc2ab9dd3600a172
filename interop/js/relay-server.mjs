#!/usr/bin/env node
// js-libp2p Circuit Relay v2 SERVER (circuitRelayServer) with limits lifted.
// Prints {"event":"ready","peer_id":...,"addrs":[...]} once listening.
import './lib/check-node.mjs'
import { circuitRelayServer } from '@libp2p/circuit-relay-v2'
import { emit, fail, describeError, loadOrCreateKey, makeNode, parseArgs, stopOnSignals, limitsSnapshot } from './lib/common.mjs'

const USAGE = `usage: relay-server.mjs [--listen /ip4/127.0.0.1/tcp/0] [--key-file FILE]
    [--max-reservations N] [--limit-data BYTES] [--limit-duration SECONDS]
    [--reservation-ttl SECONDS] [--max-connections N] [--lifetime SECONDS] [--verbose]
  By default no Limit is applied (no data/duration limit). --limit-data /
  --limit-duration switch js's own per-connection limit on (both must then be
  known: an unset one falls back to js's default, 128 KiB / 120 s).`

const args = parseArgs(process.argv.slice(2), {
  listen: { type: 'list', default: [] },
  'key-file': { type: 'string' },
  'max-reservations': { type: 'int', default: 1_000_000 },
  'max-connections': { type: 'int', default: 100_000 },
  'limit-data': { type: 'int' },
  'limit-duration': { type: 'int' },
  'reservation-ttl': { type: 'int', default: 2 * 3600 },
  lifetime: { type: 'int', default: 0 },
  verbose: { type: 'bool', default: false }
}, USAGE)

const listen = args.listen.length > 0 ? args.listen : ['/ip4/127.0.0.1/tcp/0']
for (const a of listen) {
  if (!a.startsWith('/ip4/127.') && !a.startsWith('/ip6/::1/')) fail('BAD_ARGS', `refusing to listen on non-loopback address ${a}`)
}

const limited = args['limit-data'] != null || args['limit-duration'] != null

try {
  const node = await makeNode({
    listen,
    privateKey: await loadOrCreateKey(args['key-file']),
    connectionManager: { maxConnections: args['max-connections'], maxIncomingPendingConnections: 1000 },
    services: {
      relay: circuitRelayServer({
        hopTimeout: 30_000,
        maxInboundHopStreams: 10_000,
        maxOutboundHopStreams: 10_000,
        maxOutboundStopStreams: 10_000,
        reservations: {
          maxReservations: args['max-reservations'],
          reservationTtl: args['reservation-ttl'] * 1000,
          applyDefaultLimit: limited,
          // NB js-libp2p uses this value in MILLISECONDS for its own timer
          // and also copies it unchanged into the wire Limit.duration field
          // (which the spec defines in seconds).
          defaultDurationLimit: args['limit-duration'] != null ? args['limit-duration'] * 1000 : undefined,
          defaultDataLimit: args['limit-data'] != null ? BigInt(args['limit-data']) : undefined
        }
      })
    }
  })
  stopOnSignals(node)
  if (args.lifetime > 0) setTimeout(() => process.kill(process.pid, 'SIGTERM'), args.lifetime * 1000)

  if (args.verbose) {
    node.addEventListener('connection:open', (evt) => {
      const c = evt.detail
      emit({ event: 'connection_open', id: c.id, remote_peer: c.remotePeer.toString(), remote_addr: c.remoteAddr.toString(), limits: limitsSnapshot(c) })
    })
    node.addEventListener('connection:close', (evt) => {
      const c = evt.detail
      emit({ event: 'connection_close', id: c.id, remote_peer: c.remotePeer.toString() })
    })
  }

  const addrs = node.getMultiaddrs().map(ma => ma.toString())
  emit({
    event: 'ready',
    role: 'relay-server',
    impl: 'js-libp2p',
    peer_id: node.peerId.toString(),
    addrs,
    limit: limited
      ? { data: args['limit-data'] ?? null, duration_s: args['limit-duration'] ?? null }
      : null
  })
} catch (err) {
  const d = describeError(err)
  fail(d.code, d.message, { name: d.name })
}
