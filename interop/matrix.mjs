#!/usr/bin/env node
// Rewrites the interop matrix in interop/README.md (between the two marker
// comments) from the result rows the Rust interop tests append to
// <results dir>/*.jsonl (see tests/common/interop.rs). scripts/test.sh runs it
// after `cargo test`. Plain Node (>= 18), no dependencies.
//
//   node interop/matrix.mjs [--results target/interop-results] [--readme interop/README.md]
//                           [--cargo-status N] [--suites interop_js,interop_py,...] [--check]
//
// --cargo-status: exit status of the `cargo test` run, shown in the matrix
// when it is not 0. --check: print the section instead of writing it.
// --suites: the suites this run was meant to produce (default: all of
// EXPECTED below); their rows are expected, others are shown if present.
//
// The matrix names the commit it was produced from (`git rev-parse --short
// HEAD`) and whether the working tree had changes (`git status --porcelain`,
// not counting the README being rewritten). Every row of EXPECTED that the
// run did not write is shown as missing, and then this script exits 1 (after
// writing or printing the matrix): a test that panicked before creating its
// row, was killed, or did not run leaves no row, and that must not pass for a
// complete matrix.
import { execFileSync } from 'node:child_process'
import { readFileSync, readdirSync, writeFileSync, existsSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const HERE = dirname(fileURLToPath(import.meta.url))
const ROOT = resolve(HERE, '..')
const START = '<!-- interop-matrix:start -->'
const END = '<!-- interop-matrix:end -->'

// The rows each suite writes (the `id` of every `Row::new` in its test file), in
// matrix order. A new scenario adds its id here; a row written but not listed
// is shown, with a warning.
const EXPECTED = {
  interop_js: {
    file: 'tests/interop_js.rs',
    ids: ['js-01', 'js-02', 'js-03', 'js-04', 'js-05', 'js-06', 'js-07', 'js-08', 'js-09', 'js-10',
      'mix-01', 'mix-02', 'mix-03', 'mix-04']
  },
  interop_py: {
    file: 'tests/interop_py.rs',
    ids: ['py-01', 'py-02', 'py-03', 'py-04',
      'pymix-01', 'pymix-02', 'pymix-03', 'pymix-04', 'pymix-05', 'pymix-06', 'pymix-07', 'pymix-08']
  },
  registry_js: { file: 'tests/interop_registry_js.rs', ids: ['regjs-01', 'regjs-02'] },
  dcutr: { file: 'tests/dcutr.rs', ids: ['dcutr-01'] },
  browser: { file: 'tests/browser.rs', ids: ['br-01', 'br-02', 'br-03', 'br-04', 'br-05', 'br-06', 'br-07'] },
  browser_webrtc: { file: 'tests/browser_webrtc.rs', ids: ['bw-01', 'bw-02'] },
  webrtc_direct: { file: 'tests/browser_webrtc_direct.rs', ids: ['wd-01', 'wd-02', 'wd-03', 'wd-04', 'wd-05'] }
}
// Suites in the order they appear.
const SUITES = Object.keys(EXPECTED)
const RESULT = {
  pass: '✅ pass',
  xfail: '⚠️ xfail (upstream)',
  fail: '❌ fail',
  skip: '➖ skipped',
  missing: '❌ missing (no result written: the test panicked before writing its row or did not run)'
}

const args = {
  results: resolve(ROOT, 'target', 'interop-results'),
  readme: join(HERE, 'README.md'),
  'cargo-status': '0',
  suites: SUITES.join(','),
  check: false
}
const argv = process.argv.slice(2)
for (let i = 0; i < argv.length; i++) {
  const a = argv[i].replace(/^--/, '')
  if (a === 'check') { args.check = true; continue }
  if (!(a in args) || i + 1 >= argv.length) {
    console.error(`usage: matrix.mjs [--results DIR] [--readme FILE] [--cargo-status N] [--suites A,B] [--check] (bad argument ${argv[i]})`)
    process.exit(2)
  }
  args[a] = argv[++i]
}
const wanted = args.suites.split(',').map(s => s.trim()).filter(Boolean)
const unknown = wanted.filter(s => !(s in EXPECTED))
if (unknown.length > 0) {
  console.error(`matrix.mjs: --suites: unknown suite(s) ${unknown.join(', ')} (known: ${SUITES.join(', ')})`)
  process.exit(2)
}

if (!existsSync(args.results)) {
  console.error(`matrix.mjs: no results directory ${args.results}: run the interop tests first (bash scripts/test.sh)`)
  process.exit(1)
}

// Last row wins for a repeated (suite, id).
const rows = new Map()
for (const file of readdirSync(args.results).filter(f => f.endsWith('.jsonl')).sort()) {
  const lines = readFileSync(join(args.results, file), 'utf8').split('\n').filter(l => l.trim() !== '')
  for (const line of lines) {
    let row
    try { row = JSON.parse(line) } catch (e) {
      console.error(`matrix.mjs: ${file}: bad line ${line.slice(0, 80)}: ${e.message}`)
      process.exit(1)
    }
    rows.set(`${row.suite}\u0000${row.id}`, row)
  }
}
if (rows.size === 0) {
  console.error(`matrix.mjs: no result rows in ${args.results}`)
  process.exit(1)
}

// Expected rows the run did not write.
const missingRows = []
for (const suite of wanted) {
  for (const id of EXPECTED[suite].ids) {
    if (!rows.has(`${suite}\u0000${id}`)) {
      const row = { suite, id, implementation: '—', version: '—', scenario: `\`${id}\` (${EXPECTED[suite].file})`, result: 'missing', note: '' }
      missingRows.push(row)
      rows.set(`${suite}\u0000${id}`, row)
    }
  }
}
const unlisted = [...rows.values()].filter(r => !(EXPECTED[r.suite]?.ids ?? []).includes(r.id))

// The commit the matrix comes from, and whether the tree had other changes.
function git (...a) {
  // not trimmed at the start: a porcelain line begins with its status column, maybe a space
  return execFileSync('git', a, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trimEnd()
}
let source
try {
  const commit = git('rev-parse', '--short', 'HEAD')
  const readme = relative(ROOT, resolve(args.readme)).split('\\').join('/')
  const changed = git('status', '--porcelain', '--untracked-files=normal').split('\n').filter(Boolean)
    .map(l => l.slice(3).split(' -> ').pop().replace(/^"|"$/g, ''))
    .filter(p => p !== readme)
  source = { commit, dirty: changed.length > 0, changed }
} catch (e) {
  source = { commit: null, dirty: null, changed: [] }
}

const idRank = new Map(SUITES.flatMap(s => EXPECTED[s].ids.map((id, i) => [`${s}\u0000${id}`, i])))
const suiteRank = s => { const i = SUITES.indexOf(s); return i < 0 ? SUITES.length : i }
const collator = new Intl.Collator('en', { numeric: true })
const sorted = [...rows.values()].sort((a, b) =>
  suiteRank(a.suite) - suiteRank(b.suite) || collator.compare(a.suite, b.suite) ||
  (idRank.get(`${a.suite}\u0000${a.id}`) ?? Infinity) - (idRank.get(`${b.suite}\u0000${b.id}`) ?? Infinity) ||
  collator.compare(a.id, b.id))

const cell = s => String(s ?? '').replace(/\|/g, '\\|').replace(/\n/g, ' ')
const counts = {}
for (const r of sorted) counts[r.result] = (counts[r.result] ?? 0) + 1
const retried = sorted.filter(r => r.retried != null)
const noResults = wanted.filter(s => ![...rows.values()].some(r => r.suite === s && r.result !== 'missing'))
const relays = [...new Set(sorted.filter(r => r.relay != null).map(r => r.relay))]
const components = [...new Set(sorted.flatMap(r => r.components ?? []))].sort(collator.compare)

const resultCell = r => (RESULT[r.result] ?? r.result) + (r.retried != null ? ' (retried)' : '')
const noteCell = r => r.retried != null
  ? `**Ran twice: the first attempt failed:** ${r.retried.first_failure}. Second attempt: ${r.note}`
  : r.note

const out = []
out.push(START)
out.push('<!-- Generated by interop/matrix.mjs from the rows the interop tests wrote; do not edit by hand. -->')
out.push('')
out.push(`Relay under test: **${relays.join(', ')}**, the example relay peer (\`target/debug/examples/relay_node\`) as its own process on 127.0.0.1, except where a scenario says "in-process".`)
out.push('')
if (source.commit == null) {
  out.push('Produced from: **unknown commit** (not a git checkout, or git missing).')
} else if (source.dirty) {
  const shown = source.changed.slice(0, 8).map(p => `\`${p}\``).join(', ') + (source.changed.length > 8 ? `, and ${source.changed.length - 8} more` : '')
  out.push(`Produced from commit \`${source.commit}\` **with uncommitted changes** (${shown}): the results may not match that commit.`)
} else {
  out.push(`Produced from commit \`${source.commit}\` (clean working tree).`)
}
out.push('')
const summary = Object.entries(counts).sort().map(([k, v]) => `${v} ${k}`).join(', ')
out.push(`Last run: ${sorted.length} scenarios: ${summary}.` +
  (retried.length > 0 ? ` ${retried.length} of them ran twice (see the note).` : '') +
  (args['cargo-status'] !== '0' ? ` **\`cargo test\` exited with status ${args['cargo-status']}.**` : '') +
  (missingRows.length > 0 ? ` **${missingRows.length} expected row(s) missing: ${missingRows.map(r => r.id).join(', ')}.**` : '') +
  (noResults.length > 0 ? ` **No results from: ${noResults.join(', ')}.**` : ''))
out.push('')
out.push('| ID | Implementation | Version | Scenario | Result | Note |')
out.push('|---|---|---|---|---|---|')
for (const r of sorted) {
  out.push(`| ${cell(r.id)} | ${cell(r.implementation)} | ${cell(r.version)} | ${cell(r.scenario)} | ${cell(resultCell(r))} | ${cell(noteCell(r))} |`)
}
out.push('')
out.push('Versions, as installed for the run (package-lock / venv / Cargo.lock):')
out.push('')
for (const c of components) out.push(`- ${c}`)
out.push(END)
const section = out.join('\n')

function finish () {
  if (unlisted.length > 0) {
    console.error(`matrix.mjs: warning: rows not in EXPECTED (add them to interop/matrix.mjs): ${unlisted.map(r => `${r.suite}/${r.id}`).join(', ')}`)
  }
  if (missingRows.length > 0) {
    console.error(`matrix.mjs: error: ${missingRows.length} expected row(s) missing (no result written): ${missingRows.map(r => `${r.suite}/${r.id}`).join(', ')}`)
    process.exit(1)
  }
}

if (args.check) {
  console.log(section)
  finish()
  process.exit(0)
}
const readme = readFileSync(args.readme, 'utf8')
const a = readme.indexOf(START)
const b = readme.indexOf(END)
if (a < 0 || b < a) {
  console.error(`matrix.mjs: ${args.readme} lacks the markers ${START} ... ${END}`)
  process.exit(1)
}
const next = readme.slice(0, a) + section + readme.slice(b + END.length)
if (next !== readme) writeFileSync(args.readme, next)
console.log(`matrix.mjs: ${args.readme}: ${sorted.length} rows (${summary})${next === readme ? ', unchanged' : ''}; commit ${source.commit ?? 'unknown'}${source.dirty ? ' (dirty)' : ''}`)
finish()
