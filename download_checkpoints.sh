#!/usr/bin/env bash
# Fetch the CP-VTON+ checkpoints (GMM and TOM stages) into $CHECKPOINT_DIR:
#
#   $CHECKPOINT_DIR/GMM/gmm_final.pth
#   $CHECKPOINT_DIR/TOM/tom_final.pth
#
# Guarantees: a file appears under its final name only after it was downloaded completely and
# verified (temp file + rename in the same folder); a verified file is not downloaded again; an
# interrupted transfer leaves only "<name>.part", which the next run resumes (curl -C -) and which
# is never taken for the checkpoint itself. Any failure exits non-zero.
set -euo pipefail

prog=$(basename "$0")

# The authors publish the checkpoints as a shared OneDrive *folder* (linked from the README of
# github.com/minar09/cp-vton-plus). A shared folder page cannot be downloaded by a script, so there
# is no default direct URL: download gmm_final.pth and tom_final.pth once, put them where curl can
# reach them (your bucket, a mirror, a network volume, a local folder) and set GMM_URL / TOM_URL.
readonly OFFICIAL_PAGE="https://1drv.ms/u/s!Ai8t8GAHdzVUiQA-o3C7cnrfGN6O?e=EaRiFP"

# Pinned sha256 of the official files. Unknown when this script was written (the files could not
# be fetched from the build environment), so they are empty: nothing is pinned and a download is
# only checked for being a PyTorch checkpoint. Record them once with
#   ./download_checkpoints.sh --print-hashes
# and paste the values here (or pass GMM_SHA256 / TOM_SHA256).
readonly PINNED_GMM_SHA256=""
readonly PINNED_TOM_SHA256=""

usage() {
  cat <<EOF
Usage: $prog [options]

Download gmm_final.pth and tom_final.pth into \$CHECKPOINT_DIR/GMM and \$CHECKPOINT_DIR/TOM,
verify them and move them into place atomically. Files already present and verified are skipped;
an interrupted download resumes from its .part file on the next run.

Options:
  --from-dir DIR    use DIR/GMM/gmm_final.pth and DIR/TOM/tom_final.pth (when present) as the
                    source of a model whose URL is not set
  --if-configured   when a model has no source at all, warn and exit 0 instead of failing
                    (used by the Docker build with BAKE_CHECKPOINTS=auto)
  --force           download again even if a verified file is present
  --print-hashes    print the sha256 of the checkpoints present (GMM_SHA256=... lines) and exit
  -h, --help        show this help

Environment:
  CHECKPOINT_DIR    target folder (default: checkpoints)
  GMM_URL, TOM_URL  where to download each file from: http(s)://, or file:///absolute/path
  GMM_URL_FILE, TOM_URL_FILE
                    a file holding the URL (e.g. a BuildKit secret); used when *_URL is unset,
                    so a pre-signed URL never appears in a process list or an image history
  GMM_SHA256, TOM_SHA256
                    expected sha256 (hex); default: the pins in this script (empty for now)
  CURL_RETRIES      curl --retry count for transient errors (default: 3)

The official checkpoints are published by the CP-VTON+ authors as a shared folder:
  $OFFICIAL_PAGE
which a script cannot download: fetch the two files once, host them, and set GMM_URL / TOM_URL.
EOF
}

log() { printf '%s: %s\n' "$prog" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Print a URL without its query string or credentials (pre-signed URLs carry tokens there).
redact_url() {
  local url=${1%%\?*}
  if [[ $url =~ ^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@(.*)$ ]]; then
    url="${BASH_REMATCH[1]}***@${BASH_REMATCH[2]}"
  fi
  printf '%s' "$url"
}

sha256_of() { sha256sum -- "$1" | cut -d' ' -f1; }

# A torch.save file is a zip archive ("PK\x03\x04") or, in the legacy format the authors used
# (PyTorch 0.4), a pickle stream starting with the PROTO opcode (0x80). An HTML error or login page
# served with status 200 is neither.
looks_like_checkpoint() {
  local magic
  magic=$(head -c 4 -- "$1" | od -An -tx1 | tr -d ' \n')
  [[ $magic == 504b0304 || $magic == 80* ]]
}

# verify FILE EXPECTED_SHA256 -> 0 when FILE is acceptable; prints the reason otherwise.
verify() {
  local file=$1 want=$2 got
  if ! looks_like_checkpoint "$file"; then
    echo "not a PyTorch checkpoint (an HTML page or an error body?)"
    return 1
  fi
  if [[ -n $want ]]; then
    got=$(sha256_of "$file")
    if [[ ${got,,} != "${want,,}" ]]; then
      echo "sha256 mismatch: expected $want, got $got"
      return 1
    fi
  fi
  return 0
}

# fetch NAME URL EXPECTED_SHA256 DEST
fetch() {
  local name=$1 url=$2 want=$3 dest=$4
  local part="$dest.part" reason rc=0
  mkdir -p -- "$(dirname -- "$dest")"

  log "$name: downloading $(redact_url "$url") -> $dest"
  [[ -s $part ]] && log "$name: resuming from $(stat -c %s -- "$part") bytes already in $part"
  curl --fail --location --silent --show-error \
    --retry "${CURL_RETRIES:-3}" --connect-timeout 30 --speed-limit 1024 --speed-time 120 \
    --continue-at - --output "$part" -- "$url" || rc=$?
  if ((rc != 0)); then
    # 18 (partial file), 28 (timeout), 56 (recv failure): the .part is worth resuming.
    case $rc in
      18 | 28 | 56)
        die "$name: transfer interrupted (curl exit $rc); run again to resume from $part" ;;
      *)
        # Nothing useful was received (404, DNS, refused...): do not leave an empty .part behind.
        [[ -s $part ]] || rm -f -- "$part"
        die "$name: download failed (curl exit $rc) from $(redact_url "$url")" ;;
    esac
  fi
  [[ -f $part ]] || die "$name: curl succeeded but wrote no file (empty source?)"

  if ! reason=$(verify "$part" "$want"); then
    # A corrupt .part cannot be fixed by resuming it: drop it so the next run starts over.
    rm -f -- "$part"
    die "$name: downloaded file rejected: $reason"
  fi
  sync -- "$part" 2>/dev/null || true
  mv -f -- "$part" "$dest"
  if [[ -n $want ]]; then
    log "$name: ok, sha256 verified"
  else
    log "$name: ok, sha256 $(sha256_of "$dest") (not pinned: record it with --print-hashes)"
  fi
}

# resolve_url VAR_PREFIX SUBPATH -> prints the URL to use for a model, or nothing.
resolve_url() {
  local sub=$2 url_var="${1}_URL" file_var="${1}_URL_FILE"
  local url=${!url_var:-}
  if [[ -z $url && -n ${!file_var:-} ]]; then
    [[ -r ${!file_var} ]] || die "$file_var=${!file_var} is not a readable file"
    url=$(tr -d '\r\n' <"${!file_var}")
  fi
  if [[ -z $url && -n $from_dir && -f $from_dir/$sub ]]; then
    url="file://$(cd -- "$(dirname -- "$from_dir/$sub")" && pwd)/$(basename -- "$sub")"
  fi
  printf '%s' "$url"
}

from_dir="" if_configured=0 force=0 print_hashes=0
while (($#)); do
  case $1 in
    --from-dir)
      (($# >= 2)) || die "--from-dir needs a folder"
      from_dir=$2
      shift 2 ;;
    --from-dir=*) from_dir=${1#*=}; shift ;;
    --if-configured) if_configured=1; shift ;;
    --force) force=1; shift ;;
    --print-hashes) print_hashes=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

checkpoint_dir=${CHECKPOINT_DIR:-checkpoints}
names=(GMM TOM)
declare -A files=([GMM]="GMM/gmm_final.pth" [TOM]="TOM/tom_final.pth")
declare -A pins=([GMM]="$PINNED_GMM_SHA256" [TOM]="$PINNED_TOM_SHA256")

if ((print_hashes)); then
  found=0
  for name in "${names[@]}"; do
    path="$checkpoint_dir/${files[$name]}"
    if [[ -f $path ]]; then
      printf '%s_SHA256=%s\n' "$name" "$(sha256_of "$path")"
      found=1
    else
      log "$name: $path not found"
    fi
  done
  ((found)) || die "no checkpoint found under $checkpoint_dir"
  exit 0
fi

command -v curl >/dev/null 2>&1 || die "curl is required but not installed"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum (coreutils) is required but not installed"
[[ -z $from_dir || -d $from_dir ]] || die "--from-dir: $from_dir is not a folder"

# Decide what to do for every model before downloading anything.
declare -A urls=() wants=()
todo=() missing=()
for name in "${names[@]}"; do
  dest="$checkpoint_dir/${files[$name]}"
  sha_var="${name}_SHA256"
  want=${!sha_var:-${pins[$name]}}
  [[ -z $want || $want =~ ^[0-9a-fA-F]{64}$ ]] || die "$sha_var is not a 64-digit hex sha256"
  wants[$name]=$want
  if [[ -f $dest ]] && ((!force)); then
    if reason=$(verify "$dest" "$want"); then
      if [[ -n $want ]]; then
        log "$name: $dest present and verified, skipping"
      else
        log "$name: $dest present (no pinned sha256 to verify against), skipping"
      fi
      continue
    fi
    log "$name: $dest present but rejected ($reason); it will be replaced"
  fi
  url=$(resolve_url "$name" "${files[$name]}")
  if [[ -z $url ]]; then
    missing+=("$name")
    continue
  fi
  urls[$name]=$url
  todo+=("$name")
done

if ((${#missing[@]})); then
  msg="no source for ${missing[*]}: set ${missing[0]}_URL (http(s):// or file:///path)"
  msg+=" or pass --from-dir. The official files are in the authors' shared folder $OFFICIAL_PAGE,"
  msg+=" which cannot be downloaded by script: fetch them once and host them."
  if ((if_configured)); then
    log "warning: $msg"
    log "warning: continuing without ${missing[*]} (--if-configured)"
  else
    die "$msg"
  fi
fi

for name in "${todo[@]}"; do
  fetch "$name" "${urls[$name]}" "${wants[$name]}" "$checkpoint_dir/${files[$name]}"
done
log "done: checkpoints in $checkpoint_dir"
