#!/usr/bin/env bash
# Startup script of a shardline worker host. It runs as root at every boot on every host of a
# TPU VM slice (set as the `startup-script` metadata by infra/tpu/workers.sh), and also on any
# Compute Engine VM with Docker and systemd (GPU or CPU; see infra/README.md). It runs the
# worker image:
#
#   docker run IMAGE work --sharded_dataset_dir DIR --subscription SUB --follow \
#     --model_path PATH --host_id N --num_hosts M [--backend B] [WORKER_ARGS...]
#
# once per worker slot on this host, each as a systemd service (shardline-worker-SLOT) that
# restarts a failed worker at most 5 times in 30 minutes, never after exit 2 (bad usage: the
# settings are wrong) or 8 (the worker left failed shards: a restart would fail them again),
# and logs every exit, with its code and the container's last log lines, to the journal and
# the serial console (`gcloud compute instances get-serial-port-output`). Credentials are the
# host's service account through the metadata server (Application Default Credentials inside
# the container, a short-lived token for the registry); no key file exists anywhere.
#
# Settings are instance metadata attributes (workers.sh sets them):
#   shardline-image            REGION-docker.pkg.dev/PROJECT/REPO/worker:TAG (required)
#   shardline-dataset-dir      gs://BUCKET/datasets/DATASET (required)
#   shardline-subscription     projects/PROJECT/subscriptions/SUBSCRIPTION (required)
#   shardline-model-path       --model_path as the container sees it (required)
#   shardline-model-uri        gs://... folder copied to the host and mounted at /models (optional)
#   shardline-backend          `shardline work --backend` (optional: onnx or jax)
#   shardline-accelerator      tpu: the container gets the TPU chips (--privileged, Google's TPU
#                              guidance for Docker); gpu: it gets the GPUs (--gpus all) once the
#                              NVIDIA driver answers; empty: neither
#   shardline-gpu-wait-seconds how long to wait for the NVIDIA driver (default 900)
#   shardline-worker-args      more `shardline work` flags, split on whitespace (optional)
#   shardline-workers-per-host worker containers on this host (default 1)
#   shardline-command          the CLI verb the image runs (default work)
#   shardline-docker-args      more `docker run` flags (optional)
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
# Where the worker services' units go (writable on Container-Optimized OS too: /etc is a tmpfs
# there). The units are not enabled: this script writes and starts them at every boot, after
# the registry login and the model copy.
UNITS=${SHARDLINE_SYSTEMD_DIR:-/etc/systemd/system}
GPU_POLL_SECONDS=${SHARDLINE_GPU_POLL_SECONDS:-10}
# Exit codes after which a worker is not restarted (cli/exit-codes.ts): 2 bad usage, 8 failed
# shards. A restart policy that restarted them would loop on the same error.
NO_RESTART_CODES="2 8"
MAX_STARTS=5
START_WINDOW_SECONDS=1800
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
BACKEND=$(attr shardline-backend)
ACCELERATOR=$(attr shardline-accelerator)
GPU_WAIT_SECONDS=$(attr shardline-gpu-wait-seconds 900)
LOG_DRIVER=$(attr shardline-log-driver gcplogs)
read -r -a WORKER_ARGS <<<"$(attr shardline-worker-args)"
read -r -a DOCKER_ARGS <<<"$(attr shardline-docker-args)"
[ -n "$IMAGE" ] || die "metadata shardline-image is not set"
[ -n "$DATASET_DIR" ] || die "metadata shardline-dataset-dir is not set"
[ -n "$SUBSCRIPTION" ] || die "metadata shardline-subscription is not set"
[ -n "$MODEL_PATH" ] || die "metadata shardline-model-path is not set"
[[ $WORKERS_PER_HOST =~ ^[1-9][0-9]?$ ]] || die "shardline-workers-per-host must be 1-99, got '$WORKERS_PER_HOST'"
[[ -z $BACKEND || $BACKEND =~ ^(onnx|jax)$ ]] || die "shardline-backend must be onnx or jax, got '$BACKEND'"
[[ -z $ACCELERATOR || $ACCELERATOR =~ ^(tpu|gpu)$ ]] || die "shardline-accelerator must be tpu or gpu, got '$ACCELERATOR'"
[[ $GPU_WAIT_SECONDS =~ ^[0-9]+$ ]] || die "shardline-gpu-wait-seconds must be a number of seconds, got '$GPU_WAIT_SECONDS'"
command -v systemctl >/dev/null || die "systemd is required (systemctl not found): it restarts and logs the workers"

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

accel=()
case "$ACCELERATOR" in
  # Google's guidance for TPU workloads in Docker: a privileged container on the host network
  # (libtpu opens the chips under /dev/accel* or /dev/vfio, which differ by TPU generation).
  tpu) accel=(--privileged) ;;
  gpu) accel=(--gpus all) ;;
esac
# The NVIDIA driver of a GPU VM may still be installing when this script runs (the Deep
# Learning VM images install it at first boot); `docker run --gpus` would fail before it is.
if [ "$ACCELERATOR" = gpu ] || [[ " ${DOCKER_ARGS[*]} " == *" --gpus "* ]]; then
  waited=0
  until nvidia-smi >/dev/null 2>&1; do
    if ((waited >= GPU_WAIT_SECONDS)); then
      die "the NVIDIA driver did not answer (nvidia-smi) within $GPU_WAIT_SECONDS s; no worker started (metadata shardline-gpu-wait-seconds sets the wait)"
    fi
    if ((waited % 60 == 0)); then log "waiting for the NVIDIA driver ($waited s so far)"; fi
    sleep "$GPU_POLL_SECONDS"
    waited=$((waited + GPU_POLL_SECONDS))
  done
  log "NVIDIA driver ready after $waited s"
fi

backend=()
if [ -n "$BACKEND" ]; then backend=(--backend "$BACKEND"); fi

# What a worker's exit means, for the log line (cli/exit-codes.ts).
cat >"$STATE/worker-exit.sh" <<'EOF_EXIT'
# Logs why a shardline worker service stopped: run by systemd after every stop (ExecStopPost),
# with the container's exit status and the last lines it printed, to the journal and the
# serial console. Arguments: SLOT CONTAINER CONSOLE.
slot=$1 container=$2 console=$3
status=${EXIT_STATUS:-?}
case "$status" in
  0) meaning="finished (clean exit; not restarted)" ;;
  1) meaning="unexpected failure (restarted)" ;;
  2) meaning="bad usage: fix the instance metadata (not restarted)" ;;
  7) meaning="not found: a dataset, model or file named in the settings (restarted)" ;;
  8) meaning="the worker left failed shards (not restarted; see shardline status)" ;;
  130 | 143) meaning="stopped by a signal" ;;
  *) meaning="exit $status (restarted unless the service is being stopped)" ;;
esac
{
  printf 'shardline-worker-%s: the worker exited with status %s (%s; systemd result %s); restarts stop after 5 starts in 30 min\n' \
    "$slot" "$status" "$meaning" "${SERVICE_RESULT:-?}"
  printf 'shardline-worker-%s: its last log lines:\n' "$slot"
  docker logs --tail 20 "$container" 2>&1 | sed "s/^/shardline-worker-$slot| /"
} | tee -a "$console" 2>/dev/null || true
EOF_EXIT

# The serial console (serial port 1 on Compute Engine), where `get-serial-port-output` reads.
console=${SHARDLINE_CONSOLE:-/dev/ttyS0}
if [ -z "${SHARDLINE_CONSOLE:-}" ] && [ ! -w /dev/ttyS0 ]; then console=/dev/console; fi

for ((slot = 0; slot < WORKERS_PER_HOST; slot++)); do
  name="shardline-worker-$slot"
  docker rm -f "$name" >/dev/null 2>&1 || true
  # The container runs in the foreground of its service, so its exit status is the service's.
  # No Docker restart policy: systemd restarts it (below). --init reaps the inference child
  # processes and forwards signals. 25 s of grace: a spot VM gets 30 s.
  cmd=(docker run --name "$name" --init --net=host --stop-timeout=25
    --log-driver="$LOG_DRIVER"
    -e GOOGLE_CLOUD_PROJECT="$PROJECT"
    -e SHARDLINE_FIRESTORE_DATABASE="$(attr shardline-firestore-database '(default)')"
    -e SHARDLINE_WORK_TOPIC="$(attr shardline-work-topic shardline-work)"
    -e SHARDLINE_EVENTS_TOPIC="$(attr shardline-events-topic shardline-events)"
    -e SHARDLINE_LOG_FORMAT=json
    "${mounts[@]}" "${accel[@]}" "${DOCKER_ARGS[@]}"
    "$IMAGE" "$COMMAND"
    --sharded_dataset_dir "$DATASET_DIR" --subscription "$SUBSCRIPTION" --follow
    --model_path "$MODEL_PATH" --host_id "$HOST_ID" --num_hosts "$NUM_HOSTS"
    "${backend[@]}" "${WORKER_ARGS[@]}")
  {
    printf '# shardline worker slot %s, written by infra/tpu/startup.sh at boot.\n' "$slot"
    printf 'docker rm -f %q >/dev/null 2>&1 || true\n' "$name"
    printf 'exec'
    printf ' %q' "${cmd[@]}"
    printf '\n'
  } >"$STATE/$name.sh"
  cat >"$UNITS/$name.service" <<EOF_UNIT
[Unit]
Description=shardline worker slot $slot ($IMAGE)
Requires=docker.service
After=docker.service network-online.target
Wants=network-online.target
StartLimitIntervalSec=$START_WINDOW_SECONDS
StartLimitBurst=$MAX_STARTS

[Service]
ExecStart=/bin/bash $STATE/$name.sh
ExecStop=/bin/bash -c 'docker stop --time 25 $name'
ExecStopPost=/bin/bash $STATE/worker-exit.sh $slot $name $console
Restart=on-failure
RestartSec=30
RestartPreventExitStatus=$NO_RESTART_CODES
TimeoutStopSec=45
EOF_UNIT
done
systemctl daemon-reload
for ((slot = 0; slot < WORKERS_PER_HOST; slot++)); do
  systemctl reset-failed "shardline-worker-$slot.service" >/dev/null 2>&1 || true
  systemctl restart "shardline-worker-$slot.service"
  log "started shardline-worker-$slot (systemd; journalctl -u shardline-worker-$slot)"
done
