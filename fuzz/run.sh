#!/usr/bin/env bash
# Bounded fuzzing: build the fuzz targets (cargo fuzz, libFuzzer) and run each for SECONDS
# on a copy of its committed corpus, so the tree stays clean. Exits non-zero naming the
# crashing input, kept under fuzz/artifacts/<target>/, if any target fails.
#
#   fuzz/run.sh SECONDS [TARGET...]     # all targets (frame, nut, config) by default
#
# Runs on the stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo fuzz use its unstable flags.
# No sanitizer: the fuzzed code is safe Rust (the workspace forbids unsafe code), where
# AddressSanitizer finds little, and building every dependency with it costs CI minutes.
# Panics, overflows (debug assertions are on), hangs and memory blow-ups still fail a run.
set -euo pipefail
cd "$(dirname "$0")"

usage="usage: fuzz/run.sh SECONDS [TARGET...]"
seconds=${1:?$usage}
[[ $seconds =~ ^[0-9]+$ ]] || { echo "$usage" >&2; exit 2; }
shift
targets=("$@")
all=(frame nut config)
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

cargo_fuzz_version=0.13.2
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $cargo_fuzz_version" ]; then
    # Built to compile fast rather than run fast, like the packagers in .ci/run: it only
    # drives cargo and libFuzzer.
    env CARGO_PROFILE_RELEASE_OPT_LEVEL=0 CARGO_PROFILE_RELEASE_LTO=false \
        CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 CARGO_PROFILE_RELEASE_DEBUG=false \
        cargo install --locked "cargo-fuzz@$cargo_fuzz_version"
fi

# The targets build against fuzz/Cargo.lock as committed (cargo fuzz has no --locked).
cargo metadata --locked --format-version 1 >/dev/null

export RUSTC_BOOTSTRAP=1
# No debug info (cargo fuzz asks for line tables; the later flag wins): a crash still
# shows function names, and fuzz/target stays small. Several codegen units build much
# faster than cargo fuzz's default of one, for a little speed per run.
export RUSTFLAGS="${RUSTFLAGS:-} -Cdebuginfo=0"
# The same for build scripts and proc macros, which RUSTFLAGS does not reach: their line
# tables were half of fuzz/target.
export CARGO_PROFILE_RELEASE_BUILD_OVERRIDE_DEBUG=false
build=(--sanitizer none --debug-assertions --codegen-units 16)
if [ $# -eq 0 ]; then
    cargo fuzz build "${build[@]}"
else
    for target in "${targets[@]}"; do cargo fuzz build "${build[@]}" "$target"; done
fi
bin_dir="target/$(rustc -vV | sed -n 's/^host: //p')/release"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Two cores: the targets run side by side, each for SECONDS.
pids=()
for target in "${targets[@]}"; do
    mkdir -p "$work/$target" "artifacts/$target"
    cp -r "corpus/$target/." "$work/$target/"
    args=("$work/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024
        -artifact_prefix="artifacts/$target/" -print_final_stats=1)
    [ -f "dicts/$target.dict" ] && args+=(-dict="dicts/$target.dict")
    "$bin_dir/$target" "${args[@]}" >"$work/$target.log" 2>&1 &
    pids+=($!)
done

failed=0
for i in "${!targets[@]}"; do
    target=${targets[$i]}
    if wait "${pids[$i]}"; then
        echo "$target: $(grep -E '^#[0-9]+[[:space:]]+DONE' "$work/$target.log" | tail -1)"
    else
        failed=1
        echo "== $target FAILED; its log:" >&2
        tail -n 60 "$work/$target.log" >&2
        crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$work/$target.log" | tail -1)
        if [ -n "$crash" ]; then
            echo "$target: crashing input: fuzz/$crash" >&2
            echo "reproduce: fuzz/target/*/release/$target fuzz/$crash" >&2
        else
            # A stack overflow on the check's decoding thread kills the process before
            # libFuzzer can save the input.
            echo "$target: the fuzzer died without saving its input; see its log above" >&2
        fi
    fi
done
exit "$failed"
