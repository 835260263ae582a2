# shellcheck shell=bash
# shellcheck disable=SC2034 # the settings and names below are read by the scripts that source this
# Shared by the scripts in infra/: configuration (env file, environment, flags, defaults),
# printing commands in a form that can be pasted into bash, and running them, or only printing
# them under --dry-run. Sourced, never run; the sourcing script sets SCRIPT_NAME and DRY_RUN.
#
# The plan a script prints under --dry-run is the list of commands it runs for real, in order,
# with the same arguments:
#   - a plain line is run as it is;
#   - `PROBE >/dev/null 2>&1 || CREATE` is a create guarded by an existence check (`ensure`);
#   - `if PROBE >/dev/null 2>&1; then DELETE; fi` is a delete of something that may be gone;
#   - `NAME="$(COMMAND)"` is a value looked up while the plan runs (`lookup`); later lines use
#     it as "${NAME}". A dry run never calls gcloud, so it cannot know these values.

: "${SCRIPT_NAME:=shardline}"
: "${DRY_RUN:=0}"
# Names of the values that a dry run prints as "${NAME}" because only a real run knows them.
DEFERRED_NAMES=()

die() {
  printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2
  exit 2
}

dry() { [ "$DRY_RUN" = 1 ]; }

# A progress line: a comment in the printed plan, a log line on stderr when running.
say() {
  if dry; then
    printf '# %s\n' "$*"
  else
    printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2
  fi
}

# quote_arg ARG: ARG as bash needs it written. Plain words stay bare; a word that holds a
# deferred "${NAME}" is double-quoted so the value is substituted when the plan runs;
# anything else is single-quoted.
quote_arg() {
  local s=$1 name deferred=0
  if [[ $s =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$s"
    return
  fi
  for name in "${DEFERRED_NAMES[@]}"; do
    if [[ $s == *"\${$name}"* ]]; then deferred=1; fi
  done
  if [ "$deferred" = 0 ]; then
    printf "'%s'" "${s//\'/\'\\\'\'}"
    return
  fi
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//\`/\\\`}
  s=${s//\$/\\\$}
  for name in "${DEFERRED_NAMES[@]}"; do
    s=${s//"\\\${$name}"/"\${$name}"}
  done
  printf '"%s"' "$s"
}

# quote_cmd ARG...: the command line, every argument quoted by quote_arg.
quote_cmd() {
  local out='' a
  for a in "$@"; do
    out+="${out:+ }$(quote_arg "$a")"
  done
  printf '%s' "$out"
}

# run CMD...: runs a command (or prints it).
run() {
  if dry; then
    printf '%s\n' "$(quote_cmd "$@")"
    return 0
  fi
  printf '+ %s\n' "$(quote_cmd "$@")" >&2
  "$@"
}

# retry CMD...: like run, but a real run tries up to 6 times with jittered exponential backoff
# (2 s, 4 s, ... capped at 30 s, times a random factor in [0.5, 1)). For IAM policy changes:
# a new service account takes seconds to be visible everywhere, and concurrent policy
# updates fail on the etag.
retry() {
  if dry; then
    run "$@"
    return
  fi
  local attempt=1 max=6 delay
  printf '+ %s\n' "$(quote_cmd "$@")" >&2
  until "$@"; do
    if ((attempt >= max)); then
      printf '%s: gave up after %d attempts: %s\n' "$SCRIPT_NAME" "$max" "$(quote_cmd "$@")" >&2
      return 1
    fi
    delay=$((2 ** attempt))
    ((delay > 30)) && delay=30
    delay=$((delay * (50 + RANDOM % 50) / 100 + 1))
    printf '%s: attempt %d failed; retrying in %d s\n' "$SCRIPT_NAME" "$attempt" "$delay" >&2
    sleep "$delay"
    attempt=$((attempt + 1))
  done
}

# Google's errors while a new project's service agents are still getting their permissions
# (Eventarc's agent; Cloud Storage's agent publishing to the trigger's topic). The first Storage
# trigger of a project often meets one; Eventarc's troubleshooting guide says to wait a few
# minutes and create the trigger again.
PROPAGATION_ERRORS='it may take a few minutes before all necessary permissions are propagated|Permission denied while using the Eventarc Service Agent|unable to publish to Cloud Pub/Sub topics in the specified project'

# retry_propagation CMD...: like run, but a real run tries again, up to 8 times with backoff
# (SHARDLINE_PROPAGATION_RETRY_SECONDS, default 30 s, doubling to 120 s: about 11 minutes in
# all), while CMD fails with one of PROPAGATION_ERRORS. Any other failure fails at once.
retry_propagation() {
  if dry; then
    run "$@"
    return
  fi
  local attempt=1 max=8 delay=${SHARDLINE_PROPAGATION_RETRY_SECONDS:-30} err
  err=$(mktemp)
  printf '+ %s\n' "$(quote_cmd "$@")" >&2
  until "$@" 2>"$err"; do
    cat "$err" >&2
    if ! grep -Eq "$PROPAGATION_ERRORS" "$err"; then
      rm -f "$err"
      return 1
    fi
    if ((attempt >= max)); then
      printf '%s: service-agent permissions still not propagated after %d attempts: %s\n' \
        "$SCRIPT_NAME" "$max" "$(quote_cmd "$@")" >&2
      rm -f "$err"
      return 1
    fi
    printf '%s: attempt %d met a service-agent permission that is still propagating; retrying in %d s\n' \
      "$SCRIPT_NAME" "$attempt" "$delay" >&2
    sleep "$delay"
    delay=$((delay * 2 > 120 ? 120 : delay * 2))
    attempt=$((attempt + 1))
  done
  cat "$err" >&2
  rm -f "$err"
}

# ensure PROBE... -- CREATE...: runs CREATE unless PROBE succeeds (the thing exists).
ensure() {
  local -a probe=()
  while [ "$#" -gt 0 ] && [ "$1" != -- ]; do
    probe+=("$1")
    shift
  done
  [ "$#" -gt 1 ] || die "ensure: missing '-- CREATE...'"
  shift
  if dry; then
    printf '%s >/dev/null 2>&1 || %s\n' "$(quote_cmd "${probe[@]}")" "$(quote_cmd "$@")"
    return 0
  fi
  if "${probe[@]}" >/dev/null 2>&1; then
    printf '= exists: %s\n' "$(quote_cmd "${probe[@]}")" >&2
    return 0
  fi
  printf '+ %s\n' "$(quote_cmd "$@")" >&2
  "$@"
}

# remove PROBE... -- DELETE...: runs DELETE when PROBE succeeds (the thing still exists).
remove() {
  local -a probe=()
  while [ "$#" -gt 0 ] && [ "$1" != -- ]; do
    probe+=("$1")
    shift
  done
  [ "$#" -gt 1 ] || die "remove: missing '-- DELETE...'"
  shift
  if dry; then
    printf 'if %s >/dev/null 2>&1; then %s; fi\n' "$(quote_cmd "${probe[@]}")" "$(quote_cmd "$@")"
    return 0
  fi
  if ! "${probe[@]}" >/dev/null 2>&1; then
    printf '= already gone: %s\n' "$(quote_cmd "${probe[@]}")" >&2
    return 0
  fi
  printf '+ %s\n' "$(quote_cmd "$@")" >&2
  "$@"
}

# tolerate CMD...: runs CMD; a failure is logged and ignored (printed as `CMD || true`).
# Only for removals of things that may already be gone.
tolerate() {
  if dry; then
    printf '%s || true\n' "$(quote_cmd "$@")"
    return 0
  fi
  printf '+ %s\n' "$(quote_cmd "$@")" >&2
  "$@" || printf '%s: ignored the failure above (already removed?)\n' "$SCRIPT_NAME" >&2
}

# lookup NAME CMD...: sets NAME to CMD's output (trimmed). A dry run prints NAME="$(CMD)" and
# sets NAME to the literal "${NAME}", which later printed commands keep as a reference.
lookup() {
  local name=$1 value
  shift
  if dry; then
    # shellcheck disable=SC2016 # printed for the plan to expand when it runs
    printf '%s="$(%s)"\n' "$name" "$(quote_cmd "$@")"
    DEFERRED_NAMES+=("$name")
    # shellcheck disable=SC2016 # the literal ${NAME}
    printf -v "$name" '${%s}' "$name"
    return 0
  fi
  # shellcheck disable=SC2016 # a log line
  printf '+ %s=$(%s)\n' "$name" "$(quote_cmd "$@")" >&2
  value=$("$@")
  value=${value//$'\n'/}
  [ -n "$value" ] || die "lookup of $name returned nothing: $(quote_cmd "$@")"
  printf -v "$name" '%s' "$value"
}

# load_env_file FILE: reads SHARDLINE_*=VALUE lines. A value may be wrapped in single or double
# quotes and is taken literally (no expansion, no code runs). A variable that already has a
# value (from the environment or a flag) keeps it; an empty one counts as unset.
load_env_file() {
  local file=$1 line key value n=0
  [ -f "$file" ] || die "env file $file does not exist"
  while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    [[ $line =~ ^[[:space:]]*(#.*)?$ ]] && continue
    if [[ ! $line =~ ^[[:space:]]*(export[[:space:]]+)?(SHARDLINE_[A-Z0-9_]+)=(.*)$ ]]; then
      die "$file:$n: expected SHARDLINE_NAME=VALUE, got: $line"
    fi
    key=${BASH_REMATCH[2]}
    value=${BASH_REMATCH[3]}
    value=${value%"${value##*[![:space:]]}"}
    if [[ $value =~ ^\'(.*)\'$ ]] || [[ $value =~ ^\"(.*)\"$ ]]; then
      value=${BASH_REMATCH[1]}
    fi
    if [ -z "${!key:-}" ]; then
      printf -v "$key" '%s' "$value"
    fi
  done <"$file"
}

# set_assignment NAME=VALUE: a `--set` flag; NAME must be a SHARDLINE_ setting.
set_assignment() {
  local key=${1%%=*}
  [[ $1 == *=* && $key =~ ^SHARDLINE_[A-Z0-9_]+$ ]] || die "--set wants SHARDLINE_NAME=VALUE, got: $1"
  printf -v "$key" '%s' "${1#*=}"
}

# default NAME VALUE: sets NAME when it is unset or empty.
default() {
  if [ -z "${!1:-}" ]; then
    printf -v "$1" '%s' "$2"
  fi
}

# Validation helpers: each fails naming the setting, the rule and the value.
require() {
  [ -n "${!1:-}" ] || die "$1 is required (set it in the env file, the environment, or with a flag)"
}
check_match() { # NAME REGEX RULE
  [[ ${!1} =~ $2 ]] || die "$1 must be $3; got '${!1}'"
}
check_int() { # NAME MIN MAX
  if ! [[ ${!1} =~ ^[0-9]{1,9}$ ]] || ((10#${!1} < $2 || 10#${!1} > $3)); then
    die "$1 must be a whole number from $2 to $3; got '${!1}'"
  fi
}

# abs_path PATH: PATH made absolute against the current directory (the file need not exist).
abs_path() {
  case "$1" in
    /*) printf '%s' "$1" ;;
    *) printf '%s/%s' "$PWD" "$1" ;;
  esac
}

# load_config ENV_FILE EXPLICIT: the settings every infra script shares, with their defaults. The env
# file is optional when it is the default path and missing.
load_config() {
  local env_file=$1 explicit=$2
  if [ -f "$env_file" ]; then
    load_env_file "$env_file"
  elif [ "$explicit" = 1 ]; then
    die "env file $env_file does not exist"
  fi
  require SHARDLINE_PROJECT
  default SHARDLINE_REGION us-central1
  default SHARDLINE_NAME_PREFIX shardline
  default SHARDLINE_BUCKET "${SHARDLINE_PROJECT}-shardline"
  default SHARDLINE_BUCKET_LOCATION "$SHARDLINE_REGION"
  # The uploads bucket: the only one with an ingest trigger (infra/README.md, "Two buckets").
  default SHARDLINE_UPLOADS_BUCKET "${SHARDLINE_BUCKET}-uploads"
  default SHARDLINE_UPLOADS_BUCKET_LOCATION "$SHARDLINE_BUCKET_LOCATION"
  # More buckets that `shardline work --output_dir` writes to (comma-separated names).
  default SHARDLINE_OUTPUT_BUCKETS ''
  default SHARDLINE_FIRESTORE_DATABASE '(default)'
  default SHARDLINE_FIRESTORE_LOCATION "$SHARDLINE_REGION"
  default SHARDLINE_WORK_TOPIC shardline-work
  default SHARDLINE_EVENTS_TOPIC shardline-events
  default SHARDLINE_TICK_TOPIC shardline-tick
  default SHARDLINE_INGEST_TOPIC shardline-ingest
  default SHARDLINE_WORK_SUBSCRIPTION shardline-work-workers
  default SHARDLINE_DEAD_LETTER_SUFFIX -dead-letter
  default SHARDLINE_MAX_DELIVERY_ATTEMPTS 10
  default SHARDLINE_INGEST_PREFIX incoming/
  default SHARDLINE_DATASETS_PREFIX datasets/
  default SHARDLINE_DEFAULT_NUM_SHARDS 8
  default SHARDLINE_CHUNK_SIZE_MB 100
  default SHARDLINE_SHARD_MAX_ATTEMPTS 3
  default SHARDLINE_AR_REPOSITORY shardline
  default SHARDLINE_IMAGE_TAG latest

  check_match SHARDLINE_PROJECT '^[a-z][a-z0-9-]{4,28}[a-z0-9]$' 'a Google Cloud project id'
  check_match SHARDLINE_REGION '^[a-z]+-[a-z]+[0-9]+$' 'a region such as us-central1'
  check_match SHARDLINE_NAME_PREFIX '^[a-z][a-z0-9-]{1,14}[a-z0-9]$' \
    '3-16 lowercase letters, digits and hyphens (service account ids are PREFIX-ROLE)'
  check_match SHARDLINE_BUCKET '^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$' 'a bucket name'
  check_match SHARDLINE_UPLOADS_BUCKET '^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$' \
    'a bucket name (default: the data bucket name + -uploads, which must stay within 63 characters)'
  if [ "$SHARDLINE_UPLOADS_BUCKET" = "$SHARDLINE_BUCKET" ]; then
    die "SHARDLINE_UPLOADS_BUCKET must differ from SHARDLINE_BUCKET ('$SHARDLINE_BUCKET'): every object written to the uploads bucket wakes the ingest function, so datasets and activations live in the data bucket"
  fi
  check_match SHARDLINE_OUTPUT_BUCKETS '^([a-z0-9][a-z0-9._-]{1,61}[a-z0-9](,[a-z0-9][a-z0-9._-]{1,61}[a-z0-9])*)?$' \
    'empty or bucket names separated by commas'
  check_match SHARDLINE_FIRESTORE_DATABASE '^(\(default\)|[a-z][a-z0-9-]{2,61}[a-z0-9])$' \
    "'(default)' or a Firestore database id"
  local t
  for t in SHARDLINE_WORK_TOPIC SHARDLINE_EVENTS_TOPIC SHARDLINE_TICK_TOPIC SHARDLINE_INGEST_TOPIC \
    SHARDLINE_WORK_SUBSCRIPTION; do
    check_match "$t" '^[A-Za-z][A-Za-z0-9._~+%-]{2,200}$' 'a Pub/Sub topic or subscription id'
  done
  check_match SHARDLINE_INGEST_PREFIX '^[A-Za-z0-9_.-][A-Za-z0-9_./-]*/$' \
    'an object name prefix of letters, digits, _ . - and /, ending in /'
  check_match SHARDLINE_DATASETS_PREFIX '^[A-Za-z0-9_.-][A-Za-z0-9_./-]*/$' \
    'an object name prefix of letters, digits, _ . - and /, ending in /'
  check_int SHARDLINE_MAX_DELIVERY_ATTEMPTS 5 100
  check_int SHARDLINE_DEFAULT_NUM_SHARDS 1 100000
  check_int SHARDLINE_CHUNK_SIZE_MB 1 10000
  check_int SHARDLINE_SHARD_MAX_ATTEMPTS 1 100
  check_match SHARDLINE_AR_REPOSITORY '^[a-z][a-z0-9-]{0,62}$' 'an Artifact Registry repository id'
  check_match SHARDLINE_IMAGE_TAG '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$' 'a container image tag'

  # Derived names.
  PROJECT=$SHARDLINE_PROJECT
  REGION=$SHARDLINE_REGION
  BUCKET=$SHARDLINE_BUCKET
  UPLOADS_BUCKET=$SHARDLINE_UPLOADS_BUCKET
  OUTPUT_BUCKETS=()
  if [ -n "$SHARDLINE_OUTPUT_BUCKETS" ]; then
    IFS=, read -r -a OUTPUT_BUCKETS <<<"$SHARDLINE_OUTPUT_BUCKETS"
  fi
  DATABASE=$SHARDLINE_FIRESTORE_DATABASE
  PREFIX=$SHARDLINE_NAME_PREFIX
  SA_DOMAIN="${PROJECT}.iam.gserviceaccount.com"
  INGEST_SA="${PREFIX}-ingest@${SA_DOMAIN}"
  LEDGER_SA="${PREFIX}-ledger@${SA_DOMAIN}"
  WORKER_SA="${PREFIX}-worker@${SA_DOMAIN}"
  BUILD_SA="${PREFIX}-build@${SA_DOMAIN}"
  DEPLOYER_SA="${PREFIX}-deployer@${SA_DOMAIN}"
  IMAGES="${REGION}-docker.pkg.dev/${PROJECT}/${SHARDLINE_AR_REPOSITORY}"
  DEAD_LETTER_SUFFIX=$SHARDLINE_DEAD_LETTER_SUFFIX
}

# The settings file and the flags deploy.sh and teardown.sh share. SHARDLINE_ENV_FILE names
# the settings file too (cloudbuild.yaml passes it that way).
init_common_flags() { # HERE
  ENV_FILE=$(abs_path "${SHARDLINE_ENV_FILE:-$1/shardline.env}")
  ENV_EXPLICIT=0
  if [ -n "${SHARDLINE_ENV_FILE:-}" ]; then ENV_EXPLICIT=1; fi
}

# Takes one shared flag from "$@"; sets FLAG_WORDS to the words it used (0: not a shared flag).
common_flag() {
  FLAG_WORDS=1
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --env-file) ENV_FILE=$(abs_path "${2:?--env-file needs a value}"); ENV_EXPLICIT=1; FLAG_WORDS=2 ;;
    --env-file=*) ENV_FILE=$(abs_path "${1#*=}"); ENV_EXPLICIT=1 ;;
    --project) SHARDLINE_PROJECT=${2:?--project needs a value}; FLAG_WORDS=2 ;;
    --project=*) SHARDLINE_PROJECT=${1#*=} ;;
    --region) SHARDLINE_REGION=${2:?--region needs a value}; FLAG_WORDS=2 ;;
    --region=*) SHARDLINE_REGION=${1#*=} ;;
    --bucket) SHARDLINE_BUCKET=${2:?--bucket needs a value}; FLAG_WORDS=2 ;;
    --bucket=*) SHARDLINE_BUCKET=${1#*=} ;;
    --uploads-bucket) SHARDLINE_UPLOADS_BUCKET=${2:?--uploads-bucket needs a value}; FLAG_WORDS=2 ;;
    --uploads-bucket=*) SHARDLINE_UPLOADS_BUCKET=${1#*=} ;;
    --database) SHARDLINE_FIRESTORE_DATABASE=${2:?--database needs a value}; FLAG_WORDS=2 ;;
    --database=*) SHARDLINE_FIRESTORE_DATABASE=${1#*=} ;;
    --set) set_assignment "${2:?--set needs NAME=VALUE}"; FLAG_WORDS=2 ;;
    --set=*) set_assignment "${1#*=}" ;;
    *) FLAG_WORDS=0 ;;
  esac
}
