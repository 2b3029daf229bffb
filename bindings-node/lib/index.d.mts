// Types of the `magicauth` package as an ES module: the same declarations as
// the CommonJS entry (lib/index.mjs re-exports lib/index.js).
export * from './index.js'
