// Compiles only if the declarations describe the API as documented (CommonJS).
import {
  Client,
  MagicAuthError,
  RateLimitError,
  TokenAlreadyUsedError,
  TokenExpiredError,
  tokenFromUrl,
  type ClientOptions,
  type SessionClaims,
  type User,
  type Verification,
} from 'magicauth'

const options: ClientOptions = { appKey: 'mk_…', baseUrl: 'https://magicauth.app/api', timeoutMs: 5000, maxRetries: 1 }
const client = new Client(options)
const fromEnv = new Client()
const base: string = fromEnv.baseUrl

export async function signIn(token: string): Promise<string> {
  const sent: { expiresIn: number } = await client.sendLink('user@example.com', 'https://app.example.com/cb')
  await client.sendLink('user@example.com')
  try {
    const verification: Verification = await client.verifyToken(token)
    const user: User = verification.user
    const at: Date = user.lastLoginAt
    const first: Date = user.emailVerifiedAt
    const name: string | null = user.name
    const id: number = user.id
    const claims: SessionClaims = await client.verifySession(verification.token)
    const exp: number = claims.exp
    return `${user.email} ${id} ${name} ${at.toISOString()} ${first.getTime()} ${exp} ${sent.expiresIn} ${base}`
  } catch (error) {
    if (error instanceof TokenExpiredError || error instanceof TokenAlreadyUsedError) return 'new link'
    if (error instanceof RateLimitError) return `wait ${error.retryAfter ?? 60}s`
    if (error instanceof MagicAuthError) {
      const code: string = error.code
      const status: number | undefined = error.status
      return `${code} ${status}`
    }
    throw error
  }
}

const token: string | null = tokenFromUrl('https://app.example.com/cb?magic_token=abc') ?? Client.tokenFromUrl('x')
client.tokenFromUrl(token ?? '')

// @ts-expect-error: the key is an option, not an argument.
new Client('mk_key')
// @ts-expect-error: unknown option
new Client({ apiKey: 'x' })
