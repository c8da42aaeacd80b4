#!/usr/bin/env bash
# Fuzz the C core and the C capture walker with libFuzzer under ASan + UBSan, and both backends differentially with
# atheris, for SECONDS each (default 60). Crashes land in tests/fuzz/crashes/ (kept as
# regression inputs by tests/test_fuzz_regressions.py). Needs clang and a python with kbmfast
# and atheris installed: PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
python=${PYTHON:-python3}
work=build/fuzz
mkdir -p "$work/corpus" tests/fuzz/crashes
"$python" -P tests/fuzz/make_corpus.py "$work/corpus"
cp tests/fuzz/crashes/* "$work/corpus/" 2>/dev/null || true

clang -std=c11 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -Icsrc csrc/parse.c csrc/mac.c csrc/sha1.c csrc/sha1_shani.c csrc/sha1_avx2.c csrc/sha1_avx512.c \
    csrc/kernels.c csrc/peers.c csrc/state.c \
    csrc/verify.c csrc/bench.c csrc/rr.c tests/fuzz/fuzz_core.c -lcrypto -lpthread -o "$work/fuzz_core"
echo "== libFuzzer on the C core, ${seconds}s"
"$work/fuzz_core" -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 \
    -artifact_prefix=tests/fuzz/crashes/ "$work/corpus" 2>&1 | tail -n 15

echo "== libFuzzer on the capture walker and line formatter, ${seconds}s"
mkdir -p "$work/corpus-capture"
"$python" -P tests/fuzz/make_capture_corpus.py "$work/corpus-capture"
cp tests/fuzz/crashes/capture-* "$work/corpus-capture/" 2>/dev/null || true
# capture.c now uses the core (MALFORMED reasons, acknowledgements built in C): link it whole
clang -std=c11 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -Icsrc csrc/capture.c csrc/parse.c csrc/mac.c csrc/sha1.c csrc/sha1_shani.c csrc/sha1_avx2.c \
    csrc/sha1_avx512.c csrc/kernels.c csrc/peers.c csrc/state.c csrc/verify.c csrc/bench.c csrc/rr.c \
    tests/fuzz/fuzz_capture.c -lcrypto -lpthread -o "$work/fuzz_capture"
"$work/fuzz_capture" -max_total_time="$seconds" -max_len=8192 -print_final_stats=1 \
    -artifact_prefix=tests/fuzz/crashes/capture- "$work/corpus-capture" 2>&1 | tail -n 15

echo "== atheris, both backends differentially, ${seconds}s"
mkdir -p "$work/corpus-py"
cp "$work"/corpus/* "$work/corpus-py/"
"$python" -P tests/fuzz/fuzz_differential.py -max_total_time="$seconds" -max_len=4096 \
    -artifact_prefix=tests/fuzz/crashes/ "$work/corpus-py" 2>&1 | tail -n 8
