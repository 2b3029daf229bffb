// Calls per second of `verifyToken` through the Node SDK (napi → Rust core)
// and through plain `fetch` (what the seed's hand-written code does), against
// the same real server (the test bed) in one run: a cheap error path (an
// unknown token) and the success path (tokens created beforehand through the
// real SMTP sink), and the error path against the test bed's API stand-in
// that does no work (each client's own cost per call). Prints calls/s, µs per
// call and the SDK/fetch ratio, with its range over the rounds. No timed
// assertions: compare the ratios, never absolute numbers across runs.
//
// The SDK sends an `Idempotency-Key` with every call (so retries are safe);
// the server stores it, which costs it a database write the seed's requests
// never cause. A third column, fetch + the same header, shows what the SDK's
// own overhead is on the same wire traffic.
//
//   node bench/node_sdk.mjs            (after `npm run build` in bindings-node)
//
// Environment: MAGICAUTH_TESTBED (binary; default target/release if built,
// else target/debug), BENCH_CALLS (error-path calls per run, default 3000),
// BENCH_TOKENS (success-path tokens per run, default 3000), BENCH_CONCURRENCY
// (calls in flight, default "1,16").

import { randomUUID } from 'node:crypto'

import { Client, InvalidTokenError } from '../bindings-node/lib/index.mjs'
import { Testbed, testbedBinary } from '../bindings-node/test/support/testbed.mjs'

const CALLS = Number(process.env.BENCH_CALLS ?? 3000)
const TOKENS = Number(process.env.BENCH_TOKENS ?? 3000)
const CONCURRENCY = (process.env.BENCH_CONCURRENCY ?? '1,16').split(',').map(Number)
// The three clients take turns in this many rounds, so that a change in the
// machine's speed during the run (disk sync time varies a lot here) hits all alike.
const ROUNDS = 5

/**
 * Runs `call(i)` for i in [from, to) with `concurrency` calls in flight; resolves to seconds taken.
 * @param {number} from @param {number} to @param {number} concurrency @param {(i: number) => Promise<void>} call
 */
async function timed(from, to, concurrency, call) {
  let next = from
  const start = process.hrtime.bigint()
  await Promise.all(
    Array.from({ length: Math.min(concurrency, to - from) }, async () => {
      while (next < to) await call(next++)
    }),
  )
  return Number(process.hrtime.bigint() - start) / 1e9
}

/**
 * Seconds each of `calls` takes for n calls in all, taking turns in rounds,
 * in all and per round.
 * @template {string} K
 * @param {number} n @param {number} concurrency @param {Record<K, (i: number) => Promise<void>>} calls
 * @returns {Promise<{total: Record<K, number>, rounds: Record<K, number>[]}>}
 */
async function race(n, concurrency, calls) {
  const keys = /** @type {K[]} */ (Object.keys(calls))
  const total = /** @type {Record<K, number>} */ (Object.fromEntries(keys.map((k) => [k, 0])))
  const rounds = []
  for (let round = 0; round < ROUNDS; round++) {
    const from = Math.floor((n * round) / ROUNDS)
    const to = Math.floor((n * (round + 1)) / ROUNDS)
    const secs = /** @type {Record<K, number>} */ ({})
    for (const key of keys) {
      secs[key] = await timed(from, to, concurrency, calls[key])
      total[key] += secs[key]
    }
    rounds.push(secs)
  }
  return { total, rounds }
}

/**
 * The seed's code: fetch + JSON, with the key in the body; with `idempotent`,
 * plus an `Idempotency-Key` as the SDK sends.
 * @param {string} baseUrl @param {string} appKey @param {boolean} idempotent
 */
function seedVerify(baseUrl, appKey, idempotent) {
  /** @param {string} token */
  return async (token) => {
    /** @type {Record<string, string>} */
    const headers = { 'Content-Type': 'application/json' }
    if (idempotent) headers['Idempotency-Key'] = randomUUID()
    const response = await fetch(`${baseUrl}/verify-token`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ token, app_key: appKey }),
    })
    return /** @type {{success: boolean, code?: string}} */ (await response.json())
  }
}

/** @param {Testbed} testbed @param {Client} client @param {string} tag @param {number} n */
async function createTokens(testbed, client, tag, n) {
  const emails = Array.from({ length: n }, (_, i) => `bench-${tag}-${i}@example.com`)
  for (let i = 0; i < n; i += 50) await Promise.all(emails.slice(i, i + 50).map((e) => client.sendLink(e)))
  const tokens = []
  for (let i = 0; i < n; i += 50) {
    const mails = await Promise.all(emails.slice(i, i + 50).map((e) => testbed.mail(e, 1, 60_000)))
    tokens.push(...mails.map((m) => /** @type {string} */ (m.token)))
  }
  return tokens
}

/**
 * Prints one line: each client's calls/s and µs per call, the SDK's ratios,
 * and the lowest and highest SDK/fetch ratio of a single round (how much the
 * machine's speed moved during the run).
 * @param {string} path @param {number} concurrency @param {number} n
 * @param {{total: {sdk: number, fetch: number, fetchIdem: number}, rounds: {sdk: number, fetch: number}[]}} result
 */
function report(path, concurrency, n, { total, rounds }) {
  const rate = (/** @type {number} */ s) => (n / s).toFixed(0).padStart(6)
  const us = (/** @type {number} */ s) => ((s / n) * 1e6).toFixed(0).padStart(5)
  const cell = (/** @type {number} */ s) => `${rate(s)} calls/s ${us(s)} µs/call`
  const perRound = rounds.map((r) => r.fetch / r.sdk)
  console.log(
    `${path.padEnd(22)} c=${String(concurrency).padEnd(3)} n=${String(n).padEnd(5)}| ` +
      `sdk ${cell(total.sdk)} | fetch ${cell(total.fetch)} | fetch+idem ${cell(total.fetchIdem)} | ` +
      `sdk/fetch ${(total.fetch / total.sdk).toFixed(2)}x, sdk/fetch+idem ${(total.fetchIdem / total.sdk).toFixed(2)}x ` +
      `(rounds ${Math.min(...perRound).toFixed(2)}-${Math.max(...perRound).toFixed(2)}x)`,
  )
}

const binary = testbedBinary({ prefer: ['release', 'debug'] })
console.log(`test bed: ${binary}`)
console.log(`node ${process.version}, ${CALLS} error-path calls, ${TOKENS} tokens per success run, concurrency ${CONCURRENCY.join(', ')}`)
const testbed = await Testbed.start({ binary })
try {
  const { app_key: appKey } = await testbed.createApp('--name', 'Node bench', '--plan', 'custom', '--burst', '1000000')
  const client = new Client({ appKey, baseUrl: testbed.baseUrl })
  const viaFetch = seedVerify(testbed.baseUrl, appKey, false)
  const viaFetchIdem = seedVerify(testbed.baseUrl, appKey, true)

  // The error path against the real server, then against the test bed's API
  // stand-in, which answers every call at once with the same error and does
  // no work: each client's own cost per call, with the server's taken out.
  for (const [path, baseUrl] of [
    ['error (invalid_token)', testbed.baseUrl],
    ['client-only (stand-in)', testbed.nullBaseUrl],
  ]) {
    const sdk = new Client({ appKey, baseUrl })
    const plain = seedVerify(baseUrl, appKey, false)
    const keyed = seedVerify(baseUrl, appKey, true)
    // Warm up all three: connections, JIT, the server's caches.
    for (let i = 0; i < 200; i++) {
      await sdk.verifyToken(`warm-up-${i}`).catch(() => {})
      await plain(`warm-up-${i}`)
      await keyed(`warm-up-${i}`)
    }
    for (const concurrency of CONCURRENCY) {
      /** @param {typeof viaFetch} verify @returns {(i: number) => Promise<void>} */
      const fetchCall = (verify) => async (i) => {
        const body = await verify(`unknown-token-${i}`)
        if (body.success || body.code !== 'invalid_token') throw new Error(`unexpected ${JSON.stringify(body)}`)
      }
      const result = await race(CALLS, concurrency, {
        sdk: async (i) => {
          try {
            await sdk.verifyToken(`unknown-token-${i}`)
            throw new Error('an unknown token was accepted')
          } catch (error) {
            if (!(error instanceof InvalidTokenError)) throw error
          }
        },
        fetch: fetchCall(plain),
        fetchIdem: fetchCall(keyed),
      })
      report(path, concurrency, CALLS, result)
    }
  }

  for (const concurrency of CONCURRENCY) {
    const sdkTokens = await createTokens(testbed, client, `sdk-c${concurrency}`, TOKENS)
    const fetchTokens = await createTokens(testbed, client, `fetch-c${concurrency}`, TOKENS)
    const fetchIdemTokens = await createTokens(testbed, client, `fetch-idem-c${concurrency}`, TOKENS)
    /** @param {typeof viaFetch} verify @param {string[]} tokens @returns {(i: number) => Promise<void>} */
    const fetchCall = (verify, tokens) => async (i) => {
      const body = await verify(tokens[i])
      if (!body.success) throw new Error(`unexpected ${JSON.stringify(body)}`)
    }
    const result = await race(TOKENS, concurrency, {
      sdk: async (i) => {
        const verification = await client.verifyToken(sdkTokens[i])
        if (!(verification.user.lastLoginAt instanceof Date)) throw new Error('no Date')
      },
      fetch: fetchCall(viaFetch, fetchTokens),
      fetchIdem: fetchCall(viaFetchIdem, fetchIdemTokens),
    })
    report('success (new token)', concurrency, TOKENS, result)
  }
} finally {
  await testbed.close()
}
