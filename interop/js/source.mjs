#!/usr/bin/env node
// Dials a target through a relay and runs one transfer.
import './lib/check-node.mjs'
import { multiaddr } from '@multiformats/multiaddr'
import { armTimeout, describeError, emit, fail, limitsSnapshot, loadOrCreateKey, makeNode, parseArgs } from './lib/common.mjs'
import { TRANSFER_PROTOCOL, runDialer } from './lib/transfer.mjs'

const USAGE = `usage: source.mjs --target /ip4/.../p2p/RELAYID/p2p-circuit/p2p/TARGETID
    [--bytes N] [--up N] [--down N] [--timeout SECONDS] [--key-file FILE] [--no-verify]
  --bytes sets both directions (default 1024); --up / --down override one.
  exit: 0 ok, 1 hash mismatch, 2 error (incl. relay refusal), 3 timeout`

const args = parseArgs(process.argv.slice(2), {
  target: { type: 'string', required: true },
  bytes: { type: 'int', default: 1024 },
  up: { type: 'int' },
  down: { type: 'int' },
  timeout: { type: 'int', default: 60 },
  'key-file': { type: 'string' },
  'no-verify': { type: 'bool', default: false }
}, USAGE)

const up = args.up ?? args.bytes
const down = args.down ?? args.bytes
let target
try {
  target = multiaddr(args.target)
  if (!args.target.includes('/p2p-circuit/p2p/')) throw new Error('expected <relay>/p2p-circuit/p2p/<target id>')
} catch (err) {
  fail('BAD_ARGS', `--target: ${err.message}`)
}

armTimeout(args.timeout, 'source')
const signal = args.timeout > 0 ? AbortSignal.timeout(args.timeout * 1000) : undefined
const t0 = performance.now()
let node, conn
const progress = {}
try {
  node = await makeNode({ privateKey: await loadOrCreateKey(args['key-file']) })
  // earliest snapshot of the relayed connection's limits (just after upgrade)
  let limitsAtOpen = null
  node.addEventListener('connection:open', (evt) => {
    if (limitsAtOpen == null && evt.detail.remoteAddr.toString().includes('/p2p-circuit')) {
      limitsAtOpen = limitsSnapshot(evt.detail) ?? 'none'
    }
  })
  conn = await node.dial(target, { signal })
  const connectMs = performance.now() - t0
  const limitsAtConnect = limitsSnapshot(conn)
  const stream = await conn.newStream(TRANSFER_PROTOCOL, { signal, runOnLimitedConnection: true })
  const result = await runDialer(stream, { up, down, signal, verifyDown: !args['no-verify'], progress })
  const elapsed = performance.now() - t0
  emit({
    event: 'result',
    ...result,
    connect_ms: Math.round(connectMs * 1000) / 1000,
    elapsed_ms: Math.round(elapsed * 1000) / 1000,
    up_mbit_s: result.transfer_ms > 0 ? Math.round(up * 8 / result.transfer_ms / 10) / 100 : null,
    down_mbit_s: result.transfer_ms > 0 ? Math.round(down * 8 / result.transfer_ms / 10) / 100 : null,
    remote_peer: conn.remotePeer.toString(),
    remote_addr: conn.remoteAddr.toString(),
    limits: limitsAtConnect,
    limits_at_open: limitsAtOpen === 'none' ? null : limitsAtOpen,
    limits_at_end: limitsSnapshot(conn)
  })
  // Close the relayed connection gracefully first: it resolves once everything queued (our
  // hash of the peer's data, our FIN) is written, so the peer reads it before we go away.
  await Promise.race([conn.close().catch(() => {}), new Promise(resolve => setTimeout(resolve, 5000))])
  await Promise.race([node.stop(), new Promise(resolve => setTimeout(resolve, 2000))])
  process.exit(result.ok ? 0 : 1)
} catch (err) {
  const d = describeError(err)
  fail(d.code, d.message, {
    name: d.name,
    status: d.status,
    elapsed_ms: Math.round(performance.now() - t0),
    // set once the relayed connection was up: shows whether it was closed under us
    connection_status: conn?.status ?? null,
    limits_at_end: conn != null ? limitsSnapshot(conn) : null,
    // payload bytes handed to the stream / received before the error (null: transfer not begun)
    up_sent_bytes: progress.up?.sent ?? null,
    down_received_bytes: progress.down?.received ?? null
  })
}
