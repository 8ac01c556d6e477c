# Sourced by the engine scripts: where their runtime files live and how they install Debian packages.
#
# ENGINES_DIR (default: .engines in the repository, gitignored) holds every cluster's data, sockets,
# logs and pid files, one folder per engine; a test points it at a temporary folder.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ENGINES_DIR="${ENGINES_DIR:-$REPO/.engines}"
mkdir -p "$ENGINES_DIR"
ENGINES_DIR="$(cd "$ENGINES_DIR" && pwd)"

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi

# apt_install COMMAND PACKAGE...: install the Debian packages unless COMMAND (a path) exists already.
apt_install() {
    local probe="$1"; shift
    [ -e "$probe" ] && return 0
    command -v apt-get >/dev/null || { echo "$probe is missing and apt-get is not here: install $*" >&2; exit 1; }
    # An install that fails for want of package lists (a fresh machine) refreshes them and tries again.
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
        || { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
}

# wait_for DESCRIPTION SECONDS COMMAND...: retry COMMAND every half second until it succeeds.
wait_for() {
    local what="$1" seconds="$2"; shift 2
    for _ in $(seq 1 $((seconds * 2))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    echo "$what did not come up within ${seconds}s" >&2
    return 1
}

# stop_pidfile FILE: TERM the process whose id FILE holds, wait for it, remove FILE.
stop_pidfile() {
    local file="$1" pid
    [ -f "$file" ] || return 0
    pid="$(cat "$file")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$file"
}
