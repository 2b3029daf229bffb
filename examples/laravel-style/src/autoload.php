<?php

declare(strict_types=1);

// PSR-4 autoloader for the MagicAuth namespace, for use without Composer.
// (With Composer, composer.json maps the same namespace to src/MagicAuth/.)
spl_autoload_register(static function (string $class): void {
    $prefix = 'MagicAuth\\';
    if (!str_starts_with($class, $prefix)) {
        return;
    }
    $file = __DIR__ . '/MagicAuth/' . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
    if (is_file($file)) {
        require $file;
    }
});
