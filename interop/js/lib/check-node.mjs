// Imported first by every driver: fail fast (with a JSON line) on a Node
// that js-libp2p 3.x cannot run on, instead of failing later mid-dial.
const major = Number(process.versions.node.split('.')[0])
if (major < 22 || typeof Promise.withResolvers !== 'function') {
  process.stdout.write(JSON.stringify({
    event: 'error',
    code: 'UNSUPPORTED_NODE',
    message: `js-libp2p 3.x needs Node >= 22, this is ${process.version} (${process.execPath}); run with interop/js/node_modules/.bin/node (see README.md)`
  }) + '\n')
  process.exit(2)
}
