#!/usr/bin/env bash
# Check the packages build-packages.sh made, on this machine (Debian, as root):
#   - each .deb installs on its own, lays down its files, creates the sitewatch user and
#     group, leaves its unit disabled, passes `systemd-analyze verify`, runs its binaries,
#     accepts its example config once certificates are in place, starts as the sitewatch
#     user with it and answers `sitewatch status`, and purges cleanly;
#   - the two .debs refuse to be installed together (a host runs one role);
#   - each .rpm lists the same files, marks its config noreplace, declares the conflict,
#     and carries scriptlets that parse.
# It leaves no sitewatch package, user data or config behind (the sitewatch user and group
# stay, as Debian leaves system users).
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-$(pwd)/target}"
export DEBIAN_FRONTEND=noninteractive

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "  ok: $*"; }
one() { # the single file matching a glob
    local matches=($1)
    [ ${#matches[@]} -eq 1 ] && [ -e "${matches[0]}" ] || fail "expected one file for $1, found: ${matches[*]}"
    echo "${matches[0]}"
}

[ "$(id -u)" -eq 0 ] || fail "needs root (it installs the packages)"
if ! command -v rpm >/dev/null; then
    echo "== installing rpm (to read the .rpm files)"
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends rpm; } >/dev/null
fi
for pkg in sitewatch-agent sitewatch-witness; do
    if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q installed; then
        fail "$pkg is already installed here; purge it first"
    fi
done

# Files both packages install, then each role's own.
common_files=(
    /usr/bin/sitewatch
    /usr/lib/sysusers.d/sitewatch.conf
    /usr/share/man/man1/sitewatch.1.gz
    /usr/share/man/man1/sitewatch-status.1.gz
    /usr/share/man/man1/sitewatch-check-config.1.gz
    /usr/share/bash-completion/completions/sitewatch
    /usr/share/zsh/vendor-completions/_sitewatch
    /usr/share/fish/vendor_completions.d/sitewatch.fish
)
role_files() { # ROLE -> the files only its package installs (deb paths)
    local pkg="sitewatch-$1"
    echo "/usr/bin/$pkg /usr/lib/systemd/system/$pkg.service /etc/sitewatch/$1.toml"
    echo "/usr/share/doc/$pkg/README.md /usr/share/doc/$pkg/examples/$1.toml"
    echo "/usr/share/man/man1/$pkg.1.gz /usr/share/bash-completion/completions/$pkg"
    echo "/usr/share/zsh/vendor-completions/_$pkg /usr/share/fish/vendor_completions.d/$pkg.fish"
}

check_deb() { # ROLE DEB
    local role=$1 deb=$2 pkg="sitewatch-$1" node
    node=$([ "$role" = agent ] && echo agent-1 || echo witness)
    echo "== $pkg: $deb"
    dpkg-deb --field "$deb" Package Version Depends Conflicts | sed 's/^/  /'
    dpkg -i "$deb" >/tmp/sitewatch-dpkg.log 2>&1 || { cat /tmp/sitewatch-dpkg.log; fail "dpkg -i $deb"; }
    sed 's/^/  | /' /tmp/sitewatch-dpkg.log
    ok "installed"

    local f
    for f in "${common_files[@]}" $(role_files "$role"); do
        [ -e "$f" ] || fail "$pkg: $f is missing"
    done
    ok "files in place ($(dpkg-query -L "$pkg" | wc -l) paths)"
    dpkg-query -W -f='${Conffiles}\n' "$pkg" | grep -q "/etc/sitewatch/$role.toml" \
        || fail "$pkg: /etc/sitewatch/$role.toml is not a conffile"
    ok "/etc/sitewatch/$role.toml is a conffile"

    getent group sitewatch >/dev/null || fail "no sitewatch group"
    [ "$(getent passwd sitewatch | cut -d: -f4)" = "$(getent group sitewatch | cut -d: -f3)" ] \
        || fail "the sitewatch user's primary group is not sitewatch"
    [ "$(getent passwd sitewatch | cut -d: -f6,7)" = "/var/lib/sitewatch:/usr/sbin/nologin" ] \
        || fail "the sitewatch user: $(getent passwd sitewatch)"
    ok "user and group: $(id sitewatch)"
    [ "$(stat -c '%U:%G %a' /etc/sitewatch/tls)" = "root:sitewatch 750" ] \
        || fail "/etc/sitewatch/tls is $(stat -c '%U:%G %a' /etc/sitewatch/tls)"
    ok "/etc/sitewatch/tls is root:sitewatch 0750"

    if [ -n "$(find /etc/systemd/system -name "$pkg.service" 2>/dev/null)" ]; then
        fail "$pkg.service was enabled by the package"
    fi
    ok "$pkg.service installed, not enabled"
    systemd-analyze verify "/usr/lib/systemd/system/$pkg.service" || fail "systemd-analyze verify $pkg.service"
    ok "systemd-analyze verify $pkg.service"

    echo "  $("$pkg" --version); $(sitewatch --version)"
    bash -c "source /usr/share/bash-completion/completions/sitewatch && complete -p sitewatch" >/dev/null \
        || fail "the bash completion of sitewatch does not load"
    ok "bash completion loads"

    # The example config passes check-config once its certificates exist, and the daemon
    # starts with it as the sitewatch user (as the unit would run it).
    local ca
    ca=$(mktemp -d)
    sitewatch ca init --dir "$ca" --cluster-id home >/dev/null
    sitewatch cert issue "$node" --ca "$ca" --out "$ca" >/dev/null
    install -m 0644 "$ca/ca.pem" "$ca/$node.pem" /etc/sitewatch/tls/
    install -m 0640 -g sitewatch "$ca/$node.key" /etc/sitewatch/tls/
    rm -rf "$ca"
    setpriv --reuid sitewatch --regid sitewatch --init-groups \
        sitewatch check-config "/etc/sitewatch/$role.toml" | sed 's/^/  /' \
        || fail "check-config of the example config, as the sitewatch user"
    ok "the example config passes check-config as the sitewatch user"
    install -d -m 0750 -o sitewatch -g sitewatch /var/lib/sitewatch /run/sitewatch
    setpriv --reuid sitewatch --regid sitewatch --init-groups \
        "$pkg" --config "/etc/sitewatch/$role.toml" >/tmp/sitewatch-daemon.log 2>&1 &
    local daemon=$! status=1 tries
    for tries in $(seq 50); do
        sleep 0.2
        status=0
        sitewatch status >/tmp/sitewatch-status.log 2>&1 || status=$?
        [ "$status" -eq 1 ] || break
    done
    kill "$daemon" 2>/dev/null || true
    wait "$daemon" 2>/dev/null || true
    # Alone, the node has no quorum: status answers and exits 2.
    if [ "$status" -ne 2 ]; then
        cat /tmp/sitewatch-daemon.log /tmp/sitewatch-status.log >&2
        fail "sitewatch status against $pkg exited $status (expected 2: alone, not quorate)"
    fi
    head -n 3 /tmp/sitewatch-status.log | sed 's/^/  | /'
    ok "$pkg starts as the sitewatch user with the example config; sitewatch status answers"
    rm -rf /run/sitewatch
}

check_purge() { # ROLE
    local pkg="sitewatch-$1"
    dpkg --purge "$pkg" >/tmp/sitewatch-dpkg.log 2>&1 || { cat /tmp/sitewatch-dpkg.log; fail "dpkg --purge $pkg"; }
    sed 's/^/  | /' /tmp/sitewatch-dpkg.log
    [ ! -e /usr/bin/sitewatch ] && [ ! -e "/usr/bin/$pkg" ] || fail "$pkg: binaries left after purge"
    [ ! -e /var/lib/sitewatch ] || fail "$pkg: /var/lib/sitewatch left after purge"
    [ ! -e "/etc/sitewatch/$1.toml" ] || fail "$pkg: /etc/sitewatch/$1.toml left after purge"
    [ -d /etc/sitewatch/tls ] || fail "$pkg: the purge removed the operator's keys"
    ok "purged: binaries, config and /var/lib/sitewatch gone; the operator's keys kept"
    rm -rf /etc/sitewatch
}

agent_deb=$(one "$target_dir/debian/sitewatch-agent_*.deb")
witness_deb=$(one "$target_dir/debian/sitewatch-witness_*.deb")

check_deb agent "$agent_deb"
echo "== one role per host: the witness package must refuse to join the agent"
if dpkg -i "$witness_deb" >/tmp/sitewatch-dpkg.log 2>&1; then
    fail "sitewatch-witness installed beside sitewatch-agent"
fi
grep -q "conflicts with sitewatch-agent" /tmp/sitewatch-dpkg.log || { cat /tmp/sitewatch-dpkg.log; fail "unexpected dpkg error"; }
ok "dpkg: $(grep -m1 'conflicts with' /tmp/sitewatch-dpkg.log | sed 's/^ *//')"
echo "== sitewatch-agent: purge"
check_purge agent
check_deb witness "$witness_deb"
echo "== sitewatch-witness: purge"
check_purge witness

for role in agent witness; do
    pkg="sitewatch-$role"
    rpm_file=$(one "$target_dir/generate-rpm/$pkg-*.rpm")
    echo "== $pkg: $rpm_file"
    rpm -qp --qf '  %{NAME} %{VERSION}-%{RELEASE} %{ARCH}\n' "$rpm_file"
    rpm -qlp "$rpm_file" >/tmp/sitewatch-rpm.list
    sed 's/^/  | /' /tmp/sitewatch-rpm.list
    for f in "${common_files[@]}" $(role_files "$role"); do
        # zsh looks in site-functions on Fedora and RHEL, in vendor-completions on Debian.
        f=${f/#\/usr\/share\/zsh\/vendor-completions\//\/usr\/share\/zsh\/site-functions\/}
        grep -qx "$f" /tmp/sitewatch-rpm.list || fail "$pkg.rpm: $f is missing"
    done
    ok "files listed"
    rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$rpm_file" | grep -qx "/etc/sitewatch/$role.toml cn" \
        || fail "$pkg.rpm: /etc/sitewatch/$role.toml is not %config(noreplace)"
    ok "/etc/sitewatch/$role.toml is %config(noreplace)"
    other=$([ "$role" = agent ] && echo sitewatch-witness || echo sitewatch-agent)
    rpm -qp --conflicts "$rpm_file" | grep -q "^$other" || fail "$pkg.rpm does not conflict with $other"
    ok "conflicts with $other"
    for tag in POSTIN PREUN POSTUN; do
        rpm -qp --qf "%{$tag}\n" "$rpm_file" >/tmp/sitewatch-scriptlet.sh
        grep -q systemd /tmp/sitewatch-scriptlet.sh || fail "$pkg.rpm: the $tag scriptlet is missing"
        sh -n /tmp/sitewatch-scriptlet.sh || fail "$pkg.rpm: the $tag scriptlet does not parse"
    done
    ok "scriptlets %post, %preun, %postun present and parse"
done
echo "== packages checked"
