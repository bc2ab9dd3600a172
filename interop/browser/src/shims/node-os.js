// `node:os` for the browser bundle: endianness() only.
export function endianness () {
  return new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 'LE' : 'BE'
}
