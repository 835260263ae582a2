#!/usr/bin/env bash
# Startup script of a shardline worker host. It runs as root at every boot on every host of a
# TPU VM slice (set as the `startup-script` metadata by infra/tpu/workers.sh), and also on any
# Compute Engine VM with Docker (GPU or CPU; see infra/README.md). It runs the worker image:
#
#   docker run IMAGE work --sharded_dataset_dir DIR --subscription SUB --follow \
#     --model_path PATH --host_id N --num_hosts M [WORKER_ARGS...]
#
# once per worker slot on this host, restarted by Docker when it fails. Credentials are the
# host's service account through the metadata server (Application Default Credentials inside
# the container, a short-lived token for the registry); no key file exists anywhere.
#
# Settings are instance metadata attributes (workers.sh sets them):
#   shardline-image            REGION-docker.pkg.dev/PROJECT/REPO/worker:TAG (required)
#   shardline-dataset-dir      gs://BUCKET/datasets/DATASET (required)
#   shardline-subscription     projects/PROJECT/subscriptions/SUBSCRIPTION (required)
#   shardline-model-path       --model_path as the container sees it (required)
#   shardline-model-uri        gs://... folder copied to the host and mounted at /models (optional)
#   shardline-worker-args      more `shardline work` flags, split on whitespace (optional)
#   shardline-workers-per-host worker containers on this host (default 1)
#   shardline-command          the CLI verb the image runs (default work)
#   shardline-docker-args      more `docker run` flags, e.g. `--gpus all` (optional)
#   shardline-log-driver       Docker log driver (default gcplogs: Cloud Logging)
#   shardline-firestore-database, shardline-work-topic, shardline-events-topic
#                              passed to the worker as SHARDLINE_FIRESTORE_DATABASE,
#                              SHARDLINE_WORK_TOPIC and SHARDLINE_EVENTS_TOPIC
#   shardline-host-id, shardline-num-hosts
#                              override the host numbering (VMs outside a TPU slice)
# The host id is the TPU worker number (`agent-worker-number`, or TPU_WORKER_ID), and the
# number of hosts is the number of the slice's `worker-network-endpoints`.
set -euo pipefail

MD=http://metadata.google.internal/computeMetadata/v1
STATE=${SHARDLINE_STATE_DIR:-/var/lib/shardline}
export PATH="$PATH:/snap/bin:/usr/lib/google-cloud-sdk/bin"
# /root is read-only on Container-Optimized OS; keep Docker's registry login under /var.
export DOCKER_CONFIG="$STATE/docker"

log() { printf 'shardline-startup: %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 1
}
meta() { curl -fsS --retry 5 --retry-connrefused -H 'Metadata-Flavor: Google' "$MD/$1"; }
attr() { # attr NAME [DEFAULT]: an instance attribute, or DEFAULT when it is not set
  local value
  if value=$(curl -fsS -H 'Metadata-Flavor: Google' "$MD/instance/attributes/$1" 2>/dev/null); then
    printf '%s' "$value"
  else
    printf '%s' "${2-}"
  fi
}

IMAGE=$(attr shardline-image)
DATASET_DIR=$(attr shardline-dataset-dir)
SUBSCRIPTION=$(attr shardline-subscription)
MODEL_PATH=$(attr shardline-model-path)
MODEL_URI=$(attr shardline-model-uri)
WORKERS_PER_HOST=$(attr shardline-workers-per-host 1)
COMMAND=$(attr shardline-command work)
LOG_DRIVER=$(attr shardline-log-driver gcplogs)
read -r -a WORKER_ARGS <<<"$(attr shardline-worker-args)"
read -r -a DOCKER_ARGS <<<"$(attr shardline-docker-args)"
[ -n "$IMAGE" ] || die "metadata shardline-image is not set"
[ -n "$DATASET_DIR" ] || die "metadata shardline-dataset-dir is not set"
[ -n "$SUBSCRIPTION" ] || die "metadata shardline-subscription is not set"
[ -n "$MODEL_PATH" ] || die "metadata shardline-model-path is not set"
[[ $WORKERS_PER_HOST =~ ^[1-9][0-9]?$ ]] || die "shardline-workers-per-host must be 1-99, got '$WORKERS_PER_HOST'"

PROJECT=$(meta project/project-id)
HOST_ID=$(attr shardline-host-id "$(attr agent-worker-number "${TPU_WORKER_ID:-0}")")
NUM_HOSTS=$(attr shardline-num-hosts)
if [ -z "$NUM_HOSTS" ]; then
  endpoints=$(attr worker-network-endpoints)
  if [ -n "$endpoints" ]; then
    commas=${endpoints//[^,]/}
    NUM_HOSTS=$((${#commas} + 1))
  else
    NUM_HOSTS=1
  fi
fi
[[ $HOST_ID =~ ^[0-9]+$ && $NUM_HOSTS =~ ^[0-9]+$ ]] || die "bad host numbering: host $HOST_ID of $NUM_HOSTS"
((HOST_ID < NUM_HOSTS)) || die "host id $HOST_ID is not below the number of hosts $NUM_HOSTS"
log "host $HOST_ID of $NUM_HOSTS, $WORKERS_PER_HOST worker(s), image $IMAGE"

mkdir -p "$STATE" "$DOCKER_CONFIG"
if ! command -v docker >/dev/null; then
  log "installing Docker"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io
fi

# Registry login with a token of the host's service account (valid about an hour; enough to
# pull; Docker restarts the containers later without pulling again).
registry=${IMAGE%%/*}
meta instance/service-accounts/default/token |
  sed -E 's/.*"access_token" *: *"([^"]+)".*/\1/' |
  docker login -u oauth2accesstoken --password-stdin "https://$registry" >/dev/null
for attempt in 1 2 3 4 5; do
  if docker pull "$IMAGE"; then break; fi
  ((attempt < 5)) || die "could not pull $IMAGE"
  sleep $((attempt * 10 + RANDOM % 10))
done

mounts=()
if [ -n "$MODEL_URI" ]; then
  log "copying $MODEL_URI to $STATE/model"
  mkdir -p "$STATE/model"
  if command -v gcloud >/dev/null; then
    gcloud storage rsync --recursive "$MODEL_URI" "$STATE/model"
  else
    docker run --rm --net=host -v "$STATE/model:/model" gcr.io/google.com/cloudsdktool/google-cloud-cli:stable \
      gcloud storage rsync --recursive "$MODEL_URI" /model
  fi
  # Writable by the container's user (uid 1000): the worker caches its rewritten graph beside
  # the model (onnxruntime wants a model's external data in the model's own folder).
  chown -R 1000:1000 "$STATE/model"
  mounts=(-v "$STATE/model:/models")
fi

for ((slot = 0; slot < WORKERS_PER_HOST; slot++)); do
  name="shardline-worker-$slot"
  docker rm -f "$name" >/dev/null 2>&1 || true
  # --restart=on-failure: a crash restarts the worker (it resumes from the ledger); a clean
  # exit after SIGTERM (spot preemption, shutdown) does not. --init reaps the inference child
  # processes and forwards signals. 25 s of grace: a spot VM gets 30 s.
  docker run -d --name "$name" --restart=on-failure --init --net=host --stop-timeout=25 \
    --log-driver="$LOG_DRIVER" \
    -e GOOGLE_CLOUD_PROJECT="$PROJECT" \
    -e SHARDLINE_FIRESTORE_DATABASE="$(attr shardline-firestore-database '(default)')" \
    -e SHARDLINE_WORK_TOPIC="$(attr shardline-work-topic shardline-work)" \
    -e SHARDLINE_EVENTS_TOPIC="$(attr shardline-events-topic shardline-events)" \
    -e SHARDLINE_LOG_FORMAT=json \
    "${mounts[@]}" "${DOCKER_ARGS[@]}" \
    "$IMAGE" "$COMMAND" \
    --sharded_dataset_dir "$DATASET_DIR" --subscription "$SUBSCRIPTION" --follow \
    --model_path "$MODEL_PATH" --host_id "$HOST_ID" --num_hosts "$NUM_HOSTS" \
    "${WORKER_ARGS[@]}"
  log "started $name"
done
