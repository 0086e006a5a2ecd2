# Shared set-up for ./vmgate and ./test.sh: find a JDK 21+, make sure the system packages
# are there (installing them from Debian when root, else printing the exact command), and
# build the jar when it is missing or older than its sources. Sourced, not executed.

VMGATE_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() { printf 'vmgate: %s\n' "$*" >&2; exit 1; }

# The JDK's release file says its version without starting a JVM (that costs ~100 ms a run),
# and plain bash reads it without forking (the launcher's own time is part of every VM's start).
java_major() {  # JDK home
    local line
    if [ -r "$1/release" ]; then
        while IFS= read -r line; do
            case $line in
                JAVA_VERSION=*) line=${line#JAVA_VERSION=\"}; echo "${line%%[.\"]*}"; return 0 ;;
            esac
        done < "$1/release"
    fi
    [ -x "$1/bin/java" ] && "$1/bin/java" -XshowSettings:properties -version 2>&1 \
        | sed -n 's/^ *java.specification.version = //p' | cut -d. -f1
}

find_java() {
    local path_java home v
    path_java=$(command -v java 2>/dev/null) && path_java=$(readlink -f "$path_java") || path_java=
    for home in ${JAVA_HOME:+"$JAVA_HOME"} ${path_java:+"${path_java%/bin/java}"} /usr/lib/jvm/*; do
        [ -x "$home/bin/java" ] || continue
        v=$(java_major "$home")
        if [ -n "$v" ] && [ "$v" -ge 21 ] 2>/dev/null; then
            JAVA="$home/bin/java"; JAVA_MAJOR=$v; JAVA_HOME=$home; export JAVA_HOME
            # Maven's bundled Guava uses sun.misc.Unsafe; JDK 23+ warns about it on every build.
            if [ "$v" -ge 23 ] && [[ "${MAVEN_OPTS:-}" != *unsafe-memory-access* ]]; then
                export MAVEN_OPTS="${MAVEN_OPTS:+$MAVEN_OPTS }--sun-misc-unsafe-memory-access=allow"
            fi
            return 0
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
            e2fsprogs) [ -x /usr/sbin/mke2fs ] && [ -x /usr/sbin/debugfs ] || missing+=("$p") ;;
            mmdebstrap) command -v mmdebstrap >/dev/null || missing+=("$p") ;;
            libcap2-bin) [ -x /usr/sbin/setcap ] || missing+=("$p") ;;
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

# e2fsprogs makes root filesystem images (mke2fs, debugfs, e2fsck); mmdebstrap builds the Debian one.
RUNTIME_PACKAGES=(qemu-system-x86 linux-image-cloud-amd64 busybox-static gcc make maven openssh-client openssh-sftp-server util-linux
    e2fsprogs mmdebstrap)

JAR="$VMGATE_HOME/app/target/vmgate.jar"

jar_is_stale() {
    [ -f "$JAR" ] || return 0
    # guest/agent/build holds make's outputs (tests, fuzzing corpus): not sources of the jar.
    [ -n "$(find "$VMGATE_HOME/pom.xml" "$VMGATE_HOME/core/pom.xml" "$VMGATE_HOME/app/pom.xml" "$VMGATE_HOME/core/src/main" \
        "$VMGATE_HOME/app/src/main" "$VMGATE_HOME/guest" -path "$VMGATE_HOME/guest/agent/build" -prune \
        -o -type f -newer "$JAR" -print -quit 2>/dev/null)" ]
}

build_jar() {
    if jar_is_stale; then
        echo "vmgate: building (mvn package)..." >&2
        (cd "$VMGATE_HOME" && mvn -q -B -Dstyle.color=never package -DskipTests -Dmaven.test.skip=true >&2) || die "build failed (see the Maven output above)"
        # The jar plugin leaves vmgate.jar alone when app's own classes did not change (a change in
        # core or the agent lands in target/lib): mark it built, or every later run builds again.
        touch "$JAR"
    fi
}

# The library (io.vmgate:vmgate-core and its parent POM) in the local Maven repository, for projects
# that depend on it (examples/): installed when missing or older than its sources.
install_library() {
    local installed="$HOME/.m2/repository/io/vmgate/vmgate-core/0.1.0-SNAPSHOT/vmgate-core-0.1.0-SNAPSHOT.jar"
    if [ ! -f "$installed" ] || [ -n "$(find "$VMGATE_HOME/pom.xml" "$VMGATE_HOME/core/pom.xml" "$VMGATE_HOME/core/src/main" \
            "$VMGATE_HOME/guest" -path "$VMGATE_HOME/guest/agent/build" -prune -o -type f -newer "$installed" -print -quit 2>/dev/null)" ]; then
        echo "vmgate: installing the library (mvn install -pl core)..." >&2
        (cd "$VMGATE_HOME" && mvn -q -B -Dstyle.color=never install -pl core -am -Dmaven.test.skip=true >&2) \
            || die "installing the library failed (see the Maven output above)"
    fi
}

# JVM flags for running vmgate. The start-up cache holds vmgate's classes already parsed and
# linked (JDK 25+: AOT cache; JDK 21-24: AppCDS archive): about 0.1 s less before QEMU starts,
# which `vmgate run` would otherwise add to every VM. It is recorded once per build from a
# training run that boots one VM (`run --no-snapshot -- true`, ~10 s with the cache's assembly),
# under a lock, and skipped when target/ is read-only. A failed training is not retried until
# the next build: the real command reports whatever is wrong.
jvm_flags() {
    JVM_FLAGS=(-XX:+UseSerialGC)
    local cache use train
    if [ "$JAVA_MAJOR" -ge 25 ]; then
        cache="$VMGATE_HOME/app/target/vmgate.aot"
        use=(-XX:AOTCache="$cache" -Xlog:aot=off -Xlog:cds=off)
        train=(-XX:AOTCacheOutput="$cache.tmp" -Xlog:aot=off -Xlog:cds=off)
    else
        cache="$VMGATE_HOME/app/target/vmgate.jsa"
        use=(-XX:SharedArchiveFile="$cache" -Xlog:cds=off -Xlog:cds+dynamic=off)
        train=(-XX:ArchiveClassesAtExit="$cache.tmp" -Xlog:cds=off -Xlog:cds+dynamic=off)
    fi
    local stamp="$cache.trained"
    # The braces keep 2>/dev/null to the exec's own failure: an exec with only redirections
    # applies them to the rest of the script, and the command's stderr would vanish with it.
    if { [ ! -f "$stamp" ] || [ "$JAR" -nt "$stamp" ]; } && { exec 9>>"$cache.lock"; } 2>/dev/null; then
        flock 9
        if [ ! -f "$stamp" ] || [ "$JAR" -nt "$stamp" ]; then
            [ -t 2 ] && echo "vmgate: recording the JVM start-up cache (once per build, about 10 s)..." >&2
            rm -f "$cache" "$cache.tmp" "$cache.tmp.config"
            if "$JAVA" "${JVM_FLAGS[@]}" "${train[@]}" -jar "$JAR" run --no-snapshot -- true </dev/null >/dev/null 2>&1 \
                    && [ -s "$cache.tmp" ]; then
                mv -f "$cache.tmp" "$cache"
            fi
            rm -f "$cache.tmp" "$cache.tmp.config"
            touch "$stamp"
        fi
        exec 9>&-
    fi
    if [ -f "$cache" ] && ! [ "$JAR" -nt "$cache" ]; then
        JVM_FLAGS+=("${use[@]}")
    fi
}
