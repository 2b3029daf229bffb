// @ts-check
// The app's HTML, rendered on the server. Every interpolated value goes
// through `html`, which escapes it unless it is markup built by `html` itself.

const ESCAPES = /** @type {Record<string, string>} */ ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#x27;' })

/** Markup that is already safe. */
class Markup {
  /** @param {string} text */
  constructor(text) {
    this.text = text
  }
  toString() {
    return this.text
  }
}

/** @param {unknown} value @returns {string} */
export function escape(value) {
  return String(value).replace(/[&<>"']/g, (c) => ESCAPES[c])
}

/**
 * A template whose values are escaped (arrays are joined, `null`/`undefined` left out).
 * @param {TemplateStringsArray} strings
 * @param {unknown[]} values
 */
export function html(strings, ...values) {
  /** @param {unknown} value @returns {string} */
  const render = (value) => {
    if (value instanceof Markup) return value.text
    if (Array.isArray(value)) return value.map(render).join('')
    if (value === null || value === undefined || value === false) return ''
    return escape(value)
  }
  return new Markup(strings.reduce((out, s, i) => out + render(values[i - 1]) + s))
}

/** @param {string} title @param {Markup} body */
function layout(title, body) {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · MagicAuth example</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 32rem; margin: 4rem auto; padding: 0 1rem; color: #222; }
input[type=email] { width: 100%; padding: .5rem; margin: .5rem 0 1rem; box-sizing: border-box; }
button { padding: .5rem 1.25rem; }
.notice { padding: .75rem 1rem; border-radius: .25rem; background: #eef5ff; }
.problem { background: #fff0f0; }
.muted { color: #666; font-size: .9rem; }
</style>
</head>
<body>
<main>
${body}
</main>
</body>
</html>
`.text
}

/** @typedef {{kind: 'info' | 'problem', text: string}} Notice */

/** @param {Notice | undefined} notice */
function noticeHtml(notice) {
  if (!notice) return html``
  return notice.kind === 'info'
    ? html`<p class="notice" role="status">${notice.text}</p>`
    : html`<p class="notice problem" role="alert">${notice.text}</p>`
}

/** The form that asks for an address and POSTs it to `/send-link`. @param {string} email @param {string} button */
function emailForm(email, button) {
  return html`<form method="post" action="/send-link">
<label for="email">Email address</label>
<input id="email" type="email" name="email" value="${email}" autocomplete="email" required>
<button type="submit">${button}</button>
</form>`
}

/** `GET /`: the sign-in form. @param {{notice?: Notice, email?: string, signedInAs?: string}} [options] */
export function signIn({ notice, email = '', signedInAs } = {}) {
  const signedIn = signedInAs
    ? html`<p class="notice">You are signed in as <strong>${signedInAs}</strong>. <a href="/dashboard">Go to your dashboard</a>.</p>`
    : null
  return layout(
    'Sign in',
    html`<h1>Sign in</h1>
${signedIn}${noticeHtml(notice)}
<p>Enter your email address and we will send you a link to sign in. No password needed.</p>
${emailForm(email, 'Email me a sign-in link')}`,
  )
}

/** After `POST /send-link`: the same words whether or not the address is known. @param {string} email @param {number} expiresIn */
export function checkEmail(email, expiresIn) {
  return layout(
    'Check your email',
    html`<h1>Check your email</h1>
<p>If <strong>${email}</strong> can receive email, a sign-in link is on its way.
It works once, within ${describeDuration(expiresIn)}.</p>
<p class="muted">Nothing arrived? Check your spam folder, or <a href="/">ask for another link</a>.</p>`,
  )
}

/** `GET /auth/callback`: a button, so that only a person (not a link scanner) uses the token. @param {string} token */
export function continueSignIn(token) {
  return layout(
    'Finish signing in',
    html`<h1>Finish signing in</h1>
<p>Press the button to sign in.</p>
<form method="post" action="/auth/callback">
<input type="hidden" name="magic_token" value="${token}">
<button type="submit" autofocus>Continue</button>
</form>
<p class="muted">Why this step? Email security scanners open the links in messages to check them.
Signing in only when you press the button keeps them from using up your single-use link.</p>`,
  )
}

/** A link that cannot sign anyone in, with a way to get a new one. @param {string} title @param {string} explanation */
export function linkProblem(title, explanation) {
  return layout(
    title,
    html`<h1>${title}</h1>
<p>${explanation}</p>
<p>Enter your email address to get a new sign-in link.</p>
${emailForm('', 'Send me a new link')}`,
  )
}

/** `GET /dashboard`. @param {import('./session.js').Session} session */
export function dashboard(session) {
  const until = new Date(session.expiresAt * 1000).toISOString().slice(0, 16).replace('T', ' ')
  return layout(
    'Dashboard',
    html`<h1>Dashboard</h1>
<p>You are signed in as <strong>${session.email}</strong> (user ${session.userId}).</p>
<p class="muted">This session lasts until ${until} UTC.</p>
<form method="post" action="/logout">
<button type="submit">Sign out</button>
</form>`,
  )
}

/** Anything else that went wrong: a plain message, never an error's details. @param {string} title @param {string} message */
export function problem(title, message) {
  return layout(
    title,
    html`<h1>${title}</h1>
<p>${message}</p>
<p><a href="/">Back to sign-in</a></p>`,
  )
}

/** "15 minutes", "30 seconds", "1 hour". @param {number} seconds */
export function describeDuration(seconds) {
  const secs = Math.max(1, Math.ceil(seconds))
  const plural = (/** @type {number} */ n, /** @type {string} */ unit) => (n === 1 ? `1 ${unit}` : `${n} ${unit}s`)
  if (secs < 60) return plural(secs, 'second')
  if (secs < 3600) return plural(Math.ceil(secs / 60), 'minute')
  return plural(Math.ceil(secs / 3600), 'hour')
}
