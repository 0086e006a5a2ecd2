#!/usr/bin/env bash
# Builds and runs one example against the library in this checkout:  ./examples/run.sh hello-sandbox
# Installs io.vmgate:vmgate-core into the local Maven repository first when it is missing or older
# than its sources, as a project of your own would find it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/setup.sh"
ensure_packages "${RUNTIME_PACKAGES[@]}" openssh-client
find_java
name=${1:-}
[ -n "$name" ] || die "usage: examples/run.sh NAME (one of: $(cd "$VMGATE_HOME/examples" && ls -d */ | tr -d / | tr '\n' ' '))"
dir="$VMGATE_HOME/examples/$name"
[ -f "$dir/pom.xml" ] || die "no example named '$name' under $VMGATE_HOME/examples"
install_library
cd "$dir"
exec mvn -q -B -Dstyle.color=never compile exec:java
