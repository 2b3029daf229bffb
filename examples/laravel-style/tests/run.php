<?php

/*
 * End-to-end test of the laravel-style example:
 *
 *     php examples/laravel-style/tests/run.php        (from the repository root)
 *
 * Starts the test bed (the real MagicAuth server, a loopback SMTP sink and a
 * control API: MAGICAUTH_TESTBED, default ../../target/debug/magicauth-testbed
 * from the example; build it with `cargo build -p magicauth-testbed`), then
 * `php -S 127.0.0.1:PORT -t public` with the example's environment, and drives
 * the sign-in flow with curl and a cookie jar; then checks the client itself
 * against the real server and against a scripted stub (retries). Loopback
 * only; every wait is bounded; every child process is stopped on exit.
 *
 * One line per check; last line `N passed, M failed`; exit 1 on any failure.
 */

declare(strict_types=1);

use MagicAuth\APIConnectionError;
use MagicAuth\APITimeoutError;
use MagicAuth\AuthenticationError;
use MagicAuth\Client;
use MagicAuth\ConfigurationError;
use MagicAuth\InvalidRequestError;
use MagicAuth\InvalidTokenError;
use MagicAuth\MagicAuthError;
use MagicAuth\PermissionDeniedError;
use MagicAuth\RateLimitError;
use MagicAuth\SendLinkResponse;
use MagicAuth\ServerError;
use MagicAuth\TokenAlreadyUsedError;
use MagicAuth\TokenExpiredError;
use MagicAuth\User;
use MagicAuth\Verification;

define('EXAMPLE_DIR', dirname(__DIR__));

require EXAMPLE_DIR . '/src/autoload.php';

error_reporting(E_ALL);
set_error_handler(static function (int $severity, string $message, string $file, int $line): bool {
    if ((error_reporting() & $severity) === 0) {
        return false; // silenced with @
    }
    throw new ErrorException($message, 0, $severity, $file, $line);
});
// Full stack-trace arguments, so that a secret passed as an argument would show.
ini_set('zend.exception_ignore_args', '0');
ini_set('zend.exception_string_param_max_len', '1000000');

// -- Reporting ------------------------------------------------------------

final class Report
{
    public static int $passed = 0;
    public static int $failed = 0;
    /** @var list<string> app keys and magic tokens that must never show up */
    public static array $secrets = [];
    /** @var list<MagicAuthError> every error the client threw */
    public static array $errors = [];
}

function check(string $name, bool $ok, string $detail = ''): bool
{
    if ($ok) {
        Report::$passed++;
        echo "ok   {$name}\n";
    } else {
        Report::$failed++;
        echo "FAIL {$name}" . ($detail === '' ? '' : " -- {$detail}") . "\n";
    }

    return $ok;
}

/** Runs a group of checks; an unexpected exception is one failure, and the next group runs. */
function group(string $title, callable $body): void
{
    echo "# {$title}\n";
    try {
        $body();
    } catch (Throwable $e) {
        check("{$title}: no unexpected exception", false, scrub(get_class($e) . ': ' . $e->getMessage()
            . ' at ' . basename($e->getFile()) . ':' . $e->getLine()));
    }
}

/** Keeps secrets out of this runner's own output. */
function scrub(string $text): string
{
    return str_replace(Report::$secrets, '[secret]', $text);
}

function secret(string $value): string
{
    Report::$secrets[] = $value;

    return $value;
}

/**
 * Calls `$call`, expecting exactly `$class` with `$code` and `$status`.
 */
function expect_error(string $name, string $class, string $code, ?int $status, callable $call): ?MagicAuthError
{
    try {
        $call();
        check($name, false, "no error; expected {$class}");

        return null;
    } catch (MagicAuthError $e) {
        Report::$errors[] = $e;
        check($name, get_class($e) === $class && $e->errorCode === $code && $e->status === $status, sprintf(
            'got %s code=%s status=%s: %s',
            get_class($e),
            $e->errorCode,
            var_export($e->status, true),
            scrub($e->getMessage()),
        ));

        return $e;
    }
}

// -- Child processes ------------------------------------------------------

final class Children
{
    /** @var array<string, array{proc: resource, stdin: resource|null}> */
    public static array $procs = [];
    public static string $tmp = '';

    /** @param list<string> $argv */
    public static function start(string $name, array $argv, array $env, bool $stdinPipe = false): array
    {
        $log = self::$tmp . "/{$name}.log";
        $spec = [
            0 => $stdinPipe ? ['pipe', 'r'] : ['file', '/dev/null', 'r'],
            1 => $stdinPipe ? ['pipe', 'w'] : ['file', $log, 'a'],
            2 => ['file', $log, 'a'],
        ];
        // An argv array: no shell in between, so proc_terminate reaches the process itself.
        $proc = proc_open($argv, $spec, $pipes, null, $env);
        if (!is_resource($proc)) {
            throw new RuntimeException("could not start {$name}");
        }
        self::$procs[$name] = ['proc' => $proc, 'stdin' => $pipes[0] ?? null];

        return $pipes;
    }

    public static function running(string $name): bool
    {
        $proc = self::$procs[$name]['proc'] ?? null;

        return is_resource($proc) && proc_get_status($proc)['running'];
    }

    public static function stop(string $name): void
    {
        $child = self::$procs[$name] ?? null;
        unset(self::$procs[$name]);
        if ($child === null) {
            return;
        }
        if (is_resource($child['stdin'])) {
            fclose($child['stdin']); // the test bed exits on stdin EOF
        }
        $proc = $child['proc'];
        if (!proc_get_status($proc)['running']) {
            proc_close($proc);
            return;
        }
        proc_terminate($proc, 15);
        $deadline = microtime(true) + 5;
        while (proc_get_status($proc)['running'] && microtime(true) < $deadline) {
            usleep(20_000);
        }
        if (proc_get_status($proc)['running']) {
            proc_terminate($proc, 9);
        }
        proc_close($proc);
    }

    public static function stopAll(): void
    {
        foreach (array_reverse(array_keys(self::$procs)) as $name) {
            self::stop($name);
        }
    }

    public static function log(string $name): string
    {
        $file = self::$tmp . "/{$name}.log";

        return is_file($file) ? (string) file_get_contents($file) : '';
    }
}

function remove_tree(string $dir): void
{
    if (!is_dir($dir)) {
        return;
    }
    $items = new RecursiveIteratorIterator(
        new RecursiveDirectoryIterator($dir, FilesystemIterator::SKIP_DOTS),
        RecursiveIteratorIterator::CHILD_FIRST,
    );
    foreach ($items as $item) {
        $item->isDir() && !$item->isLink() ? rmdir($item->getPathname()) : unlink($item->getPathname());
    }
    rmdir($dir);
}

function free_port(): int
{
    $server = stream_socket_server('tcp://127.0.0.1:0', $errno, $errstr);
    if ($server === false) {
        throw new RuntimeException("no free port: {$errstr}");
    }
    $name = (string) stream_socket_get_name($server, false);
    fclose($server);

    return (int) substr($name, strrpos($name, ':') + 1);
}

function wait_for_port(string $name, int $port, float $seconds): bool
{
    $deadline = microtime(true) + $seconds;
    while (microtime(true) < $deadline) {
        if (!Children::running($name)) {
            return false;
        }
        $socket = @stream_socket_client("tcp://127.0.0.1:{$port}", $errno, $errstr, 0.2);
        if ($socket !== false) {
            fclose($socket);
            return true;
        }
        usleep(50_000);
    }

    return false;
}

/**
 * Starts `php -S 127.0.0.1:PORT …` on a free port (retrying if another process
 * takes the port first). `$configure($port)` returns the extra environment.
 *
 * @param list<string> $args after `-S 127.0.0.1:PORT`
 */
function start_php_server(string $name, array $args, callable $configure): int
{
    for ($try = 1; $try <= 5; $try++) {
        $port = free_port();
        $env = array_merge(getenv(), $configure($port));
        $argv = array_merge([PHP_BINARY, '-S', "127.0.0.1:{$port}"], $args);
        Children::start($name, $argv, $env);
        if (wait_for_port($name, $port, 10)) {
            usleep(100_000);
            if (Children::running($name)) { // still up: the port is ours, not another process's
                return $port;
            }
        }
        Children::stop($name);
    }
    throw new RuntimeException("could not start {$name}: " . scrub(Children::log($name)));
}

// -- HTTP helpers ---------------------------------------------------------

final class HttpResponse
{
    /** @param array<string, list<string>> $headers lower-case names */
    public function __construct(public int $status, public array $headers, public string $body)
    {
    }

    public function header(string $name): ?string
    {
        return $this->headers[strtolower($name)][0] ?? null;
    }
}

/** curl with its own cookie jar, no redirects followed: a browser, for tests. */
final class Browser
{
    private CurlHandle $curl;

    public function __construct(private string $base)
    {
        $this->curl = curl_init();
        curl_setopt_array($this->curl, [
            CURLOPT_COOKIEFILE => '', // in-memory cookie jar
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_FOLLOWLOCATION => false,
            CURLOPT_CONNECTTIMEOUT => 5,
            CURLOPT_TIMEOUT => 30,
        ]);
    }

    public function get(string $pathOrUrl): HttpResponse
    {
        curl_setopt($this->curl, CURLOPT_HTTPGET, true);

        return $this->send($pathOrUrl);
    }

    /** @param array<string, string> $fields */
    public function post(string $path, array $fields): HttpResponse
    {
        curl_setopt($this->curl, CURLOPT_POST, true);
        curl_setopt($this->curl, CURLOPT_POSTFIELDS, http_build_query($fields));

        return $this->send($path);
    }

    /** The CSRF token of the last page's forms. */
    public static function csrf(HttpResponse $page): string
    {
        return preg_match('/name="csrf" value="([0-9a-f]+)"/', $page->body, $m) === 1 ? $m[1] : '';
    }

    private function send(string $pathOrUrl): HttpResponse
    {
        $headers = [];
        curl_setopt($this->curl, CURLOPT_URL, str_starts_with($pathOrUrl, 'http') ? $pathOrUrl : $this->base . $pathOrUrl);
        curl_setopt($this->curl, CURLOPT_HEADERFUNCTION, static function ($_, string $line) use (&$headers): int {
            if (str_contains($line, ':')) {
                [$name, $value] = explode(':', $line, 2);
                $headers[strtolower(trim($name))][] = trim($value);
            }

            return strlen($line);
        });
        $body = curl_exec($this->curl);
        if (!is_string($body)) {
            throw new RuntimeException('request failed: ' . curl_error($this->curl));
        }

        return new HttpResponse((int) curl_getinfo($this->curl, CURLINFO_RESPONSE_CODE), $headers, $body);
    }
}

/** JSON over HTTP to the test bed's control API. */
function control(string $method, string $path, ?array $body = null, float $timeout = 30): array
{
    $curl = curl_init(Testbed::$controlUrl . $path);
    curl_setopt_array($curl, [
        CURLOPT_CUSTOMREQUEST => $method,
        CURLOPT_RETURNTRANSFER => true,
        CURLOPT_TIMEOUT_MS => (int) ($timeout * 1000),
        CURLOPT_HTTPHEADER => ['Content-Type: application/json'],
    ]);
    if ($body !== null) {
        curl_setopt($curl, CURLOPT_POSTFIELDS, json_encode($body, JSON_THROW_ON_ERROR));
    }
    $raw = curl_exec($curl);
    $status = curl_getinfo($curl, CURLINFO_RESPONSE_CODE);
    if (!is_string($raw) || $status !== 200) {
        throw new RuntimeException("control {$method} {$path}: HTTP {$status} " . (is_string($raw) ? scrub($raw) : curl_error($curl)));
    }

    return json_decode($raw, true, 512, JSON_THROW_ON_ERROR);
}

final class Testbed
{
    public static string $baseUrl = '';
    public static string $controlUrl = '';

    /** @param list<string> $args `apps create` flags; returns [app_id, app_key] */
    public static function createApp(array $args): array
    {
        $app = control('POST', '/apps', ['args' => $args]);

        return [$app['app_id'], secret($app['app_key'])];
    }

    /** The newest email to `$to` once there are `$count`; returns the mail object. */
    public static function mail(string $to, int $count = 1): array
    {
        $query = http_build_query(['to' => $to, 'min_count' => $count, 'timeout_ms' => 10_000]);
        $mail = control('GET', '/mail?' . $query, null, 15)['mail'];
        if (is_string($mail['token'] ?? null)) {
            secret($mail['token']);
        }

        return $mail;
    }

    public static function token(string $to, int $count = 1): string
    {
        return (string) self::mail($to, $count)['token'];
    }
}

// -- Setup ----------------------------------------------------------------

Children::$tmp = sys_get_temp_dir() . '/magicauth-laravel-style-' . bin2hex(random_bytes(6));
mkdir(Children::$tmp . '/sessions', 0700, true);
register_shutdown_function(static function (): void {
    Children::stopAll();
    remove_tree(Children::$tmp);
});
if (function_exists('pcntl_async_signals')) {
    pcntl_async_signals(true);
    foreach ([SIGINT, SIGTERM] as $signal) {
        pcntl_signal($signal, static fn () => exit(130)); // exit runs the shutdown function
    }
}

function fail_setup(string $why): never
{
    check('setup', false, $why);
    echo Report::$passed . ' passed, ' . Report::$failed . " failed\n";
    exit(1);
}

$testbed = getenv('MAGICAUTH_TESTBED') ?: EXAMPLE_DIR . '/../../target/debug/magicauth-testbed';
if (!is_file($testbed) || !is_executable($testbed)) {
    fail_setup("no test bed binary at {$testbed}: run `cargo build -p magicauth-testbed` (or set MAGICAUTH_TESTBED)");
}
$pipes = Children::start('testbed', [$testbed, '--exit-on-stdin-eof'], getenv(), true);
$line = '';
$deadline = microtime(true) + 60;
stream_set_blocking($pipes[1], false);
while (!str_contains($line, "\n") && microtime(true) < $deadline && Children::running('testbed')) {
    $read = [$pipes[1]];
    $write = $except = null;
    if (stream_select($read, $write, $except, 0, 200_000) > 0) {
        $line .= (string) fread($pipes[1], 4096);
    }
}
$info = json_decode(trim($line), true);
if (!is_array($info) || !isset($info['base_url'], $info['control_url'])) {
    fail_setup('the test bed did not start: ' . trim(Children::log('testbed') . ' ' . $line));
}
Testbed::$baseUrl = $info['base_url'];
Testbed::$controlUrl = $info['control_url'];
check('test bed started', str_starts_with(Testbed::$baseUrl, 'http://127.0.0.1:'), Testbed::$baseUrl);

// The example app, on its own port, with an app whose only redirect URL is its callback.
$appKey = '';
try {
    $appPort = start_php_server('app', [
        '-t', EXAMPLE_DIR . '/public',
        '-d', 'session.save_path=' . Children::$tmp . '/sessions',
        '-d', 'error_log=' . Children::$tmp . '/app-errors.log',
    ], static function (int $port) use (&$appKey): array {
        [, $appKey] = Testbed::createApp([
            '--name', 'Laravel-style example',
            '--redirect-url', "http://127.0.0.1:{$port}/auth/callback",
        ]);

        return ['MAGICAUTH_APP_KEY' => $appKey, 'MAGICAUTH_BASE_URL' => Testbed::$baseUrl, 'APP_URL' => "http://127.0.0.1:{$port}"];
    });
} catch (Throwable $e) {
    fail_setup('the example app did not start: ' . scrub($e->getMessage()));
}
$appUrl = "http://127.0.0.1:{$appPort}";
$callbackUrl = "{$appUrl}/auth/callback";
check('example app started with php -S', true, $appUrl);

// -- The sign-in flow through the example app -----------------------------

function has_no_stack_trace(HttpResponse $r): bool
{
    return !preg_match('/Stack trace|#0 |Fatal error|Uncaught|\.php|Warning:|Notice:/', $r->body);
}

$email = 'ada@example.com';

group('sign-in flow', static function () use ($appUrl, $callbackUrl, $email): void {
    $browser = new Browser($appUrl);
    $scanner = new Browser($appUrl); // an email security scanner: no cookies of the user

    $form = $browser->get('/');
    check('GET / shows the sign-in form', $form->status === 200 && str_contains($form->body, 'action="/send-link"')
        && str_contains($form->body, 'name="email"'), "status {$form->status}");
    $cookie = implode("\n", $form->headers['set-cookie'] ?? []);
    check('session cookie is HttpOnly and SameSite=Lax', str_contains($cookie, 'magicauth_example=')
        && stripos($cookie, 'HttpOnly') !== false && stripos($cookie, 'SameSite=Lax') !== false, $cookie);
    check('pages send a CSP and no-store', str_contains((string) $form->header('content-security-policy'), "frame-ancestors 'none'")
        && $form->header('cache-control') === 'no-store');
    $csrf = Browser::csrf($form);
    check('the form carries a CSRF token', strlen($csrf) === 64);

    $r = $browser->post('/send-link', ['email' => $email]);
    check('POST /send-link without the CSRF token is refused', $r->status === 403, "status {$r->status}");

    $r = $browser->post('/send-link', ['email' => '<script>alert(1)</script>', 'csrf' => $csrf]);
    check('an invalid email is shown as such (400)', $r->status === 400 && str_contains($r->body, 'valid email address'), "status {$r->status}");
    check('the echoed input is HTML-escaped', !str_contains($r->body, '<script>alert(1)</script>')
        && str_contains($r->body, '&lt;script&gt;alert(1)&lt;/script&gt;'));

    $r = $browser->post('/send-link', ['email' => $email, 'csrf' => $csrf]);
    check('POST /send-link says "Check your email"', $r->status === 200 && str_contains($r->body, 'Check your email')
        && str_contains($r->body, $email) && str_contains($r->body, '15 minutes'), "status {$r->status}");

    $mail = Testbed::mail($email);
    $token = (string) $mail['token'];
    $link = (string) $mail['link'];
    check('the emailed link points at the example callback', str_starts_with($link, $callbackUrl . '?magic_token=') && $token !== '', scrub($link));

    $r = $browser->get('/dashboard');
    check('GET /dashboard without a session redirects to /', $r->status === 303 && $r->header('location') === '/', "status {$r->status}");

    // What a scanner does: open the link (twice). Nothing may be consumed.
    foreach ([1, 2] as $n) {
        $page = $scanner->get($link);
        check("a scanner opening the link gets the Continue page ({$n})", $page->status === 200
            && str_contains($page->body, 'method="post" action="/auth/callback"'), "status {$page->status}");
    }
    $page = $browser->get($link);
    check('GET /auth/callback renders a Continue button, not a sign-in', $page->status === 200
        && str_contains($page->body, '>Continue</button>') && !isset($page->headers['location']));
    check('the Continue form carries the token', str_contains($page->body, 'name="magic_token" value="' . htmlspecialchars($token) . '"'));
    check('GET /auth/callback sends Referrer-Policy: no-referrer', $page->header('referrer-policy') === 'no-referrer');
    check('GET /auth/callback sends Cache-Control: no-store', $page->header('cache-control') === 'no-store');
    $r = $browser->get('/dashboard');
    check('opening the link did not sign anyone in', $r->status === 303);

    $r = $browser->post('/auth/callback', ['magic_token' => $token]);
    check('POST /auth/callback without the CSRF token is refused', $r->status === 403 && has_no_stack_trace($r), "status {$r->status}");

    $before = session_cookie($form);
    $r = $browser->post('/auth/callback', ['magic_token' => $token, 'csrf' => Browser::csrf($page)]);
    check('POST /auth/callback verifies and answers 303 to /dashboard', $r->status === 303 && $r->header('location') === '/dashboard',
        "status {$r->status}: " . scrub(substr(strip_tags($r->body), 0, 200)));
    $after = session_cookie($r);
    check('the session id is rotated at sign-in', $before !== null && $after !== null && $after !== $before);
    $cookie = implode("\n", $r->headers['set-cookie'] ?? []);
    check('the new session cookie is HttpOnly and SameSite=Lax', stripos($cookie, 'HttpOnly') !== false && stripos($cookie, 'SameSite=Lax') !== false, $cookie);

    $dash = $browser->get('/dashboard');
    check('the dashboard shows the signed-in email', $dash->status === 200 && str_contains($dash->body, $email), "status {$dash->status}");

    // The link again (a second click, or a forwarded email): the token is spent.
    $page = $browser->get($link);
    $r = $browser->post('/auth/callback', ['magic_token' => $token, 'csrf' => Browser::csrf($page)]);
    check('POST again shows the "already used" page', $r->status === 400 && str_contains($r->body, 'already used'), "status {$r->status}");
    check('the "already used" page offers a new link', str_contains($r->body, 'action="/send-link"'));
    check('the "already used" page has no stack trace', has_no_stack_trace($r));

    $r = $scanner->post('/auth/callback', ['magic_token' => 'not-a-real-token', 'csrf' => Browser::csrf($scanner->get($link))]);
    check('an invalid token shows the "not valid" page', $r->status === 400 && str_contains($r->body, 'not valid')
        && str_contains($r->body, 'action="/send-link"') && has_no_stack_trace($r), "status {$r->status}");

    $r = $scanner->get('/auth/callback');
    check('a callback without a token says the link is incomplete', $r->status === 400 && str_contains($r->body, 'incomplete'));

    $dash = $browser->get('/dashboard');
    $r = $browser->post('/logout', ['csrf' => Browser::csrf($dash)]);
    check('POST /logout answers 303 to /', $r->status === 303 && $r->header('location') === '/', "status {$r->status}");
    $r = $browser->get('/dashboard');
    check('after logout the dashboard needs a session again', $r->status === 303);

    $r = $browser->get('/nope');
    check('unknown routes are 404', $r->status === 404);
    $r = $browser->get('/send-link');
    check('a wrong method is 405', $r->status === 405);
});

/** The session id a response set, if it set one. */
function session_cookie(HttpResponse $response): ?string
{
    foreach ($response->headers['set-cookie'] ?? [] as $cookie) {
        if (preg_match('/^magicauth_example=([^;]+)/', $cookie, $m) === 1) {
            return $m[1];
        }
    }

    return null;
}

group('rate limits and expired links in the example app', static function () use ($appUrl): void {
    $browser = new Browser($appUrl);
    $csrf = Browser::csrf($browser->get('/'));
    $email = 'limit@example.com';
    for ($i = 1; $i <= 5; $i++) {
        $browser->post('/send-link', ['email' => $email, 'csrf' => $csrf]);
    }
    $started = microtime(true);
    $r = $browser->post('/send-link', ['email' => $email, 'csrf' => $csrf]);
    check('the 6th link for one email within 15 min is shown as rate limited (429)', $r->status === 429
        && str_contains($r->body, 'Too many sign-in links'), "status {$r->status}");
    check('the rate-limit page says how long to wait', (int) $r->header('retry-after') > 0
        && preg_match('/wait \d+ (minutes|seconds)/', $r->body) === 1);
    check('a Retry-After over 30 s is not waited for', microtime(true) - $started < 5);

    $email = 'late@example.com';
    $browser->post('/send-link', ['email' => $email, 'csrf' => $csrf]);
    $link = (string) Testbed::mail($email)['link'];
    control('POST', '/clock', ['advance_seconds' => 1000]); // past the 15-minute lifetime
    $page = $browser->get($link);
    $r = $browser->post('/auth/callback', ['magic_token' => (string) Client::tokenFromUrl($link), 'csrf' => Browser::csrf($page)]);
    check('an expired link shows the "expired" page offering a new link', $r->status === 400
        && str_contains($r->body, 'expired') && str_contains($r->body, 'action="/send-link"') && has_no_stack_trace($r), "status {$r->status}");
});

group('the example app with a wrong app key', static function (): void {
    $wrongKey = secret('mk_' . bin2hex(random_bytes(16)));
    $port = start_php_server('app-wrong-key', [
        '-t', EXAMPLE_DIR . '/public',
        '-d', 'session.save_path=' . Children::$tmp . '/sessions',
        '-d', 'error_log=' . Children::$tmp . '/app-wrong-key-errors.log',
    ], static fn (int $port): array => [
        'MAGICAUTH_APP_KEY' => $wrongKey,
        'MAGICAUTH_BASE_URL' => Testbed::$baseUrl,
        'APP_URL' => "http://127.0.0.1:{$port}",
    ]);
    $browser = new Browser("http://127.0.0.1:{$port}");
    $csrf = Browser::csrf($browser->get('/'));
    $r = $browser->post('/send-link', ['email' => 'someone@example.com', 'csrf' => $csrf]);
    check('other failures get a generic message (503)', $r->status === 503 && str_contains($r->body, 'could not send')
        && has_no_stack_trace($r), "status {$r->status}");
    check('the page does not show the app key', !str_contains($r->body, $wrongKey));
    $log = (string) @file_get_contents(Children::$tmp . '/app-wrong-key-errors.log');
    check('the failure is logged with its class and code', str_contains($log, 'AuthenticationError (code invalid_app_key, HTTP 401)'), scrub($log));
    check('the log does not contain the app key', !str_contains($log, $wrongKey));
    Children::stop('app-wrong-key');
});

// -- The client against the real server -----------------------------------

group('client: happy path and types', static function () use ($appKey, $callbackUrl): void {
    $client = new Client($appKey, Testbed::$baseUrl);
    $sent = $client->sendLink('Grace@Example.com', $callbackUrl);
    check('sendLink returns a SendLinkResponse', $sent instanceof SendLinkResponse && $sent->expiresIn === 900, (string) $sent->expiresIn);
    $token = Testbed::token('grace@example.com');
    $v = $client->verifyToken($token);
    check('verifyToken returns a Verification', $v instanceof Verification && $v->user instanceof User);
    check('User fields are typed', $v->user->id > 0 && $v->user->email === 'grace@example.com' && $v->user->name === null
        && $v->user->emailVerifiedAt instanceof DateTimeImmutable && $v->user->lastLoginAt instanceof DateTimeImmutable
        && $v->user->lastLoginAt->getTimezone()->getName() === 'UTC');
    // (The test bed's clock runs 1000 s ahead by now: see the expired-link check.)
    check('timestamps are recent', abs($v->user->lastLoginAt->getTimestamp() - time()) < 7200);
    check('Verification carries the session JWT and redirect URL', substr_count($v->token, '.') === 2 && $v->redirectUrl === $callbackUrl);
    check('a Verification dump hides the session JWT', !str_contains(print_r($v, true), $v->token));
    check('tokenFromUrl reads the emailed link', Client::tokenFromUrl($callbackUrl . '?magic_token=' . $token) === $token);

    // Without a redirect URL the app's first allowed one is used.
    $client->sendLink('grace@example.com');
    $mail = Testbed::mail('grace@example.com', 2);
    check('sendLink without a redirect URL uses the app default', str_starts_with((string) $mail['link'], $callbackUrl . '?magic_token='));

    // Configuration from the environment.
    putenv('MAGICAUTH_APP_KEY=' . $appKey);
    putenv('MAGICAUTH_BASE_URL=' . Testbed::$baseUrl);
    $fromEnv = new Client();
    check('new Client() reads MAGICAUTH_APP_KEY and MAGICAUTH_BASE_URL', $fromEnv->baseUrl === Testbed::$baseUrl
        && $fromEnv->sendLink('env@example.com')->expiresIn === 900);
    putenv('MAGICAUTH_BASE_URL');
    check('the base URL defaults to https://magicauth.app/api', (new Client())->baseUrl === 'https://magicauth.app/api');
    check('defaults: timeout 10 s, 2 retries', $fromEnv->timeout === 10.0 && $fromEnv->maxRetries === 2);
    putenv('MAGICAUTH_APP_KEY');
    expect_error('no app key is a ConfigurationError', ConfigurationError::class, 'configuration', null, static fn () => new Client());
    expect_error('a non-http base URL is a ConfigurationError', ConfigurationError::class, 'configuration', null,
        static fn () => new Client($appKey, 'ftp://user:pw@host/api'));
});

group('client: tokenFromUrl', static function (): void {
    $t = 'Ab3_-xYz';
    foreach ([
        "https://app.example.com/auth/callback?magic_token={$t}",
        "https://app.example.com/auth/callback?next=%2Fhome&magic_token={$t}&lang=en",
        "http://localhost:3000/cb?magic_token={$t}#section",
        "/auth/callback?magic_token={$t}",
        "?magic_token={$t}",
        "magic_token={$t}",
        "  magic_token={$t}  ",
    ] as $input) {
        check("tokenFromUrl finds the token in " . json_encode($input), Client::tokenFromUrl($input) === $t);
    }
    foreach (['', 'https://a.com/cb', 'https://a.com/cb?magic_token=', 'token=abc', 'https://a.com/cb#magic_token=x'] as $input) {
        check('tokenFromUrl gives null for ' . json_encode($input), Client::tokenFromUrl($input) === null);
    }
});

group('client: every error the real server can give', static function () use ($appKey, $callbackUrl): void {
    $client = new Client($appKey, Testbed::$baseUrl);

    expect_error('unknown token: InvalidTokenError', InvalidTokenError::class, 'invalid_token', 400,
        static fn () => $client->verifyToken('not-a-real-token'));

    $client->sendLink('used@example.com', $callbackUrl);
    $token = Testbed::token('used@example.com');
    $client->verifyToken($token);
    expect_error('second verify: TokenAlreadyUsedError', TokenAlreadyUsedError::class, 'token_used', 400,
        static fn () => $client->verifyToken($token));

    [, $shortKey] = Testbed::createApp(['--token-ttl', '1s']);
    $short = new Client($shortKey, Testbed::$baseUrl);
    $short->sendLink('expired@example.com');
    $token = Testbed::token('expired@example.com');
    control('POST', '/clock', ['advance_seconds' => 5]);
    expect_error('token past its TTL: TokenExpiredError', TokenExpiredError::class, 'token_expired', 400,
        static fn () => $short->verifyToken($token));

    $wrongKey = secret('mk_' . bin2hex(random_bytes(16)));
    $e = expect_error('unknown app key: AuthenticationError', AuthenticationError::class, 'invalid_app_key', 401,
        static fn () => (new Client($wrongKey, Testbed::$baseUrl))->sendLink('a@example.com'));
    check('the AuthenticationError message does not contain the key', $e !== null && !str_contains($e->getMessage(), $wrongKey));

    [$disabledId, $disabledKey] = Testbed::createApp([]);
    control('POST', '/cli', ['args' => ['disable', $disabledId]]);
    expect_error('disabled app: PermissionDeniedError (app_disabled)', PermissionDeniedError::class, 'app_disabled', 403,
        static fn () => (new Client($disabledKey, Testbed::$baseUrl))->sendLink('a@example.com'));

    expect_error('redirect not allowed: PermissionDeniedError (redirect_not_allowed)', PermissionDeniedError::class,
        'redirect_not_allowed', 403, static fn () => $client->sendLink('a@example.com', 'https://evil.example.com/auth/callback'));

    expect_error('bad email: InvalidRequestError', InvalidRequestError::class, 'invalid_request', 400,
        static fn () => $client->sendLink('not-an-email'));
    expect_error('bad redirect URL: InvalidRequestError', InvalidRequestError::class, 'invalid_request', 400,
        static fn () => $client->sendLink('a@example.com', 'http://example.com/cb'));
    expect_error('invalid UTF-8 is refused before sending: InvalidRequestError', InvalidRequestError::class, 'invalid_request', null,
        static fn () => $client->sendLink("a\xff@example.com"));

    [, $burstKey] = Testbed::createApp(['--burst', '1']);
    $noRetry = new Client($burstKey, Testbed::$baseUrl, 10.0, 0);
    $noRetry->sendLink('burst1@example.com');
    $e = expect_error('over the burst limit: RateLimitError', RateLimitError::class, 'rate_limited', 429,
        static fn () => $noRetry->sendLink('burst2@example.com'));
    check('RateLimitError carries retryAfter', $e !== null && is_int($e->retryAfter) && $e->retryAfter > 0, (string) $e?->retryAfter);
    $started = microtime(true);
    expect_error('with retries, a Retry-After over 30 s is returned at once', RateLimitError::class, 'rate_limited', 429,
        static fn () => (new Client($burstKey, Testbed::$baseUrl))->sendLink('burst3@example.com'));
    check('... without waiting', microtime(true) - $started < 5, sprintf('%.2f s', microtime(true) - $started));

    $e = expect_error('nothing listening: APIConnectionError', APIConnectionError::class, 'connection', null,
        static fn () => (new Client($appKey, 'http://127.0.0.1:9/api', 2.0, 0))->sendLink('a@example.com'));
    check('APIConnectionError has no status or retryAfter', $e !== null && $e->status === null && $e->retryAfter === null);
    $started = microtime(true);
    expect_error('connection errors are retried, then reported', APIConnectionError::class, 'connection', null,
        static fn () => (new Client($appKey, 'http://127.0.0.1:9/api', 2.0, 2))->sendLink('a@example.com'));
    check('... within the backoff bound (at most 250 + 500 ms of sleep)', microtime(true) - $started < 3);
});

// -- The retry loop against a scripted stub -------------------------------

group('client: retries and idempotency (stub server)', static function (): void {
    $dir = Children::$tmp . '/stub';
    mkdir($dir);
    $port = start_php_server('stub', [__DIR__ . '/stub/router.php'], static fn (int $p): array => ['STUB_DIR' => $dir]);
    $stubKey = secret('mk_stub' . bin2hex(random_bytes(12)));
    $base = "http://127.0.0.1:{$port}/api";
    $ok = ['status' => 200, 'headers' => ['Content-Type' => 'application/json'], 'body' => '{"success":true,"expires_in":900}'];
    $json = static fn (int $status, string $code, array $headers = []): array => [
        'status' => $status,
        'headers' => ['Content-Type' => 'application/json'] + $headers,
        'body' => json_encode(['success' => false, 'error' => "stub {$code}", 'code' => $code]),
    ];
    $script = static function (array $responses) use ($dir): void {
        file_put_contents("{$dir}/script.json", json_encode($responses));
        @unlink("{$dir}/requests.jsonl");
    };
    $seen = static function () use ($dir): array {
        $lines = is_file("{$dir}/requests.jsonl") ? file("{$dir}/requests.jsonl", FILE_IGNORE_NEW_LINES) : [];

        return array_map(static fn (string $l): array => json_decode($l, true), $lines ?: []);
    };
    $client = new Client($stubKey, $base);

    $script([['status' => 503, 'body' => 'busy'], $ok]);
    $sent = $client->sendLink('a@example.com');
    $requests = $seen();
    check('503 then 200: the call succeeds after one retry', $sent->expiresIn === 900 && count($requests) === 2, count($requests) . ' requests');
    $keys = array_column($requests, 'idempotency_key');
    check('both attempts carry the same Idempotency-Key', count($keys) === 2 && is_string($keys[0]) && $keys[0] !== '' && $keys[0] === $keys[1],
        json_encode($keys));
    check('both attempts send the same body', count(array_unique(array_column($requests, 'body_sha256'))) === 1);
    check('requests are JSON POSTs to /api/send-link', ($requests[0]['method'] ?? '') === 'POST'
        && ($requests[0]['path'] ?? '') === '/api/send-link' && ($requests[0]['content_type'] ?? '') === 'application/json');
    $first = $keys[0] ?? '';

    $script([$ok]);
    $client->sendLink('a@example.com');
    check('a new call gets a new Idempotency-Key', ($seen()[0]['idempotency_key'] ?? $first) !== $first);

    $html = ['status' => 502, 'headers' => ['Content-Type' => 'text/html'], 'body' => '<html><body><h1>502 Bad Gateway</h1></body></html>'];
    $script([$html, $html, $html, $ok]);
    $e = expect_error('a non-JSON 502 is a ServerError after max retries', ServerError::class, 'server_error', 502,
        static fn () => $client->verifyToken('tok_stub'));
    check('... 3 attempts (1 + maxRetries 2), one Idempotency-Key', count($seen()) === 3
        && count(array_unique(array_column($seen(), 'idempotency_key'))) === 1, count($seen()) . ' requests');
    check('... the raw body is kept', $e !== null && str_contains((string) $e->rawBody, '502 Bad Gateway'));

    $script([$json(500, 'internal_error'), $ok]);
    check('a JSON 500 (internal_error) is retried', $client->sendLink('a@example.com')->expiresIn === 900 && count($seen()) === 2);
    $script([$json(504, 'gateway_timeout'), ['status' => 500, 'body' => ''], $ok]);
    check('504 and an empty 500 are retried', $client->sendLink('a@example.com')->expiresIn === 900 && count($seen()) === 3);

    $script([['status' => 501, 'body' => 'nope'], $ok]);
    expect_error('501 is not retried', ServerError::class, 'server_error', 501, static fn () => $client->sendLink('a@example.com'));
    check('... one attempt', count($seen()) === 1);

    $script([$json(500, 'internal_error'), $json(500, 'internal_error'), $json(500, 'internal_error')]);
    expect_error('internal_error maps to ServerError', ServerError::class, 'internal_error', 500, static fn () => $client->sendLink('a@example.com'));

    $script([$json(429, 'rate_limited', ['Retry-After' => '1']), $ok]);
    $started = microtime(true);
    $client->sendLink('a@example.com');
    $elapsed = microtime(true) - $started;
    check('429 with Retry-After: 1 is retried after 1 s', count($seen()) === 2 && $elapsed >= 0.95 && $elapsed < 3, sprintf('%.2f s', $elapsed));

    $script([$json(429, 'rate_limited', ['Retry-After' => '31']), $ok]);
    $e = expect_error('429 with Retry-After: 31 (over the 30 s cap) is not retried', RateLimitError::class, 'rate_limited', 429,
        static fn () => $client->sendLink('a@example.com'));
    check('... one attempt, retryAfter 31', count($seen()) === 1 && $e?->retryAfter === 31);

    $script([$json(429, 'quota_exceeded', ['Retry-After' => '1']), $ok]);
    expect_error('quota_exceeded is not retried', RateLimitError::class, 'quota_exceeded', 429, static fn () => $client->sendLink('a@example.com'));
    check('... one attempt', count($seen()) === 1);

    $script([$json(400, 'token_used')]);
    expect_error('4xx codes are final (token_used, one attempt)', TokenAlreadyUsedError::class, 'token_used', 400,
        static fn () => $client->verifyToken('tok_stub'));
    check('... one attempt', count($seen()) === 1);

    $script([['status' => 200, 'headers' => ['Content-Type' => 'application/json'], 'body' => '{"success":true,"user":{"id":"x"}}']]);
    expect_error('a malformed 200 is a ServerError, not a crash', ServerError::class, 'server_error', null,
        static fn () => $client->verifyToken('tok_stub'));

    $script([[
        'status' => 200,
        'headers' => ['Content-Type' => 'application/json'],
        'body' => json_encode(['success' => true, 'token' => 'a.b.c', 'redirect_url' => 'https://a.com/cb', 'user' => [
            'id' => 7, 'email' => 'n@example.com', 'name' => 'N',
            'email_verified_at' => '2025-11-13T12:30:00.123456789Z', 'last_login_at' => '2025-11-13T14:45:00+02:00',
        ]]),
    ]]);
    $v = $client->verifyToken('tok_stub');
    check('timestamps with nanoseconds and offsets parse, in UTC', $v->user->emailVerifiedAt->format('Y-m-d\TH:i:s.u\Z') === '2025-11-13T12:30:00.123456Z'
        && $v->user->lastLoginAt->format(DATE_ATOM) === '2025-11-13T12:45:00+00:00' && $v->user->name === 'N');

    $script([['status' => 502, 'body' => "echo {$stubKey}"]]);
    $e = expect_error('a key echoed in a body is redacted', ServerError::class, 'server_error', 502,
        static fn () => (new Client($stubKey, $base, 10.0, 0))->sendLink('a@example.com'));
    check('... from rawBody', $e !== null && !str_contains((string) $e->rawBody, $stubKey) && str_contains((string) $e->rawBody, '[redacted]'));

    $script([['status' => 200, 'sleep_ms' => 1500, 'body' => '{}']]);
    $started = microtime(true);
    expect_error('no answer in time: APITimeoutError', APITimeoutError::class, 'timeout', null,
        static fn () => (new Client($stubKey, $base, 0.3, 0))->sendLink('a@example.com'));
    check('... before the (1.5 s late) answer', microtime(true) - $started < 1.45, sprintf('%.2f s', microtime(true) - $started));
    Children::stop('stub');
});

// -- Secrets --------------------------------------------------------------

group('the app key never shows', static function () use ($appKey): void {
    $client = new Client($appKey, Testbed::$baseUrl);
    ob_start();
    var_dump($client);
    $dumped = (string) ob_get_clean();
    check('var_dump of the client hides the key', !str_contains($dumped, $appKey) && str_contains($dumped, '[redacted]'));
    check('print_r of the client hides the key', !str_contains(print_r($client, true), $appKey));
    check('var_export of the client hides the key', !str_contains(var_export($client, true), $appKey));
    check('an (array) cast of the client hides the key', !str_contains(print_r((array) $client, true), $appKey));
    check('json_encode of the client hides the key', !str_contains((string) json_encode($client), $appKey));
    try {
        serialize($client);
        check('serialize of the client is refused', false);
    } catch (LogicException) {
        check('serialize of the client is refused', true);
    }

    $errors = Report::$errors;
    $leaks = [];
    foreach ($errors as $e) {
        // print_r of the whole exception would also show the test's own closures
        // (with their captured keys) among the trace's arguments: look at the
        // client's frames and at the error's own fields instead.
        $clientFrames = array_values(array_filter(
            $e->getTrace(),
            static fn (array $frame): bool => str_starts_with($frame['class'] ?? '', 'MagicAuth\\'),
        ));
        $shown = [
            'message' => $e->getMessage(),
            'string' => (string) $e,
            'trace' => $e->getTraceAsString(),
            'client frames' => print_r($clientFrames, true),
            'fields' => print_r([$e->errorCode, $e->status, $e->retryAfter, $e->rawBody, $e->getPrevious()], true),
        ];
        foreach ($shown as $where => $text) {
            foreach (Report::$secrets as $secret) {
                if (str_contains($text, $secret)) {
                    $leaks[] = get_class($e) . " ({$e->errorCode}) in its {$where}";
                }
            }
        }
    }
    check(sprintf('no key or token in the messages, traces or client frames of %d errors', count($errors)), $errors !== [] && $leaks === [], implode(', ', $leaks));

    Children::stop('app'); // flush its logs
    $appLog = Children::log('app') . (string) @file_get_contents(Children::$tmp . '/app-errors.log');
    check('the example app logged nothing with the app key', !str_contains($appLog, $appKey));
    $errorLog = (string) @file_get_contents(Children::$tmp . '/app-errors.log');
    $tokenLeak = array_filter(Report::$secrets, static fn (string $s): bool => str_contains($errorLog, $s));
    check('the example app error log holds no key or token', $tokenLeak === []);
});

echo Report::$passed . ' passed, ' . Report::$failed . " failed\n";
exit(Report::$failed === 0 ? 0 : 1);
