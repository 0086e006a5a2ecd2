# Shared set-up for ./vmgate and ./test.sh: find a JDK 21+, make sure the system packages
# are there (installing them from Debian when root, else printing the exact command), and
# build the jar when it is missing or older than its sources. Sourced, not executed.

VMGATE_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() { printf 'vmgate: %s\n' "$*" >&2; exit 1; }

# The JDK's release file says its version without starting a JVM (that costs ~100 ms a run).
java_major() {
    local home; home=$(dirname "$(dirname "$(readlink -f "$1")")")
    local v; v=$(sed -n 's/^JAVA_VERSION="\([0-9]*\).*/\1/p' "$home/release" 2>/dev/null)
    [ -n "$v" ] || v=$("$1" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p' | cut -d. -f1)
    echo "$v"
}

find_java() {
    local c
    for c in ${JAVA_HOME:+"$JAVA_HOME/bin/java"} "$(command -v java 2>/dev/null)" /usr/lib/jvm/*/bin/java; do
        [ -x "$c" ] || continue
        local v; v=$(java_major "$c")
        if [ -n "$v" ] && [ "$v" -ge 21 ] 2>/dev/null; then
            JAVA="$c"; JAVA_HOME=$(dirname "$(dirname "$(readlink -f "$c")")"); export JAVA_HOME; return 0
        fi
    done
    die "no JDK 21 or newer found (looked at \$JAVA_HOME, PATH and /usr/lib/jvm/*). Install one and set JAVA_HOME."
}

# package -> a file or command that proves it is installed
missing_packages() {
    local need=("$@") missing=() p
    for p in "${need[@]}"; do
        case $p in
            qemu-system-x86) command -v qemu-system-x86_64 >/dev/null || missing+=("$p") ;;
            linux-image-cloud-amd64) compgen -G '/boot/vmlinuz-*-cloud-amd64' >/dev/null || missing+=("$p") ;;
            busybox-static) [ -f /usr/share/doc/busybox-static/copyright ] || missing+=("$p") ;;
            gcc) command -v gcc >/dev/null || missing+=("$p") ;;
            make) command -v make >/dev/null || missing+=("$p") ;;
            maven) command -v mvn >/dev/null || missing+=("$p") ;;
            openssh-client) command -v ssh >/dev/null && command -v sftp >/dev/null || missing+=("$p") ;;
            openssh-sftp-server) [ -x /usr/lib/openssh/sftp-server ] || missing+=("$p") ;;
            openssh-server) [ -x /usr/sbin/sshd ] || missing+=("$p") ;;
            util-linux) command -v setpriv >/dev/null || missing+=("$p") ;;
            tmux) command -v tmux >/dev/null || missing+=("$p") ;;
            clang) command -v clang >/dev/null || missing+=("$p") ;;
            python3) command -v python3 >/dev/null || missing+=("$p") ;;
            *) dpkg-query -W "$p" >/dev/null 2>&1 || missing+=("$p") ;;
        esac
    done
    echo "${missing[*]}"
}

ensure_packages() {
    local missing; missing=$(missing_packages "$@")
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" = 0 ]; then
        echo "vmgate: installing missing Debian packages: $missing" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2 || die "apt-get update failed"
        # shellcheck disable=SC2086
        apt-get install -y -qq --no-install-recommends $missing >&2 || die "apt-get install $missing failed"
    else
        die "missing Debian packages. Run:  sudo apt-get install --no-install-recommends $missing"
    fi
}

RUNTIME_PACKAGES=(qemu-system-x86 linux-image-cloud-amd64 busybox-static gcc make maven openssh-client openssh-sftp-server util-linux)

JAR="$VMGATE_HOME/target/vmgate.jar"

jar_is_stale() {
    [ -f "$JAR" ] || return 0
    # guest/agent/build holds make's outputs (tests, fuzzing corpus): not sources of the jar.
    [ -n "$(find "$VMGATE_HOME/pom.xml" "$VMGATE_HOME/src/main" "$VMGATE_HOME/guest" -path "$VMGATE_HOME/guest/agent/build" -prune \
        -o -type f -newer "$JAR" -print -quit 2>/dev/null)" ]
}

build_jar() {
    if jar_is_stale; then
        echo "vmgate: building (mvn package)..." >&2
        (cd "$VMGATE_HOME" && mvn -q -B package -DskipTests -Dmaven.test.skip=true >&2) || die "build failed (see the Maven output above)"
    fi
}
