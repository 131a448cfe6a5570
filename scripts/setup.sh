#!/usr/bin/env bash
# webdino set-up: everything `npm start` / `npm test` need on this machine, idempotently.
#
#   1. a Vulkan driver + loader that Dawn (the `webgpu` npm package) accepts (Linux only):
#      - a vendor ICD (nvidia_icd.json, ...) is used as is; only libvulkan1 is added if missing;
#      - otherwise Mesa's software driver lavapipe, version >= 25 (Dawn rejects older ones);
#        on Debian bookworm it comes from bookworm-backports, which is added if absent;
#   2. Node.js >= 20 (checked, not installed);
#   3. node_modules (`npm ci` when missing or older than package-lock.json);
#   4. dist/ (`npm run build` when older than any source file);
#   5. with --browser only (the test command uses it): Debian's `chromium`, which the browser tests
#      drive through playwright-core. Nothing is ever downloaded by Playwright itself.
#
# Fast (well under 2 s) when everything is in place. Never prompts (apt -y, sudo -n), so it is
# safe under CI=true. Environment:
#   WEBDINO_SKIP_VULKAN=1   skip step 1 (you manage the Vulkan driver yourself)
#   WEBDINO_CHROMIUM=PATH   the Chromium the browser tests use (default /usr/bin/chromium)
#
# The functions can be sourced for testing: `source scripts/setup.sh` defines them without
# running anything.
set -euo pipefail

BASE_SUITE=bookworm
BACKPORTS_SUITE=bookworm-backports
BACKPORTS_FILE=bookworm-backports.sources
MESA_MIN=25
ICD_DIRS=(/etc/vulkan/icd.d /usr/share/vulkan/icd.d /usr/local/share/vulkan/icd.d)

say() { printf 'setup: %s\n' "$*"; }
warn() { printf 'setup: warning: %s\n' "$*" >&2; }
die() {
  printf 'setup: error: %s\n' "$*" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------------
# apt sources: bookworm-backports
# ---------------------------------------------------------------------------------------------

# backports_present SOURCES_DIR [SOURCES_LIST]
# True when an enabled apt source (deb822 *.sources or one-line *.list) already names the
# backports suite.
backports_present() {
  local dir=$1 list=${2:-} f
  local files=()
  for f in "$dir"/*.sources "$dir"/*.list "$list"; do
    [[ -n $f && -f $f ]] && files+=("$f")
  done
  ((${#files[@]})) || return 1
  awk -v suite="$BACKPORTS_SUITE" '
    function words_have(s, w,   n, a, i) { n = split(s, a, /[ \t]+/); for (i = 1; i <= n; i++) if (a[i] == w) return 1; return 0 }
    function end_stanza() { if (suites != "" && enabled != "no" && words_have(suites, suite)) found = 1; suites = ""; enabled = "" }
    FNR == 1 { end_stanza(); deb822 = (FILENAME ~ /\.sources$/) }
    /^[ \t]*#/ { next }
    deb822 && /^[ \t]*$/ { end_stanza(); next }
    deb822 && tolower($0) ~ /^suites:/ { suites = $0; sub(/^[^:]*:/, "", suites); next }
    deb822 && tolower($0) ~ /^enabled:/ { enabled = tolower($2); next }
    !deb822 && $1 ~ /^deb(-src)?$/ { line = $0; gsub(/\[[^]]*\]/, "", line); if (words_have(line, suite)) found = 1 }
    END { end_stanza(); exit(found ? 0 : 1) }
  ' "${files[@]}"
}

# backports_stanza SOURCES_DIR [SOURCES_LIST]
# Prints a deb822 stanza for the backports suite, copying URIs and Signed-By from the enabled
# source that serves the base suite (bookworm). Fails if there is none.
backports_stanza() {
  local dir=$1 list=${2:-} f out=""
  local deb822=() oneline=()
  # debian.sources first: it is the system's own.
  [[ -f $dir/debian.sources ]] && deb822+=("$dir/debian.sources")
  for f in "$dir"/*.sources; do
    [[ -f $f && $f != "$dir/debian.sources" ]] && deb822+=("$f")
  done
  for f in "$list" "$dir"/*.list; do
    [[ -n $f && -f $f ]] && oneline+=("$f")
  done

  if ((${#deb822[@]})); then
    # Paragraph mode: one record per stanza. Field lines are copied verbatim, including
    # continuation lines (an inline Signed-By key block).
    out=$(awk -v suite="$BASE_SUITE" '
      BEGIN { RS = "" }
      function words_have(s, w,   n, a, i) { n = split(s, a, /[ \t]+/); for (i = 1; i <= n; i++) if (a[i] == w) return 1; return 0 }
      {
        n = split($0, L, "\n"); field = ""; types = ""; suites = ""; enabled = ""; uris = ""; signed = ""
        for (i = 1; i <= n; i++) {
          line = L[i]
          if (line ~ /^[ \t]*#/) continue
          if (line ~ /^[ \t]/) { if (field == "signed-by") signed = signed "\n" line; continue }
          field = tolower(line); sub(/:.*/, "", field)
          value = line; sub(/^[^:]*:[ \t]*/, "", value)
          if (field == "types") types = value
          else if (field == "suites") suites = value
          else if (field == "enabled") enabled = tolower(value)
          else if (field == "uris") uris = line
          else if (field == "signed-by") signed = line
        }
        if (words_have(types, "deb") && words_have(suites, suite) && enabled != "no" && uris != "") {
          print uris
          if (signed != "") print signed
          exit
        }
      }
    ' "${deb822[@]}")
  fi

  if [[ -z $out ]] && ((${#oneline[@]})); then
    # One-line format: deb [signed-by=/path ...] URI bookworm main ...
    out=$(awk -v suite="$BASE_SUITE" '
      /^[ \t]*#/ { next }
      $1 == "deb" {
        opts = ""; line = $0
        if (match(line, /\[[^]]*\]/)) { opts = substr(line, RSTART + 1, RLENGTH - 2); line = substr(line, 1, RSTART - 1) substr(line, RSTART + RLENGTH) }
        n = split(line, w, /[ \t]+/); k = 0
        for (i = 1; i <= n; i++) if (w[i] != "") v[++k] = w[i]
        if (k >= 3 && v[3] == suite) {
          print "URIs: " v[2]
          m = split(opts, o, /[ \t]+/)
          for (i = 1; i <= m; i++) if (o[i] ~ /^signed-by=/) { sub(/^signed-by=/, "", o[i]); print "Signed-By: " o[i] }
          exit
        }
      }
    ' "${oneline[@]}")
  fi

  [[ -n $out ]] || return 1
  local uris signed
  uris=$(printf '%s\n' "$out" | sed -n '1p')
  signed=$(printf '%s\n' "$out" | sed -n '2,$p')
  printf '# Added by webdino scripts/setup.sh: Mesa >= %s (lavapipe, the software Vulkan driver)\n' "$MESA_MIN"
  printf '# for WebGPU through Dawn. Same mirror as the %s entry.\n' "$BASE_SUITE"
  printf 'Types: deb\n%s\nSuites: %s\nComponents: main\n' "$uris" "$BACKPORTS_SUITE"
  [[ -z $signed ]] || printf '%s\n' "$signed"
}

# add_backports SOURCES_DIR [SOURCES_LIST]
# Writes SOURCES_DIR/bookworm-backports.sources unless a backports source already exists.
# Run with enough rights to write SOURCES_DIR (as_root is used when not root).
add_backports() {
  local dir=$1 list=${2:-} stanza
  if backports_present "$dir" "$list"; then
    say "apt: $BACKPORTS_SUITE is already configured under $dir; not adding it again"
    return 0
  fi
  stanza=$(backports_stanza "$dir" "$list") ||
    die "apt: found no enabled '$BASE_SUITE' source under $dir to copy the mirror from; add $BACKPORTS_SUITE yourself"
  say "apt: adding $BACKPORTS_SUITE (same mirror as $BASE_SUITE) as $dir/$BACKPORTS_FILE, for Mesa >= $MESA_MIN"
  printf '%s\n' "$stanza" | as_root tee "$dir/$BACKPORTS_FILE.tmp" >/dev/null
  as_root chmod 644 "$dir/$BACKPORTS_FILE.tmp"
  as_root mv -f "$dir/$BACKPORTS_FILE.tmp" "$dir/$BACKPORTS_FILE"
}

# ---------------------------------------------------------------------------------------------
# privileges
# ---------------------------------------------------------------------------------------------

can_be_root() {
  [[ $(id -u) -eq 0 ]] && return 0
  command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null
}

as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  else
    sudo -n "$@"
  fi
}

# ---------------------------------------------------------------------------------------------
# Vulkan detection
# ---------------------------------------------------------------------------------------------

# Mesa's ICD manifests (all shipped by mesa-vulkan-drivers, whatever hardware is present).
is_mesa_icd() {
  case "$(basename "$1")" in
  lvp_icd* | intel_icd* | intel_hasvk_icd* | radeon_icd* | virtio_icd* | gfxstream_vk_icd* | \
    freedreno_icd* | panfrost_icd* | broadcom_icd* | powervr_mesa_icd* | asahi_icd* | \
    nouveau_icd* | dzn_icd* | lvp_*) return 0 ;;
  esac
  return 1
}

# Sets ICD_VENDOR (first non-Mesa manifest), ICD_LVP (lavapipe manifest), ICD_MESA_ANY.
find_icds() {
  ICD_VENDOR="" ICD_LVP="" ICD_MESA_ANY=""
  local f d candidates=()
  local extra="${VK_DRIVER_FILES:-${VK_ICD_FILENAMES:-}}"
  [[ -z $extra ]] || IFS=: read -ra candidates <<<"$extra"
  for d in "${ICD_DIRS[@]}"; do
    for f in "$d"/*.json; do candidates+=("$f"); done
  done
  for f in "${candidates[@]}"; do
    [[ -f $f ]] || continue
    if is_mesa_icd "$f"; then
      [[ -n $ICD_MESA_ANY ]] || ICD_MESA_ANY=$f
      [[ $(basename "$f") == lvp_* && -z $ICD_LVP ]] && ICD_LVP=$f
    else
      [[ -n $ICD_VENDOR ]] || ICD_VENDOR=$f
    fi
  done
  return 0
}

# Installed version of a Debian package, empty if not installed or no dpkg.
deb_version() {
  command -v dpkg-query >/dev/null 2>&1 || return 0
  local s
  s=$(dpkg-query -W -f='${db:Status-Status} ${Version}\n' "$1" 2>/dev/null || true)
  s=$(printf '%s\n' "$s" | awk '$1 == "installed" { print $2; exit }')
  printf '%s' "$s"
}

have_vulkan_loader() {
  [[ -n $(deb_version libvulkan1) ]] && return 0
  local f out
  for f in /usr/lib/x86_64-linux-gnu/libvulkan.so.1 /usr/lib/aarch64-linux-gnu/libvulkan.so.1 \
    /usr/lib64/libvulkan.so.1 /usr/lib/libvulkan.so.1 /usr/local/lib/libvulkan.so.1; do
    [[ -e $f ]] && return 0
  done
  out=$( (ldconfig -p || /sbin/ldconfig -p) 2>/dev/null || true)
  [[ $out == *"libvulkan.so.1 "* ]]
}

# Sets NEED_MESA / NEED_LOADER (0/1) and DRIVER_NOTE (what will be used, or what is wrong).
check_vulkan() {
  NEED_MESA=0 NEED_LOADER=0 DRIVER_NOTE=""
  find_icds
  local mesa_v
  mesa_v=$(deb_version mesa-vulkan-drivers)
  if [[ -n $ICD_VENDOR ]]; then
    DRIVER_NOTE="vendor Vulkan driver $ICD_VENDOR, no software driver needed"
  elif [[ -n $ICD_MESA_ANY ]]; then
    if [[ -n $mesa_v ]]; then
      if dpkg --compare-versions "$mesa_v" ge "${MESA_MIN}~"; then
        DRIVER_NOTE="Mesa $mesa_v (${ICD_LVP:-$ICD_MESA_ANY})"
      else
        NEED_MESA=1
        DRIVER_NOTE="Mesa $mesa_v is too old (Dawn needs >= $MESA_MIN)"
      fi
    elif [[ -z $ICD_LVP ]]; then
      NEED_MESA=1
      DRIVER_NOTE="Mesa hardware drivers only, no lavapipe"
    else
      # Not from a Debian package (built from source, another distro): trust it.
      DRIVER_NOTE="lavapipe $ICD_LVP (version not checked: not a Debian package)"
    fi
  else
    NEED_MESA=1
    DRIVER_NOTE="no Vulkan driver (ICD) installed"
  fi
  have_vulkan_loader || NEED_LOADER=1
  return 0
}

os_field() { # os_field KEY  -> value from /etc/os-release
  [[ -r /etc/os-release ]] || return 0
  (
    # shellcheck disable=SC1091
    . /etc/os-release
    eval "printf '%s' \"\${$1:-}\""
  )
}

ensure_vulkan() {
  if [[ ${WEBDINO_SKIP_VULKAN:-} == 1 ]]; then
    say "[1/4] Vulkan: skipped (WEBDINO_SKIP_VULKAN=1)"
    return 0
  fi
  case "$(uname -s)" in
  Linux) ;;
  Darwin)
    say "[1/4] Vulkan: not needed on macOS (Dawn uses Metal)"
    return 0
    ;;
  MINGW* | MSYS* | CYGWIN* | Windows_NT)
    say "[1/4] Vulkan: not needed on Windows (Dawn uses D3D12 and the GPU's own driver)"
    return 0
    ;;
  *)
    say "[1/4] Vulkan: unknown OS $(uname -s); not checking the GPU driver"
    return 0
    ;;
  esac

  check_vulkan
  if ((NEED_MESA == 0 && NEED_LOADER == 0)); then
    say "[1/4] Vulkan: ok, $DRIVER_NOTE + loader libvulkan.so.1"
    return 0
  fi

  local pkgs=() why
  if ((NEED_MESA)); then
    pkgs=(mesa-vulkan-drivers libvulkan1)
    why="$DRIVER_NOTE; Dawn (WebGPU for Node) needs Mesa's lavapipe >= $MESA_MIN without a GPU"
  else
    pkgs=(libvulkan1)
    why="the Vulkan loader libvulkan.so.1 is missing (driver: $DRIVER_NOTE)"
  fi

  local id codename
  id=$(os_field ID)
  codename=$(os_field VERSION_CODENAME)
  if [[ $id != debian ]] || ! command -v apt-get >/dev/null 2>&1; then
    say "[1/4] Vulkan: $why"
    printf 'setup: install with your package manager: the Vulkan loader (libvulkan.so.1)%s\n' \
      "$( ((NEED_MESA)) && printf ' and Mesa >= %s with lavapipe (Vulkan ICD lvp_icd*.json)' "$MESA_MIN")" >&2
    printf 'setup: (or set WEBDINO_SKIP_VULKAN=1 if you manage the Vulkan driver yourself)\n' >&2
    exit 1
  fi

  local use_backports=0
  [[ $codename == "$BASE_SUITE" ]] && ((NEED_MESA)) && use_backports=1
  local target=()
  ((use_backports)) && target=(-t "$BACKPORTS_SUITE")

  say "[1/4] Vulkan: need ${pkgs[*]}${target[*]:+ from $BACKPORTS_SUITE}: $why"
  if ! can_be_root; then
    printf 'setup: this needs root; run these, then re-run `npm run setup`:\n' >&2
    if ((use_backports)) && ! backports_present /etc/apt/sources.list.d /etc/apt/sources.list; then
      local stanza
      stanza=$(backports_stanza /etc/apt/sources.list.d /etc/apt/sources.list) || stanza=""
      if [[ -n $stanza ]]; then
        printf "  sudo tee /etc/apt/sources.list.d/%s >/dev/null <<'EOF'\n%s\nEOF\n" "$BACKPORTS_FILE" "$stanza" >&2
      else
        printf '  # add %s to your apt sources (same mirror as %s)\n' "$BACKPORTS_SUITE" "$BASE_SUITE" >&2
      fi
    fi
    printf '  sudo apt-get update\n' >&2
    printf '  sudo apt-get install -y --no-install-recommends %s%s\n' "${target[*]:+${target[*]} }" "${pkgs[*]}" >&2
    exit 1
  fi

  ((use_backports)) && add_backports /etc/apt/sources.list.d /etc/apt/sources.list
  say "apt: apt-get update (to see the package lists${target[*]:+ including $BACKPORTS_SUITE})"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q ||
    warn "apt-get update reported errors; trying the install anyway"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    ${target[@]+"${target[@]}"} "${pkgs[@]}"

  check_vulkan
  if ((NEED_MESA || NEED_LOADER)); then
    die "Vulkan still not usable after installing ${pkgs[*]}: $DRIVER_NOTE$( ((NEED_LOADER)) && printf '; libvulkan.so.1 missing')"
  fi
  say "Vulkan: ok, $DRIVER_NOTE"
}

# ---------------------------------------------------------------------------------------------
# Node, dependencies, build
# ---------------------------------------------------------------------------------------------

ensure_node() {
  command -v node >/dev/null 2>&1 || die "[2/4] Node.js >= 20 is required and 'node' is not on PATH"
  command -v npm >/dev/null 2>&1 || die "[2/4] npm is required and not on PATH"
  local v
  v=$(node -p 'process.versions.node')
  [[ ${v%%.*} -ge 20 ]] || die "[2/4] Node.js >= 20 is required (package.json engines); found $v"
  say "[2/4] Node.js: $v (>= 20 required)"
}

ensure_deps() {
  local reason=""
  if [[ ! -d node_modules ]]; then
    reason="node_modules/ is missing"
  elif [[ ! -f package-lock.json ]]; then
    [[ -f node_modules/.package-lock.json ]] || reason="node_modules/ looks incomplete"
  elif [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
    reason="package-lock.json is newer than node_modules/"
  fi
  if [[ -z $reason ]]; then
    say "[3/4] dependencies: node_modules/ is up to date with package-lock.json"
    return 0
  fi
  if [[ -f package-lock.json ]]; then
    say "[3/4] dependencies: npm ci ($reason)"
    npm ci --no-audit --no-fund
  else
    say "[3/4] dependencies: npm install ($reason; no package-lock.json)"
    npm install --no-audit --no-fund
  fi
}

ensure_build() {
  if [[ ! -f scripts/build.mjs ]]; then
    say "[4/4] build: no scripts/build.mjs; nothing to build"
    return 0
  fi
  local reason=""
  if [[ ! -f dist/.stamp ]]; then
    reason="dist/ has not been built"
  elif [[ -f index.ts && ! -f dist/index.js ]] || [[ -f bin/cli.ts && ! -f dist/cli.js ]]; then
    reason="an output in dist/ is missing"
  else
    local srcs=() p newer
    for p in engine kernels models train bench bin index.ts scripts/build.mjs; do
      [[ -e $p ]] && srcs+=("$p")
    done
    if ((${#srcs[@]})); then
      newer=$(find "${srcs[@]}" -type f \( -name '*.ts' -o -name '*.wgsl' -o -name 'build.mjs' \) \
        -newer dist/.stamp -print -quit 2>/dev/null || true)
      [[ -z $newer ]] || reason="$newer changed since the last build"
    fi
  fi
  if [[ -z $reason ]]; then
    say "[4/4] build: dist/ is up to date"
    return 0
  fi
  say "[4/4] build: npm run build ($reason)"
  npm run --silent build
}

# ---------------------------------------------------------------------------------------------
# Chromium for the browser tests (--browser)
# ---------------------------------------------------------------------------------------------

ensure_chromium() {
  local bin=${WEBDINO_CHROMIUM:-/usr/bin/chromium}
  if [[ -x $bin ]]; then
    say "[5/5] browser: $bin present"
    return 0
  fi
  if [[ -n ${WEBDINO_CHROMIUM:-} ]]; then
    die "[5/5] browser: WEBDINO_CHROMIUM=$bin is not an executable"
  fi
  if [[ $(os_field ID) != debian ]] || ! command -v apt-get >/dev/null 2>&1; then
    warn "[5/5] browser: no $bin; the browser tests will be skipped (install Chromium, or set WEBDINO_CHROMIUM)"
    return 0
  fi
  if ! can_be_root; then
    warn "[5/5] browser: no $bin; run \`sudo apt-get install -y --no-install-recommends chromium\` (browser tests skipped)"
    return 0
  fi
  say "[5/5] browser: apt-get install chromium (for the browser tests)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium || {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
  }
}

main() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  local browser=0 arg
  for arg in "$@"; do
    case $arg in
    --browser) browser=1 ;;
    *) die "unknown option $arg (known: --browser)" ;;
    esac
  done
  ensure_vulkan
  ensure_node
  ensure_deps
  ensure_build
  ((browser)) && ensure_chromium
  return 0
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
