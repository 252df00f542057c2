#!/usr/bin/env bash
# Bounded fuzzing run for CI and developers.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Installs cargo-fuzz if missing, copies the committed seeds (fuzz/seeds/<target>/) into the
# working corpora (fuzz/corpus/<target>/, git-ignored), runs each target for the given seconds
# (default 10) one after the other, and fails if any target crashes, printing the crashing
# input's path. Prints the number of inputs each target executed and a final summary line.
#
# cargo-fuzz drives nightly-only compiler flags; RUSTC_BOOTSTRAP=1 allows them on the stable
# toolchain. Targets are built without a sanitizer (-s none): the fuzzed code is safe Rust, so
# AddressSanitizer finds nothing a panic would not, and costs build and run time. Set
# FUZZ_SANITIZER=address to use it anyway, and TIDAL_FUZZ_TARGET_DIR to keep build artifacts
# somewhere that outlives the checkout (a CI cache), and FUZZ_BUILD_ONLY=1 to build without
# running (CI builds while its test suite runs, then fuzzes).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
SECS=${1:-10}
if [[ $# -gt 0 ]]; then shift; fi
if ! [[ $SECS =~ ^[0-9]+$ ]] || [[ $SECS -eq 0 ]]; then
    echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
fi

ALL_TARGETS=(row_v2 row_v1 keys json_binary decimal time schema_json matcher cdc_event
    canal_json_reader csv_reader api_json)
if [[ $# -gt 0 ]]; then
    TARGETS=("$@")
else
    TARGETS=("${ALL_TARGETS[@]}")
fi

export RUSTC_BOOTSTRAP=1
SANITIZER=${FUZZ_SANITIZER:-none}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    # (its own temporary build dir, not a shared CARGO_TARGET_DIR whose lock others wait on)
    env -u CARGO_TARGET_DIR timeout 600 cargo install cargo-fuzz --locked --version '^0.13' >/dev/null
fi

BUILD_ARGS=(-s "$SANITIZER")
if [[ -n ${TIDAL_FUZZ_TARGET_DIR:-} ]]; then
    BUILD_ARGS+=(--target-dir "$TIDAL_FUZZ_TARGET_DIR")
fi
# Each target group needs its own crates (see the features in fuzz/Cargo.toml); build only
# what the requested targets need, so a run of the codec targets stays small.
features=()
for t in "${TARGETS[@]}"; do
    case $t in
        matcher | cdc_event) features+=(cdc) ;;
        canal_json_reader | csv_reader) features+=(readers) ;;
        api_json) features+=(control) ;;
    esac
done
BUILD_ARGS+=(--no-default-features)
if [[ ${#features[@]} -gt 0 ]]; then
    BUILD_ARGS+=(--features "$(printf '%s\n' "${features[@]}" | sort -u | paste -sd, -)")
fi

echo "fuzz: building ${#TARGETS[@]} target(s)"
cargo fuzz build "${BUILD_ARGS[@]}"
if [[ ${FUZZ_BUILD_ONLY:-0} == 1 ]]; then
    echo "fuzz: built (FUZZ_BUILD_ONLY=1, not running)"
    exit 0
fi

LOGDIR=$(mktemp -d)
trap 'rm -rf "$LOGDIR"' EXIT
total_inputs=0
crashes=0
for t in "${TARGETS[@]}"; do
    corpus=fuzz/corpus/$t
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    if [[ -d fuzz/seeds/$t ]]; then
        cp -n fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
    fi
    log=$LOGDIR/$t.log
    status=0
    # -rss_limit_mb guards against runaway allocation (a finding too); -timeout flags hangs.
    cargo fuzz run "${BUILD_ARGS[@]}" "$t" "$corpus" -- \
        -max_total_time="$SECS" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 \
        >"$log" 2>&1 || status=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    if [[ -z $execs ]]; then
        execs=$(grep -o '^#[0-9]*' "$log" | tr -d '#' | tail -1)
    fi
    execs=${execs:-0}
    total_inputs=$((total_inputs + execs))
    if [[ $status -ne 0 ]]; then
        crashes=$((crashes + 1))
        artifact=$(grep -o 'Test unit written to [^ ]*' "$log" | awk '{print $5}' | tail -1)
        echo "fuzz: $t CRASHED after $execs inputs (exit $status)"
        grep -m1 -A20 -E "panicked at|ERROR: libFuzzer|==ERROR" "$log" | sed 's/^/    /' || true
        echo "    artifact: ${artifact:-<none written; see the log above>}"
        echo "    reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run -s $SANITIZER $t ${artifact:-}"
    else
        echo "fuzz: $t ok, $execs inputs in ${SECS}s"
    fi
done

echo "fuzz: ${#TARGETS[@]} targets, $total_inputs inputs, $crashes crashes"
[[ $crashes -eq 0 ]]
