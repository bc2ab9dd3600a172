// Keeps the RTCPeerConnections the page creates, so a test can ask Chromium
// which ICE candidate pair a WebRTC connection really uses (js-libp2p does not
// expose its peer connection). Imported before anything else: @libp2p/webrtc
// reads globalThis.RTCPeerConnection when its module is evaluated.
export const peerConnections = []

const Native = globalThis.RTCPeerConnection
if (typeof Native === 'function') {
  globalThis.RTCPeerConnection = class extends Native {
    constructor (...args) {
      super(...args)
      peerConnections.push(this)
      if (peerConnections.length > 64) peerConnections.splice(0, peerConnections.length - 64)
    }
  }
}

/**
 * The selected ICE candidate pair of `pc` (from getStats): local and remote
 * candidate type, address, port and protocol; null when there is none.
 */
export async function selectedPair (pc) {
  const stats = await pc.getStats()
  let pairId = null
  stats.forEach(s => { if (s.type === 'transport' && s.selectedCandidatePairId != null) pairId = s.selectedCandidatePairId })
  let pair = pairId != null ? stats.get(pairId) : null
  if (pair == null) stats.forEach(s => { if (pair == null && s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s })
  if (pair == null) return null
  const describe = (id) => {
    const c = stats.get(id)
    return c == null ? null : { type: c.candidateType, address: c.address ?? c.ip, port: c.port, protocol: c.protocol }
  }
  return { state: pair.state, local: describe(pair.localCandidateId), remote: describe(pair.remoteCandidateId), bytes_sent: pair.bytesSent, bytes_received: pair.bytesReceived }
}

/**
 * The newest peer connection created since `known` (a Set of older ones) that is connected,
 * waiting up to `ms` for one: js-libp2p returns the connection as soon as its data channel is
 * open, and Chromium may update `connectionState` a little later. Null when none connects.
 */
export async function connectedSince (known, ms) {
  const deadline = performance.now() + ms
  for (;;) {
    const fresh = peerConnections.filter(pc => !known.has(pc))
    const connected = fresh.filter(pc => pc.connectionState === 'connected')
    if (connected.length > 0) return connected[connected.length - 1]
    const settled = fresh.every(pc => pc.connectionState === 'closed' || pc.connectionState === 'failed')
    if (settled || performance.now() > deadline) return null
    await new Promise(resolve => setTimeout(resolve, 25))
  }
}
