#!/usr/bin/env bash
# Creates (or deletes, or shows) a TPU VM slice whose hosts all run the shardline worker image:
# infra/tpu/startup.sh runs on every host at boot and starts `shardline work` with that host's
# id and the number of hosts, as the worker service account (no key files). By default the
# hosts run the TPU image (worker-tpu) with `--backend jax`: the JAX extractor on the host's
# TPU chips, one worker per host using them all; `--backend onnx` runs the CPU image instead
# (onnxruntime-node on the host CPUs; several workers per host use more of them).
#
#   infra/tpu/workers.sh create --dataset-id ID --model-path PATH [options]
#   infra/tpu/workers.sh delete [--name NAME] [--zone ZONE] [--queued]
#   infra/tpu/workers.sh status [--name NAME] [--zone ZONE] [--queued]
#
# Shares infra/shardline.env (project, region, bucket, names) with deploy.sh. --dry-run prints
# the commands and runs none.
set -euo pipefail

SCRIPT_NAME=workers.sh
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
INFRA="$(cd "$HERE/.." && pwd)"
ROOT="$(cd "$INFRA/.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
source "$INFRA/lib/common.sh"

usage() {
  cat <<'EOF'
usage: infra/tpu/workers.sh create|delete|status [options]

  --name NAME              TPU VM (and queued resource) name (default PREFIX-workers)
  --zone ZONE              SHARDLINE_TPU_ZONE (default REGION-a)
  --accelerator-type TYPE  SHARDLINE_TPU_ACCELERATOR_TYPE (default v5litepod-16: 4 hosts)
  --version VERSION        SHARDLINE_TPU_RUNTIME_VERSION (default v2-alpha-tpuv5-lite)
  --spot | --on-demand     spot capacity (default) or on-demand
  --queued                 request through a queued resource (waits for capacity)
  --dataset-id ID          the dataset: gs://BUCKET/DATASETS_PREFIX/ID
  --dataset-dir URI        or the dataset's full gs:// folder
  --backend jax|onnx       SHARDLINE_TPU_BACKEND (default jax: the TPU chips; onnx: the host CPUs)
  --model-path PATH        `shardline work --model_path`, as the container sees it (jax: a
                           Hugging Face checkpoint folder; onnx: a .onnx file or its folder)
  --model-uri gs://...     a model folder copied to every host and mounted at /models
  --image-name NAME        worker image in the repository (default worker-tpu for jax, worker for onnx)
  --image-tag TAG          worker image tag (SHARDLINE_IMAGE_TAG, default latest)
  --workers-per-host N     worker containers per host (default 1)
  --worker-args "ARGS"     more `shardline work` flags (split on whitespace)
  --env-file FILE          settings file (default infra/shardline.env when it exists)
  --project ID             SHARDLINE_PROJECT
  --set NAME=VALUE         any other SHARDLINE_* setting; repeatable
  --dry-run                print the commands, run none
EOF
}

VERB=${1:-}
case "$VERB" in
  create | delete | status) shift ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; die "the first argument must be create, delete or status" ;;
esac

# SHARDLINE_ENV_FILE names the settings file too (cloudbuild.yaml passes it that way).
ENV_FILE=$(abs_path "${SHARDLINE_ENV_FILE:-$INFRA/shardline.env}")
ENV_EXPLICIT=0
if [ -n "${SHARDLINE_ENV_FILE:-}" ]; then ENV_EXPLICIT=1; fi
NAME="" ZONE="" ACCELERATOR="" VERSION="" SPOT=1 QUEUED=0
DATASET_ID="" DATASET_DIR="" MODEL_PATH="" MODEL_URI="" PER_HOST=1 WORKER_ARGS="" BACKEND="" IMAGE_NAME=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --spot) SPOT=1 ;;
    --on-demand) SPOT=0 ;;
    --queued) QUEUED=1 ;;
    --name) NAME=${2:?--name needs a value}; shift ;;
    --zone) ZONE=${2:?--zone needs a value}; shift ;;
    --accelerator-type) ACCELERATOR=${2:?--accelerator-type needs a value}; shift ;;
    --version) VERSION=${2:?--version needs a value}; shift ;;
    --dataset-id) DATASET_ID=${2:?--dataset-id needs a value}; shift ;;
    --dataset-dir) DATASET_DIR=${2:?--dataset-dir needs a value}; shift ;;
    --model-path) MODEL_PATH=${2:?--model-path needs a value}; shift ;;
    --model-uri) MODEL_URI=${2:?--model-uri needs a value}; shift ;;
    --image-tag) SHARDLINE_IMAGE_TAG=${2:?--image-tag needs a value}; shift ;;
    --image-name) IMAGE_NAME=${2:?--image-name needs a value}; shift ;;
    --backend) BACKEND=${2:?--backend needs a value}; shift ;;
    --workers-per-host) PER_HOST=${2:?--workers-per-host needs a value}; shift ;;
    --worker-args) WORKER_ARGS=${2?--worker-args needs a value}; shift ;;
    --env-file) ENV_FILE=$(abs_path "${2:?--env-file needs a value}"); ENV_EXPLICIT=1; shift ;;
    --project) SHARDLINE_PROJECT=${2:?--project needs a value}; shift ;;
    --set) set_assignment "${2:?--set needs NAME=VALUE}"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done

cd "$ROOT"
load_config "$ENV_FILE" "$ENV_EXPLICIT"
default SHARDLINE_TPU_ZONE "${REGION}-a"
default SHARDLINE_TPU_ACCELERATOR_TYPE v5litepod-16
default SHARDLINE_TPU_RUNTIME_VERSION v2-alpha-tpuv5-lite
default SHARDLINE_TPU_BACKEND jax
NAME=${NAME:-${PREFIX}-workers}
ZONE=${ZONE:-$SHARDLINE_TPU_ZONE}
ACCELERATOR=${ACCELERATOR:-$SHARDLINE_TPU_ACCELERATOR_TYPE}
VERSION=${VERSION:-$SHARDLINE_TPU_RUNTIME_VERSION}
[[ $NAME =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]] || die "--name must be a lowercase resource name; got '$NAME'"
[[ $ZONE =~ ^[a-z]+-[a-z]+[0-9]+-[a-z]$ ]] || die "--zone must be a zone such as us-central1-a; got '$ZONE'"
if ! dry; then
  command -v gcloud >/dev/null || die "gcloud is not installed"
fi
P="--project=$PROJECT"
Z="--zone=$ZONE"

case "$VERB" in
  status)
    if [ "$QUEUED" = 1 ]; then
      run gcloud compute tpus queued-resources describe "$NAME" "$Z" "$P" --format='value(state.state)'
    fi
    run gcloud compute tpus tpu-vm describe "$NAME" "$Z" "$P" \
      --format='table(name.basename(),state,acceleratorType,schedulingConfig.spot,networkEndpoints.len():label=HOSTS)'
    exit 0
    ;;
  delete)
    if [ "$QUEUED" = 1 ]; then
      remove gcloud compute tpus queued-resources describe "$NAME" "$Z" "$P" -- \
        gcloud compute tpus queued-resources delete "$NAME" "$Z" "$P" --force --quiet
    else
      remove gcloud compute tpus tpu-vm describe "$NAME" "$Z" "$P" -- \
        gcloud compute tpus tpu-vm delete "$NAME" "$Z" "$P" --quiet
    fi
    exit 0
    ;;
esac

if [ -z "$DATASET_DIR" ]; then
  [ -n "$DATASET_ID" ] || die "create needs --dataset-id ID or --dataset-dir gs://..."
  [[ $DATASET_ID =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$ ]] || die "--dataset-id: not a dataset id: '$DATASET_ID'"
  DATASET_DIR="gs://$BUCKET/${SHARDLINE_DATASETS_PREFIX}${DATASET_ID}"
fi
[[ $DATASET_DIR == gs://* ]] || die "--dataset-dir must be a gs:// folder; got '$DATASET_DIR'"
[ -n "$MODEL_PATH" ] || die "create needs --model-path (the model as the container sees it; /models/... with --model-uri)"
[[ $PER_HOST =~ ^[1-9][0-9]?$ ]] || die "--workers-per-host must be 1-99; got '$PER_HOST'"
BACKEND=${BACKEND:-$SHARDLINE_TPU_BACKEND}
[[ $BACKEND =~ ^(jax|onnx)$ ]] || die "--backend must be jax or onnx; got '$BACKEND'"
[[ " $WORKER_ARGS " != *" --backend "* ]] || die "give the backend with --backend, not in --worker-args"
if [ "$BACKEND" = jax ] && [ "$PER_HOST" != 1 ]; then
  die "--backend jax runs one worker per host (it uses every TPU chip of the host, and a chip serves one process); got --workers-per-host $PER_HOST"
fi
if [ -z "$IMAGE_NAME" ]; then
  if [ "$BACKEND" = jax ]; then IMAGE_NAME=worker-tpu; else IMAGE_NAME=worker; fi
fi
[[ $IMAGE_NAME =~ ^[a-z0-9][a-z0-9._/-]{0,127}$ ]] || die "--image-name must be an image name; got '$IMAGE_NAME'"
[[ -z $MODEL_URI || $MODEL_URI == gs://* ]] || die "--model-uri must be a gs:// folder; got '$MODEL_URI'"
for v in "$DATASET_DIR" "$MODEL_PATH" "$MODEL_URI" "$WORKER_ARGS"; do
  [[ $v != *'|'* ]] || die "values may not contain '|' (it separates the metadata entries): $v"
done

METADATA=(
  "shardline-image=${IMAGES}/${IMAGE_NAME}:${SHARDLINE_IMAGE_TAG}"
  "shardline-backend=$BACKEND"
  "shardline-dataset-dir=$DATASET_DIR"
  "shardline-subscription=projects/$PROJECT/subscriptions/$SHARDLINE_WORK_SUBSCRIPTION"
  "shardline-model-path=$MODEL_PATH"
  "shardline-workers-per-host=$PER_HOST"
  "shardline-firestore-database=$DATABASE"
  "shardline-work-topic=$SHARDLINE_WORK_TOPIC"
  "shardline-events-topic=$SHARDLINE_EVENTS_TOPIC"
)
if [ -n "$MODEL_URI" ]; then METADATA+=("shardline-model-uri=$MODEL_URI"); fi
# The JAX backend runs on the chips: the container needs the TPU devices.
if [ "$BACKEND" = jax ]; then METADATA+=("shardline-accelerator=tpu"); fi
if [ -n "$WORKER_ARGS" ]; then METADATA+=("shardline-worker-args=$WORKER_ARGS"); fi
metadata_flag() {
  local IFS='|'
  printf -- '--metadata=^|^%s' "${METADATA[*]}"
}
COMMON=(--service-account="$WORKER_SA" --scopes=https://www.googleapis.com/auth/cloud-platform
  --metadata-from-file=startup-script=infra/tpu/startup.sh "$(metadata_flag)"
  --labels=shardline=worker)
CAPACITY=()
if [ "$SPOT" = 1 ]; then
  CAPACITY=(--spot)
fi

if dry; then
  printf '#!/usr/bin/env bash\n# shardline TPU workers %s (infra/tpu/workers.sh --dry-run). Run from the repository root.\nset -euo pipefail\n' "$NAME"
fi
say "APIs"
run gcloud services enable tpu.googleapis.com compute.googleapis.com "$P"
say "TPU VM $NAME: $ACCELERATOR in $ZONE, $([ "$SPOT" = 1 ] && printf spot || printf on-demand), dataset $DATASET_DIR, backend $BACKEND"
if [ "$QUEUED" = 1 ]; then
  ensure gcloud compute tpus queued-resources describe "$NAME" "$Z" "$P" -- \
    gcloud compute tpus queued-resources create "$NAME" "$Z" "$P" --node-id="$NAME" \
    --accelerator-type="$ACCELERATOR" --runtime-version="$VERSION" "${CAPACITY[@]}" "${COMMON[@]}"
else
  ensure gcloud compute tpus tpu-vm describe "$NAME" "$Z" "$P" -- \
    gcloud compute tpus tpu-vm create "$NAME" "$Z" "$P" --accelerator-type="$ACCELERATOR" \
    --version="$VERSION" "${CAPACITY[@]}" "${COMMON[@]}"
fi
say "watch: shardline status --dataset_dir $DATASET_DIR; logs: Cloud Logging, log gcplogs-docker-driver; why a worker stopped: the serial console"
