#!/bin/sh
# Enqueue an askq job over the HTTP API from any language, and long-poll for the answer.
#   API=http://127.0.0.1:8080 TOKEN=change-me-api-token sh producers/http.sh "Where is my order?"
set -eu
: "${API:?set API to askq's HTTP API, e.g. http://127.0.0.1:8080}"
: "${TOKEN:?set TOKEN to one of ASKQ_API__TOKENS}"
body=$(python3 -c 'import json, sys; print(json.dumps({"question": sys.argv[1]}))' "$1")
created=$(curl -sf -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d "$body" "$API/v1/jobs")
echo "$created"
id=$(printf '%s' "$created" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
curl -sf -H "Authorization: Bearer $TOKEN" "$API/v1/jobs/$id/result?wait=30"
echo
