#!/usr/bin/env bash
# The lab by hand: a site of real sitewatch daemons in network namespaces (agents each with
# their own upsd, a witness, moto's server as the cloud), kept up while you try faults at
# its prompt (`help` lists them). Needs root (it asks sudo), iproute2, nftables, iptables,
# nut-server and moto's server (see README, "The fault lab").
#
#   tests/lab.sh [--agents N] [--learners N] [--cloud-voter] [--scale-down-after-s S]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --workspace --bins
if [ "$(id -u)" -ne 0 ]; then
    exec sudo --preserve-env=SITEWATCH_MOTO_SERVER target/debug/lab "$@"
fi
exec target/debug/lab "$@"
