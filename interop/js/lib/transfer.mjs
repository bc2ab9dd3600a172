// The "/macula-interop/transfer/1.0.0" echo-hash protocol (see README.md,
// "Transfer protocol"). Both roles are implemented here so that source.mjs
// (dialer) and target.mjs (listener) share one definition.
import { createHash } from 'node:crypto'
import { endianness } from 'node:os'

export const TRANSFER_PROTOCOL = '/macula-interop/transfer/1.0.0'

/** Seed of the dialer -> listener ("up") byte stream. */
export const UP_SEED = 0x9E3779B9
/** Seed of the listener -> dialer ("down") byte stream. */
export const DOWN_SEED = 0x7F4A7C15

/** Bytes per send() call (js-yamux's default max frame is 64 KiB). */
const CHUNK = 64 * 1024
const HEADER_LEN = 16
const HASH_LEN = 32

if (endianness() !== 'LE') {
  throw new Error('the xorshift32 generator below assumes a little-endian host')
}

/**
 * xorshift32 (Marsaglia, shifts 13/17/5) emitting each 32-bit state as 4
 * little-endian bytes. Every call except the last must ask for a multiple of
 * 4 bytes (the stream is the concatenation of the words, cut at N bytes).
 */
export class Xorshift32 {
  constructor (seed) {
    if ((seed >>> 0) === 0) throw new Error('xorshift32 seed must be non-zero')
    this.x = seed | 0
  }

  next (n) {
    const words = Math.ceil(n / 4)
    const buf = new Uint8Array(words * 4)
    const u32 = new Uint32Array(buf.buffer)
    let x = this.x
    for (let i = 0; i < words; i++) {
      x ^= x << 13
      x ^= x >>> 17
      x ^= x << 5
      u32[i] = x
    }
    this.x = x
    return n === buf.length ? buf : buf.subarray(0, n)
  }
}

/** sha256 (hex) of the first `n` bytes of the stream with `seed`. */
export function expectedSha256 (seed, n) {
  const gen = new Xorshift32(seed)
  const h = createHash('sha256')
  for (let left = n; left > 0;) {
    const k = Math.min(1 << 20, left)
    h.update(gen.next(k))
    left -= k
  }
  return h.digest('hex')
}

export class ProtocolError extends Error {
  constructor (message) {
    super(message)
    this.name = 'ProtocolError'
  }
}

/** Pull-style reader over a libp2p Stream's async iterator. */
class StreamReader {
  constructor (stream) {
    this.it = stream[Symbol.asyncIterator]()
    this.pending = null
  }

  async chunk () {
    if (this.pending != null) {
      const p = this.pending
      this.pending = null
      return p
    }
    const r = await this.it.next()
    if (r.done) return null
    const v = r.value
    return v instanceof Uint8Array ? v : v.subarray()
  }

  /** Feed exactly `n` bytes to `fn`, keeping any surplus for the next read. */
  async consume (n, fn, what) {
    let left = n
    while (left > 0) {
      const c = await this.chunk()
      if (c == null) throw new ProtocolError(`stream ended after ${n - left} of ${n} ${what} bytes`)
      if (c.byteLength > left) {
        fn(c.subarray(0, left))
        this.pending = c.subarray(left)
        left = 0
      } else {
        fn(c)
        left -= c.byteLength
      }
    }
  }

  async readExact (n, what) {
    const out = new Uint8Array(n)
    let off = 0
    await this.consume(n, (c) => { out.set(c, off); off += c.byteLength }, what)
    return out
  }

  async expectEof () {
    for (;;) {
      const c = await this.chunk()
      if (c == null) return
      if (c.byteLength > 0) throw new ProtocolError(`unexpected ${c.byteLength} extra bytes after the peer's hash`)
    }
  }
}

async function sendBuf (stream, buf, signal) {
  if (!stream.send(buf)) await stream.onDrain({ signal })
}

/**
 * Send `n` bytes of the `seed` stream; resolves to the sha256 (hex) of what was sent.
 * `progress.sent` counts the bytes handed to the stream so far.
 */
async function sendData (stream, seed, n, signal, progress = {}) {
  const gen = new Xorshift32(seed)
  const h = createHash('sha256')
  progress.sent = 0
  for (let left = n; left > 0;) {
    const k = Math.min(CHUNK, left)
    const buf = gen.next(k)
    h.update(buf)
    await sendBuf(stream, buf, signal)
    progress.sent += k
    left -= k
  }
  return h.digest('hex')
}

/**
 * Receive `n` bytes; resolves to their sha256 (hex) and the time the last byte arrived.
 * `progress.received` counts the bytes received so far (also when the stream fails midway).
 */
async function recvData (reader, n, what, progress = {}) {
  const h = createHash('sha256')
  progress.received = 0
  await reader.consume(n, (c) => { h.update(c); progress.received += c.byteLength }, what)
  return { sha256: h.digest('hex'), doneAt: performance.now() }
}

function toSafe (big, what) {
  if (big > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError(`${what} length ${big} too large`)
  return Number(big)
}

/**
 * Dialer side. Sends the header and `up` bytes, receives `down` bytes, then
 * exchanges hashes. Returns a result object (never throws for a hash
 * mismatch, only for stream/protocol errors). `progress.up` / `progress.down`
 * count the payload bytes sent / received so far, for an error report.
 */
export async function runDialer (stream, { up, down, signal, verifyDown = true, progress = {} }) {
  const t0 = performance.now()
  const reader = new StreamReader(stream)
  const header = new Uint8Array(HEADER_LEN)
  const dv = new DataView(header.buffer)
  dv.setBigUint64(0, BigInt(up))
  dv.setBigUint64(8, BigInt(down))
  await sendBuf(stream, header, signal)

  progress.up = {}
  progress.down = {}
  const [upSent, downRecv] = await Promise.all([
    sendData(stream, UP_SEED, up, signal, progress.up).then(sha256 => ({ sha256 })),
    recvData(reader, down, 'down', progress.down)
  ])
  // our hash of what we received, then half-close
  await sendBuf(stream, Buffer.from(downRecv.sha256, 'hex'), signal)
  await stream.close({ signal })
  const peerHash = Buffer.from(await reader.readExact(HASH_LEN, 'hash')).toString('hex')
  await reader.expectEof()
  const t1 = performance.now()

  const downExpected = verifyDown ? expectedSha256(DOWN_SEED, down) : null
  const upOk = peerHash === upSent.sha256
  const downOk = downExpected == null ? null : downRecv.sha256 === downExpected
  return {
    up_bytes: up,
    down_bytes: down,
    up_sha256_sent: upSent.sha256,
    up_sha256_peer_received: peerHash,
    down_sha256_received: downRecv.sha256,
    down_sha256_expected: downExpected,
    up_ok: upOk,
    down_ok: downOk,
    ok: upOk && downOk !== false,
    down_received_ms: round(downRecv.doneAt - t0),
    transfer_ms: round(t1 - t0)
  }
}

/**
 * Listener side. Reads the header, sends `down` bytes while receiving `up`
 * bytes, then exchanges hashes. `onHeader` is called once the header is in.
 * `progress.up` / `progress.down` count the payload bytes received / sent so
 * far, for an error report.
 */
export async function runListener (stream, { signal, onHeader = () => {}, verifyUp = true, progress = {} } = {}) {
  const reader = new StreamReader(stream)
  const header = await reader.readExact(HEADER_LEN, 'header')
  const t0 = performance.now()
  const dv = new DataView(header.buffer, header.byteOffset, header.byteLength)
  const up = toSafe(dv.getBigUint64(0), 'up')
  const down = toSafe(dv.getBigUint64(8), 'down')
  onHeader({ up, down })

  progress.up = {}
  progress.down = {}
  const [downSent, upRecv] = await Promise.all([
    sendData(stream, DOWN_SEED, down, signal, progress.down),
    recvData(reader, up, 'up', progress.up)
  ])
  await sendBuf(stream, Buffer.from(upRecv.sha256, 'hex'), signal)
  await stream.close({ signal })
  const peerHash = Buffer.from(await reader.readExact(HASH_LEN, 'hash')).toString('hex')
  await reader.expectEof()
  const t1 = performance.now()

  const upExpected = verifyUp ? expectedSha256(UP_SEED, up) : null
  const downOk = peerHash === downSent
  const upOk = upExpected == null ? null : upRecv.sha256 === upExpected
  return {
    up_bytes: up,
    down_bytes: down,
    up_sha256_received: upRecv.sha256,
    up_sha256_expected: upExpected,
    down_sha256_sent: downSent,
    down_sha256_peer_received: peerHash,
    up_ok: upOk,
    down_ok: downOk,
    ok: downOk && upOk !== false,
    transfer_ms: round(t1 - t0)
  }
}

function round (x) {
  return Math.round(x * 1000) / 1000
}
