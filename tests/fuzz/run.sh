#!/usr/bin/env bash
# Fuzz the C core, the C capture walker, the key file reader and serve's accept path with libFuzzer under ASan + UBSan, and both backends differentially with
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

# The C core (every harness links it whole: capture.c and keyfile.c call into it).
core=(csrc/parse.c csrc/mac.c csrc/sha1.c csrc/sha1_shani.c csrc/sha1_avx2.c csrc/sha1_avx512.c
    csrc/kernels.c csrc/peers.c csrc/state.c csrc/verify.c csrc/bench.c csrc/rr.c)
# libfuzz NAME MAX_LEN CORPUS PREFIX [EXTRA.c ...]: builds tests/fuzz/fuzz_NAME.c with the core
# under ASan + UBSan and runs it for $seconds; findings land in tests/fuzz/crashes/PREFIX*.
libfuzz() {
    local name=$1 max_len=$2 corpus=$3 prefix=$4
    shift 4
    clang -std=c11 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
        -Icsrc "$@" "${core[@]}" "tests/fuzz/fuzz_$name.c" -lcrypto -lpthread -o "$work/fuzz_$name"
    "$work/fuzz_$name" -max_total_time="$seconds" -max_len="$max_len" -print_final_stats=1 \
        -artifact_prefix="tests/fuzz/crashes/$prefix" "$corpus" 2>&1 | tail -n 15
}

echo "== libFuzzer on the C core, ${seconds}s"
libfuzz core 4096 "$work/corpus" ""

echo "== libFuzzer on the capture walker and line formatter, ${seconds}s"
mkdir -p "$work/corpus-capture"
"$python" -P tests/fuzz/make_capture_corpus.py "$work/corpus-capture"
cp tests/fuzz/crashes/capture-* "$work/corpus-capture/" 2>/dev/null || true
libfuzz capture 8192 "$work/corpus-capture" capture- csrc/capture.c csrc/format.c

echo "== libFuzzer on the key file reader, ${seconds}s"
mkdir -p "$work/corpus-keyfile"
"$python" -P tests/fuzz/make_keyfile_corpus.py "$work/corpus-keyfile"
cp tests/fuzz/crashes/keyfile-* "$work/corpus-keyfile/" 2>/dev/null || true
libfuzz keyfile 4096 "$work/corpus-keyfile" keyfile- csrc/keyfile.c

echo "== libFuzzer on serve's accept path (kbm_live_ack, the binding cache), ${seconds}s"
mkdir -p "$work/corpus-live"
cp tests/fuzz/crashes/live-* "$work/corpus-live/" 2>/dev/null || true
libfuzz live 4096 "$work/corpus-live" live- csrc/capture.c csrc/format.c csrc/pcap_dl.c

echo "== atheris, both backends differentially, ${seconds}s"
mkdir -p "$work/corpus-py"
cp "$work"/corpus/* "$work/corpus-py/"
"$python" -P tests/fuzz/fuzz_differential.py -max_total_time="$seconds" -max_len=4096 \
    -artifact_prefix=tests/fuzz/crashes/ "$work/corpus-py" 2>&1 | tail -n 8
