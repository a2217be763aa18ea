#!/usr/bin/env bash
# Runs each fuzz target in fuzz/ (cargo-fuzz, libFuzzer) for FUZZ_SECONDS (default 30) from the
# committed seeds in fuzz/corpus: MCP requests, upload heads (multipart and media sniffing),
# bearer tokens, catalog imports. A panic, an assertion of a target or a 5xx fails the run;
# the input that did it is kept in target/fuzz-artifacts/<target>/. cargo-fuzz is installed
# into the cache the first time; the instrumented build lives in the cache too, so later runs
# rebuild only what changed. The stable toolchain builds it (RUSTC_BOOTSTRAP=1 lets
# cargo-fuzz pass its unstable flags); no sanitizer: the code is safe Rust, and a panic is
# what the targets look for.
set -euo pipefail
DEV="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$DEV/lib.sh"
cd "$ISA_REPO"
CARGO_FUZZ_VERSION=0.13.2
seconds="${FUZZ_SECONDS:-30}" seed="${FUZZ_SEED:-1}"
export RUSTC_BOOTSTRAP=1

step "cargo-fuzz $CARGO_FUZZ_VERSION (in $ISA_CACHE/cargo-fuzz)"
if "$ISA_CACHE/cargo-fuzz/bin/cargo-fuzz" --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  note "already installed"
else
  cargo install -q --locked --root "$ISA_CACHE/cargo-fuzz" "cargo-fuzz@$CARGO_FUZZ_VERSION" \
    || die "cargo install cargo-fuzz failed"
fi
# cargo fuzz COMMAND [ARGS…]: optimised, with debug assertions, no sanitizer, built in the cache.
fuzz() {
  local command="$1"; shift
  "$ISA_CACHE/cargo-fuzz/bin/cargo-fuzz" fuzz "$command" --fuzz-dir fuzz -O -a --sanitizer none \
    --target-dir "$ISA_CACHE/fuzz-target" "$@"
}

step "building the fuzz targets (instrumented, in $ISA_CACHE/fuzz-target)"
fuzz build || die "the fuzz targets do not build"

failed=0
for target in $(ls fuzz/fuzz_targets | sed 's/\.rs$//'); do
  step "fuzzing $target for ${seconds}s (seed $seed)"
  work="$ISA_REPO/target/fuzz-corpus/$target" artifacts="$ISA_REPO/target/fuzz-artifacts/$target/"
  rm -rf "$work"; mkdir -p "$work" "$artifacts"
  if fuzz run "$target" "$work" "fuzz/corpus/$target" -- -max_total_time="$seconds" -seed="$seed" \
      -artifact_prefix="$artifacts" -print_final_stats=1 >"$ISA_REPO/target/fuzz-$target.log" 2>&1; then
    runs=$(awk '/^stat::number_of_executed_units/ {print $2}' "$ISA_REPO/target/fuzz-$target.log")
    cov=$(grep -oE 'cov: [0-9]+' "$ISA_REPO/target/fuzz-$target.log" | tail -n 1 || true)
    note "${runs:-?} inputs run, ${cov:-cov: ?} edges, $(ls "$work" | wc -l) inputs in the corpus"
  else
    failed=1
    grep -E "panicked|ERROR|SUMMARY|Test unit written" "$ISA_REPO/target/fuzz-$target.log" | head -n 20 >&2
    note "$target failed; see target/fuzz-$target.log and $artifacts"
  fi
done
[ $failed = 0 ] || die "a fuzz target found an input that breaks it"
