#!/usr/bin/env bash
# Removes what infra/deploy.sh created, in reverse order. By default it keeps the data: the
# buckets (uploads; datasets and activations) and the Firestore database (the ledger) stay, and
# so do the enabled APIs and the project-level roles of the Cloud Storage and Pub/Sub service
# agents (other triggers and dead-letter policies in the project may rely on them).
# --delete-data removes both buckets with every object in them and the Firestore database too.
#
#   infra/teardown.sh [--env-file FILE] [--project ID] [--region REGION] [--bucket NAME]
#                     [--uploads-bucket NAME] [--database ID] [--set SHARDLINE_NAME=VALUE]...
#                     [--delete-data] [--dry-run]
#
# Safe to run again: everything is deleted only if a describe still finds it. --dry-run prints
# the commands and runs none (no gcloud call at all).
set -euo pipefail

SCRIPT_NAME=teardown.sh
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$HERE/lib/common.sh"

usage() {
  cat <<'EOF'
usage: infra/teardown.sh [options]

  --env-file FILE     settings file (default infra/shardline.env when it exists)
  --project ID        SHARDLINE_PROJECT (required, here or in the env file)
  --region REGION     SHARDLINE_REGION (default us-central1)
  --bucket NAME       SHARDLINE_BUCKET, the data bucket (default PROJECT-shardline)
  --uploads-bucket NAME  SHARDLINE_UPLOADS_BUCKET (default DATA-uploads)
  --database ID       SHARDLINE_FIRESTORE_DATABASE (default "(default)")
  --set NAME=VALUE    any other SHARDLINE_* setting; repeatable
  --delete-data       also delete both buckets with all their objects and the Firestore database
  --dry-run           print the commands, run none
  -h, --help          this text
EOF
}

init_common_flags "$HERE"
DELETE_DATA=0
while [ "$#" -gt 0 ]; do
  common_flag "$@"
  if [ "$FLAG_WORDS" -gt 0 ]; then
    shift "$FLAG_WORDS"
    continue
  fi
  case "$1" in
    --delete-data) DELETE_DATA=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done

cd "$ROOT"
load_config "$ENV_FILE" "$ENV_EXPLICIT"
if ! dry; then
  command -v gcloud >/dev/null || die "gcloud is not installed"
fi

P="--project=$PROJECT"
DL=$DEAD_LETTER_SUFFIX
TOPICS=("$SHARDLINE_WORK_TOPIC" "$SHARDLINE_EVENTS_TOPIC" "$SHARDLINE_TICK_TOPIC" "$SHARDLINE_INGEST_TOPIC")
DL_TOPICS=("${SHARDLINE_WORK_TOPIC}${DL}" "${SHARDLINE_EVENTS_TOPIC}${DL}" "${SHARDLINE_INGEST_TOPIC}${DL}"
  "${PREFIX}-uploads${DL}")
FUNCTIONS=("${PREFIX}-ingest" "${PREFIX}-ingest-step" "${PREFIX}-reap" "${PREFIX}-progress")
# Project-level roles deploy.sh grants to its own service accounts (the other bindings live on
# resources deleted here, and go with them).
PROJECT_ROLES=(
  "$INGEST_SA|roles/datastore.user" "$INGEST_SA|roles/eventarc.eventReceiver"
  "$LEDGER_SA|roles/datastore.user"
  "$WORKER_SA|roles/datastore.user" "$WORKER_SA|roles/logging.logWriter"
  "$BUILD_SA|roles/logging.logWriter" "$BUILD_SA|roles/storage.objectAdmin"
  "$DEPLOYER_SA|roles/cloudfunctions.developer" "$DEPLOYER_SA|roles/logging.logWriter"
  "$DEPLOYER_SA|roles/storage.objectViewer" "$DEPLOYER_SA|projects/$PROJECT/roles/${PREFIX//-/_}_deadLetterReconciler"
)

if dry; then
  printf '#!/usr/bin/env bash\n'
  printf '# shardline teardown plan for project %s, region %s (infra/teardown.sh --dry-run%s).\n' \
    "$PROJECT" "$REGION" "$([ "$DELETE_DATA" = 1 ] && printf ' --delete-data')"
  printf 'set -euo pipefail\n'
fi

say "Cloud Scheduler tick"
remove gcloud scheduler jobs describe "${PREFIX}-tick" --location="$REGION" "$P" -- \
  gcloud scheduler jobs delete "${PREFIX}-tick" --location="$REGION" "$P" --quiet

say "Cloud Functions (their Eventarc triggers and trigger subscriptions go with them)"
for f in "${FUNCTIONS[@]}"; do
  remove gcloud functions describe "$f" --region="$REGION" "$P" -- \
    gcloud functions delete "$f" --region="$REGION" "$P" --quiet
done

say "Pub/Sub subscriptions and topics"
for s in "$SHARDLINE_WORK_SUBSCRIPTION" "${DL_TOPICS[@]}"; do
  remove gcloud pubsub subscriptions describe "$s" "$P" -- gcloud pubsub subscriptions delete "$s" "$P" --quiet
done
for t in "${TOPICS[@]}" "${DL_TOPICS[@]}"; do
  remove gcloud pubsub topics describe "$t" "$P" -- gcloud pubsub topics delete "$t" "$P" --quiet
done

say "Artifact Registry repository (the worker image and the function builds)"
remove gcloud artifacts repositories describe "$SHARDLINE_AR_REPOSITORY" --location="$REGION" "$P" -- \
  gcloud artifacts repositories delete "$SHARDLINE_AR_REPOSITORY" --location="$REGION" "$P" --quiet

say "project-level roles of the service accounts, then the accounts"
for entry in "${PROJECT_ROLES[@]}"; do
  tolerate gcloud projects remove-iam-policy-binding "$PROJECT" --member="serviceAccount:${entry%%|*}" \
    --role="${entry#*|}" --all --format=none
done
for sa in "$INGEST_SA" "$LEDGER_SA" "$WORKER_SA" "$BUILD_SA" "$DEPLOYER_SA"; do
  remove gcloud iam service-accounts describe "$sa" "$P" -- gcloud iam service-accounts delete "$sa" "$P" --quiet
done
say "the CI deployer's custom role"
remove gcloud iam roles describe "${PREFIX//-/_}_deadLetterReconciler" "$P" -- \
  gcloud iam roles delete "${PREFIX//-/_}_deadLetterReconciler" "$P" --quiet

if [ "$DELETE_DATA" = 1 ]; then
  say "data: both buckets with every object in them, and the Firestore database"
  remove gcloud storage buckets describe "gs://$UPLOADS_BUCKET" "$P" -- gcloud storage rm --recursive "gs://$UPLOADS_BUCKET" "$P"
  remove gcloud storage buckets describe "gs://$BUCKET" "$P" -- gcloud storage rm --recursive "gs://$BUCKET" "$P"
  remove gcloud firestore databases describe --database="$DATABASE" "$P" -- \
    gcloud firestore databases delete --database="$DATABASE" "$P" --quiet
else
  say "kept: gs://$UPLOADS_BUCKET, gs://$BUCKET and Firestore database $DATABASE (pass --delete-data to delete them)"
fi
say "done"
