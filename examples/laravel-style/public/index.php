<?php

/*
 * The MagicAuth sign-in flow as a tiny front controller:
 *
 *     MAGICAUTH_APP_KEY=mk_… MAGICAUTH_BASE_URL=http://127.0.0.1:8080/api \
 *     APP_URL=http://127.0.0.1:8000 php -S 127.0.0.1:8000 -t public
 *
 *   GET  /               sign-in form
 *   POST /send-link      emails a magic link to APP_URL/auth/callback
 *   GET  /auth/callback  "Continue" page: does NOT verify (scanners open links)
 *   POST /auth/callback  verifies the token, starts the session, 303 → /dashboard
 *   GET  /dashboard      signed-in page
 *   POST /logout         ends the session
 *
 * Each route is one function below, the way a Laravel controller would have
 * one method per route.
 */

declare(strict_types=1);

use MagicAuth\Client;
use MagicAuth\InvalidRequestError;
use MagicAuth\InvalidTokenError;
use MagicAuth\MagicAuthError;
use MagicAuth\RateLimitError;
use MagicAuth\TokenAlreadyUsedError;
use MagicAuth\TokenExpiredError;

require dirname(__DIR__) . '/src/autoload.php';

ini_set('display_errors', '0');
ini_set('log_errors', '1');
set_exception_handler(static function (Throwable $e): void {
    // Class and place only: messages of unexpected errors are not trusted to be free of secrets.
    error_log(sprintf('unexpected %s at %s:%d', get_class($e), basename($e->getFile()), $e->getLine()));
    if (!headers_sent()) {
        http_response_code(500);
        send_security_headers();
    }
    echo layout('Something went wrong', '<p>Something went wrong on our side. Please try again.</p>');
});

const SESSION_USER = 'user';
const SESSION_CSRF = 'csrf';
const MAX_TOKEN_LENGTH = 512;

// -- Routes ---------------------------------------------------------------

function show_sign_in(): void
{
    if (signed_in_user() !== null) {
        redirect('/dashboard');
        return;
    }
    respond(200, 'Sign in', '<h1>Sign in</h1>' . sign_in_form());
}

function send_link(): void
{
    require_csrf();
    $email = trim(posted('email'));
    if ($email === '' || strlen($email) > 254) {
        sign_in_page(400, 'Please enter your email address.', $email);
        return;
    }
    try {
        $sent = client()->sendLink($email, app_url() . '/auth/callback');
    } catch (InvalidRequestError $e) {
        // The API's message names the field; a bad redirect_url is our configuration (APP_URL), not the user.
        if (str_starts_with($e->getMessage(), 'redirect_url')) {
            log_failure('send-link', $e);
            sign_in_page(503, 'We could not send a sign-in link right now. Please try again in a moment.', $email);
            return;
        }
        sign_in_page(400, 'That does not look like a valid email address.', $email);
        return;
    } catch (RateLimitError $e) {
        if ($e->errorCode === 'quota_exceeded') { // the app's monthly quota: nothing the user can fix
            log_failure('send-link', $e);
            sign_in_page(429, 'Sign-in links are unavailable right now. Please try again later.', $email);
            return;
        }
        if ($e->retryAfter !== null) {
            header('Retry-After: ' . $e->retryAfter);
        }
        $wait = $e->retryAfter === null ? 'a few minutes' : duration($e->retryAfter);
        sign_in_page(429, "Too many sign-in links were requested. Please wait {$wait} and try again.", $email);
        return;
    } catch (MagicAuthError $e) {
        log_failure('send-link', $e);
        sign_in_page(503, 'We could not send a sign-in link right now. Please try again in a moment.', $email);
        return;
    }
    respond(200, 'Check your email', sprintf(
        '<h1>Check your email</h1><p>We sent a sign-in link to <strong>%s</strong>. It works once, within %s.</p>'
        . '<p>You can close this tab: the link opens a new one.</p>',
        e($email),
        e(duration($sent->expiresIn)),
    ));
}

/** Renders a button that POSTs the token: opening the link consumes nothing. */
function show_continue(): void
{
    // The token is in this page: nobody may cache it or receive it as a Referer.
    header('Referrer-Policy: no-referrer');
    header('Cache-Control: no-store');
    header('X-Robots-Tag: noindex, nofollow');
    $token = Client::tokenFromUrl((string) ($_SERVER['QUERY_STRING'] ?? ''));
    if ($token === null || strlen($token) > MAX_TOKEN_LENGTH) {
        link_problem(400, 'This sign-in link is incomplete', 'Copy the whole link from the email, or ask for a new one.');
        return;
    }
    respond(200, 'Finish signing in', '<h1>Finish signing in</h1>'
        . '<p>Press Continue to sign in on this device.</p>'
        . continue_form($token, 'Continue'));
}

function complete_sign_in(): void
{
    require_csrf();
    $token = posted('magic_token');
    if ($token === '' || strlen($token) > MAX_TOKEN_LENGTH) {
        link_problem(400, 'This sign-in link is not valid', 'Ask for a new link below.');
        return;
    }
    try {
        $verification = client()->verifyToken($token);
    } catch (TokenExpiredError) {
        link_problem(400, 'This sign-in link has expired', 'Links work for a limited time. Ask for a new one below.');
        return;
    } catch (TokenAlreadyUsedError) {
        link_problem(400, 'This sign-in link was already used', 'Each link works once. '
            . 'If you already signed in, <a href="/dashboard">go to your dashboard</a>; otherwise ask for a new link below.');
        return;
    } catch (InvalidTokenError | InvalidRequestError) {
        link_problem(400, 'This sign-in link is not valid', 'Copy the whole link from the email, or ask for a new one below.');
        return;
    } catch (MagicAuthError $e) {
        log_failure('verify-token', $e);
        respond(503, 'Sign-in unavailable', '<h1>We could not sign you in right now</h1>'
            . '<p>Please try again in a moment.</p>' . continue_form($token, 'Try again'));
        return;
    }
    $user = $verification->user;
    // A new session id on every sign-in: a session fixed before it is worthless.
    session_regenerate_id(true);
    $_SESSION = [
        SESSION_USER => [
            'id' => $user->id,
            'email' => $user->email,
            'name' => $user->name,
            'email_verified_at' => $user->emailVerifiedAt->format(DATE_ATOM),
            'last_login_at' => $user->lastLoginAt->format(DATE_ATOM),
        ],
        SESSION_CSRF => bin2hex(random_bytes(32)),
    ];
    redirect('/dashboard');
}

function show_dashboard(): void
{
    $user = signed_in_user();
    if ($user === null) {
        redirect('/');
        return;
    }
    respond(200, 'Dashboard', sprintf(
        '<h1>You are signed in</h1><p>Signed in as <strong>%s</strong> (user #%d).</p>'
        . '<p>Email verified %s; this sign-in %s.</p>'
        . '<form method="post" action="/logout">%s<button type="submit">Sign out</button></form>',
        e($user['email']),
        $user['id'],
        e($user['email_verified_at']),
        e($user['last_login_at']),
        csrf_field(),
    ));
}

function logout(): void
{
    require_csrf();
    $_SESSION = [];
    $params = session_get_cookie_params();
    setcookie(session_name(), '', [
        'expires' => time() - 3600,
        'path' => $params['path'],
        'domain' => $params['domain'],
        'secure' => $params['secure'],
        'httponly' => true,
        'samesite' => 'Lax',
    ]);
    session_destroy();
    redirect('/');
}

// -- Pages ----------------------------------------------------------------

function sign_in_page(int $status, string $notice, string $email): void
{
    respond($status, 'Sign in', '<h1>Sign in</h1>' . sign_in_form($notice, $email));
}

function sign_in_form(string $notice = '', string $email = ''): string
{
    return ($notice === '' ? '' : '<p class="notice" role="alert">' . e($notice) . '</p>')
        . '<form method="post" action="/send-link">' . csrf_field()
        . '<label>Email <input type="email" name="email" required maxlength="254" autocomplete="email" value="'
        . e($email) . '"></label> <button type="submit">Email me a sign-in link</button></form>';
}

function continue_form(string $token, string $label): string
{
    return '<form method="post" action="/auth/callback">' . csrf_field()
        . '<input type="hidden" name="magic_token" value="' . e($token) . '">'
        . '<button type="submit">' . e($label) . '</button></form>';
}

/** Expired, used or invalid links: say so, and offer a new link. Never a stack trace. */
function link_problem(int $status, string $title, string $explanationHtml): void
{
    respond($status, $title, '<h1>' . e($title) . '</h1><p>' . $explanationHtml . '</p>'
        . '<h2>Get a new sign-in link</h2>' . sign_in_form());
}

function respond(int $status, string $title, string $bodyHtml): void
{
    http_response_code($status);
    echo layout($title, $bodyHtml);
}

function layout(string $title, string $bodyHtml): string
{
    return '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        . '<meta name="viewport" content="width=device-width, initial-scale=1">'
        . '<meta name="robots" content="noindex"><title>' . e($title) . ' · MagicAuth example</title>'
        . '<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;line-height:1.5}'
        . '.notice{background:#fff4e5;padding:.5rem .75rem;border-radius:4px}button{padding:.4rem .9rem}</style>'
        . '</head><body>' . $bodyHtml . '</body></html>';
}

function redirect(string $path): void
{
    http_response_code(303);
    header('Location: ' . $path);
}

// -- Helpers --------------------------------------------------------------

/** HTML-escapes text for element content and quoted attributes. */
function e(string|int $text): string
{
    return htmlspecialchars((string) $text, ENT_QUOTES | ENT_SUBSTITUTE | ENT_HTML5, 'UTF-8');
}

function client(): Client
{
    static $client = null;

    // MAGICAUTH_APP_KEY and MAGICAUTH_BASE_URL; a ConfigurationError is a MagicAuthError.
    return $client ??= new Client();
}

function app_url(): string
{
    $url = getenv('APP_URL');

    return rtrim(is_string($url) && $url !== '' ? $url : 'http://127.0.0.1:8000', '/');
}

function posted(string $name): string
{
    $value = $_POST[$name] ?? '';

    return is_string($value) ? $value : '';
}

/** @return array{id: int, email: string, name: ?string, email_verified_at: string, last_login_at: string}|null */
function signed_in_user(): ?array
{
    $user = $_SESSION[SESSION_USER] ?? null;

    return is_array($user) ? $user : null;
}

function csrf_field(): string
{
    return '<input type="hidden" name="csrf" value="' . e($_SESSION[SESSION_CSRF]) . '">';
}

/** Every POST carries the session's CSRF token; login CSRF included. */
function require_csrf(): void
{
    $sent = posted('csrf');
    if ($sent === '' || !hash_equals((string) $_SESSION[SESSION_CSRF], $sent)) {
        respond(403, 'Form expired', '<h1>This form has expired</h1>'
            . '<p>Please <a href="/">start again</a> (or open the link from your email again).</p>');
        exit;
    }
}

function log_failure(string $operation, MagicAuthError $e): void
{
    // The error's class, code and status: enough to act on, and no secrets.
    error_log(sprintf(
        'magicauth %s failed: %s (code %s, HTTP %s)',
        $operation,
        (new ReflectionClass($e))->getShortName(),
        $e->errorCode,
        $e->status ?? '-',
    ));
}

function duration(int $seconds): string
{
    if ($seconds < 90) {
        return $seconds === 1 ? '1 second' : "{$seconds} seconds";
    }
    $minutes = (int) ceil($seconds / 60);

    return $minutes < 90 ? "{$minutes} minutes" : ((int) ceil($minutes / 60)) . ' hours';
}

function send_security_headers(): void
{
    header_remove('X-Powered-By');
    header('Cache-Control: no-store');
    header('Referrer-Policy: no-referrer');
    header('X-Content-Type-Options: nosniff');
    header('X-Frame-Options: DENY');
    header("Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        . "frame-ancestors 'none'; base-uri 'none'");
}

// -- Dispatch -------------------------------------------------------------

$routes = [
    '/' => ['GET' => 'show_sign_in'],
    '/send-link' => ['POST' => 'send_link'],
    '/auth/callback' => ['GET' => 'show_continue', 'POST' => 'complete_sign_in'],
    '/dashboard' => ['GET' => 'show_dashboard'],
    '/logout' => ['POST' => 'logout'],
];

session_cache_limiter(''); // our own Cache-Control below
session_start([
    'name' => 'magicauth_example',
    'use_strict_mode' => true,
    'use_only_cookies' => true,
    'cookie_path' => '/',
    'cookie_httponly' => true,
    'cookie_samesite' => 'Lax',
    'cookie_secure' => str_starts_with(app_url(), 'https://'),
]);
if (!is_string($_SESSION[SESSION_CSRF] ?? null)) {
    $_SESSION[SESSION_CSRF] = bin2hex(random_bytes(32));
}
send_security_headers();

$method = (string) ($_SERVER['REQUEST_METHOD'] ?? 'GET');
$path = parse_url((string) ($_SERVER['REQUEST_URI'] ?? '/'), PHP_URL_PATH);
$route = $routes[is_string($path) ? $path : ''] ?? null;
$handler = $route[$method === 'HEAD' ? 'GET' : $method] ?? null;
if ($route === null) {
    respond(404, 'Not found', '<h1>Not found</h1><p><a href="/">Sign in</a></p>');
} elseif ($handler === null) {
    header('Allow: ' . implode(', ', array_keys($route)));
    respond(405, 'Method not allowed', '<h1>Method not allowed</h1>');
} else {
    $handler();
}
