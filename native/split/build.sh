#!/bin/sh
# Builds the native splitter (shardline_split.node) with node-gyp. Run by `npm ci`/`npm install`
# (the package's install script) and by `npm run build:native`.
#
# A failed build never fails the install: shardline then uses its JavaScript line checker,
# which gives the same results, more slowly (README, "create"). With --required (used by
# build:native) a failed build is an error.
cd "$(dirname "$0")" || exit 0
required=0
[ "${1:-}" = "--required" ] && required=1

if [ -n "${npm_config_node_gyp:-}" ] && [ -f "$npm_config_node_gyp" ]; then
  set -- node "$npm_config_node_gyp"
elif command -v node-gyp >/dev/null 2>&1; then
  set -- node-gyp
else
  echo "shardline: node-gyp not found; the native splitter is not built (the JavaScript checker will be used)" >&2
  [ "$required" = 1 ] && exit 1
  exit 0
fi

if "$@" rebuild >build.log 2>&1; then
  echo "shardline: built the native splitter (native/split/build/Release/shardline_split.node)"
  exit 0
fi
echo "shardline: could not build the native splitter (see native/split/build.log); the JavaScript checker will be used" >&2
tail -n 15 build.log >&2
[ "$required" = 1 ] && exit 1
exit 0
