<?php

/*
 * A scripted stand-in for the MagicAuth API, for the client's retry tests:
 *
 *     STUB_DIR=/tmp/x php -S 127.0.0.1:PORT tests/stub/router.php
 *
 * Each request takes the next response from $STUB_DIR/script.json, a JSON list
 * of {"status", "headers"?, "body"?, "sleep_ms"?}, and appends what it saw to
 * $STUB_DIR/requests.jsonl: method, path, the Idempotency-Key and Content-Type
 * headers and a hash of the body (not the body: it holds the app key).
 */

declare(strict_types=1);

$dir = getenv('STUB_DIR');
if (!is_string($dir) || !is_dir($dir)) {
    http_response_code(500);
    echo 'STUB_DIR is not set';
    return true;
}
$scriptFile = $dir . '/script.json';
$script = is_file($scriptFile) ? json_decode((string) file_get_contents($scriptFile), true) : [];
$response = is_array($script) && $script !== [] ? array_shift($script) : ['status' => 599, 'body' => 'script exhausted'];
file_put_contents($scriptFile, json_encode(is_array($script) ? $script : []));

$headers = array_change_key_case(getallheaders(), CASE_LOWER);
$body = (string) file_get_contents('php://input');
file_put_contents($dir . '/requests.jsonl', json_encode([
    'method' => $_SERVER['REQUEST_METHOD'] ?? '',
    'path' => $_SERVER['REQUEST_URI'] ?? '',
    'idempotency_key' => $headers['idempotency-key'] ?? null,
    'content_type' => $headers['content-type'] ?? null,
    'body_sha256' => hash('sha256', $body),
]) . "\n", FILE_APPEND | LOCK_EX);

if (isset($response['sleep_ms'])) {
    usleep((int) $response['sleep_ms'] * 1000);
}
http_response_code((int) $response['status']);
foreach ($response['headers'] ?? [] as $name => $value) {
    header("{$name}: {$value}");
}
echo $response['body'] ?? '';

return true;
