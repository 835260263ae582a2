#!/usr/bin/env bash
# Exits 0 when the Firestore database already has a composite index with exactly these fields
# (same collection group, query scope, fields and orders, in order), 1 when it has none.
# deploy.sh uses it as the existence check before `gcloud firestore indexes composite create`,
# which fails on a duplicate instead of doing nothing.
#
#   bash infra/lib/firestore-index-exists.sh --project=ID --database=ID --collection-group=NAME \
#     --query-scope=COLLECTION|COLLECTION_GROUP FIELD:ORDER [FIELD:ORDER...]
#
# ORDER is ASCENDING, DESCENDING or CONTAINS (an array-contains field).
set -euo pipefail

project="" database="(default)" group="" scope="COLLECTION"
fields=()
for arg in "$@"; do
  case "$arg" in
    --project=*) project=${arg#*=} ;;
    --database=*) database=${arg#*=} ;;
    --collection-group=*) group=${arg#*=} ;;
    --query-scope=*) scope=${arg#*=} ;;
    -*) echo "firestore-index-exists.sh: unknown flag $arg" >&2; exit 2 ;;
    *) fields+=("$arg") ;;
  esac
done
if [ -z "$project" ] || [ -z "$group" ] || [ "${#fields[@]}" -eq 0 ]; then
  echo "usage: firestore-index-exists.sh --project=ID [--database=ID] --collection-group=NAME [--query-scope=SCOPE] FIELD:ORDER..." >&2
  exit 2
fi

listing=$(gcloud firestore indexes composite list --project="$project" --database="$database" --format=json)
# shellcheck disable=SC2016 # JavaScript, not shell
printf '%s' "$listing" | node -e '
  const [group, scope, ...wanted] = process.argv.slice(1);
  const indexes = JSON.parse(require("fs").readFileSync(0, "utf8") || "[]");
  const key = (fields) => fields.join(",");
  const found = indexes.some((ix) => {
    const ixGroup = (ix.name ?? "").split("/collectionGroups/")[1]?.split("/")[0];
    if (ixGroup !== group || (ix.queryScope ?? "COLLECTION") !== scope) return false;
    if (ix.state === "NEEDS_REPAIR") return false;
    const fields = (ix.fields ?? [])
      .filter((f) => f.fieldPath !== "__name__")
      .map((f) => `${f.fieldPath}:${f.order ?? f.arrayConfig}`);
    return key(fields) === key(wanted);
  });
  process.exit(found ? 0 : 1);
' "$group" "$scope" "${fields[@]}"
