#!/usr/bin/env bash
# Longer fuzzing runs of both agent protocol decoders than ./test.sh's bounded ones.
#   scripts/fuzz.sh [SECONDS]   (default 600 for the C side)
# C side: libFuzzer + ASan/UBSan on guest/agent/proto.c, corpus kept in guest/agent/build.
# Java side: Jazzer on io.vmgate.agent.Frame/Message (FrameFuzzTest; its duration is the
# @FuzzTest maxDuration), corpus kept in .cifuzz-corpus/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
find_java
cd "$VMGATE_HOME"
make -s -C guest/agent fuzz-smoke FUZZ_SECONDS="${1:-600}"
JAZZER_FUZZ=1 mvn -q -B test -Dtest=FrameFuzzTest -Dsurefire.failIfNoSpecifiedTests=false
