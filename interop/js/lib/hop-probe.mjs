// A raw circuit-relay-v2 HOP RESERVE, bypassing js-libp2p's client so that
// every field of the relay's reply (incl. `limit`, which the js client
// drops) can be shown exactly as it was on the wire: which fields were
// present, and their values.
import { multiaddr } from '@multiformats/multiaddr'

const HOP = '/libp2p/circuit/relay/0.2.0/hop'
const STATUS = { 0: 'UNUSED', 100: 'OK', 200: 'RESERVATION_REFUSED', 201: 'RESOURCE_LIMIT_EXCEEDED', 202: 'PERMISSION_DENIED', 203: 'CONNECTION_FAILED', 204: 'NO_RESERVATION', 400: 'MALFORMED_MESSAGE', 401: 'UNEXPECTED_MESSAGE' }
const TYPE = { 0: 'RESERVE', 1: 'CONNECT', 2: 'STATUS' }

function readVarint (buf, pos) {
  let result = 0n
  let shift = 0n
  for (;;) {
    if (pos >= buf.length) throw new Error('truncated varint')
    const b = buf[pos++]
    result |= BigInt(b & 0x7f) << shift
    if ((b & 0x80) === 0) return [result, pos]
    shift += 7n
    if (shift > 63n) throw new Error('varint too long')
  }
}

/** Decode a protobuf message into { fieldNumber: [values...] } (varint -> bigint, len -> Uint8Array). */
export function decodeFields (buf) {
  const fields = {}
  let pos = 0
  while (pos < buf.length) {
    let key
    [key, pos] = readVarint(buf, pos)
    const field = Number(key >> 3n)
    const wire = Number(key & 7n)
    let val
    if (wire === 0) {
      [val, pos] = readVarint(buf, pos)
    } else if (wire === 2) {
      let len
      [len, pos] = readVarint(buf, pos)
      val = buf.subarray(pos, pos + Number(len))
      pos += Number(len)
    } else if (wire === 1) {
      val = buf.subarray(pos, pos + 8); pos += 8
    } else if (wire === 5) {
      val = buf.subarray(pos, pos + 4); pos += 4
    } else {
      throw new Error(`unsupported wire type ${wire}`)
    }
    ;(fields[field] ??= []).push(val)
  }
  return fields
}

const last = (f, n) => f[n]?.[f[n].length - 1]
const hex = (b) => b == null ? null : Buffer.from(b).toString('hex')
const maStr = (b) => { try { return multiaddr(b).toString() } catch (e) { return `unparseable:${hex(b)}` } }

/** Decode a HopMessage reply, reporting field presence explicitly. */
export function decodeHopMessage (buf) {
  const f = decodeFields(buf)
  const out = {
    type: f[1] != null ? (TYPE[Number(last(f, 1))] ?? Number(last(f, 1))) : null,
    status: f[5] != null ? (STATUS[Number(last(f, 5))] ?? Number(last(f, 5))) : null,
    reservation: null,
    limit: null
  }
  const r = last(f, 3)
  if (r != null) {
    const rf = decodeFields(r)
    out.reservation = {
      expire: rf[1] != null ? last(rf, 1) : null,
      addrs: (rf[2] ?? []).map(maStr),
      voucher: null
    }
    const v = last(rf, 3)
    if (v != null) {
      const vf = decodeFields(v)
      const payload = last(vf, 3)
      let decoded = null
      if (payload != null) {
        const pf = decodeFields(payload)
        decoded = { relay_multihash: hex(last(pf, 1)), peer_multihash: hex(last(pf, 2)), expiration: last(pf, 3) ?? null }
      }
      out.reservation.voucher = {
        bytes: v.length,
        // the signed envelope exactly as it was on the wire (see lib/voucher.mjs)
        raw_hex: hex(v),
        payload_type: hex(last(vf, 2)),
        has_public_key: vf[1] != null,
        has_signature: vf[5] != null,
        payload: decoded
      }
    }
  }
  const l = last(f, 4)
  if (l != null) {
    const lf = decodeFields(l)
    // null = field absent on the wire (distinct from an explicit 0)
    out.limit = { duration: lf[1] != null ? last(lf, 1) : null, data: lf[2] != null ? last(lf, 2) : null }
  }
  return out
}

function encodeVarint (n) {
  const out = []
  let v = BigInt(n)
  do {
    let b = Number(v & 0x7fn)
    v >>= 7n
    if (v > 0n) b |= 0x80
    out.push(b)
  } while (v > 0n)
  return Uint8Array.from(out)
}

/**
 * Open a HOP stream on `connection` (to the relay), send RESERVE and return
 * the decoded reply. A relay treats this as a refresh of our reservation.
 */
export async function probeReserve (connection, { signal } = {}) {
  const stream = await connection.newStream(HOP, { signal })
  const msg = Uint8Array.from([0x08, 0x00]) // HopMessage { type: RESERVE (0) }, explicitly present
  stream.send(Uint8Array.from([...encodeVarint(msg.length), ...msg]))
  let buf = new Uint8Array(0)
  let reply = null
  for await (const chunk of stream) {
    const c = chunk instanceof Uint8Array ? chunk : chunk.subarray()
    const nb = new Uint8Array(buf.length + c.length)
    nb.set(buf); nb.set(c, buf.length); buf = nb
    try {
      const [len, pos] = readVarint(buf, 0)
      if (buf.length >= pos + Number(len)) {
        reply = buf.subarray(pos, pos + Number(len))
        break
      }
    } catch (e) {
      if (e.message !== 'truncated varint') throw e
    }
  }
  await stream.close({ signal }).catch(() => {})
  if (reply == null) throw new Error('relay closed the HOP stream without a reply')
  return { raw_hex: hex(reply), ...decodeHopMessage(reply) }
}
