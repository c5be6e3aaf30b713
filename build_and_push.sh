#!/usr/bin/env bash
# Build the worker image for linux/amd64 with docker buildx, tag it with a version and `latest`,
# and push it. Run with --dry-run to see the commands without running them.
set -euo pipefail

prog=$(basename "$0")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
  cat <<EOF
Usage: $prog --image NAME [options]

Build the RunPod worker image (linux/amd64, docker buildx), tag it NAME:VERSION and NAME:latest,
and push both. --flavour cpu builds the CPU flavour instead (Dockerfile target cpu: OpenVINO, no
torch or CUDA, for RunPod CPU endpoints), tagged NAME:VERSION-cpu and NAME:latest-cpu.

Options:
  -i, --image NAME        image repository, e.g. myuser/cpvton-worker      (env IMAGE_NAME)
  -r, --registry HOST     registry host, e.g. ghcr.io; empty: Docker Hub    (env REGISTRY)
  -v, --version TAG       version tag (env VERSION; default: git describe, else a UTC timestamp)
      --flavour F         gpu (default: the GPU image, the Dockerfile's last stage) or cpu
                          (env FLAVOUR)
      --no-latest         do not also tag :latest (:latest-cpu)
      --no-push           build and load into the local docker instead of pushing
      --platform P        target platform (default: linux/amd64, what RunPod runs)
      --bake MODE         BAKE_CHECKPOINTS build arg: 1 (default), 0 or auto    (env BAKE_CHECKPOINTS)
      --checkpoints-dir D bake D/GMM/gmm_final.pth and D/TOM/tom_final.pth (a named build context)
      --build-arg K=V     extra build argument (repeatable)
  -n, --dry-run           print the commands instead of running them
  -h, --help              show this help

Checkpoint sources for the bake (default: the official files, download_checkpoints.sh's
defaults), from the environment:
  GMM_URL, TOM_URL        other sources, passed as BuildKit secrets (gmm_url, tom_url), so
                          pre-signed URLs stay out of the image history and this script's output
  GMM_GIT_BLOB, TOM_GIT_BLOB, GMM_SHA256, TOM_SHA256
                          passed as build args (see download_checkpoints.sh --help)

Registry login (optional; otherwise run 'docker login' yourself beforehand):
  REGISTRY_USERNAME, REGISTRY_PASSWORD   the password goes to 'docker login --password-stdin'
                                          and is never printed

Examples:
  $prog --image myuser/cpvton-worker --version 1.0.0
  GMM_URL=https://... TOM_URL=https://... GMM_GIT_BLOB=none TOM_GIT_BLOB=none \\
    GMM_SHA256=... TOM_SHA256=... $prog -i myuser/cpvton-worker     # weights of your own
  $prog -i myuser/cpvton-worker --bake 0          # weights on a network volume instead
  $prog -i myuser/cpvton-worker --flavour cpu     # the CPU flavour (baked weights' export only)
  $prog -r ghcr.io -i org/cpvton-worker --checkpoints-dir ./checkpoints --dry-run
EOF
}

die() { printf '%s: error: %s\n' "$prog" "$*" >&2; exit 1; }
info() { printf '%s: %s\n' "$prog" "$*" >&2; }

# Print a command, shell-quoted, on stdout.
show() { printf '+'; printf ' %q' "$@"; printf '\n'; }

run() {
  show "$@"
  ((dry_run)) || "$@"
}

image=${IMAGE_NAME:-} registry=${REGISTRY:-} version=${VERSION:-}
platform=linux/amd64 latest=1 push=1 dry_run=0
bake=${BAKE_CHECKPOINTS:-1} checkpoints_dir="" flavour=${FLAVOUR:-gpu}
extra_args=()

need_value() { (($1 >= 2)) || die "$2 needs a value"; }
while (($#)); do
  case $1 in
    -i | --image) need_value $# "$1"; image=$2; shift 2 ;;
    -r | --registry) need_value $# "$1"; registry=$2; shift 2 ;;
    -v | --version) need_value $# "$1"; version=$2; shift 2 ;;
    --platform) need_value $# "$1"; platform=$2; shift 2 ;;
    --bake) need_value $# "$1"; bake=$2; shift 2 ;;
    --flavour) need_value $# "$1"; flavour=$2; shift 2 ;;
    --checkpoints-dir) need_value $# "$1"; checkpoints_dir=$2; shift 2 ;;
    --build-arg) need_value $# "$1"; extra_args+=(--build-arg "$2"); shift 2 ;;
    --no-latest) latest=0; shift ;;
    --no-push) push=0; shift ;;
    -n | --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

[[ -n $image ]] || die "no image name: pass --image NAME (or set IMAGE_NAME), e.g. myuser/cpvton-worker"
[[ $image =~ ^[a-z0-9]+([._-]+[a-z0-9]+)*(/[a-z0-9]+([._-]+[a-z0-9]+)*)*$ ]] \
  || die "invalid image name '$image': lowercase letters, digits, '.', '_', '-' and '/' only"
if [[ -n $registry ]]; then
  registry=${registry%/}
  [[ $registry =~ ^[A-Za-z0-9.-]+(:[0-9]+)?$ ]] || die "invalid registry host '$registry'"
fi
case $bake in 0 | 1 | auto) ;; *) die "--bake must be 0, 1 or auto (got '$bake')" ;; esac
case $flavour in gpu | cpu) ;; *) die "--flavour must be gpu or cpu (got '$flavour')" ;; esac
if [[ -n $checkpoints_dir ]]; then
  [[ -d $checkpoints_dir ]] || die "--checkpoints-dir: '$checkpoints_dir' is not a folder"
  [[ $bake != 0 ]] || die "--checkpoints-dir makes no sense with --bake 0"
fi
[[ -f $here/Dockerfile ]] || die "no Dockerfile in $here"

if [[ -z $version ]]; then
  version=$(git -C "$here" describe --tags --always --dirty 2>/dev/null || true)
  [[ -n $version ]] || version=$(date -u +%Y%m%d%H%M%S)
fi
[[ $version =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "invalid version tag '$version'"

ref=$image
[[ -z $registry ]] || ref="$registry/$image"
# The CPU flavour's tags carry a suffix, so that both flavours live in one repository.
suffix=""
[[ $flavour == gpu ]] || suffix="-$flavour"

if ((!dry_run)); then
  command -v docker >/dev/null 2>&1 || die "docker is not installed (or not on PATH)"
  docker buildx version >/dev/null 2>&1 || die "docker buildx is not available: install the buildx plugin"
  docker info >/dev/null 2>&1 || die "cannot reach the Docker engine: is the daemon running and may you use it?"
fi

if [[ -n ${REGISTRY_USERNAME:-} || -n ${REGISTRY_PASSWORD:-} ]]; then
  [[ -n ${REGISTRY_USERNAME:-} && -n ${REGISTRY_PASSWORD:-} ]] \
    || die "set both REGISTRY_USERNAME and REGISTRY_PASSWORD, or neither"
  login=(docker login --username "$REGISTRY_USERNAME" --password-stdin)
  [[ -z $registry ]] || login+=("$registry")
  # shellcheck disable=SC2016 # the variable name is printed on purpose, never its value
  printf '+ printf %%s "$REGISTRY_PASSWORD" |'
  printf ' %q' "${login[@]}"
  printf '\n'
  if ((!dry_run)); then
    printf '%s' "$REGISTRY_PASSWORD" | "${login[@]}" >/dev/null || die "docker login failed"
  fi
fi

cmd=(docker buildx build --platform "$platform" --file "$here/Dockerfile" --tag "$ref:$version$suffix")
((latest)) && cmd+=(--tag "$ref:latest$suffix")
[[ $flavour == gpu ]] || cmd+=(--target "$flavour")
cmd+=(--build-arg "BAKE_CHECKPOINTS=$bake")
[[ -z ${GMM_SHA256:-} ]] || cmd+=(--build-arg "GMM_SHA256=$GMM_SHA256")
[[ -z ${TOM_SHA256:-} ]] || cmd+=(--build-arg "TOM_SHA256=$TOM_SHA256")
[[ -z ${GMM_GIT_BLOB:-} ]] || cmd+=(--build-arg "GMM_GIT_BLOB=$GMM_GIT_BLOB")
[[ -z ${TOM_GIT_BLOB:-} ]] || cmd+=(--build-arg "TOM_GIT_BLOB=$TOM_GIT_BLOB")
# id=...,env=VAR: buildx reads the value from the environment; only the variable name is shown.
[[ -z ${GMM_URL:-} ]] || cmd+=(--secret "id=gmm_url,env=GMM_URL")
[[ -z ${TOM_URL:-} ]] || cmd+=(--secret "id=tom_url,env=TOM_URL")
[[ -z $checkpoints_dir ]] || cmd+=(--build-context "local_checkpoints=$checkpoints_dir")
cmd+=("${extra_args[@]}")
if ((push)); then cmd+=(--push); else cmd+=(--load); fi
cmd+=("$here")

info "building $ref:$version$suffix$( ((latest)) && echo " (+ :latest$suffix)") for $platform, flavour $flavour, BAKE_CHECKPOINTS=$bake"
run "${cmd[@]}"
if ((dry_run)); then
  info "dry run: nothing was built or pushed"
elif ((push)); then
  info "pushed $ref:$version$suffix"
else
  info "built $ref:$version$suffix (loaded locally, not pushed)"
fi
