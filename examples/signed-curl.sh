#!/usr/bin/env bash
# A request signed with signature 1.0, with openssl and curl only.
set -euo pipefail
base=${XYLINK_BASE_URL:-http://127.0.0.1:8090}
enterprise=${XYLINK_ENTERPRISE_ID:-sandbox-enterprise}
token=${XYLINK_TOKEN:-sandbox-token}
body=${1:-'{"meetingRoomNumber":"910004217404","mode":"random","groupCount":2}'}
query="enterpriseId=$enterprise"
bodyhash=$(printf %s "$body" | head -c 100 | openssl dgst -sha256 -binary | base64)
sig=$(printf 'POST\nconferenceControl/meeting/dynamicGroup\n%s\n%s' "$query" "$bodyhash" \
  | openssl dgst -sha256 -hmac "$token" -binary | base64 | sed 's/+/%2B/g; s/\//%2F/g; s/=/%3D/g')
curl -s -X POST -H 'Content-Type: application/json' -d "$body" \
  "$base/api/rest/external/v1/conferenceControl/meeting/dynamicGroup?$query&signature=$sig"
