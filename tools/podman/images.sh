#!/usr/bin/env bash
# Build the role images (images/<role>/Dockerfile) with podman, or docker where present.
# Usage: tools/podman/images.sh [build|push|names]   (make images / make images push)
# Environment (the Makefile passes its variables):
#   REGISTRY, TAG     image names REGISTRY/aicd-ROLE:TAG, as `aicd compile --registry R --tag T`
#   BASE_IMAGE        "debian" (default): a Python 3.11 base made from Debian's packages, cached
#                     by the hash of make-base-image.sh; anything else is used as the FROM image
#                     (e.g. the pinned public python:3.11-slim@sha256:... on a real registry)
#   TORCH_INDEX_URL   pip index for torch in the base and serve images (a CPU wheel index)
#   TRAIN_TORCH_INDEX_URL  pip index for torch in the train image (a CUDA wheel index)
#   ROLES             which roles (default: base train serve)
#   NO_CACHE=1        a cold build: remake the Debian base and build every layer again
#   DIGESTS           push: where the pushed digests go (default build/image-digests.json)
#   TLS_VERIFY=false  push to a plain-HTTP registry (podman)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ACTION=${1:-build}
# The defaults of components/_images.py, the one place image references live.
default() { sed -n "s/^DEFAULT_$1 = \"\(.*\)\"$/\1/p" "$ROOT/components/_images.py"; }
REGISTRY=${REGISTRY:-$(default REGISTRY)}
TAG=${TAG:-$(default TAG)}
ROLES=${ROLES:-base train serve}
BASE_IMAGE=${BASE_IMAGE:-debian}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$HERE/containers.conf}

if command -v podman >/dev/null; then ENGINE=podman
elif command -v docker >/dev/null; then ENGINE=docker
else echo "images.sh: neither podman nor docker is installed; install one: apt-get install -y podman runc mmdebstrap" >&2; exit 2
fi
name() { echo "${REGISTRY%/}/aicd-$1:$TAG"; }

if [ "$ACTION" = names ]; then
  for role in $ROLES; do name "$role"; done
  exit 0
fi
if [ "$ACTION" = push ]; then
  # Push every role, then record each pushed digest for `AICD_IMAGE_DIGESTS=... aicd compile`.
  DIGESTS=${DIGESTS:-$ROOT/build/image-digests.json}
  mkdir -p "$(dirname "$DIGESTS")"
  T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
  for role in $ROLES; do
    if [ "$ENGINE" = podman ]; then
      podman push -q --tls-verify="${TLS_VERIFY:-true}" --digestfile "$T/$role" "$(name "$role")"
    else
      docker push "$(name "$role")" >/dev/null
      docker image inspect --format '{{index .RepoDigests 0}}' "$(name "$role")" | sed 's/.*@//' > "$T/$role"
    fi
  done
  { echo "{"; sep=""; for role in $ROLES; do printf '%s  "%s": "%s"' "$sep" "$role" "$(cat "$T/$role")"; sep=$',\n'; done; echo; echo "}"; } > "$DIGESTS"
  echo "images.sh: pushed; digests in $DIGESTS (compile with AICD_IMAGE_DIGESTS=$DIGESTS)" >&2
  exit 0
fi
[ "$ACTION" = build ] || { echo "images.sh: unknown action '$ACTION'; use build or push" >&2; exit 2; }

if [ "$BASE_IMAGE" = debian ]; then
  [ "$ENGINE" = podman ] || { echo "images.sh: BASE_IMAGE=debian needs podman; pass BASE_IMAGE=<image>" >&2; exit 2; }
  BASE_IMAGE="localhost/aicd-python-base:3.11-$(sha256sum "$HERE/make-base-image.sh" | cut -c1-12)"
  if [ -n "${NO_CACHE:-}" ] || ! podman image exists "$BASE_IMAGE"; then
    start=$(date +%s)
    "$HERE/make-base-image.sh" "$BASE_IMAGE" >/dev/null
    echo "images.sh: made $BASE_IMAGE in $(( $(date +%s) - start )) s" >&2
  fi
fi

# pip inside the build: the host's CA bundle as a build secret (the egress may re-sign TLS),
# and the host's pip configuration with the local wheel folders it names, read-only, so the
# image gets the same wheels (torch CPU build) as `make install`.
args=(${NO_CACHE:+--no-cache} --network host --build-arg "BASE_IMAGE=$BASE_IMAGE"
      --label "org.opencontainers.image.version=$TAG"
      --label "org.opencontainers.image.revision=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)")
CA=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
[ -f "$CA" ] && args+=(--secret "id=cacert,src=$CA")
if [ "$ENGINE" = podman ]; then
  mounts=()
  for conf in /etc/pip.conf /etc/xdg/pip "$HOME/.config/pip"; do
    [ -e "$conf" ] && mounts+=("$conf:${conf/#$HOME//root}:ro")
  done
  for dir in $(pip3 config list 2>/dev/null | sed -n "s/.*\.\(find-links\|extra-index-url\|index-url\)='\(.*\)'/\2/p" | tr ' ' '\n' | sed 's#^file://##' | grep '^/' | sed 's#/simple/*$##' || true); do
    [ -d "$dir" ] && mounts+=("$dir:$dir:ro")
  done
  for m in ${mounts[@]+"${mounts[@]}"}; do args+=(-v "$m"); done
fi

for role in $ROLES; do
  torch_index=${TORCH_INDEX_URL:-}
  [ "$role" = train ] && torch_index=${TRAIN_TORCH_INDEX_URL:-$torch_index}
  start=$(date +%s)
  $ENGINE build -q "${args[@]}" --build-arg "TORCH_INDEX_URL=$torch_index" \
    -f "$ROOT/images/$role/Dockerfile" -t "$(name "$role")" "$ROOT" >/dev/null
  echo "images.sh: built $(name "$role") in $(( $(date +%s) - start )) s" >&2
done
