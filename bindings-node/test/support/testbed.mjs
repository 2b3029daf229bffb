// Starts the MagicAuth test bed (the real server on loopback with a real SMTP
// sink) and talks to its control API. Shared by the SDK suite, the benchmark
// and the Express example's tests.

import { spawn } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..')

const START_TIMEOUT_MS = 30_000
const STOP_TIMEOUT_MS = 10_000

/**
 * The test bed binary: `MAGICAUTH_TESTBED`, else the first built one under
 * target/ (`prefer` orders the profiles: `['debug', 'release']` by default).
 * @param {{prefer?: string[]}} [options]
 */
export function testbedBinary({ prefer = ['debug', 'release'] } = {}) {
  const explicit = process.env.MAGICAUTH_TESTBED
  if (explicit) return explicit
  const target = join(REPO, 'target')
  const dirs = [...prefer.map((p) => join(target, p))]
  // Cross-style layouts: target/<triple>/<profile>/.
  if (existsSync(target)) {
    for (const entry of readdirSync(target, { withFileTypes: true })) {
      if (entry.isDirectory() && entry.name.includes('-')) dirs.push(...prefer.map((p) => join(target, entry.name, p)))
    }
  }
  for (const dir of dirs) {
    const candidate = join(dir, 'magicauth-testbed')
    if (existsSync(candidate)) return candidate
  }
  throw new Error('magicauth-testbed is not built: run `cargo build -p magicauth-testbed` or set MAGICAUTH_TESTBED')
}

export class Testbed {
  /** @type {import('node:child_process').ChildProcess} */
  #process
  /** @type {string} */ baseUrl
  /** @type {string} */ serverUrl
  /** @type {string} */ controlUrl
  /** An API stand-in that refuses every call at once (for benchmarks). @type {string} */ nullBaseUrl

  /** @param {import('node:child_process').ChildProcess} child @param {any} info */
  constructor(child, info) {
    this.#process = child
    this.baseUrl = info.base_url
    this.serverUrl = info.server_url
    this.controlUrl = info.control_url
    this.nullBaseUrl = info.null_base_url
  }

  /**
   * Starts a test bed; it exits when its stdin closes (see `close`), so it
   * never outlives this process.
   * @param {{binary?: string}} [options]
   */
  static async start({ binary = testbedBinary() } = {}) {
    // The SDK under test must not pick up a developer's real configuration.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MAGICAUTH_')))
    const child = spawn(binary, ['--exit-on-stdin-eof'], { env, stdio: ['pipe', 'pipe', 'inherit'] })
    const lines = createInterface({ input: /** @type {import('node:stream').Readable} */ (child.stdout) })
    try {
      const line = await new Promise((resolveLine, reject) => {
        const timer = setTimeout(() => reject(new Error('the test bed did not start in time')), START_TIMEOUT_MS)
        lines.once('line', (l) => {
          clearTimeout(timer)
          resolveLine(l)
        })
        child.once('error', (e) => {
          clearTimeout(timer)
          reject(e)
        })
        child.once('exit', (code) => {
          clearTimeout(timer)
          reject(new Error(`the test bed exited (${code}) before it was ready`))
        })
      })
      lines.close()
      return new Testbed(child, JSON.parse(line))
    } catch (error) {
      child.kill('SIGKILL')
      throw error
    }
  }

  /** Closes the test bed's stdin, waits for it to exit, kills it if it does not. */
  async close() {
    const child = this.#process
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise((r) => child.once('exit', r))
    child.stdin?.end()
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS)
    await exited
    clearTimeout(timer)
  }

  async [Symbol.asyncDispose]() {
    await this.close()
  }

  /**
   * @param {string} method
   * @param {string} path
   * @param {unknown} [body]
   * @param {number} [timeoutMs]
   */
  async #call(method, path, body, timeoutMs = 30_000) {
    const response = await fetch(this.controlUrl + path, {
      method,
      headers: { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    })
    const text = await response.text()
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`)
    return JSON.parse(text)
  }

  /**
   * `apps create` with `args`; resolves to `{app_id, app_key}`.
   * @param {string[]} args
   * @returns {Promise<{app_id: string, app_key: string}>}
   */
  createApp(...args) {
    return this.#call('POST', '/apps', { args })
  }

  /**
   * An `apps` subcommand; resolves to its stdout.
   * @param {string[]} args
   * @returns {Promise<string>}
   */
  async cli(...args) {
    return (await this.#call('POST', '/cli', { args })).stdout
  }

  /**
   * The newest email to `to` once `count` have arrived.
   * @param {string} to
   * @param {number} [count]
   * @param {number} [timeoutMs]
   * @returns {Promise<{to: string[], subject: string | null, text: string | null, html: string | null, link: string | null, token: string | null}>}
   */
  async mail(to, count = 1, timeoutMs = 15_000) {
    const query = new URLSearchParams({ to, min_count: String(count), timeout_ms: String(timeoutMs) })
    return (await this.#call('GET', `/mail?${query}`, undefined, timeoutMs + 5_000)).mail
  }

  /** @param {number} seconds */
  async advanceClock(seconds) {
    await this.#call('POST', '/clock', { advance_seconds: seconds })
  }

  /** @param {boolean} up */
  async setSmtp(up) {
    await this.#call('POST', '/smtp', { up })
  }
}
