#!/bin/sh
# Enqueue an askq job over the HTTP API from any language, and long-poll for the answer.
#   API=http://127.0.0.1:8080 TOKEN=change-me-api-token sh producers/http.sh "Where is my order?"
set -eu
: "${API:?set API to askq's HTTP API, e.g. http://127.0.0.1:8080}"
: "${TOKEN:?set TOKEN to one of ASKQ_API__TOKENS}"

# curl with the token. A refusal (401, 422 ...) exits 1 with curl's status line and the API's own
# reason (its JSON body) on stderr: plain -f would drop the body, the one place that says what is wrong.
# --fail-with-body needs curl 7.76 or later.
api() {
  if ! out=$(curl -sS --fail-with-body -H "Authorization: Bearer $TOKEN" "$@"); then
    printf '%s\n' "$out" >&2
    exit 1
  fi
  printf '%s\n' "$out"
}

body=$(python3 -c 'import json, sys; print(json.dumps({"question": sys.argv[1]}))' "$1")
created=$(api -H 'Content-Type: application/json' -d "$body" "$API/v1/jobs")
echo "$created"
id=$(printf '%s' "$created" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
api "$API/v1/jobs/$id/result?wait=30"
