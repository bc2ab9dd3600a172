#!/usr/bin/env node
// Runs js-libp2p browser peers (dist/page.js, built by build.mjs) in headless
// Chromium driven by Playwright, against a relay, and prints one JSON object
// per line on stdout (the same conventions as interop/js's drivers):
//
//   {"event":"browser", version, user_agent}
//   {"event":"ready", page, peer_id, circuit_addrs, relay_conn_addr, reserve_ms}   per page
//   {"event":"transfer", page, ...}   a transfer a page served (inbound, hash-checked)
//   {"event":"result", page, ok, ...} a transfer a page dialed (--dial, --b2b)
//   {"event":"webrtc_result", page, try, ok, direct, setup_ms, remote_addr, ...}   per try (--b2b-webrtc)
//   {"event":"done"}                  then exit 0
//   {"event":"error", code, message}  then exit 2 (3 on timeout, 4 without Chromium)
//
// usage: driver.mjs --relay /ip4/127.0.0.1/tcp/P/ws/p2p/RELAY [--pages N]
//          [--dial CIRCUIT] [--b2b] [--inbound N] [--up BYTES] [--down BYTES]
//          [--b2b-webrtc [--tries N] [--upgrades N] [--bytes BYTES]]
//          [--timeout SECONDS] [--hold SECONDS] [--ignore-certificate-errors] [--chromium PATH]
//
//   --pages N      browser pages (tabs), each its own libp2p node reserving on
//                  the relay (default 1; --b2b needs 2)
//   --dial ADDR    page 0 dials ADDR (a /p2p-circuit address) and runs one transfer
//   --b2b          page 1 dials page 0 through the relay and runs one transfer
//   --b2b-webrtc   two pages with the WebRTC transport, listening on /webrtc; page 1 dials
//                  page 0 at <relay>/p2p-circuit/webrtc/p2p/<id> --tries times (default 10):
//                  signalling over the relay, then a direct WebRTC connection that carries one
//                  transfer of --bytes each way (default 16 MiB), then a hang-up; it stops
//                  early once --upgrades tries (default all) gave a working connection. Chromium runs
//                  with mDNS candidate obfuscation off (the host candidate is the address of
//                  the default-route interface: run it where there is one, e.g. a network
//                  namespace with a veth)
//   --inbound N    wait until page 0 has served N inbound transfers (before --dial, unless
//                  --b2b, and before "done")
//   --ignore-certificate-errors  accept the relay's self-signed certificate (wss tests)
import { createServer } from 'node:http'
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { dirname, extname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const HERE = dirname(fileURLToPath(import.meta.url))
const DIST = join(HERE, 'dist')

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
let browser = null
// Pages whose libp2p node may be running: stopped on the way out, so that the relay sees their
// connections close rather than vanish (a vanished WebRTC-direct peer keeps its reservation).
const openPages = []
let server = null
async function cleanup () {
  await Promise.race([
    Promise.allSettled(openPages.map(page => page.evaluate(() => window.macula?.stop()))),
    new Promise(resolve => setTimeout(resolve, 5000))
  ])
  await Promise.race([
    Promise.allSettled([browser?.close(), new Promise(resolve => server?.close(resolve) ?? resolve())]),
    new Promise(resolve => setTimeout(resolve, 5000))
  ])
}
async function fail (code, message, exitCode = 2, extra = {}) {
  emit({ event: 'error', code, message, ...extra })
  await cleanup()
  process.exit(exitCode)
}

const USAGE = 'usage: driver.mjs --relay MULTIADDR [--pages N] [--dial CIRCUIT] [--b2b] [--b2b-webrtc] [--tries N] [--upgrades N] [--bytes B] [--inbound N] [--up B] [--down B] [--timeout S] [--hold S] [--ignore-certificate-errors] [--chromium PATH]'
const args = { relay: null, pages: 1, dial: null, b2b: false, 'b2b-webrtc': false, tries: 10, upgrades: -1, bytes: 16 << 20, inbound: 0, up: 1 << 20, down: 1 << 20, timeout: 120, hold: 0, 'ignore-certificate-errors': false, chromium: process.env.CHROMIUM ?? '/usr/bin/chromium' }
const argv = process.argv.slice(2)
for (let i = 0; i < argv.length; i++) {
  const a = argv[i].replace(/^--/, '')
  if (a === 'b2b' || a === 'b2b-webrtc' || a === 'ignore-certificate-errors') { args[a] = true; continue }
  if (!(a in args) || i + 1 >= argv.length) await fail('BAD_ARGS', `bad argument ${argv[i]}\n${USAGE}`)
  const v = argv[++i]
  args[a] = typeof args[a] === 'number' ? Number(v) : v
}
if (args.relay == null) await fail('BAD_ARGS', `missing --relay\n${USAGE}`)
const webrtc = args['b2b-webrtc']
if ((args.b2b || webrtc) && args.pages < 2) args.pages = 2
if (args.upgrades === -1) args.upgrades = args.tries
for (const k of ['pages', 'inbound', 'up', 'down', 'timeout', 'hold', 'tries', 'upgrades', 'bytes']) {
  if (!Number.isSafeInteger(args[k]) || args[k] < 0) await fail('BAD_ARGS', `--${k}: not a non-negative integer`)
}
if (!existsSync(args.chromium)) await fail('NO_CHROMIUM', `${args.chromium} does not exist (Debian: apt-get install chromium)`, 4)
if (!existsSync(join(DIST, 'page.js'))) await fail('NOT_BUILT', `${join(DIST, 'page.js')} does not exist: run node build.mjs`)

const timer = setTimeout(() => fail('TIMEOUT', `the browser run did not finish within ${args.timeout} s`, 3), args.timeout * 1000)
process.on('SIGTERM', () => fail('KILLED', 'SIGTERM'))
process.on('SIGINT', () => fail('KILLED', 'SIGINT'))

// The page is served on 127.0.0.1 (a secure context, so WebCrypto works).
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.map': 'application/json' }
server = createServer(async (req, res) => {
  const name = new URL(req.url, 'http://x').pathname.replace(/^\/+/, '') || 'index.html'
  if (name.includes('..') || name.includes('/')) { res.writeHead(404).end(); return }
  try {
    const body = await readFile(join(DIST, name))
    res.writeHead(200, { 'content-type': TYPES[extname(name)] ?? 'application/octet-stream' }).end(body)
  } catch {
    res.writeHead(404).end()
  }
})
await new Promise((resolve, reject) => server.listen(0, '127.0.0.1', resolve).on('error', reject))
const origin = `http://127.0.0.1:${server.address().port}`

let chromium
try {
  ({ chromium } = await import('playwright-core'))
} catch (err) {
  await fail('NO_PLAYWRIGHT', `playwright-core is not installed: run npm ci in ${HERE} (${err.message})`)
}
try {
  browser = await chromium.launch({
    executablePath: args.chromium,
    headless: true,
    // As root in a container: no sandbox; and no calls home (this machine has no network).
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ...(args['ignore-certificate-errors'] ? ['--ignore-certificate-errors'] : []),
      // ICE host candidates as plain addresses, not mDNS names (nothing here resolves them)
      ...(webrtc ? ['--disable-features=WebRtcHideLocalIpsWithMdns'] : [])],
    timeout: 30000
  })
} catch (err) {
  await fail('BROWSER_LAUNCH', err.message.split('\n')[0], 2)
}
emit({ event: 'browser', version: browser.version() })

const context = await browser.newContext({ ignoreHTTPSErrors: args['ignore-certificate-errors'] })
const inbound = [] // per page: served transfers
const waiters = []
const pages = []
for (let i = 0; i < args.pages; i++) {
  const page = await context.newPage()
  inbound.push(0)
  page.on('console', msg => process.stderr.write(`[page ${i}] console.${msg.type()}: ${msg.text()}\n`))
  page.on('pageerror', err => process.stderr.write(`[page ${i}] pageerror: ${err.message}\n`))
  page.on('crash', () => fail('PAGE_CRASH', `page ${i} crashed`))
  // LIBP2P_DEBUG=<namespaces> turns on js-libp2p's debug log in the pages (on stderr)
  if (process.env.LIBP2P_DEBUG) await page.addInitScript((d) => localStorage.setItem('debug', d), process.env.LIBP2P_DEBUG)
  await page.exposeFunction('maculaEmit', (obj) => {
    emit({ ...obj, page: i })
    if (obj.event === 'transfer' || obj.event === 'transfer_error') {
      inbound[i]++
      for (const w of waiters.splice(0)) w()
    }
  })
  await page.goto(`${origin}/index.html`)
  await page.waitForFunction(() => window.macula?.ready === true, null, { timeout: 30000 })
  pages.push(page)
  openPages.push(page)
}

async function call (i, method, opts) {
  const r = await pages[i].evaluate(([m, o]) => window.macula[m](o), [method, opts])
  if (!r.ok) await fail(`${method.toUpperCase()}_FAILED`, `page ${i}: ${method}: ${r.error.message}`, 2, { page: i, name: r.error.name })
  return r.value
}

const ready = []
for (let i = 0; i < pages.length; i++) {
  const info = await call(i, 'start', { relay: args.relay, webrtc })
  ready.push(info)
  emit({ event: 'ready', page: i, ...info })
}

const timeoutMs = args.timeout * 1000
if (args.dial != null) {
  // Inbound transfers from other peers first, then the dial: one direction at a time, so that a
  // peer that is both the source of an inbound transfer and the target of --dial never has two
  // relayed connections to the page in flight at once (js-libp2p may close one of them, and the
  // other side's transfer with it: a race between the peers, not a test of the relay).
  if (!args.b2b) {
    while (inbound[0] < args.inbound) {
      await new Promise(resolve => waiters.push(resolve))
    }
  }
  const r = await call(0, 'dial', { target: args.dial, up: args.up, down: args.down, timeoutMs })
  emit({ event: 'result', page: 0, ...r })
}
if (args.b2b) {
  const target = ready[0].circuit_addrs.find(a => a.startsWith(args.relay)) ?? ready[0].circuit_addrs[0]
  const r = await call(1, 'dial', { target, up: args.up, down: args.down, timeoutMs })
  emit({ event: 'result', page: 1, ...r })
}
if (webrtc) {
  const target = ready[0].webrtc_addrs.find(a => a.startsWith(args.relay)) ?? ready[0].webrtc_addrs[0]
  let served = 0
  for (let t = 0; t < args.tries && served < args.upgrades; t++) {
    const r = await pages[1].evaluate(([o]) => window.macula.dialWebRTC(o), [{ target, up: args.bytes, down: args.bytes, timeoutMs }])
    const line = r.ok ? r.value : { ok: false, ...r.error }
    emit({ event: 'webrtc_result', page: 1, try: t, target, ...line })
    // page 0 reports the transfer it served (hash-checked) before the next try
    if (line.ok === true) {
      served++
      while (inbound[0] < served) await new Promise(resolve => waiters.push(resolve))
    }
  }
}
while (inbound[0] < args.inbound) {
  await new Promise(resolve => waiters.push(resolve))
}

// --hold: keep the pages (and their connections) as they are for a while before stopping
if (args.hold > 0) await new Promise(resolve => setTimeout(resolve, args.hold * 1000))
for (let i = 0; i < pages.length; i++) await call(i, 'stop')
clearTimeout(timer)
emit({ event: 'done' })
await cleanup()
process.exit(0)
