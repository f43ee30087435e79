#!/usr/bin/env bash
# Build the sitewatch-agent and sitewatch-witness packages, .deb and .rpm:
#   release binaries, man pages and shell completions from the clap definitions, then
#   cargo deb and cargo generate-rpm for both. Needs cargo-deb and cargo-generate-rpm
#   (`cargo install --locked cargo-deb cargo-generate-rpm`). Prints the packages' paths.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target_dir="${CARGO_TARGET_DIR:-$root/target}"
docs="$target_dir/release/pkg-docs"

for tool in cargo-deb cargo-generate-rpm; do
    if ! command -v "$tool" >/dev/null; then
        echo "error: $tool is missing: cargo install --locked $tool" >&2
        exit 1
    fi
done

echo "== release build"
# One build of all three, so the generator reuses the daemons' compiled libraries.
cargo build --release --locked -p sitewatch-agent -p sitewatch-witness -p sitewatch-gen-docs

echo "== man pages and completions ($docs)"
rm -rf "$docs"
"$target_dir/release/sitewatch-gen-docs" "$docs"
# Compressed as Debian and Fedora ship man pages (-n: no name or time, reproducible).
gzip -9n "$docs"/*/man/*.1

echo "== packages"
# --no-build: the binaries above are the ones packaged (the witness package also carries
# the agent crate's `sitewatch`, which cargo deb would not build for it).
rm -f "$target_dir"/debian/sitewatch-*.deb "$target_dir"/generate-rpm/sitewatch-*.rpm
packages=()
for pkg in sitewatch-agent sitewatch-witness; do
    packages+=("$(cargo deb --locked --no-build -p "$pkg" --output "$target_dir/debian/" | tail -n 1)")
    cargo generate-rpm -p "${pkg#sitewatch-}" --target-dir "$target_dir" >/dev/null
done
for rpm in "$target_dir"/generate-rpm/sitewatch-*.rpm; do
    packages+=("$rpm")
done

echo "== built"
printf '%s\n' "${packages[@]}"
