#!/usr/bin/env sh
# guildkey from the shell: verify the key, check a ban, give a member a role.
# Usage: GUILDKEY_URL=http://127.0.0.1:8080 GUILDKEY_KEY=gk_live_… GUILD_ID=… USER_ID=… ROLE_ID=… ./curl.sh
set -eu
: "${GUILDKEY_URL:?}" "${GUILDKEY_KEY:?}" "${GUILD_ID:?}" "${USER_ID:?}" "${ROLE_ID:?}"
base="${GUILDKEY_URL%/}"   # a trailing slash would make //v1/... paths
auth="Authorization: Bearer $GUILDKEY_KEY"

echo "verify:";   curl -sS --fail-with-body -H "$auth" "$base/v1/verify"; echo
echo "ban check:"; curl -sS --fail-with-body -H "$auth" "$base/v1/guilds/$GUILD_ID/bans/$USER_ID"; echo
echo "add role:";  curl -sS --fail-with-body -X PUT -H "$auth" "$base/v1/guilds/$GUILD_ID/members/$USER_ID/roles/$ROLE_ID"; echo
