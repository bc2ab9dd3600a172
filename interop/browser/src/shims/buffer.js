// The part of Node's Buffer that interop/js/lib/transfer.mjs uses:
// Buffer.from(hexString, 'hex') and Buffer.from(bytes).toString('hex').
// build.mjs imports it into that one file only, so no other module of the
// bundle sees a Buffer global.
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js'

class ShimBuffer extends Uint8Array {
  toString (encoding) {
    if (encoding === 'hex') return bytesToHex(this)
    throw new Error(`Buffer shim: toString(${encoding}) is not supported`)
  }
}

export const Buffer = {
  from (value, encoding) {
    if (typeof value === 'string') {
      if (encoding !== 'hex') throw new Error(`Buffer shim: from(string, ${encoding}) is not supported`)
      return ShimBuffer.from(hexToBytes(value))
    }
    return ShimBuffer.from(value)
  }
}
