// Opens a reservation voucher (circuit relay v2: a signed envelope, RFC 0002,
// domain "libp2p-relay-rsvp", payload type 0x0302, payload
// Voucher { relay = 1, peer = 2, expiration = 3 }) with js-libp2p's own
// envelope code (@libp2p/peer-record), checks its signature, and checks that
// it was signed by the relay we reserved on, names that relay and us, and
// expires when the reservation does.
import { RecordEnvelope } from '@libp2p/peer-record'
import { peerIdFromPublicKey } from '@libp2p/peer-id'
import { publicKeyFromProtobuf } from '@libp2p/crypto/keys'
import { decodeFields } from './hop-probe.mjs'

export const VOUCHER_DOMAIN = 'libp2p-relay-rsvp'
export const VOUCHER_PAYLOAD_TYPE = '0302'

const hex = (b) => b == null ? null : Buffer.from(b).toString('hex')
const last = (f, n) => f[n]?.[f[n].length - 1]

/**
 * Checks the signed envelope `envelope` (a RecordEnvelope whose signature is
 * already verified, or not: see `signatureOk`) against `relay` (PeerId),
 * `self` (PeerId) and `expire` (the reservation's expiry, seconds).
 */
function check (envelope, signatureOk, { relay, self, expire }) {
  const signer = peerIdFromPublicKey(envelope.publicKey)
  const pf = decodeFields(envelope.payload.subarray())
  const relayMh = hex(last(pf, 1))
  const peerMh = hex(last(pf, 2))
  const expiration = last(pf, 3) ?? null
  const out = {
    domain: VOUCHER_DOMAIN,
    signature_ok: signatureOk,
    payload_type: hex(envelope.payloadType),
    signer: signer.toString(),
    relay_multihash: relayMh,
    peer_multihash: peerMh,
    expiration,
    signer_is_relay: signer.equals(relay),
    names_relay: relayMh === hex(relay.toMultihash().bytes),
    names_self: peerMh === hex(self.toMultihash().bytes),
    expiration_matches: expire != null && expiration != null && BigInt(expiration) === BigInt(expire)
  }
  out.verified = out.signature_ok && out.payload_type === VOUCHER_PAYLOAD_TYPE &&
    out.signer_is_relay && out.names_relay && out.names_self && out.expiration_matches
  return out
}

/**
 * `bytes`: a voucher exactly as the relay sent it. Opened with
 * `RecordEnvelope.openAndCertify`, which throws on a bad signature (then
 * `verified` is false and `error` says why).
 */
export async function certifyVoucher (bytes, expect) {
  const raw = { raw_hex: hex(bytes) }
  let envelope
  try {
    envelope = await RecordEnvelope.openAndCertify(bytes, VOUCHER_DOMAIN)
  } catch (err) {
    let signer = null
    try { signer = peerIdFromPublicKey(RecordEnvelope.createFromProtobuf(bytes).publicKey).toString() } catch {}
    return { ...raw, verified: false, signature_ok: false, signer, error: `${err.name}: ${err.message}` }
  }
  try {
    return { ...raw, ...check(envelope, true, expect), error: null }
  } catch (err) {
    return { ...raw, verified: false, error: `${err.name}: ${err.message}` }
  }
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
  return out
}

const bytesField = (n, b) => [...encodeVarint((n << 3) | 2), ...encodeVarint(b.length), ...b]

/**
 * The voucher js-libp2p's relay client kept (`reservation.voucher`: the
 * envelope with its payload already decoded). The payload is encoded again
 * (the canonical protobuf encoding: fields in order, as the relay writes it)
 * and the signature checked over it with `RecordEnvelope.validate`.
 */
export async function certifyClientVoucher (v, expect) {
  try {
    const p = v.payload ?? {}
    const payload = Uint8Array.from([
      ...(p.relay != null ? bytesField(1, p.relay) : []),
      ...(p.peer != null ? bytesField(2, p.peer) : []),
      ...(p.expiration != null ? [...encodeVarint(3 << 3), ...encodeVarint(p.expiration)] : [])
    ])
    const envelope = new RecordEnvelope({
      publicKey: publicKeyFromProtobuf(v.publicKey),
      payloadType: v.payloadType,
      payload,
      signature: v.signature
    })
    const signatureOk = await envelope.validate(VOUCHER_DOMAIN)
    return {
      // the envelope as js-libp2p's client holds it, marshalled again
      raw_hex: hex(envelope.marshal()),
      ...check(envelope, signatureOk, expect),
      error: signatureOk ? null : 'signature does not verify'
    }
  } catch (err) {
    return { verified: false, error: `${err.name}: ${err.message}` }
  }
}
