#!/usr/bin/env bash
# Runs one command with the Firestore, Pub/Sub and Cloud Storage emulators up, then stops them
# by process id, pass or fail. The exit code is the command's.
#
#   bash test/emulators/with-emulators.sh <command> [args...]
#
# Ports come from firebase.json. SHARDLINE_EMULATOR_PORT_OFFSET (default 0) shifts all of
# them, so two suites can run side by side. Firestore and Pub/Sub are the Cloud SDK's jars
# run with java directly; Storage is firebase-tools' emulator, which offline needs a stub for
# its rules runtime and a `java -version` shim (see docs/notes/emulators.md §3a, §6).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SDK="${CLOUDSDK_ROOT:-/usr/lib/google-cloud-sdk}"
PROJECT="${SHARDLINE_TEST_PROJECT:-demo-shardline}"
OFFSET="${SHARDLINE_EMULATOR_PORT_OFFSET:-0}"
FIREBASE_BIN="$ROOT/node_modules/.bin/firebase"

case "$PROJECT" in
  demo-*) ;;
  *) echo "with-emulators: project id '$PROJECT' must start with demo- so no test can reach a real project" >&2; exit 2 ;;
esac
if [ "$#" -eq 0 ]; then
  echo "usage: with-emulators.sh <command> [args...]" >&2
  exit 2
fi

FS_JAR="$SDK/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
PS_JAR="$(ls "$SDK"/platform/pubsub-emulator/lib/cloud-pubsub-emulator-*.jar 2>/dev/null | head -n 1 || true)"
missing=()
[ -f "$FS_JAR" ] || missing+=("$FS_JAR")
[ -n "$PS_JAR" ] || missing+=("$SDK/platform/pubsub-emulator/lib/cloud-pubsub-emulator-*.jar")
[ -x "$FIREBASE_BIN" ] || missing+=("$FIREBASE_BIN (run npm ci)")
command -v java >/dev/null || missing+=("java (a JDK 17 or newer)")
if [ "${#missing[@]}" -gt 0 ]; then
  echo "with-emulators: cannot start the emulators; missing:" >&2
  printf '  %s\n' "${missing[@]}" >&2
  exit 3
fi

port() { # port <emulator name in firebase.json>
  node -e '
    const cfg = require(process.argv[1]).emulators[process.argv[2]];
    if (!cfg || !cfg.port) { console.error(`firebase.json has no emulators.${process.argv[2]}.port`); process.exit(1); }
    console.log(cfg.port + Number(process.argv[3]));
  ' "$ROOT/firebase.json" "$1" "$OFFSET"
}
FS_PORT="$(port firestore)"; PS_PORT="$(port pubsub)"; GCS_PORT="$(port storage)"
HUB_PORT="$(port hub)"; LOG_PORT="$(port logging)"

RUN_ROOT="${SHARDLINE_EMULATOR_RUN_ROOT:-$ROOT/.emulators}"
mkdir -p "$RUN_ROOT"
WORK="$(mktemp -d "$RUN_ROOT/run.XXXXXX")"
PIDS=()

stop_all() {
  local p
  # firebase-tools shuts down cleanly on SIGINT; the java emulators on SIGTERM.
  for p in "${PIDS[@]}"; do kill -INT -- "-$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$p" 2>/dev/null || true
  done
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for p in "$FS_PORT" "$PS_PORT" "$GCS_PORT" "$HUB_PORT" "$LOG_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "with-emulators: port $p is already in use (another run? set SHARDLINE_EMULATOR_PORT_OFFSET)" >&2
    exit 3
  fi
done

STUB="$HERE/rules-stub.jar"
if [ ! -f "$STUB" ]; then
  javac -d "$WORK/classes" "$HERE/RulesStub.java"
  printf 'Main-Class: RulesStub\n' >"$WORK/manifest.txt"
  jar cfm "$STUB.tmp.$$" "$WORK/manifest.txt" -C "$WORK/classes" RulesStub.class
  mv "$STUB.tmp.$$" "$STUB"
fi
mkdir -p "$WORK/shim"
cat >"$WORK/shim/java" <<'SHIM'
#!/bin/sh
# firebase-tools refuses Java < 21 for its emulators; only its version probe sees this answer.
for a in "$@"; do
  if [ "$a" = "-version" ]; then
    "$REAL_JAVA" "$@" 2>&1 | sed 's/version "1[1-9]/version "21/' >&2
    exit 0
  fi
done
exec "$REAL_JAVA" "$@"
SHIM
chmod +x "$WORK/shim/java"
REAL_JAVA="$(command -v java)"
cat >"$WORK/firebase.json" <<JSON
{"emulators": {"singleProjectMode": true,
  "storage": {"host": "127.0.0.1", "port": $GCS_PORT},
  "hub": {"host": "127.0.0.1", "port": $HUB_PORT},
  "logging": {"host": "127.0.0.1", "port": $LOG_PORT},
  "ui": {"enabled": false}}}
JSON

JVM_OPTS=(-Xmx384m -Duser.language=en)
setsid java "${JVM_OPTS[@]}" -cp "$FS_JAR" com.google.cloud.datastore.emulator.firestore.CloudFirestore \
  start --host=127.0.0.1 --port="$FS_PORT" --rules="$ROOT/infra/firestore.rules" \
  >"$WORK/firestore.log" 2>&1 &
PIDS+=($!)
setsid java "${JVM_OPTS[@]}" -jar "$PS_JAR" --host=127.0.0.1 --port="$PS_PORT" >"$WORK/pubsub.log" 2>&1 &
PIDS+=($!)
(
  cd "$WORK"
  export PATH="$WORK/shim:$PATH" REAL_JAVA STORAGE_EMULATOR_BINARY_PATH="$STUB" \
    FIREBASE_EMULATORS_PATH="$WORK/fbcache" XDG_CONFIG_HOME="$WORK/config" TMPDIR="$WORK"
  exec setsid "$FIREBASE_BIN" emulators:start --only storage --project "$PROJECT" --config "$WORK/firebase.json"
) >"$WORK/storage.log" 2>&1 &
PIDS+=($!)

wait_for() { # name url expected-substring timeout-seconds
  local start=$SECONDS
  until curl -s --max-time 1 "$2" 2>/dev/null | grep -q "$3"; do
    if ((SECONDS - start > $4)); then
      echo "with-emulators: $1 emulator not ready after $4 s; its log:" >&2
      cat "$WORK/$1.log" >&2
      exit 3
    fi
    sleep 0.1
  done
}
started=$SECONDS
wait_for firestore "http://127.0.0.1:$FS_PORT/" Ok 60
wait_for pubsub "http://127.0.0.1:$PS_PORT/" Ok 60
wait_for storage "http://127.0.0.1:$GCS_PORT/b" 'storage#buckets' 120
echo "with-emulators: firestore :$FS_PORT, pubsub :$PS_PORT, storage :$GCS_PORT ready in $((SECONDS - started)) s (logs in $WORK)" >&2

export FIRESTORE_EMULATOR_HOST="127.0.0.1:$FS_PORT"
export PUBSUB_EMULATOR_HOST="127.0.0.1:$PS_PORT"
export STORAGE_EMULATOR_HOST="http://127.0.0.1:$GCS_PORT"
export GCLOUD_PROJECT="$PROJECT" GOOGLE_CLOUD_PROJECT="$PROJECT" METADATA_SERVER_DETECTION=none
# The emulators' process groups (each started with setsid), for tests that freeze one with
# SIGSTOP and thaw it with SIGCONT (the outage soak).
export SHARDLINE_EMULATOR_PGIDS="firestore=${PIDS[0]},pubsub=${PIDS[1]},storage=${PIDS[2]}"
set +e
"$@"
status=$?
set -e
exit "$status"
