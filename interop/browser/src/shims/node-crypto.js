// `node:crypto` for the browser bundle: the one call interop/js/lib/transfer.mjs
// makes, createHash('sha256') with update() and digest('hex'), on @noble/hashes.
import { sha256 } from '@noble/hashes/sha2.js'
import { bytesToHex } from '@noble/hashes/utils.js'

export function createHash (algorithm) {
  if (algorithm !== 'sha256') throw new Error(`createHash: only sha256 in the browser bundle, not ${algorithm}`)
  const h = sha256.create()
  return {
    update (data) {
      h.update(data)
      return this
    },
    digest (encoding) {
      const out = h.digest()
      if (encoding === 'hex') return bytesToHex(out)
      if (encoding == null) return out
      throw new Error(`digest: unsupported encoding ${encoding}`)
    }
  }
}
