#!/usr/bin/env bash
# Releases a Firestore security rules file to a database through the Firebase Rules API, the
# API the Firebase CLI and console use (the project does not need to be a Firebase project;
# deploy.sh enables firebaserules.googleapis.com). Idempotent: when the live release already
# serves identical source, nothing is created.
#
#   bash infra/lib/firestore-rules.sh --project=ID [--database=ID] RULES_FILE
#
# Needs gcloud (for an access token of the active account), curl and node. The caller needs
# firebaserules.rulesets.create and firebaserules.releases.create/update (for example the
# Firebase Rules Admin role) and serviceusage.services.use on the project.
set -euo pipefail

project="" database="(default)" rules=""
for arg in "$@"; do
  case "$arg" in
    --project=*) project=${arg#*=} ;;
    --database=*) database=${arg#*=} ;;
    -*) echo "firestore-rules.sh: unknown flag $arg" >&2; exit 2 ;;
    *) rules=$arg ;;
  esac
done
if [ -z "$project" ] || [ -z "$rules" ]; then
  echo "usage: firestore-rules.sh --project=ID [--database=ID] RULES_FILE" >&2
  exit 2
fi
[ -f "$rules" ] || { echo "firestore-rules.sh: no file $rules" >&2; exit 2; }

# The release that binds rules to a database: `cloud.firestore` for (default), else
# `cloud.firestore/DATABASE`.
release="cloud.firestore"
if [ "$database" != "(default)" ]; then release="cloud.firestore/$database"; fi
api="https://firebaserules.googleapis.com/v1"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

token=$(gcloud auth print-access-token)
# call METHOD URL [BODY_FILE]: prints the HTTP status; the response body is in $work/out.
call() {
  local -a data=()
  if [ "$#" -ge 3 ]; then data=(--data-binary "@$3"); fi
  curl -sS -o "$work/out" -w '%{http_code}' -X "$1" \
    -H "Authorization: Bearer $token" -H "X-Goog-User-Project: $project" \
    -H 'Content-Type: application/json' "${data[@]}" "$2"
}
fail() {
  echo "firestore-rules.sh: $1 (HTTP $2):" >&2
  cat "$work/out" >&2
  echo >&2
  exit 1
}
json() { # json EXPRESSION: evaluates a JavaScript expression over `r`, the last response
  node -e 'const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    process.stdout.write(String(eval(process.argv[2]) ?? ""));' "$work/out" "$1"
}

status=$(call GET "$api/projects/$project/releases/$release")
current=""
case "$status" in
  200) current=$(json 'r.rulesetName') ;;
  404) ;;
  *) fail "reading release $release" "$status" ;;
esac
if [ -n "$current" ]; then
  status=$(call GET "$api/$current")
  [ "$status" = 200 ] || fail "reading ruleset $current" "$status"
  live=$(json '(r.source?.files ?? []).map((f) => f.content).join("\n")')
  if [ "$live" = "$(cat "$rules")" ]; then
    echo "firestore-rules.sh: $release already serves $rules ($current); nothing to do" >&2
    exit 0
  fi
fi

node -e 'const fs = require("fs");
  process.stdout.write(JSON.stringify({ source: { files: [
    { name: "firestore.rules", content: fs.readFileSync(process.argv[1], "utf8") } ] } }));' \
  "$rules" >"$work/ruleset.json"
status=$(call POST "$api/projects/$project/rulesets" "$work/ruleset.json")
[ "$status" = 200 ] || fail "creating a ruleset from $rules" "$status"
ruleset=$(json 'r.name')

name="projects/$project/releases/$release"
if [ -n "$current" ]; then
  printf '{"release":{"name":"%s","rulesetName":"%s"}}' "$name" "$ruleset" >"$work/release.json"
  status=$(call PATCH "$api/$name" "$work/release.json")
else
  printf '{"name":"%s","rulesetName":"%s"}' "$name" "$ruleset" >"$work/release.json"
  status=$(call POST "$api/projects/$project/releases" "$work/release.json")
fi
[ "$status" = 200 ] || fail "releasing $ruleset as $release" "$status"
echo "firestore-rules.sh: released $rules as $release ($ruleset)" >&2
