#!/usr/bin/env bash
# Builds the image and checks it the way a self-hoster would run it:
# `guildkey config check` inside the image, then the container's listener
# answering /healthz and Docker's HEALTHCHECK turning healthy.
#
#   scripts/docker-check.sh            # needs a running Docker engine
#
# The bot part needs a Discord; the check runs the container with a
# placeholder token, so the listener (which starts before the bot connects)
# is what is checked. Exit 0 when every step passed.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! docker info >/dev/null 2>&1; then
    echo "docker-check: no Docker engine answers here (docker info failed); nothing was built" >&2
    exit 2
fi

image=guildkey:check
name=guildkey-check-$$
port=${PORT:-18080}
cleanup() { docker rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== docker build"
docker build -t "$image" .

echo "== guildkey config check in the image"
docker run --rm -e DISCORD_TOKEN=placeholder "$image" config check

echo "== run the container and wait for /healthz"
docker run -d --name "$name" -e DISCORD_TOKEN=placeholder -p "127.0.0.1:$port:8080" "$image" run >/dev/null
for _ in $(seq 1 60); do
    if body=$(curl -fsS "http://127.0.0.1:$port/healthz" 2>/dev/null); then
        echo "$body"
        # The placeholder token is refused (or Discord is out of reach): the
        # listener stays up and /healthz says how the bot is doing.
        [[ "$body" == *'"status":"ok"'* && "$body" =~ \"bot\":\"(connecting|token_refused|unreachable)\" ]] ||
            { echo "unexpected /healthz body" >&2; exit 1; }
        break
    fi
    sleep 1
done
[[ -n "${body:-}" ]] || { echo "/healthz never answered" >&2; docker logs "$name" >&2; exit 1; }

echo "== runs as a non-root user"
user=$(docker exec "$name" id -u)
[[ "$user" != "0" ]] || { echo "the container runs as root" >&2; exit 1; }
echo "uid $user"

echo "== still up after 40 s with a refused token"
sleep 40
[[ "$(docker inspect -f '{{.State.Running}}' "$name")" == true ]] || { echo "the container stopped" >&2; docker logs "$name" >&2; exit 1; }

echo "== HEALTHCHECK"
for _ in $(seq 1 60); do
    status=$(docker inspect -f '{{.State.Health.Status}}' "$name")
    [[ "$status" == healthy ]] && { echo healthy; exit 0; }
    sleep 2
done
echo "HEALTHCHECK did not turn healthy (last: $status)" >&2
exit 1
