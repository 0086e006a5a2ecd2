#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite: unit tests, the guest
# agent's C tests and bounded fuzzing, and the end-to-end tests that boot real QEMU VMs
# and drive them with the real OpenSSH client.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/setup.sh"
# libclang-rt-dev: the fuzzer and sanitizer runtimes, which clang only recommends.
# libcap2-bin: setcap, for the root filesystem image tests' fixture.
# prometheus (with promtool) and asciinema: real neighbours of ObservabilityIT (a scrape, a replay).
# docker-registry, skopeo: OciIT's real registry on loopback and the image copies it pushes (the
# package starts a registry on :5000 of its own; the test starts one on a free port).
ensure_packages "${RUNTIME_PACKAGES[@]}" openssh-server tmux clang libclang-rt-dev python3 libcap2-bin prometheus asciinema \
    docker-registry skopeo
find_java
cd "$VMGATE_HOME"
echo "== guest agent: C tests and bounded fuzzing" >&2
make -s -C guest/agent test
make -s -C guest/agent fuzz-smoke
echo "== build, and record the JVM start-up cache (as ./vmgate does on first use)" >&2
./vmgate --version >/dev/null
# Jazzer fuzzes only the first fuzz test a JVM meets and skips the others: one run per fuzz test.
for fuzz in $(grep -rl --include='*.java' '@FuzzTest' core/src/test | xargs -n1 basename | sed 's/\.java$//'); do
    echo "== Java: $fuzz, fuzzing for a bounded time (Jazzer)" >&2
    JAZZER_FUZZ=1 mvn -B -q test -pl core -Dtest="$fuzz" -Dsurefire.failIfNoSpecifiedTests=false
done
echo "== Java: unit tests (fuzz tests replay their inputs) and end-to-end tests (mvn verify)" >&2
mvn -B verify "$@"
echo "== examples: the library from a project of its own (./examples/run.sh hello-sandbox)" >&2
example=$(./examples/run.sh hello-sandbox)
printf '%s\n' "$example"
for want in "-cloud-amd64 (exit status 0)" "rev said: desserts" "hello over ssh from vmgate" "ssh exit status: 0"; do
    grep -qF -e "$want" <<<"$example" || die "examples/hello-sandbox: no '$want' in its output"
done
