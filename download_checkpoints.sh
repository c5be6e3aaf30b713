#!/usr/bin/env bash
# Fetch the CP-VTON+ checkpoints (GMM and TOM stages) into $CHECKPOINT_DIR:
#
#   $CHECKPOINT_DIR/GMM/gmm_final.pth
#   $CHECKPOINT_DIR/TOM/tom_final.pth
#
# Guarantees: a file appears under its final name only after it was downloaded completely and
# verified (git blob id, optional sha256, strict load as its network; temp file + rename in the
# same folder); a verified file is not downloaded again; an interrupted transfer leaves only
# "<name>.part", which the next run resumes (curl -C -) and which is never taken for the
# checkpoint itself; a file that fails verification is deleted. Any failure exits non-zero.
set -euo pipefail

prog=$(basename "$0")
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)

# Origin: the CP-VTON+ authors publish gmm_final.pth and tom_final.pth in a shared OneDrive
# folder, linked from the README of github.com/minar09/cp-vton-plus; a script cannot download a
# shared folder page. The public repository sahiljit/cp-vton-plus committed the two files as
# ordinary git blobs on 2020-07-31, shortly after the authors' release: git's object ids pin their
# content, so the default source is that commit's raw files, each checked against its blob id.
# The weights are the authors'; they are for research (non-commercial) use only.
readonly OFFICIAL_PAGE="https://1drv.ms/u/s!Ai8t8GAHdzVUiQA-o3C7cnrfGN6O?e=EaRiFP"
readonly DEFAULT_REPO="sahiljit/cp-vton-plus"
readonly DEFAULT_COMMIT="e9f1ab0d0d84140de7f822b13197fc0f2d7a1920"
readonly DEFAULT_BASE_URL="https://raw.githubusercontent.com/$DEFAULT_REPO/$DEFAULT_COMMIT/checkpoints"
# git blob ids of the official files: sha1 of "blob <size>\0" + content (`git hash-object FILE`).
readonly PINNED_GMM_GIT_BLOB="8eb46d4e8056f57a3b76e94f05ca56a773c755cb"
readonly PINNED_TOM_GIT_BLOB="8e159bea554cad9ae1d0bcd1a233bbf955adf1a4"

usage() {
  cat <<EOF
Usage: $prog [options]

Download gmm_final.pth and tom_final.pth into \$CHECKPOINT_DIR/GMM and \$CHECKPOINT_DIR/TOM,
verify them and move them into place atomically, then print their sha256 as GMM_SHA256=... and
TOM_SHA256=... lines (set them in the worker's environment to pin the files). Files already
present and verified are skipped; an interrupted download resumes from its .part file.

By default the official CP-VTON+ weights are fetched from commit
$DEFAULT_COMMIT of github.com/$DEFAULT_REPO, checked against their git
blob ids and loaded strictly as CP-VTON+ networks (GMM input 22 + 1 channels, TOM 26 in / 4 out).

Options:
  --from-dir DIR    use DIR/GMM/gmm_final.pth and DIR/TOM/tom_final.pth as the source of a
                    model whose URL is not set (a file missing there is an error: no download)
  --if-configured   when a download fails (source unreachable), warn, keep nothing of that model
                    and exit 0 (the Docker build with BAKE_CHECKPOINTS=auto); a file that fails
                    verification is still an error
  --force           download again even if a verified file is present
  --print-hashes    print the sha256 of the checkpoints present (GMM_SHA256=... lines) and exit
  -h, --help        show this help

Environment:
  CHECKPOINT_DIR    target folder (default: checkpoints/ beside this script, where the worker
                    and runpod_test.py look by default)
  GMM_URL, TOM_URL  where to download each file from: http(s)://, or file:///absolute/path;
                    default: $DEFAULT_BASE_URL/GMM/gmm_final.pth
                    and .../TOM/tom_final.pth
  GMM_URL_FILE, TOM_URL_FILE
                    a file holding the URL (e.g. a BuildKit secret); used when *_URL is unset,
                    so a pre-signed URL never appears in a process list or an image history
  GMM_GIT_BLOB, TOM_GIT_BLOB
                    expected git blob id (40 hex digits); default: the official files'
                    ($PINNED_GMM_GIT_BLOB, $PINNED_TOM_GIT_BLOB).
                    none: no blob check, to accept other weights (e.g. your own training).
  GMM_SHA256, TOM_SHA256
                    expected sha256 (hex), checked in addition when set
  LOAD_CHECK        auto (default): load each new file strictly as its network with
                    tools/check_checkpoints.py when a Python with torch is found (\$PYTHON, else
                    .venv/bin/python beside this script, else python3); 1: required; 0: skip
  CURL_RETRIES      curl --retry count for transient errors (default: 3)

Origin: the CP-VTON+ authors' shared folder $OFFICIAL_PAGE
(linked from github.com/minar09/cp-vton-plus). The weights are for research use only.
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

# The git blob id of a file, as `git hash-object FILE` computes it (git is not needed).
git_blob_of() {
  local size
  size=$(stat -c %s -- "$1")
  { printf 'blob %s\0' "$size"; cat -- "$1"; } | sha1sum | cut -d' ' -f1
}

# A torch.save file is a zip archive ("PK\x03\x04") or, in the legacy format the authors used
# (PyTorch 0.4), a pickle stream starting with the PROTO opcode (0x80). An HTML error or login page
# served with status 200 is neither.
looks_like_checkpoint() {
  local magic
  magic=$(head -c 4 -- "$1" | od -An -tx1 | tr -d ' \n')
  [[ $magic == 504b0304 || $magic == 80* ]]
}

# The Python that runs the strict load check, or nothing (with LOAD_CHECK=auto: skipped).
checker="$here/tools/check_checkpoints.py"
load_python() {
  local py
  if [[ -n ${PYTHON:-} ]]; then py=$PYTHON
  elif [[ -x $here/.venv/bin/python ]]; then py=$here/.venv/bin/python
  else py=python3
  fi
  if [[ -f $checker ]] && "$py" -c "import torch" >/dev/null 2>&1; then
    printf '%s' "$py"
  fi
}

# load_check NAME FILE -> 0 when FILE loads strictly as network NAME; prints the reason otherwise.
load_check() {
  local name=$1 file=$2 flag out
  [[ $load_mode == 0 ]] && return 0
  if [[ -z $load_py ]]; then
    [[ $load_mode == 1 ]] && { echo "LOAD_CHECK=1 but no Python with torch and $checker"; return 1; }
    return 0
  fi
  flag="--${name,,}"
  # PYTHONPATH: this checkout's modules, whatever else the interpreter has installed.
  if ! out=$(PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$load_py" "$checker" "$flag" "$file" 2>&1 >/dev/null); then
    echo "does not load as the CP-VTON+ $name: $(grep -m1 'error:' <<<"$out" | sed 's/^[A-Z]*: error: //')"
    return 1
  fi
  grep -q 'RANDOM' <<<"$out" && log "$name: warning: these are our deterministic random test weights"
  return 0
}

# verify NAME FILE EXPECTED_SHA256 EXPECTED_BLOB -> 0 when FILE is acceptable; prints the reason
# otherwise.
verify() {
  local name=$1 file=$2 want=$3 blob=$4 got
  if ! looks_like_checkpoint "$file"; then
    echo "not a PyTorch checkpoint (an HTML page or an error body?)"
    return 1
  fi
  if [[ -n $blob ]]; then
    got=$(git_blob_of "$file")
    if [[ $got != "${blob,,}" ]]; then
      echo "git blob id mismatch: expected $blob, got $got (not the official file)"
      return 1
    fi
  fi
  if [[ -n $want ]]; then
    got=$(sha256_of "$file")
    if [[ ${got,,} != "${want,,}" ]]; then
      echo "sha256 mismatch: expected $want, got $got"
      return 1
    fi
  fi
  load_check "$name" "$file"
}

# What to do without access to the source (one line, said once per run).
readonly OFFLINE_HINT="the smoke run (./run.sh python runpod_test.py) works without the weights (on random weights, and says so); to install them, get gmm_final.pth and tom_final.pth by hand (the authors' folder: $OFFICIAL_PAGE) into DIR/GMM/ and DIR/TOM/ and run ./$prog --from-dir DIR"

# download_failed NAME MESSAGE: fatal, or (with --if-configured) only a warning.
download_failed() {
  ((if_configured)) || die "$1: $2"
  log "warning: $1: $2; continuing without $1 (--if-configured)"
}

# drop_empty_folder FILE: remove FILE's folder if the failed download left it empty.
drop_empty_folder() { rmdir -- "$(dirname -- "$1")" 2>/dev/null || true; }

# fetch NAME URL EXPECTED_SHA256 EXPECTED_BLOB DEST
fetch() {
  local name=$1 url=$2 want=$3 blob=$4 dest=$5
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
        if ((if_configured)); then rm -f -- "$part"; drop_empty_folder "$dest"; fi
        download_failed "$name" "transfer interrupted (curl exit $rc); run again to resume from $part"
        return 0 ;;
      *)
        # Nothing useful was received (404, DNS, refused...): leave no empty .part or folder.
        if ((if_configured)) || [[ ! -s $part ]]; then rm -f -- "$part"; drop_empty_folder "$dest"; fi
        local what="download failed (curl exit $rc)"
        # 5, 6: proxy or host name not resolved; 7: no connection: most likely no network.
        [[ $rc == 5 || $rc == 6 || $rc == 7 ]] && what="cannot reach the source (no network? curl exit $rc)"
        local hint=""
        ((hinted)) || hint=". Without access to it: $OFFLINE_HINT"
        hinted=1
        download_failed "$name" "$what from $(redact_url "$url")$hint"
        return 0 ;;
    esac
  fi
  [[ -f $part ]] || die "$name: curl succeeded but wrote no file (empty source?)"

  if ! reason=$(verify "$name" "$part" "$want" "$blob"); then
    # A corrupt .part cannot be fixed by resuming it: drop it so the next run starts over.
    rm -f -- "$part"
    die "$name: downloaded file rejected: $reason"
  fi
  sync -- "$part" 2>/dev/null || true
  mv -f -- "$part" "$dest"
  log "$name: ok, verified ($(describe_checks "$want" "$blob"))"
}

describe_checks() {
  local checks=()
  [[ -n $2 ]] && checks+=("git blob $2")
  [[ -n $1 ]] && checks+=("sha256")
  [[ -n $load_py && $load_mode != 0 ]] && checks+=("loads strictly")
  ((${#checks[@]})) || checks=("checkpoint format only, nothing pinned")
  local joined
  printf -v joined '%s, ' "${checks[@]}"
  printf '%s' "${joined%, }"
}

# resolve_url VAR_PREFIX SUBPATH -> prints the URL to use for a model.
resolve_url() {
  local sub=$2 url_var="${1}_URL" file_var="${1}_URL_FILE"
  local url=${!url_var:-}
  if [[ -z $url && -n ${!file_var:-} ]]; then
    [[ -r ${!file_var} ]] || die "$file_var=${!file_var} is not a readable file"
    url=$(tr -d '\r\n' <"${!file_var}")
  fi
  if [[ -z $url && -n $from_dir ]]; then
    # Checked before anything is fetched (see below): never a silent download instead.
    [[ -f $from_dir/$sub ]] || return 0
    url="file://$(cd -- "$(dirname -- "$from_dir/$sub")" && pwd)/$(basename -- "$sub")"
  fi
  printf '%s' "${url:-$DEFAULT_BASE_URL/$sub}"
}

from_dir="" if_configured=0 force=0 print_hashes=0 hinted=0
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

checkpoint_dir=${CHECKPOINT_DIR:-$here/checkpoints}   # where the worker looks by default
names=(GMM TOM)
declare -A files=([GMM]="GMM/gmm_final.pth" [TOM]="TOM/tom_final.pth")
declare -A blob_pins=([GMM]="$PINNED_GMM_GIT_BLOB" [TOM]="$PINNED_TOM_GIT_BLOB")

print_sha256_lines() {
  local found=0 path
  for name in "${names[@]}"; do
    path="$checkpoint_dir/${files[$name]}"
    if [[ -f $path ]]; then
      printf '%s_SHA256=%s\n' "$name" "$(sha256_of "$path")"
      found=1
    else
      log "$name: $path not found"
    fi
  done
  ((found))
}

if ((print_hashes)); then
  print_sha256_lines || die "no checkpoint found under $checkpoint_dir"
  exit 0
fi

command -v curl >/dev/null 2>&1 || die "curl is required but not installed"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum (coreutils) is required but not installed"
command -v sha1sum >/dev/null 2>&1 || die "sha1sum (coreutils) is required but not installed"
[[ -z $from_dir || -d $from_dir ]] || die "--from-dir: $from_dir is not a folder"
load_mode=${LOAD_CHECK:-auto}
[[ $load_mode == auto || $load_mode == 0 || $load_mode == 1 ]] \
  || die "LOAD_CHECK must be auto, 0 or 1 (got '$load_mode')"
load_py=""
if [[ $load_mode != 0 ]]; then
  load_py=$(load_python)
  if [[ -z $load_py ]]; then
    [[ $load_mode == 1 ]] && die "LOAD_CHECK=1 but no Python with torch (set PYTHON) or no $checker"
    log "note: no Python with torch here: the strict load check is skipped (the worker runs it at" \
      "start-up; python tools/check_checkpoints.py runs it alone)"
  fi
fi

# Decide what to do for every model before downloading anything.
declare -A urls=() wants=() blobs=()
todo=() missing=()
for name in "${names[@]}"; do
  dest="$checkpoint_dir/${files[$name]}"
  sha_var="${name}_SHA256" blob_var="${name}_GIT_BLOB"
  want=${!sha_var:-}
  [[ -z $want || $want =~ ^[0-9a-fA-F]{64}$ ]] || die "$sha_var is not a 64-digit hex sha256"
  blob=${!blob_var:-${blob_pins[$name]}}       # unset or empty: the official id
  [[ ${blob,,} == none ]] && blob=""             # none: no blob check (other weights)
  [[ -z $blob || $blob =~ ^[0-9a-fA-F]{40}$ ]] \
    || die "$blob_var is not a 40-digit hex git blob id (or none)"
  wants[$name]=$want blobs[$name]=$blob
  if [[ -f $dest ]] && ((!force)); then
    if reason=$(verify "$name" "$dest" "$want" "$blob"); then
      log "$name: $dest present and verified, skipping ($(describe_checks "$want" "$blob"))"
      continue
    fi
    log "$name: $dest present but rejected ($reason); it will be replaced"
  fi
  urls[$name]=$(resolve_url "$name" "${files[$name]}")
  [[ -n ${urls[$name]} ]] || missing+=("$from_dir/${files[$name]}")
  todo+=("$name")
done
((${#missing[@]} == 0)) || die "--from-dir $from_dir: ${missing[*]} not found (expected" \
  "DIR/GMM/gmm_final.pth and DIR/TOM/tom_final.pth; nothing was downloaded)"

for name in "${todo[@]}"; do
  fetch "$name" "${urls[$name]}" "${wants[$name]}" "${blobs[$name]}" \
    "$checkpoint_dir/${files[$name]}"
done
if [[ -f $checkpoint_dir/${files[GMM]} || -f $checkpoint_dir/${files[TOM]} ]]; then
  log "done: checkpoints in $checkpoint_dir; pin them in the worker's environment with these lines:"
  print_sha256_lines
else
  log "done, without checkpoints (--if-configured): none could be fetched into $checkpoint_dir;" \
    "the worker then needs them at run time (CHECKPOINT_DIR) or runs on random weights" \
    "(ALLOW_RANDOM_WEIGHTS=1)"
fi
