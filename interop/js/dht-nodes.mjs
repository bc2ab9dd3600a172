#!/usr/bin/env node
// A small Kademlia DHT of js-libp2p peers (`@libp2p/kad-dht`) in one process, for the relay
// registry's test on another implementation's DHT (tests/interop_registry_js.rs).
//
// Each node is a DHT server (`clientMode: false`) on 127.0.0.1 speaking kad-dht's default
// protocol, `/ipfs/kad/1.0.0`, with its default validators and selectors (`pk` and `ipns`
// records only). One option is changed, because every peer of the test is on loopback:
// `peerInfoMapper: passthroughMapper`. The default, `removePrivateAddressesMapper` (the public
// IPFS DHT's setting), drops private and loopback addresses from every peer a node adds to its
// routing table or returns in FIND_NODE / GET_PROVIDERS replies, so on 127.0.0.1 nodes would
// learn of no peer and no provider.
//
// Prints {"event":"ready","nodes":[{"peer_id","addrs"}],...} once every node has the others in
// its routing table, then, as they happen:
// - {"event":"provider_added","node","key","provider"}: a node stored a provider record (`key`:
//   the hex multihash it is stored under);
// - {"event":"providers_served","node","to","key","providers":[{"id","addrs"}]}: a node answered
//   a GET_PROVIDERS with providers (`id`: the peer id's bytes, hex);
// - {"event":"rpc_error","node","from","type","key","message"}: a node refused a DHT request.
import './lib/check-node.mjs'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { multiaddr } from '@multiformats/multiaddr'
import { emit, fail, describeError, makeNode, parseArgs } from './lib/common.mjs'

const USAGE = `usage: dht-nodes.mjs [--nodes N] [--ready-timeout SECONDS] [--lifetime SECONDS]
  N js-libp2p kad-dht servers on 127.0.0.1 (default 4), joined into one DHT. Stops on
  SIGINT / SIGTERM, after --lifetime (0 = never), or when its parent process is gone.`

const args = parseArgs(process.argv.slice(2), {
  nodes: { type: 'int', default: 4 },
  'ready-timeout': { type: 'int', default: 60 },
  lifetime: { type: 'int', default: 0 }
}, USAGE)
if (args.nodes < 1 || args.nodes > 20) fail('BAD_ARGS', '--nodes must be 1..20')

const hex = (bytes) => Buffer.from(bytes).toString('hex')
const nodes = []

async function stopAll (code) {
  const force = setTimeout(() => process.exit(code), 2000)
  force.unref()
  await Promise.allSettled(nodes.map(n => n.stop()))
  process.exit(code)
}
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => { emit({ event: 'stopping', signal: sig }); void stopAll(0) })
}
if (args.lifetime > 0) setTimeout(() => { emit({ event: 'stopping', signal: 'lifetime' }); void stopAll(0) }, args.lifetime * 1000)
// Stop with the test that started us, even if it was killed before it could kill us.
const parent = process.ppid
setInterval(() => {
  if (process.ppid !== parent) { emit({ event: 'stopping', signal: 'parent gone' }); void stopAll(0) }
}, 1000).unref()

try {
  for (let i = 0; i < args.nodes; i++) {
    const node = await makeNode({
      listen: ['/ip4/127.0.0.1/tcp/0'],
      services: {
        dht: kadDHT({
          clientMode: false,
          peerInfoMapper: passthroughMapper
        })
      }
    })
    const dht = node.services.dht
    // Report each provider record the node stores (an ADD_PROVIDER it accepted, or its own).
    const providers = dht.providers
    const addProvider = providers.addProvider.bind(providers)
    providers.addProvider = async (cid, provider, options) => {
      const result = await addProvider(cid, provider, options)
      emit({ event: 'provider_added', node: node.peerId.toString(), key: hex(cid.multihash.bytes), provider: provider.toString() })
      return result
    }
    // Report each GET_PROVIDERS answer that names providers (`key` hex, providers' ids as hex
    // multihashes with the addresses sent), and every inbound request a handler refused.
    const rpc = dht.rpc
    const handleMessage = rpc.handleMessage.bind(rpc)
    rpc.handleMessage = async (peerId, msg) => {
      let response
      try {
        response = await handleMessage(peerId, msg)
      } catch (err) {
        emit({ event: 'rpc_error', node: node.peerId.toString(), from: peerId.toString(), type: String(msg.type), key: msg.key == null ? null : hex(msg.key), message: describeError(err).message })
        throw err
      }
      if (String(msg.type) === 'GET_PROVIDERS' && response?.providers?.length > 0) {
        emit({
          event: 'providers_served',
          node: node.peerId.toString(),
          to: peerId.toString(),
          key: hex(msg.key),
          providers: response.providers.map(p => ({ id: hex(p.id), addrs: p.multiaddrs.map(a => multiaddr(a).toString()) }))
        })
      }
      return response
    }
    nodes.push(node)
  }

  // Join: every node dials every earlier one (a full mesh of a few nodes), then waits until its
  // routing table holds all the others (kad-dht adds a peer once identify shows it speaks the
  // DHT protocol and it answers a ping).
  for (let i = 1; i < nodes.length; i++) {
    for (let j = 0; j < i; j++) {
      await nodes[i].dial(multiaddr(nodes[j].getMultiaddrs()[0]))
    }
  }
  const deadline = Date.now() + args['ready-timeout'] * 1000
  while (nodes.some(n => n.services.dht.routingTable.size < nodes.length - 1)) {
    if (Date.now() > deadline) {
      fail('TIMEOUT', `routing tables not full within ${args['ready-timeout']} s: sizes ${nodes.map(n => n.services.dht.routingTable.size)}`, {}, 3)
    }
    await new Promise(resolve => setTimeout(resolve, 100))
  }

  const dht = nodes[0].services.dht
  emit({
    event: 'ready',
    impl: 'js-libp2p',
    protocol: dht.protocol,
    mode: dht.getMode(),
    validators: Object.keys(dht.validators).sort(),
    selectors: Object.keys(dht.selectors).sort(),
    routing_table_sizes: nodes.map(n => n.services.dht.routingTable.size),
    nodes: nodes.map(n => ({
      peer_id: n.peerId.toString(),
      addrs: n.getMultiaddrs().map(ma => ma.toString())
    }))
  })
} catch (err) {
  const d = describeError(err)
  fail(d.code, d.message, { name: d.name })
}
