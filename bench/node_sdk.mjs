// Calls per second of `verifyToken` through the Node SDK (napi → Rust core)
// and through plain `fetch` (what the seed's hand-written code does), against
// the same real server (the test bed) in one run: a cheap error path (an
// unknown token) and the success path (tokens created beforehand through the
// real SMTP sink), and the error path against the test bed's API stand-in
// that does no work (each client's own cost per call). Prints calls/s and µs
// per call of each client, how many times fetch's time each takes, and the
// range of the SDK's ratio over the rounds. No timed assertions: compare the
// ratios, never absolute numbers across runs.
//
// Clients:
//   sdk          `client.verifyToken(token)`
//   fetch        the seed's code: `fetch` + JSON, the key in the body
//   fetch+key    the same with an `Idempotency-Key` of the form the SDK sends
//                on every call (so retries are safe; a ULID); the server
//                stores a record per key, a database write the seed's
//                requests never cause, so this row is the SDK's wire traffic
//                without the SDK
//   http+key     `node:http` with a keep-alive agent, plus the key
//   raw+key      the least a client on the event loop can do: one kept-alive
//                `node:net` socket per call in flight, the request written as
//                one pre-formatted string, the response framed by its
//                Content-Length and parsed as JSON; a floor for any
//                JavaScript client, not something to use
//
//   node bench/node_sdk.mjs            (after `npm run build` in bindings-node)
//
// Environment: MAGICAUTH_TESTBED (binary; default target/release if built,
// else target/debug), BENCH_CALLS (error-path calls per run, default 3000),
// BENCH_TOKENS (success-path tokens per run, default 3000), BENCH_CONCURRENCY
// (calls in flight, default "1,16").

import { randomBytes } from 'node:crypto'
import http from 'node:http'
import net from 'node:net'

import { Client, InvalidTokenError } from '../bindings-node/lib/index.mjs'
import { Testbed, testbedBinary } from '../bindings-node/test/support/testbed.mjs'

const CALLS = Number(process.env.BENCH_CALLS ?? 3000)
const TOKENS = Number(process.env.BENCH_TOKENS ?? 3000)
const CONCURRENCY = (process.env.BENCH_CONCURRENCY ?? '1,16').split(',').map(Number)
// The clients take turns in this many rounds, so that a change in the
// machine's speed during the run (disk sync time varies a lot here) hits all alike.
const ROUNDS = 5

const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'

/** An `Idempotency-Key` as the SDK makes them: a ULID (48 bits of milliseconds, then 80 random bits). */
function requestKey() {
  let key = ''
  for (let time = Date.now(), i = 0; i < 10; i++, time = Math.floor(time / 32)) key = CROCKFORD[time % 32] + key
  // 256 is a multiple of 32: each byte gives 5 uniform bits.
  for (const byte of randomBytes(16)) key += CROCKFORD[byte & 31]
  return key
}

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
    if (idempotent) headers['Idempotency-Key'] = requestKey()
    const response = await fetch(`${baseUrl}/verify-token`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ token, app_key: appKey }),
    })
    return /** @type {{success: boolean, code?: string}} */ (await response.json())
  }
}

/** @typedef {{success: boolean, code?: string}} Answer */

/**
 * `node:http` with a keep-alive agent, sending an `Idempotency-Key` as the
 * SDK does.
 * @param {string} baseUrl @param {string} appKey @param {http.Agent} agent
 */
function httpVerify(baseUrl, appKey, agent) {
  const url = new URL(`${baseUrl}/verify-token`)
  /** @param {string} token @returns {Promise<Answer>} */
  return (token) =>
    new Promise((resolve, reject) => {
      const body = JSON.stringify({ token, app_key: appKey })
      const headers = {
        'Content-Type': 'application/json',
        'Content-Length': Buffer.byteLength(body),
        'Idempotency-Key': requestKey(),
      }
      const request = http.request(url, { agent, method: 'POST', headers }, (response) => {
        let text = ''
        response.setEncoding('utf8')
        response.on('data', (chunk) => {
          text += chunk
        })
        response.on('end', () => resolve(JSON.parse(text)))
        response.on('error', reject)
      })
      request.on('error', reject)
      request.end(body)
    })
}

/**
 * One kept-alive connection that carries one request at a time: writes it
 * as given and reads a response framed by its Content-Length (every answer
 * of the server and the stand-in has one; anything else fails the call).
 */
class RawConnection {
  /** @type {net.Socket} */ #socket
  #buffer = Buffer.alloc(0)
  /** @type {{resolve: (body: string) => void, reject: (error: Error) => void} | null} */ #waiting = null

  /** @param {URL} url */
  constructor(url) {
    this.#socket = net.connect({ host: url.hostname, port: Number(url.port), noDelay: true })
    this.#socket.on('data', (chunk) => {
      this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk])
      this.#answer()
    })
    const fail = (/** @type {Error} */ error) => {
      const waiting = this.#waiting
      this.#waiting = null
      waiting?.reject(error)
    }
    this.#socket.on('error', fail)
    this.#socket.on('close', () => fail(new Error('the connection closed')))
  }

  /** @param {string} request @returns {Promise<string>} the response body */
  send(request) {
    return new Promise((resolve, reject) => {
      this.#waiting = { resolve, reject }
      this.#socket.write(request)
    })
  }

  #answer() {
    const end = this.#buffer.indexOf('\r\n\r\n')
    if (end < 0 || this.#waiting === null) return
    const length = /\r\ncontent-length: *(\d+)/i.exec(this.#buffer.toString('latin1', 0, end))
    if (length === null) {
      this.#socket.destroy(new Error('a response without Content-Length'))
      return
    }
    const bodyEnd = end + 4 + Number(length[1])
    if (this.#buffer.length < bodyEnd) return
    const body = this.#buffer.toString('utf8', end + 4, bodyEnd)
    this.#buffer = this.#buffer.subarray(bodyEnd)
    const waiting = this.#waiting
    this.#waiting = null
    waiting.resolve(body)
  }

  close() {
    this.#socket.destroy()
  }
}

/**
 * The raw client: a pre-formatted HTTP/1.1 request with an
 * `Idempotency-Key`, on an idle connection of its own pool.
 * @param {string} baseUrl @param {string} appKey @param {RawConnection[]} opened every connection made, to close
 */
function rawVerify(baseUrl, appKey, opened) {
  const url = new URL(`${baseUrl}/verify-token`)
  const head = `POST ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\nContent-Type: application/json\r\n`
  /** @type {RawConnection[]} */
  const idle = []
  /** @param {string} token @returns {Promise<Answer>} */
  return async (token) => {
    const body = JSON.stringify({ token, app_key: appKey })
    const request = `${head}Idempotency-Key: ${requestKey()}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
    let connection = idle.pop()
    if (connection === undefined) {
      connection = new RawConnection(url)
      opened.push(connection)
    }
    const answer = JSON.parse(await connection.send(request))
    idle.push(connection)
    return answer
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

/** @typedef {'sdk' | 'fetch' | 'fetchKey' | 'httpKey' | 'rawKey'} Name */

/** @type {Record<Name, string>} */
const LABELS = { sdk: 'sdk', fetch: 'fetch', fetchKey: 'fetch+key', httpKey: 'http+key', rawKey: 'raw+key' }

/**
 * Prints a case: per client, calls/s, µs per call and fetch's time over its
 * own (how many times fetch's speed it has); for the SDK also the lowest and
 * highest ratio of a single round (how much the machine's speed moved during
 * the run).
 * @param {string} path @param {number} concurrency @param {number} n
 * @param {{total: Record<Name, number>, rounds: Record<Name, number>[]}} result
 */
function report(path, concurrency, n, { total, rounds }) {
  const perRound = rounds.map((r) => r.fetch / r.sdk)
  console.log(`${path}, c=${concurrency}, n=${n}`)
  for (const name of /** @type {Name[]} */ (Object.keys(total))) {
    const seconds = total[name]
    const spread =
      name === 'sdk' ? ` (rounds ${Math.min(...perRound).toFixed(2)}-${Math.max(...perRound).toFixed(2)}x)` : ''
    console.log(
      `  ${LABELS[name].padEnd(10)} ${(n / seconds).toFixed(0).padStart(6)} calls/s ` +
        `${((seconds / n) * 1e6).toFixed(0).padStart(5)} µs/call ` +
        `${(total.fetch / seconds).toFixed(2).padStart(6)}x fetch${spread}`,
    )
  }
}

const binary = testbedBinary({ prefer: ['release', 'debug'] })
console.log(`test bed: ${binary}`)
console.log(`node ${process.version}, ${CALLS} error-path calls, ${TOKENS} tokens per success run, concurrency ${CONCURRENCY.join(', ')}`)
const testbed = await Testbed.start({ binary })
const agent = new http.Agent({ keepAlive: true })
/** @type {RawConnection[]} */
const rawConnections = []
try {
  const { app_key: appKey } = await testbed.createApp('--name', 'Node bench', '--plan', 'custom', '--burst', '1000000')
  const client = new Client({ appKey, baseUrl: testbed.baseUrl })
  /** @param {string} baseUrl */
  const plainClients = (baseUrl) => ({
    fetch: seedVerify(baseUrl, appKey, false),
    fetchKey: seedVerify(baseUrl, appKey, true),
    httpKey: httpVerify(baseUrl, appKey, agent),
    rawKey: rawVerify(baseUrl, appKey, rawConnections),
  })

  // The error path against the real server, then against the test bed's API
  // stand-in, which answers every call at once with the same error and does
  // no work: each client's own cost per call, with the server's taken out.
  for (const [path, baseUrl] of [
    ['error (invalid_token)', testbed.baseUrl],
    ['client-only (stand-in)', testbed.nullBaseUrl],
  ]) {
    const sdk = new Client({ appKey, baseUrl })
    const plain = plainClients(baseUrl)
    // Warm up every client: connections, JIT, the server's caches.
    for (let i = 0; i < 200; i++) {
      await sdk.verifyToken(`warm-up-${i}`).catch(() => {})
      for (const verify of Object.values(plain)) await verify(`warm-up-${i}`)
    }
    /** @param {(token: string) => Promise<Answer>} verify @returns {(i: number) => Promise<void>} */
    const refused = (verify) => async (i) => {
      const body = await verify(`unknown-token-${i}`)
      if (body.success || body.code !== 'invalid_token') throw new Error(`unexpected ${JSON.stringify(body)}`)
    }
    for (const concurrency of CONCURRENCY) {
      const result = await race(CALLS, concurrency, {
        sdk: async (/** @type {number} */ i) => {
          try {
            await sdk.verifyToken(`unknown-token-${i}`)
            throw new Error('an unknown token was accepted')
          } catch (error) {
            if (!(error instanceof InvalidTokenError)) throw error
          }
        },
        fetch: refused(plain.fetch),
        fetchKey: refused(plain.fetchKey),
        httpKey: refused(plain.httpKey),
        rawKey: refused(plain.rawKey),
      })
      report(path, concurrency, CALLS, result)
    }
  }

  const plain = plainClients(testbed.baseUrl)
  for (const concurrency of CONCURRENCY) {
    /** @type {Record<Name, string[]>} */
    const tokens = { sdk: [], fetch: [], fetchKey: [], httpKey: [], rawKey: [] }
    for (const name of /** @type {Name[]} */ (Object.keys(tokens))) {
      tokens[name] = await createTokens(testbed, client, `${name}-c${concurrency}`, TOKENS)
    }
    /** @param {(token: string) => Promise<Answer>} verify @param {string[]} list @returns {(i: number) => Promise<void>} */
    const verified = (verify, list) => async (i) => {
      const body = await verify(list[i])
      if (!body.success) throw new Error(`unexpected ${JSON.stringify(body)}`)
    }
    const result = await race(TOKENS, concurrency, {
      sdk: async (/** @type {number} */ i) => {
        const verification = await client.verifyToken(tokens.sdk[i])
        if (!(verification.user.lastLoginAt instanceof Date)) throw new Error('no Date')
      },
      fetch: verified(plain.fetch, tokens.fetch),
      fetchKey: verified(plain.fetchKey, tokens.fetchKey),
      httpKey: verified(plain.httpKey, tokens.httpKey),
      rawKey: verified(plain.rawKey, tokens.rawKey),
    })
    report('success (new token)', concurrency, TOKENS, result)
  }
} finally {
  for (const connection of rawConnections) connection.close()
  agent.destroy()
  await testbed.close()
}
