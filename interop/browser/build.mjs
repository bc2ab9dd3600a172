#!/usr/bin/env node
// Bundles src/page.js (js-libp2p + the transfer protocol of interop/js) into
// dist/page.js for the browser, and copies static/index.html next to it.
//
//   node build.mjs
//
// interop/js/lib/transfer.mjs is bundled as is: `node:crypto` and `node:os`
// are aliased to small shims (src/shims/), and its `Buffer` is imported from
// src/shims/buffer.js, so the browser speaks byte for byte the protocol the
// Node drivers speak.
import { copyFile, mkdir, readFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as esbuild from 'esbuild'

const HERE = dirname(fileURLToPath(import.meta.url))
const TRANSFER = join(HERE, '..', 'js', 'lib', 'transfer.mjs')
const BUFFER_SHIM = join(HERE, 'src', 'shims', 'buffer.js')

const bufferForTransfer = {
  name: 'buffer-for-transfer',
  setup (build) {
    build.onLoad({ filter: /[\\/]transfer\.mjs$/ }, async (args) => {
      if (args.path !== TRANSFER) return undefined
      const source = await readFile(args.path, 'utf8')
      return {
        contents: `import { Buffer } from ${JSON.stringify(BUFFER_SHIM)}\n${source}`,
        loader: 'js',
        resolveDir: dirname(args.path)
      }
    })
  }
}

await mkdir(join(HERE, 'dist'), { recursive: true })
const result = await esbuild.build({
  entryPoints: [join(HERE, 'src', 'page.js')],
  outfile: join(HERE, 'dist', 'page.js'),
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  sourcemap: true,
  // transfer.mjs lives outside this package: resolve its imports from here
  nodePaths: [join(HERE, 'node_modules')],
  alias: {
    'node:crypto': join(HERE, 'src', 'shims', 'node-crypto.js'),
    'node:os': join(HERE, 'src', 'shims', 'node-os.js')
  },
  plugins: [bufferForTransfer],
  logLevel: 'warning',
  metafile: true
})
await copyFile(join(HERE, 'static', 'index.html'), join(HERE, 'dist', 'index.html'))
const bytes = Object.values(result.metafile.outputs).reduce((n, o) => n + o.bytes, 0)
process.stderr.write(`build.mjs: dist/page.js (${Math.round(bytes / 1024)} KiB with its source map)\n`)
