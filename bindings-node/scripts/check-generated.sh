#!/usr/bin/env bash
# Builds the native module (debug profile, as the tests use) and fails if the
# build changed the committed files that napi-rs generates: the loader
# native/index.js and the declarations native/index.d.ts. A change to the
# Rust API must come with the regenerated files in the same commit.
#
# Arguments after `--` go on to cargo through `napi build`: in CI, after `cargo test`
# with CARGO_BUILD_TARGET set, `-- --workspace --all-targets --exclude
# magicauth-python --locked` builds the module with the workspace's feature
# set and so reuses every dependency `cargo test` compiled.
set -euo pipefail
cd "$(dirname "$0")/.."

GENERATED=(native/index.js native/index.d.ts)

npm run --silent build:debug -- "$@"

# Untracked files would pass `git diff`: they must be committed first.
git ls-files --error-unmatch -- "${GENERATED[@]}" >/dev/null
if ! git diff --exit-code -- "${GENERATED[@]}"; then
    echo "error: the build changed ${GENERATED[*]}; commit the regenerated files" >&2
    exit 1
fi
