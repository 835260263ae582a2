#!/usr/bin/env bash
# Deploys shardline's cloud side into one Google Cloud project: APIs, the uploads bucket and the
# data bucket, the Firestore
# database with its indexes and rules, Pub/Sub topics and subscriptions with dead-lettering,
# one service account per role with the smallest roles it needs, the Artifact Registry
# repository, the four Cloud Functions and the Cloud Scheduler tick. See infra/README.md.
#
#   infra/deploy.sh [--env-file FILE] [--project ID] [--region REGION] [--bucket NAME]
#                   [--uploads-bucket NAME] [--database ID] [--set SHARDLINE_NAME=VALUE]...
#                   [--only STEP[,STEP...]] [--reconcile] [--dry-run]
#
# Idempotent: every resource is created only when a describe finds it missing; bindings and
# settings are set to the same values again (no change); the functions are redeployed (a new
# revision of the same code and settings). --dry-run prints every command, in order, and runs
# none (no gcloud call at all): the printed plan is a bash script, to be run from the
# repository root, that does what a real run does. It depends only on the configuration, so
# the plan of an already-deployed project is the same commands.
set -euo pipefail

SCRIPT_NAME=deploy.sh
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$HERE/lib/common.sh"

# A full run's steps, in order. `reconcile` (only on request: --reconcile) sets the dead-letter
# policies on the trigger subscriptions again; the functions step already does it after every
# deploy, so a full run needs no separate pass.
DEFAULT_STEPS=(apis registry bucket firestore pubsub iam functions triggers scheduler)
ALL_STEPS=("${DEFAULT_STEPS[@]}" reconcile)

usage() {
  cat <<EOF
usage: infra/deploy.sh [options]

  --env-file FILE        settings file (default infra/shardline.env when it exists; see
                         infra/shardline.env.example for every setting)
  --project ID           SHARDLINE_PROJECT (required, here or in the env file)
  --region REGION        SHARDLINE_REGION (default us-central1)
  --bucket NAME          SHARDLINE_BUCKET, the data bucket (default PROJECT-shardline)
  --uploads-bucket NAME  SHARDLINE_UPLOADS_BUCKET, the bucket uploads go to (default DATA-uploads)
  --database ID          SHARDLINE_FIRESTORE_DATABASE (default "(default)")
  --set NAME=VALUE       any other SHARDLINE_* setting; repeatable
  --only STEPS           comma-separated subset of: ${ALL_STEPS[*]}
  --reconcile            only put the dead-letter policies back on the subscriptions Eventarc
                         made for the triggers (the same as --only reconcile)
  --dry-run              print the commands, run none
  -h, --help             this text

Precedence: flags, then the environment, then the env file, then the defaults.
EOF
}

init_common_flags "$HERE"
ONLY=""
while [ "$#" -gt 0 ]; do
  common_flag "$@"
  if [ "$FLAG_WORDS" -gt 0 ]; then
    shift "$FLAG_WORDS"
    continue
  fi
  case "$1" in
    --only) ONLY=${2:?--only needs a value}; shift ;;
    --only=*) ONLY=${1#*=} ;;
    --reconcile) ONLY=reconcile ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done

cd "$ROOT"
load_config "$ENV_FILE" "$ENV_EXPLICIT"

# Settings only the deployment reads.
default SHARDLINE_BUCKET_LIFECYCLE_FILE ''
default SHARDLINE_TICK_SCHEDULE '* * * * *'
default SHARDLINE_BUILD_SERVICE_ACCOUNT managed
default SHARDLINE_CREATE_DEPLOYER_SA true
default SHARDLINE_GRANT_PUBSUB_TOKEN_CREATOR false
default SHARDLINE_PROJECT_NUMBER ''
default SHARDLINE_FUNCTION_ENV ''
check_match SHARDLINE_BUILD_SERVICE_ACCOUNT '^(managed|project-default)$' "'managed' or 'project-default'"
check_match SHARDLINE_CREATE_DEPLOYER_SA '^(true|false)$' "'true' or 'false'"
check_match SHARDLINE_GRANT_PUBSUB_TOKEN_CREATOR '^(true|false)$' "'true' or 'false'"
check_match SHARDLINE_PROJECT_NUMBER '^[0-9]*$' 'empty (looked up) or the project number'
check_match SHARDLINE_FUNCTION_ENV '^([A-Z][A-Z0-9_]*=[^,]*(,[A-Z][A-Z0-9_]*=[^,]*)*)?$' \
  'empty or NAME=VALUE[,NAME=VALUE...] (values without commas)'
if [ -n "$SHARDLINE_BUCKET_LIFECYCLE_FILE" ] && [ ! -f "$SHARDLINE_BUCKET_LIFECYCLE_FILE" ]; then
  die "SHARDLINE_BUCKET_LIFECYCLE_FILE: no file $SHARDLINE_BUCKET_LIFECYCLE_FILE (paths are relative to the repository root)"
fi

STEPS=()
if [ -z "$ONLY" ]; then
  STEPS=("${DEFAULT_STEPS[@]}")
else
  IFS=, read -r -a wanted <<<"$ONLY"
  for w in "${wanted[@]}"; do
    if [[ " ${ALL_STEPS[*]} " != *" $w "* ]]; then
      die "--only: unknown step '$w' (steps: ${ALL_STEPS[*]})"
    fi
  done
  for s in "${ALL_STEPS[@]}"; do
    if [[ ",$ONLY," == *",$s,"* ]]; then STEPS+=("$s"); fi
  done
fi

if ! dry; then
  command -v gcloud >/dev/null || die "gcloud is not installed (https://cloud.google.com/sdk/docs/install)"
fi
command -v node >/dev/null || die "node is not installed (it reads infra/firestore.indexes.json)"

# Names of what this script creates.
P="--project=$PROJECT"
TOPIC_PATH="projects/$PROJECT/topics"
DL=$DEAD_LETTER_SUFFIX
WORK_TOPIC=$SHARDLINE_WORK_TOPIC
EVENTS_TOPIC=$SHARDLINE_EVENTS_TOPIC
TICK_TOPIC=$SHARDLINE_TICK_TOPIC
INGEST_TOPIC=$SHARDLINE_INGEST_TOPIC
WORK_SUB=$SHARDLINE_WORK_SUBSCRIPTION
UPLOADS_DL_TOPIC="${PREFIX}-uploads${DL}"
# Dead-letter topics: one per subscription that redelivers (the tick has none: `reap` does not
# retry, the next tick does its work). Each has a pull subscription of the same name that keeps
# dead letters 7 days for inspection (a topic without subscriptions drops what it receives).
DL_TOPICS=("${WORK_TOPIC}${DL}" "${EVENTS_TOPIC}${DL}" "${INGEST_TOPIC}${DL}" "$UPLOADS_DL_TOPIC")
REPO=$SHARDLINE_AR_REPOSITORY
REPO_PATH="projects/$PROJECT/locations/$REGION/repositories/$REPO"
TRIGGER_LOCATION=${SHARDLINE_UPLOADS_BUCKET_LOCATION,,}
SCHEDULER_JOB="${PREFIX}-tick"
OBJECTS="projects/_/buckets/$BUCKET/objects"
# The custom role of the CI deployer for the dead-letter reconcile (role ids allow no hyphens).
RECONCILER_ROLE="${PREFIX//-/_}_deadLetterReconciler"

# The functions: deployed name, entry point (a functions-framework registration in functions/,
# exported from dist/functions/index.js), service account, memory, CPU, concurrency (requests
# one instance serves at once; empty: 1), timeout, max instances, retry on failure, and trigger.
# reap gets 300 s: besides freeing expired leases (one transaction per shard) it drives stalled
# large ingests on; a tick it overruns is skipped (one instance, no retry), and the next one
# catches up. ingest and ingestStep serve 4 events per instance: the ingest record makes
# concurrent deliveries safe (infra/README.md, "Concurrency"); 2 GiB holds four splits.
FUNCTIONS=(
  "${PREFIX}-ingest|ingest|$INGEST_SA|2Gi|1|4|540s|20|retry|storage"
  "${PREFIX}-ingest-step|ingestStep|$INGEST_SA|2Gi|1|4|540s|50|retry|topic:$INGEST_TOPIC"
  "${PREFIX}-reap|reap|$LEDGER_SA|512Mi|||300s|1|no-retry|topic:$TICK_TOPIC"
  "${PREFIX}-progress|progress|$LEDGER_SA|512Mi|||120s|10|retry|topic:$EVENTS_TOPIC"
)
# Functions whose trigger subscription gets a dead-letter policy, and the topic it uses.
declare -A TRIGGER_DEAD_LETTER=(
  ["${PREFIX}-ingest"]=$UPLOADS_DL_TOPIC
  ["${PREFIX}-ingest-step"]="${INGEST_TOPIC}${DL}"
  ["${PREFIX}-progress"]="${EVENTS_TOPIC}${DL}"
)

PROJECT_NUMBER=$SHARDLINE_PROJECT_NUMBER
need_project_number() {
  if [ -z "$PROJECT_NUMBER" ]; then
    lookup PROJECT_NUMBER gcloud projects describe "$PROJECT" --format='value(projectNumber)'
  fi
}
pubsub_agent() { printf 'serviceAccount:service-%s@gcp-sa-pubsub.iam.gserviceaccount.com' "$PROJECT_NUMBER"; }
scheduler_agent() { printf 'serviceAccount:service-%s@gcp-sa-cloudscheduler.iam.gserviceaccount.com' "$PROJECT_NUMBER"; }

# IAM helpers. Every binding is on the narrowest resource that can hold it.
grant_project() { # MEMBER ROLE [CONDITION]
  retry gcloud projects add-iam-policy-binding "$PROJECT" --member="$1" --role="$2" \
    --condition="${3:-None}" --format=none
}
grant_bucket() { # BUCKET MEMBER ROLE [CONDITION]
  local -a cond=()
  if [ -n "${4:-}" ]; then
    cond=(--condition="$4")
  fi
  retry gcloud storage buckets add-iam-policy-binding "gs://$1" "$P" --member="$2" --role="$3" \
    "${cond[@]}" --format=none
}
grant_topic() { # TOPIC MEMBER ROLE
  retry gcloud pubsub topics add-iam-policy-binding "$1" "$P" --member="$2" --role="$3" --format=none
}
grant_subscription() { # SUBSCRIPTION MEMBER ROLE
  retry gcloud pubsub subscriptions add-iam-policy-binding "$1" "$P" --member="$2" --role="$3" --format=none
}
grant_repo() { # MEMBER ROLE
  retry gcloud artifacts repositories add-iam-policy-binding "$REPO" --location="$REGION" "$P" \
    --member="$1" --role="$2" --format=none
}
grant_sa_user() { # SERVICE_ACCOUNT MEMBER: MEMBER may deploy things that run as SERVICE_ACCOUNT
  retry gcloud iam service-accounts add-iam-policy-binding "$1" "$P" --member="$2" \
    --role=roles/iam.serviceAccountUser --format=none
}
# An IAM condition in gcloud's flag syntax; `^;^` makes `;` the separator, as expressions hold commas.
condition() { # TITLE DESCRIPTION EXPRESSION
  printf '^;^title=%s;description=%s;expression=%s' "$1" "$2" "$3"
}
prefix_condition() { # TITLE PREFIX: objects under PREFIX, and listing under it
  condition "$1" "objects under $2" \
    "resource.name.startsWith(\"$OBJECTS/$2\") || api.getAttribute(\"storage.googleapis.com/objectListPrefix\", \"\").startsWith(\"$2\")"
}

step_apis() {
  say "APIs"
  run gcloud services enable cloudresourcemanager.googleapis.com iam.googleapis.com \
    storage.googleapis.com firestore.googleapis.com firebaserules.googleapis.com \
    pubsub.googleapis.com cloudfunctions.googleapis.com run.googleapis.com \
    cloudbuild.googleapis.com artifactregistry.googleapis.com eventarc.googleapis.com \
    cloudscheduler.googleapis.com logging.googleapis.com "$P"
}

step_registry() {
  say "Artifact Registry repository $REPO (worker image, function builds)"
  ensure gcloud artifacts repositories describe "$REPO" --location="$REGION" "$P" -- \
    gcloud artifacts repositories create "$REPO" --location="$REGION" "$P" \
    --repository-format=docker --description='shardline: worker image and function builds'
}

step_bucket() {
  # Two buckets: a Storage trigger fires for every object finalized anywhere in its bucket
  # (Eventarc cannot filter by prefix), so the bucket that wakes ingest holds only uploads.
  say "uploads bucket gs://$UPLOADS_BUCKET (uploads under $SHARDLINE_INGEST_PREFIX; the only bucket with an ingest trigger)"
  ensure gcloud storage buckets describe "gs://$UPLOADS_BUCKET" "$P" -- \
    gcloud storage buckets create "gs://$UPLOADS_BUCKET" "$P" --location="$SHARDLINE_UPLOADS_BUCKET_LOCATION" \
    --uniform-bucket-level-access --public-access-prevention
  if [ -n "$SHARDLINE_BUCKET_LIFECYCLE_FILE" ]; then
    run gcloud storage buckets update "gs://$UPLOADS_BUCKET" "$P" --lifecycle-file="$SHARDLINE_BUCKET_LIFECYCLE_FILE"
  fi
  say "data bucket gs://$BUCKET (datasets under $SHARDLINE_DATASETS_PREFIX, their staging and activations; no trigger)"
  ensure gcloud storage buckets describe "gs://$BUCKET" "$P" -- \
    gcloud storage buckets create "gs://$BUCKET" "$P" --location="$SHARDLINE_BUCKET_LOCATION" \
    --uniform-bucket-level-access --public-access-prevention
}

# Lines from infra/firestore.indexes.json (the Firebase CLI's format):
#   composite <TAB> COLLECTION_GROUP <TAB> QUERY_SCOPE <TAB> FIELD:ORDER ...
#   override  <TAB> COLLECTION_GROUP <TAB> FIELD <TAB> gcloud index flag ...
index_plan() {
  # shellcheck disable=SC2016 # JavaScript, not shell
  node -e '
    const fs = require("fs");
    const file = process.argv[1];
    const cfg = JSON.parse(fs.readFileSync(file, "utf8"));
    const fail = (m) => { console.error(`${file}: ${m}`); process.exit(1); };
    for (const ix of cfg.indexes ?? []) {
      const scope = ix.queryScope ?? "COLLECTION";
      if (!["COLLECTION", "COLLECTION_GROUP"].includes(scope)) fail(`queryScope ${scope}`);
      const fields = (ix.fields ?? []).map((f) => {
        if (f.order) return `${f.fieldPath}:${f.order}`;
        if (f.arrayConfig) return `${f.fieldPath}:${f.arrayConfig}`;
        return fail(`index field ${f.fieldPath} has neither order nor arrayConfig`);
      });
      if (!ix.collectionGroup || fields.length < 2) fail("a composite index needs a collectionGroup and 2+ fields");
      console.log(["composite", ix.collectionGroup, scope, ...fields].join("\t"));
    }
    for (const o of cfg.fieldOverrides ?? []) {
      const idx = o.indexes ?? [];
      const flags = idx.length === 0 ? ["--disable-indexes"] : idx.map((i) => {
        if ((i.queryScope ?? "COLLECTION") !== "COLLECTION")
          fail(`field override ${o.fieldPath}: gcloud sets collection-scope indexes only`);
        return i.order ? `--index=order=${i.order.toLowerCase()}`
          : `--index=array-config=${String(i.arrayConfig).toLowerCase()}`;
      });
      console.log(["override", o.collectionGroup, o.fieldPath, ...flags].join("\t"));
    }
  ' "$1"
}

step_firestore() {
  say "Firestore database $DATABASE (Native mode, $SHARDLINE_FIRESTORE_LOCATION)"
  ensure gcloud firestore databases describe --database="$DATABASE" "$P" -- \
    gcloud firestore databases create --database="$DATABASE" --location="$SHARDLINE_FIRESTORE_LOCATION" \
    --type=firestore-native "$P"

  say "Firestore indexes from infra/firestore.indexes.json (built in the background: --async)"
  local plan kind group a b rest scope gcloud_scope order f
  local -a fields field_configs extra
  plan=$(index_plan infra/firestore.indexes.json)
  while IFS=$'\t' read -r kind group a b rest; do
    [ -n "$kind" ] || continue
    if [ "$kind" = composite ]; then
      scope=$a
      gcloud_scope=${scope,,}
      gcloud_scope=${gcloud_scope//_/-}
      IFS=$'\t' read -r -a fields <<<"$b${rest:+$'\t'$rest}"
      field_configs=()
      for f in "${fields[@]}"; do
        case "${f#*:}" in
          ASCENDING | DESCENDING) order=${f#*:} && field_configs+=(--field-config="field-path=${f%%:*},order=${order,,}") ;;
          CONTAINS) field_configs+=(--field-config="field-path=${f%%:*},array-config=contains") ;;
          *) die "infra/firestore.indexes.json: unsupported index field $f" ;;
        esac
      done
      ensure bash infra/lib/firestore-index-exists.sh "$P" --database="$DATABASE" \
        --collection-group="$group" --query-scope="$scope" "${fields[@]}" -- \
        gcloud firestore indexes composite create "$P" --database="$DATABASE" \
        --collection-group="$group" \
        --query-scope="$gcloud_scope" \
        "${field_configs[@]}" --async
    else
      IFS=$'\t' read -r -a extra <<<"$b${rest:+$'\t'$rest}"
      run gcloud firestore indexes fields update "$a" "$P" --database="$DATABASE" \
        --collection-group="$group" "${extra[@]}" --async
    fi
  done <<<"$plan"

  say "Firestore rules from infra/firestore.rules (released only when they differ from the live ones)"
  run bash infra/lib/firestore-rules.sh "$P" --database="$DATABASE" infra/firestore.rules
}

step_pubsub() {
  say "Pub/Sub topics"
  local t
  for t in "$WORK_TOPIC" "$EVENTS_TOPIC" "$TICK_TOPIC" "$INGEST_TOPIC" "${DL_TOPICS[@]}"; do
    ensure gcloud pubsub topics describe "$t" "$P" -- gcloud pubsub topics create "$t" "$P"
  done
  say "worker subscription $WORK_SUB (doorbells: workers ack at once, then hold the lease in Firestore)"
  ensure gcloud pubsub subscriptions describe "$WORK_SUB" "$P" -- \
    gcloud pubsub subscriptions create "$WORK_SUB" "$P" --topic="$WORK_TOPIC" --ack-deadline=60 \
    --message-retention-duration=7d --expiration-period=never \
    --dead-letter-topic="$TOPIC_PATH/${WORK_TOPIC}${DL}" \
    --max-delivery-attempts="$SHARDLINE_MAX_DELIVERY_ATTEMPTS" \
    --min-retry-delay=10s --max-retry-delay=600s
  say "dead-letter holding subscriptions (7 days)"
  for t in "${DL_TOPICS[@]}"; do
    ensure gcloud pubsub subscriptions describe "$t" "$P" -- \
      gcloud pubsub subscriptions create "$t" "$P" --topic="$t" --message-retention-duration=7d \
      --expiration-period=never
  done
}

step_iam() {
  need_project_number
  say "service agents (created if the project has none yet)"
  run gcloud beta services identity create --service=pubsub.googleapis.com "$P" --format=none
  run gcloud beta services identity create --service=cloudscheduler.googleapis.com "$P" --format=none
  lookup GCS_SERVICE_AGENT gcloud storage service-agent "$P"

  say "service accounts"
  local -a accounts=(
    "$INGEST_SA|shardline ingest functions (ingest, ingestStep)"
    "$LEDGER_SA|shardline ledger functions (reap, progress)"
    "$WORKER_SA|shardline workers (TPU, GPU and CPU hosts)"
  )
  if [ "$SHARDLINE_BUILD_SERVICE_ACCOUNT" = managed ]; then
    accounts+=("$BUILD_SA|shardline function builds (Cloud Build)")
  fi
  if [ "$SHARDLINE_CREATE_DEPLOYER_SA" = true ]; then
    accounts+=("$DEPLOYER_SA|shardline CI deploys (cloudbuild.yaml)")
  fi
  local entry email
  for entry in "${accounts[@]}"; do
    email=${entry%%|*}
    ensure gcloud iam service-accounts describe "$email" "$P" -- \
      gcloud iam service-accounts create "${email%%@*}" "$P" --display-name="${entry#*|}"
  done

  local ingest="serviceAccount:$INGEST_SA" ledger="serviceAccount:$LEDGER_SA"
  local worker="serviceAccount:$WORKER_SA" build="serviceAccount:$BUILD_SA"
  local deployer="serviceAccount:$DEPLOYER_SA"

  local datasets_write manifests out
  datasets_write="$(prefix_condition shardline-datasets-write "$SHARDLINE_DATASETS_PREFIX")"
  # Dataset manifests sit beside the shards' outputs, wherever --output_dir points; progress
  # may read and create those objects and no others.
  manifests="$(condition shardline-manifests '_MANIFEST.json objects only' \
    'resource.name.endsWith("/_MANIFEST.json")')"

  say "ingest functions: read uploads, write datasets, ledger, publish doorbells and ingest steps, receive Storage events"
  grant_bucket "$UPLOADS_BUCKET" "$ingest" roles/storage.objectViewer
  grant_bucket "$BUCKET" "$ingest" roles/storage.objectUser "$datasets_write"
  grant_project "$ingest" roles/datastore.user
  grant_project "$ingest" roles/eventarc.eventReceiver
  grant_topic "$WORK_TOPIC" "$ingest" roles/pubsub.publisher
  grant_topic "$INGEST_TOPIC" "$ingest" roles/pubsub.publisher

  # reap also publishes the final shard.failed of a shard out of attempts, and drives stalled
  # large ingests on (core/ingest/fanout.ts redriveStalled: reads the upload, writes under
  # datasets/, publishes ingest steps and doorbells); progress writes the dataset manifest
  # beside the activations: under datasets/ by default, or wherever --output_dir points.
  say "ledger functions: ledger, doorbells, final failures, stalled ingests, dataset manifests"
  grant_project "$ledger" roles/datastore.user
  grant_topic "$WORK_TOPIC" "$ledger" roles/pubsub.publisher
  grant_topic "$EVENTS_TOPIC" "$ledger" roles/pubsub.publisher
  grant_topic "$INGEST_TOPIC" "$ledger" roles/pubsub.publisher
  grant_bucket "$UPLOADS_BUCKET" "$ledger" roles/storage.objectViewer
  grant_bucket "$BUCKET" "$ledger" roles/storage.objectUser "$datasets_write"
  grant_bucket "$BUCKET" "$ledger" roles/storage.objectUser "$manifests"
  for out in "${OUTPUT_BUCKETS[@]}"; do
    grant_bucket "$out" "$ledger" roles/storage.objectUser "$manifests"
  done

  say "workers: read datasets and write outputs (anywhere in the data bucket and the output buckets), ledger, doorbells, events, image, logs"
  grant_bucket "$BUCKET" "$worker" roles/storage.objectUser
  for out in "${OUTPUT_BUCKETS[@]}"; do
    grant_bucket "$out" "$worker" roles/storage.objectUser
  done
  grant_project "$worker" roles/datastore.user
  grant_project "$worker" roles/logging.logWriter
  grant_subscription "$WORK_SUB" "$worker" roles/pubsub.subscriber
  grant_topic "$EVENTS_TOPIC" "$worker" roles/pubsub.publisher
  grant_topic "$WORK_TOPIC" "$worker" roles/pubsub.publisher
  grant_repo "$worker" roles/artifactregistry.reader

  if [ "$SHARDLINE_BUILD_SERVICE_ACCOUNT" = managed ]; then
    # The roles Google documents for a functions build account (Cloud Run, "build service
    # account"): Logs Writer, Artifact Registry Writer and Storage Object Admin, the last one
    # held to the functions' own source and upload buckets (gcf-v2-sources-*, gcf-v2-uploads-*).
    say "function builds: logs, images in $REPO, the function sources"
    grant_project "$build" roles/logging.logWriter
    grant_repo "$build" roles/artifactregistry.writer
    grant_project "$build" roles/storage.objectAdmin \
      "$(condition shardline-function-sources 'Cloud Functions source and upload buckets only' \
        "resource.name.startsWith(\"projects/_/buckets/gcf-v2-\")")"
  fi

  if [ "$SHARDLINE_CREATE_DEPLOYER_SA" = true ]; then
    say "CI deployer: deploy the functions, push the worker image, write build logs, read build sources"
    grant_project "$deployer" roles/cloudfunctions.developer
    grant_project "$deployer" roles/logging.logWriter
    grant_project "$deployer" roles/storage.objectViewer \
      "$(condition shardline-build-sources 'Cloud Build source bucket only' \
        "resource.name.startsWith(\"projects/_/buckets/${PROJECT}_cloudbuild\")")"
    grant_repo "$deployer" roles/artifactregistry.writer
    # The functions step puts the dead-letter policy back on each trigger subscription after
    # every deploy (a trigger change makes a new subscription): read the trigger, read and
    # update the subscription, and nothing else of Pub/Sub.
    ensure gcloud iam roles describe "$RECONCILER_ROLE" "$P" -- \
      gcloud iam roles create "$RECONCILER_ROLE" "$P" --title='shardline dead-letter reconciler' \
      --description='Read Eventarc triggers; read and update Pub/Sub subscriptions (dead-letter policies)' \
      --permissions=eventarc.triggers.get,pubsub.subscriptions.get,pubsub.subscriptions.update --stage=GA
    grant_project "$deployer" "projects/$PROJECT/roles/$RECONCILER_ROLE"
    grant_sa_user "$INGEST_SA" "$deployer"
    grant_sa_user "$LEDGER_SA" "$deployer"
    if [ "$SHARDLINE_BUILD_SERVICE_ACCOUNT" = managed ]; then
      grant_sa_user "$BUILD_SA" "$deployer"
    fi
  fi

  say "service agents: Storage publishes its events, Pub/Sub dead-letters, Scheduler publishes the tick"
  grant_project "serviceAccount:${GCS_SERVICE_AGENT}" roles/pubsub.publisher
  local t
  for t in "${DL_TOPICS[@]}"; do
    grant_topic "$t" "$(pubsub_agent)" roles/pubsub.publisher
  done
  # Dead-lettering needs the agent to be a subscriber of each source subscription. Eventarc makes
  # a new trigger subscription, under a new name, whenever a trigger changes; a grant on the
  # project is the one no such re-creation can drop.
  grant_project "$(pubsub_agent)" roles/pubsub.subscriber
  grant_topic "$TICK_TOPIC" "$(scheduler_agent)" roles/pubsub.publisher
  if [ "$SHARDLINE_GRANT_PUBSUB_TOKEN_CREATOR" = true ]; then
    say "Pub/Sub service agent of a project from before 8 April 2021: mints the push tokens"
    grant_project "$(pubsub_agent)" roles/iam.serviceAccountTokenCreator
  fi
}

function_env() {
  local -a vars=(
    "GOOGLE_CLOUD_PROJECT=$PROJECT"
    "SHARDLINE_WORK_TOPIC=$WORK_TOPIC"
    "SHARDLINE_EVENTS_TOPIC=$EVENTS_TOPIC"
    "SHARDLINE_INGEST_TOPIC=$INGEST_TOPIC"
    "SHARDLINE_TICK_TOPIC=$TICK_TOPIC"
    "SHARDLINE_FIRESTORE_DATABASE=$DATABASE"
    "SHARDLINE_INGEST_PREFIX=$SHARDLINE_INGEST_PREFIX"
    "SHARDLINE_DATASETS_PREFIX=$SHARDLINE_DATASETS_PREFIX"
    "SHARDLINE_DATA_BUCKET=$BUCKET"
    "SHARDLINE_DEFAULT_NUM_SHARDS=$SHARDLINE_DEFAULT_NUM_SHARDS"
    "SHARDLINE_CHUNK_SIZE_MB=$SHARDLINE_CHUNK_SIZE_MB"
    "SHARDLINE_SHARD_MAX_ATTEMPTS=$SHARDLINE_SHARD_MAX_ATTEMPTS"
  )
  if [ -n "$SHARDLINE_FUNCTION_ENV" ]; then
    vars+=("$SHARDLINE_FUNCTION_ENV")
  fi
  local IFS=,
  printf '%s' "${vars[*]}"
}

step_functions() {
  say "Cloud Functions (gen2, nodejs22; source: this repository, built by npm ci + the gcp-build script)"
  local spec name entry sa memory cpu concurrency timeout max retry trigger
  local -a cmd
  for spec in "${FUNCTIONS[@]}"; do
    IFS='|' read -r name entry sa memory cpu concurrency timeout max retry trigger <<<"$spec"
    cmd=(gcloud functions deploy "$name" --gen2 "$P" --region="$REGION" --runtime=nodejs22
      --source=. --ignore-file=infra/functions.gcloudignore --entry-point="$entry"
      --service-account="$sa" --trigger-service-account="$sa"
      --memory="$memory")
    if [ -n "$cpu" ]; then
      cmd+=(--cpu="$cpu")
    fi
    if [ -n "$concurrency" ]; then
      cmd+=(--concurrency="$concurrency")
    fi
    cmd+=(--timeout="$timeout" --max-instances="$max" --ingress-settings=internal-only
      --docker-repository="$REPO_PATH"
      --set-env-vars="$(function_env)"
      --set-build-env-vars=ONNXRUNTIME_NODE_INSTALL=skip)
    if [ "$SHARDLINE_BUILD_SERVICE_ACCOUNT" = managed ]; then
      cmd+=(--build-service-account="projects/$PROJECT/serviceAccounts/$BUILD_SA")
    fi
    case "$trigger" in
      storage)
        cmd+=(--trigger-event-filters=type=google.cloud.storage.object.v1.finalized
          --trigger-event-filters="bucket=$UPLOADS_BUCKET" --trigger-location="$TRIGGER_LOCATION") ;;
      topic:*) cmd+=(--trigger-topic="${trigger#topic:}") ;;
      *) die "internal: unknown trigger $trigger" ;;
    esac
    if [ "$retry" = retry ]; then
      cmd+=(--retry)
    fi
    cmd+=(--quiet)
    # A new project's first Storage trigger often fails while the service agents' permissions
    # propagate: retried with backoff on exactly those errors.
    retry_propagation "${cmd[@]}"
    # A deploy that changed the trigger left a new subscription without a dead-letter policy.
    dead_letter_policy "$name" "$entry"
  done
}

step_triggers() {
  say "trigger identities may invoke their own function (each function's trigger runs as its service account)"
  local spec name entry sa rest
  for spec in "${FUNCTIONS[@]}"; do
    IFS='|' read -r name entry sa rest <<<"$spec"
    retry gcloud functions add-invoker-policy-binding "$name" --region="$REGION" "$P" \
      --member="serviceAccount:$sa" --format=none
  done
}

# dead_letter_policy NAME ENTRY: sets the dead-letter policy on the subscription Eventarc made
# for function NAME's trigger (nothing for a function that does not retry). Idempotent: the
# same policy again changes nothing. The Pub/Sub service agent's subscriber role on it comes
# from its project grant (step iam), so a new subscription needs no new binding.
dead_letter_policy() {
  local name=$1 entry=$2 var sub_var
  [ -n "${TRIGGER_DEAD_LETTER[$name]:-}" ] || return 0
  var="$(printf '%s' "$entry" | sed 's/\([A-Z]\)/_\1/g')"
  var="${var^^}_TRIGGER"
  sub_var="${var}_SUBSCRIPTION"
  lookup "$var" gcloud functions describe "$name" --region="$REGION" "$P" \
    --format='value(eventTrigger.trigger)'
  lookup "$sub_var" gcloud eventarc triggers describe "${!var}" "$P" \
    --format='value(transport.pubsub.subscription)'
  retry gcloud pubsub subscriptions update "${!sub_var}" "$P" \
    --dead-letter-topic="$TOPIC_PATH/${TRIGGER_DEAD_LETTER[$name]}" \
    --max-delivery-attempts="$SHARDLINE_MAX_DELIVERY_ATTEMPTS"
}

step_reconcile() {
  say "dead-letter policies on the subscriptions Eventarc made for the retrying functions"
  local spec name entry rest
  for spec in "${FUNCTIONS[@]}"; do
    IFS='|' read -r name entry rest <<<"$spec"
    dead_letter_policy "$name" "$entry"
  done
}

step_scheduler() {
  say "Cloud Scheduler: a tick on $TICK_TOPIC ($SHARDLINE_TICK_SCHEDULE) drives reap"
  ensure gcloud scheduler jobs describe "$SCHEDULER_JOB" --location="$REGION" "$P" -- \
    gcloud scheduler jobs create pubsub "$SCHEDULER_JOB" --location="$REGION" "$P" \
    --schedule="$SHARDLINE_TICK_SCHEDULE" --time-zone=Etc/UTC --topic="$TOPIC_PATH/$TICK_TOPIC" \
    --message-body='{"type":"tick","version":1}' \
    --description='shardline: frees expired leases (function reap)'
}

if dry; then
  printf '#!/usr/bin/env bash\n'
  printf '# shardline deployment plan for project %s, region %s (infra/deploy.sh --dry-run%s).\n' \
    "$PROJECT" "$REGION" "${ONLY:+ --only $ONLY}"
  printf '# Run from the repository root.\n'
  printf 'set -euo pipefail\n'
fi
for s in "${STEPS[@]}"; do
  "step_$s"
done
say "done: ${STEPS[*]}"
