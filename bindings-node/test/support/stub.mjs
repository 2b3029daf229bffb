// A tiny HTTP server on loopback that answers what a test tells it to, for
// responses the real server cannot easily be made to give (a proxy's HTML
// 502, an internal error, a request that never gets an answer).

import { createServer } from 'node:http'

/**
 * @typedef {{status: number, body?: string | object, headers?: Record<string, string>, hold?: boolean}} Reply
 * @typedef {{method: string, url: string, headers: import('node:http').IncomingHttpHeaders, body: string}} Seen
 */

export class Stub {
  #server = createServer((request, response) => this.#handle(request, response))
  /** @type {Reply[]} */
  #replies = []
  /** @type {Seen[]} */
  requests = []
  /** @type {import('node:http').ServerResponse[]} */
  #held = []
  /** @type {((seen: Seen) => void)[]} */
  #waiters = []
  baseUrl = ''

  static async start() {
    const stub = new Stub()
    await stub.#listen()
    return stub
  }

  /** @param {import('node:http').IncomingMessage} request @param {import('node:http').ServerResponse} response */
  #handle(request, response) {
    const chunks = /** @type {Buffer[]} */ ([])
    request.on('data', (c) => chunks.push(c))
    request.on('end', () => {
      const seen = { method: request.method ?? '', url: request.url ?? '', headers: request.headers, body: Buffer.concat(chunks).toString() }
      this.requests.push(seen)
      for (const waiter of this.#waiters.splice(0)) waiter(seen)
      const reply = this.#replies.length > 1 ? this.#replies.shift() : this.#replies[0]
      if (!reply) {
        response.writeHead(500).end('no reply configured')
        return
      }
      if (reply.hold) {
        this.#held.push(response)
        return
      }
      const json = typeof reply.body === 'object'
      const body = json ? JSON.stringify(reply.body) : (reply.body ?? '')
      response.writeHead(reply.status, { 'content-type': json ? 'application/json' : 'text/html', ...reply.headers })
      response.end(body)
    })
  }

  async #listen() {
    await new Promise((resolve) => this.#server.listen(0, '127.0.0.1', () => resolve(undefined)))
    const address = /** @type {import('node:net').AddressInfo} */ (this.#server.address())
    this.baseUrl = `http://127.0.0.1:${address.port}/api`
  }

  /** Answers every request with `replies` in turn, repeating the last one. @param {Reply[]} replies */
  reply(...replies) {
    this.#replies = replies
    this.requests = []
  }

  /** The next request's arrival. @returns {Promise<Seen>} */
  nextRequest() {
    return new Promise((resolve) => this.#waiters.push(resolve))
  }

  /** Answers the held requests. @param {number} status @param {object} body */
  release(status, body) {
    for (const response of this.#held.splice(0)) {
      response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body))
    }
  }

  async close() {
    for (const response of this.#held.splice(0)) response.destroy()
    this.#server.closeAllConnections()
    await new Promise((resolve) => this.#server.close(() => resolve(undefined)))
  }
}

/** A loopback port with nothing listening on it. */
export async function closedPort() {
  const server = createServer()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)))
  const { port } = /** @type {import('node:net').AddressInfo} */ (server.address())
  await new Promise((resolve) => server.close(() => resolve(undefined)))
  return port
}
