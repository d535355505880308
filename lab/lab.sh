#!/bin/bash
# The two-host (N-host) lab: independent libvirt hosts on one machine.
#
#   lab.sh pki                          generate the TLS PKI (once)
#   lab.sh start NAME N [--stock] [--split] [--packaged] [--trixie]
#                                       start host NAME at 127.0.0.(N+1)
#                                       (--packaged: Debian's packages, then
#                                       make deb's over them, run from /usr;
#                                       --trixie: the same on a Debian 13 root
#                                       with make deb-trixie's)
#   lab.sh stop NAME | stop-all         kill everything a host started
#   lab.sh restart NAME [--kill]        restart a host's libvirt daemons
#                                       (SIGTERM, or SIGKILL as a crash; --kill also starts daemons already gone)
#   lab.sh status
#   lab.sh uri NAME [tcp|tls]           print the host's libvirt URI
#   lab.sh virsh NAME ARGS...           run virsh against the host
#
# Each host is a private mount + UTS + PID namespace, with its own copy of
# the install's etc/ and var/ bind-mounted over the shared ones, its own
# hostname, /etc/hosts and host_uuid, and daemons listening on its own
# loopback address.  Killing the namespace's init (lab/nsinit.c) kills the
# daemons and every QEMU they started.
#
# QEMU runs unprivileged, as user libvirt-qemu and group kvm under libvirt's
# DAC security driver with dynamic ownership, as Debian runs it.
#
# A --packaged host is a throw-away Debian system instead: an overlay of this
# machine's root (changes go to a tmpfs), in which apt installs Debian's
# libvirt 11.3.0 packages and then upgrades them from build/debs/ (make deb)
# as a local apt repository, as the README tells operators, and whose libvirtd and virtlogd run from /usr with
# Debian's configuration plus the lab's listen, identity and PKI settings.
# A --trixie host is the same on a Debian 13 system: an overlay of the
# trixie root that scripts/debian-root.sh made (Debian's libvirt 11.3.0 and
# trixie's QEMU installed by apt from Debian's archive), upgraded from
# build/debs-trixie/ (make deb-trixie).
# Environment:
#   LAB_QEMU_ROOT=1     QEMU as root with no security driver (debugging only)
#   LAB_LOG_FILTERS     the daemons' log_filters (default: debug for migration)
#   LAB_DAEMON_CONF     lines added to every daemon's configuration
#   LAB_VALGRIND=1      a patched monolithic libvirtd runs under valgrind
set -euo pipefail
. "$(dirname "$0")/../scripts/common.sh"

LAB=$BUILD_DIR/lab
PKI=$LAB/pki
HOSTS=$LAB/hosts
# Same path on every host, private to each: per-host disks and consoles.
PRIVATE=$LAB/private
# Same path on every host, really shared: "shared storage".
SHARED=$LAB/shared
NSINIT=$LAB/nsinit
QEMU_USER=libvirt-qemu
QEMU_GROUP=kvm

host_addr() { echo "127.0.0.$(( $1 + 1 ))"; }

# The unprivileged user QEMU runs as, and what it needs on this machine.
lab_qemu_user() {
    getent group "$QEMU_GROUP" >/dev/null || groupadd -r "$QEMU_GROUP"
    if ! getent passwd "$QEMU_USER" >/dev/null; then
        useradd -r -g "$QEMU_GROUP" -d /nonexistent -s /usr/sbin/nologin \
            -c "lab QEMU" "$QEMU_USER"
        echo "lab: created user $QEMU_USER (group $QEMU_GROUP) for QEMU"
    fi
    # Post-copy needs userfaultfd. libvirt lets an unprivileged QEMU open
    # /dev/userfaultfd only inside the per-domain mount namespace, which
    # these nested hosts cannot create (namespaces = [ ]): stand in for it.
    if [ "$(sysctl -n vm.unprivileged_userfaultfd)" != 1 ]; then
        sysctl -q -w vm.unprivileged_userfaultfd=1
        echo "lab: set vm.unprivileged_userfaultfd=1 (post-copy with unprivileged QEMU)"
    fi
    # libvirt probes QEMU's capabilities with CAP_DAC_OVERRIDE, so the probe
    # finds KVM even if /dev/kvm is root's alone, but then judges the cached
    # probe stale because the QEMU user cannot use KVM, and probes again on
    # every lookup. Hosts have /dev/kvm in group kvm (udev): do the same.
    if [ -c /dev/kvm ] && [ "$(stat -c %G /dev/kvm)" != "$QEMU_GROUP" ]; then
        chgrp "$QEMU_GROUP" /dev/kvm
        chmod g+rw /dev/kvm
        echo "lab: /dev/kvm is now in group $QEMU_GROUP, as udev sets it up"
    fi
    # QEMU opens the guest's kernel and disks under $BUILD_DIR: it needs to
    # search every directory above, as virt-manager also offers to fix.
    local d=$BUILD_DIR
    while [ "$d" != / ]; do
        if ! setpriv --reuid="$QEMU_USER" --regid="$QEMU_GROUP" --clear-groups test -x "$d"; then
            setfacl -m "u:$QEMU_USER:x" "$d"
            echo "lab: gave $QEMU_USER search permission on $d"
        fi
        d=$(dirname "$d")
    done
}

lab_prepare() {
    mkdir -p "$HOSTS" "$PRIVATE" "$SHARED"
    if [ ! -x "$NSINIT" ] || [ "$TOP/lab/nsinit.c" -nt "$NSINIT" ]; then
        gcc -O2 -Wall -Wextra -Werror -o "$NSINIT" "$TOP/lab/nsinit.c"
    fi
    [ -f "$PKI/cacert.pem" ] || cmd_pki
    [ -n "${LAB_QEMU_ROOT:-}" ] || lab_qemu_user
}

cert() {  # cert NAME CN SANS... -> $PKI/NAME{cert,key}.pem signed by the CA
    local name=$1 cn=$2; shift 2
    local tmpl=$PKI/$name.info
    {
        echo "organization = libvirt-tunnel lab"
        echo "cn = $cn"
        for s in "$@"; do
            case $s in
            [0-9]*) echo "ip_address = $s" ;;
            *) echo "dns_name = $s" ;;
            esac
        done
        echo "tls_www_server"
        echo "tls_www_client"
        echo "encryption_key"
        echo "signing_key"
        echo "expiration_days = 3650"
    } > "$tmpl"
    certtool --generate-privkey --key-type=rsa --bits=2048 --outfile "$PKI/${name}key.pem" 2>/dev/null
    certtool --generate-certificate --load-privkey "$PKI/${name}key.pem" \
        --load-ca-certificate "$PKI/cacert.pem" --load-ca-privkey "$PKI/cakey.pem" \
        --template "$tmpl" --outfile "$PKI/${name}cert.pem" 2>/dev/null
}

cmd_pki() {
    mkdir -p "$PKI"
    printf 'cn = libvirt-tunnel lab CA\nca\ncert_signing_key\nexpiration_days = 3650\n' > "$PKI/ca.info"
    certtool --generate-privkey --key-type=rsa --bits=2048 --outfile "$PKI/cakey.pem" 2>/dev/null
    certtool --generate-self-signed --load-privkey "$PKI/cakey.pem" --template "$PKI/ca.info" \
        --outfile "$PKI/cacert.pem" 2>/dev/null
    # One certificate for every lab host and use (libvirt server and client,
    # QEMU TLS), with every lab address and name as SANs.
    local sans=() i
    for i in $(seq 1 8); do sans+=("$(host_addr "$i")" "lab$i"); done
    cert host "lab host" localhost "${sans[@]}"
    echo "lab: PKI in $PKI"
}

# /etc/hosts of every lab host: every lab address and name.
write_hosts() {  # write_hosts FILE
    local i
    {
        echo "127.0.0.1 localhost"
        for i in $(seq 1 8); do echo "$(host_addr "$i") lab$i"; done
    } > "$1"
}

# Start host NAME's namespaces with its init.sh under nsinit; record the
# PID of the namespace's init in its pid file.
spawn_host() {  # spawn_host NAME LOG
    local H=$HOSTS/$1 upid nspid="" i
    setsid unshare --mount --uts --pid --fork --mount-proc --propagation private \
        "$NSINIT" "$H/init.sh" > "$2" 2>&1 < /dev/null &
    upid=$!
    for i in $(seq 1 50); do
        nspid=$(cat "/proc/$upid/task/$upid/children" 2>/dev/null | awk '{print $1}')
        [ -n "$nspid" ] && break
        sleep 0.1
    done
    [ -n "$nspid" ] || die "lab: host $1 did not start (see $2)"
    echo "$nspid" > "$H/pid"
}

host_uuid() { printf '%s' "$1" | md5sum | sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/'; }

# The packages of a --packaged host: libvirt-daemon-system, libvirt-clients
# and what they need of the same source, as files from directory $1.
packaged_debs() {  # packaged_debs DIR
    local dir=$1 todo=(libvirt-daemon-system libvirt-clients) seen=" " p f dep
    while [ ${#todo[@]} -gt 0 ]; do
        p=${todo[0]}; todo=("${todo[@]:1}")
        case $seen in *" $p "*) continue ;; esac
        seen="$seen$p "
        f=$(find "$dir" -maxdepth 1 -name "${p}_*.deb" | head -1)
        [ -n "$f" ] || die "lab: no $p package in $dir"
        echo "$f"
        for dep in $(dpkg-deb -f "$f" Pre-Depends Depends |
                     grep -oE '(^|[ ,|])libvirt[a-z0-9-]*( \(= )' | grep -oE 'libvirt[a-z0-9-]*'); do
            todo+=("$dep")
        done
    done
}

# The root a --trixie host's overlay starts from (debian-root.sh's).
trixie_root() { echo "$CACHE_DIR/trixie-root/lab"; }

# init.sh of a --packaged host: runs as PID 1's child in its namespaces.
# SUITE bookworm: an overlay of this machine's root, where dpkg installs
# Debian's packages; trixie: an overlay of the trixie root, which has them.
packaged_init() {  # packaged_init NAME ADDR H SUITE
    local name=$1 addr=$2 H=$3 R=$3/root suite=$4
    local debian="" uuid ddir="" lower=/ repo=$BUILD_DIR/debs
    if [ "$suite" = trixie ]; then
        lower=$(trixie_root) repo=$BUILD_DIR/debs-trixie
    else
        ddir=$CACHE_DIR/debian-$(cat "$repo/debian-base")
        debian=$(packaged_debs "$ddir" | tr '\n' ' ')
    fi
    uuid=$(host_uuid "$name")
    cat <<EOS
#!/bin/bash
set -euo pipefail
exec >> "$H/ns.log" 2>&1
# lab.sh waits for "ready", and gives up at once on "failed".
trap 'echo failed > "$H/init-status"' ERR
# The host's root: $([ "$suite" = trixie ] && echo "the trixie root" || echo "this machine's"), with every change kept in memory.
mkdir -p "$H/ovl" "$R"
mount -t tmpfs -o size=4g lab-$name "$H/ovl"
mkdir -p "$H/ovl/upper" "$H/ovl/work"
mount -t overlay lab-$name -o lowerdir="$lower",upperdir="$H/ovl/upper",workdir="$H/ovl/work" "$R"
mount --rbind /dev "$R/dev"
mount --bind /proc "$R/proc"
mount --rbind /sys "$R/sys"
# The lab's files (guests, disks, packages) are the real ones.
mkdir -p "$R$BUILD_DIR"
mount --bind "$BUILD_DIR" "$R$BUILD_DIR"
$([ -z "$debian" ] || printf 'mkdir -p "%s"\nmount --bind "%s" "%s"\n' "$R$ddir" "$ddir" "$R$ddir")
mount --bind "$H/private" "$R$PRIVATE"
mount --bind "$H/private" "$PRIVATE"   # for the lab's checks (nsenter)
touch "$R/etc/hosts"
mount --bind "$H/hosts" "$R/etc/hosts"
hostname "$name"
# No service starts while apt runs, as in a chroot.
printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"
chmod 755 "$R/usr/sbin/policy-rc.d"
inroot() { chroot "$R" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "\$@"; }
echo "== Debian's libvirt packages"
$(if [ -n "$debian" ]; then
    echo "# (dpkg: apt would rather fetch the same version from the archive)"
    echo "timeout 300 chroot \"$R\" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \\"
    echo "    dpkg -i $debian > \"$H/apt-debian.log\" 2>&1"
else
    echo "# (the trixie root has them: apt installed them from Debian's archive)"
fi)
inroot dpkg-query -W -f '\${db:Status-Status} \${source:Package} \${Package} \${Version}\n' |
    awk '\$1 == "installed" && \$2 == "libvirt" {print \$3, \$4}' > "$H/dpkg-debian.txt"
echo "== make deb's packages over them"
# As the README tells operators: build/debs/ as a local apt repository.
echo "deb [trusted=yes] file:$repo ./" > "$R/etc/apt/sources.list.d/libvirt-tunnel.list"
timeout 120 chroot "$R" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin apt-get update -q \
    -o Dir::Etc::SourceList=sources.list.d/libvirt-tunnel.list -o Dir::Etc::SourceParts=- \
    -o APT::Get::List-Cleanup=0 > "$H/apt-ours.log" 2>&1
timeout 300 chroot "$R" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends libvirt-daemon-system libvirt-clients >> "$H/apt-ours.log" 2>&1
inroot dpkg-query -W -f '\${db:Status-Status} \${source:Package} \${Package} \${Version}\n' |
    awk '\$1 == "installed" && \$2 == "libvirt" {print \$3, \$4}' > "$H/dpkg-ours.txt"
rm -f "$R/usr/sbin/policy-rc.d"
# The lab's identity, addresses and PKI on top of Debian's configuration.
mkdir -p "$R/etc/pki/CA" "$R/etc/pki/libvirt/private" "$R/etc/pki/qemu"
cp "$PKI/cacert.pem" "$R/etc/pki/CA/cacert.pem"
cp "$PKI/hostcert.pem" "$R/etc/pki/libvirt/servercert.pem"
cp "$PKI/hostkey.pem" "$R/etc/pki/libvirt/private/serverkey.pem"
cp "$PKI/hostcert.pem" "$R/etc/pki/libvirt/clientcert.pem"
cp "$PKI/hostkey.pem" "$R/etc/pki/libvirt/private/clientkey.pem"
mkdir -p "$H/var/log/libvirt"
mount --bind "$H/var/log/libvirt" "$R/var/log/libvirt"
cat >> "$R/etc/libvirt/libvirtd.conf" <<EOC

# --- lab host $name ---
host_uuid = "$uuid"
log_filters = "${LAB_LOG_FILTERS:-"1:qemu.qemu_migration 1:qemu.qemu_migration_tunnel 3:qemu.qemu_monitor 2:remote 2:qemu 3:util 3:rpc 3:conf 3:event"}"
log_outputs = "1:file:/var/log/libvirt/libvirtd.log"
listen_tcp = 1
listen_tls = 1
listen_addr = "$addr"
auth_tcp = "none"
auth_tls = "none"
EOC
# Only what these nested hosts lack (cgroups, mount namespaces) and the
# host's addresses: QEMU stays as Debian configures it (libvirt-qemu, DAC).
cat >> "$R/etc/libvirt/qemu.conf" <<EOC

# --- lab host $name ---
cgroup_controllers = [ ]
namespaces = [ ]
migration_address = "$addr"
migration_host = "$addr"
shared_filesystems = [ "$SHARED" ]
EOC
echo ready > "$H/init-status"
EOS
    # Inside the namespace, at start and by 'lab.sh restart'; with the
    # packaged system's environment, not the caller's.
    cat > "$H/daemons.sh" <<EOS
#!/bin/bash
set -e
cd /
inroot() { chroot "$R" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "\$@"; }
pgrep -x virtlogd >/dev/null || inroot /usr/sbin/virtlogd -d
inroot /usr/sbin/libvirtd -d --listen
EOS
}

cmd_start() {
    local name=$1 idx=$2; shift 2
    local stock=0 split=0 packaged=0 suite=bookworm
    # LAB_VALGRIND=1: a patched monolithic libvirtd runs under valgrind
    # (leak report in build/lab/hosts/NAME/valgrind-PID.log on stop).
    local vg=${LAB_VALGRIND:-}
    for a in "$@"; do
        case $a in
        --stock) stock=1 ;;
        --split) split=1 ;;
        --packaged) packaged=1 ;;
        --trixie) packaged=1 suite=trixie ;;
        *) die "lab: unknown option $a" ;;
        esac
    done
    lab_prepare
    if [ $packaged = 1 ]; then
        start_packaged "$name" "$idx" "$suite"
        return
    fi
    local P=$PREFIX
    [ $stock = 1 ] && P=$STOCK_PREFIX && vg=""
    [ -x "$P/sbin/libvirtd" ] || die "lab: no libvirt install in $P (run 'make build' / 'make stock')"
    local H=$HOSTS/$name addr
    addr=$(host_addr "$idx")
    [ -f "$H/pid" ] && kill -0 "$(cat "$H/pid")" 2>/dev/null && die "lab: host $name is already running"
    rm -rf "$H"
    mkdir -p "$H"/{var/run,var/lib/libvirt/qemu,var/cache/libvirt,var/log/libvirt,private}
    cp -a "$P/etc" "$H/etc"
    mkdir -p "$H/etc/pki/CA" "$H/etc/pki/libvirt/private" "$H/etc/pki/qemu"
    cp "$PKI/cacert.pem" "$H/etc/pki/CA/cacert.pem"
    cp "$PKI/hostcert.pem" "$H/etc/pki/libvirt/servercert.pem"
    cp "$PKI/hostkey.pem" "$H/etc/pki/libvirt/private/serverkey.pem"
    cp "$PKI/hostcert.pem" "$H/etc/pki/libvirt/clientcert.pem"
    cp "$PKI/hostkey.pem" "$H/etc/pki/libvirt/private/clientkey.pem"
    cp "$PKI/cacert.pem" "$H/etc/pki/qemu/ca-cert.pem"
    cp "$PKI/hostcert.pem" "$H/etc/pki/qemu/server-cert.pem"
    cp "$PKI/hostkey.pem" "$H/etc/pki/qemu/server-key.pem"
    cp "$PKI/hostcert.pem" "$H/etc/pki/qemu/client-cert.pem"
    cp "$PKI/hostkey.pem" "$H/etc/pki/qemu/client-key.pem"
    # QEMU reads its TLS keys itself: readable by its group, as distributions
    # install them
    if [ -z "${LAB_QEMU_ROOT:-}" ]; then
        chgrp "$QEMU_GROUP" "$H/etc/pki/qemu/"*.pem
        chmod 0640 "$H/etc/pki/qemu/"*.pem
    fi

    local uuid log_filters
    uuid=$(host_uuid "$name")
    log_filters=${LAB_LOG_FILTERS:-"1:qemu.qemu_migration 1:qemu.qemu_migration_params 1:qemu.qemu_migration_tunnel 1:qemu.qemu_migration_cookie 3:qemu.qemu_monitor 1:rpc.netclientstream 2:remote 2:qemu 3:util 3:rpc 3:conf 3:event"}
    local d
    for d in libvirtd virtproxyd virtqemud virtlogd; do
        cat >> "$H/etc/libvirt/$d.conf" <<EOC

# --- lab host $name ---
host_uuid = "$uuid"
log_filters = "$log_filters"
log_outputs = "1:file:$P/var/log/libvirt/$d.log"
${LAB_DAEMON_CONF:-}
EOC
    done
    for d in libvirtd virtproxyd; do
        cat >> "$H/etc/libvirt/$d.conf" <<EOC
listen_tcp = 1
listen_tls = 1
listen_addr = "$addr"
auth_tcp = "none"
auth_tls = "none"
EOC
    done
    cat >> "$H/etc/libvirt/qemu.conf" <<EOC

# --- lab host $name ---
$(if [ -n "${LAB_QEMU_ROOT:-}" ]; then
    printf 'security_driver = "none"\nuser = "root"\ngroup = "root"\ndynamic_ownership = 0\n'
else
    printf 'user = "%s"\ngroup = "%s"\ndynamic_ownership = 1\n' "$QEMU_USER" "$QEMU_GROUP"
fi)
remember_owner = 0
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
migration_address = "$addr"
migration_host = "$addr"
migrate_tls_x509_cert_dir = "$P/etc/pki/qemu"
default_tls_x509_cert_dir = "$P/etc/pki/qemu"
shared_filesystems = [ "$SHARED" ]
EOC
    write_hosts "$H/hosts"
    echo "$name" > "$H/hostname"
    echo "$P" > "$H/prefix"
    echo "$addr" > "$H/addr"
    echo $split > "$H/split"
    echo $stock > "$H/stock"

    cat > "$H/init.sh" <<EOS
#!/bin/bash
set -e
mount --bind "$H/etc" "$P/etc"
mount --bind "$H/var" "$P/var"
mount --bind "$H/private" "$PRIVATE"
mount --bind "$H/hosts" /etc/hosts
hostname "$name"
exec "$H/daemons.sh"
EOS
    # Inside the namespace, at start and by 'lab.sh restart'.
    cat > "$H/daemons.sh" <<EOS
#!/bin/bash
set -e
cd /
if [ $split = 1 ]; then
    pgrep -x virtlogd >/dev/null || "$P/sbin/virtlogd" -d
    pgrep -x virtstoraged >/dev/null || "$P/sbin/virtstoraged" -d
    "$P/sbin/virtqemud" -d
    "$P/sbin/virtproxyd" -d
elif [ -n "$vg" ]; then
    valgrind --leak-check=full --num-callers=40 --log-file="$H/valgrind-%p.log" \
        "$P/sbin/libvirtd" -d --listen
else
    "$P/sbin/libvirtd" -d --listen
fi
EOS
    chmod +x "$H/init.sh" "$H/daemons.sh"
    spawn_host "$name" "$H/ns.log"
    if ! wait_up "$name"; then
        cat "$H/ns.log" >&2
        tail -20 "$H/var/log/libvirt/"*.log >&2 2>/dev/null || true
        cmd_stop "$name"
        die "lab: host $name did not come up"
    fi
    echo "lab: host $name up at $addr ($( [ $stock = 1 ] && echo stock || echo patched ), $( [ $split = 1 ] && echo split || echo monolithic ))"
}

start_packaged() {  # start_packaged NAME N SUITE
    local name=$1 idx=$2 suite=$3 H=$HOSTS/$1 addr
    addr=$(host_addr "$idx")
    if [ "$suite" = trixie ]; then
        compgen -G "$BUILD_DIR/debs-trixie/*.deb" >/dev/null ||
            die "lab: no packages in $BUILD_DIR/debs-trixie (run 'make deb-trixie')"
        [ "$(cat "$(trixie_root)/.complete" 2>/dev/null)" = "$(cat "$BUILD_DIR/debs-trixie/debian-base")" ] ||
            die "lab: no trixie root with Debian's libvirt $(cat "$BUILD_DIR/debs-trixie/debian-base") at $(trixie_root) (run 'make check-trixie')"
    else
        compgen -G "$BUILD_DIR/debs/*.deb" >/dev/null || die "lab: no packages in $BUILD_DIR/debs (run 'make deb')"
        compgen -G "$CACHE_DIR/debian-$(cat "$BUILD_DIR/debs/debian-base" 2>/dev/null)/*.deb" >/dev/null ||
            die "lab: Debian's packages are not in $CACHE_DIR (run 'make deb')"
    fi
    [ -f "$H/pid" ] && kill -0 "$(cat "$H/pid")" 2>/dev/null && die "lab: host $name is already running"
    rm -rf "$H"
    mkdir -p "$H/private" "$H/var/log/libvirt"
    write_hosts "$H/hosts"
    echo "$name" > "$H/hostname"
    echo /usr > "$H/prefix"
    echo "$addr" > "$H/addr"
    echo 0 > "$H/split"
    echo 0 > "$H/stock"
    echo 1 > "$H/packaged"
    echo "$suite" > "$H/suite"
    packaged_init "$name" "$addr" "$H" "$suite" > "$H/init.sh"
    echo "exec \"$H/daemons.sh\"" >> "$H/init.sh"
    chmod +x "$H/init.sh" "$H/daemons.sh"
    spawn_host "$name" "$H/nsinit.log"
    local nspid
    nspid=$(cat "$H/pid")
    # apt installs twice (each bounded by 300 s) before the daemon starts.
    local deadline=$((SECONDS + 700))
    while [ "$(cat "$H/init-status" 2>/dev/null)" != ready ] && [ $SECONDS -lt $deadline ]; do
        grep -q failed "$H/init-status" 2>/dev/null && break
        kill -0 "$nspid" 2>/dev/null || break
        sleep 0.5
    done
    if [ "$(cat "$H/init-status" 2>/dev/null)" != ready ] || ! wait_up "$name"; then
        tail -20 "$H/ns.log" "$H"/apt-*.log >&2 2>/dev/null || true
        tail -20 "$H/var/log/libvirt/"*.log >&2 2>/dev/null || true
        cmd_stop "$name"
        die "lab: packaged host $name did not come up"
    fi
    echo "lab: host $name up at $addr ($suite: Debian packages from make deb$([ "$suite" = trixie ] && echo -trixie), /usr/sbin/libvirtd)"
}

# Ready when the daemon answers over TCP (first start probes QEMU: ~2 s).
wait_up() {
    local H=$HOSTS/$1 i
    for i in $(seq 1 300); do
        "$PREFIX/bin/virsh" -q -c "qemu+tcp://$(cat "$H/addr")/system" version \
            >/dev/null 2>&1 && return 0
        kill -0 "$(cat "$H/pid")" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# Stop a host's libvirt daemons (SIGTERM as 'systemctl restart' does, or
# SIGKILL as a crash) and start them again in the same namespaces. QEMU
# and virtlogd keep running.
cmd_restart() {
    local name=$1 sig=TERM H=$HOSTS/$1 nspid P i
    [ "${2:-}" = --kill ] && sig=KILL
    [ -f "$H/pid" ] || die "lab: host $name is not running"
    nspid=$(cat "$H/pid") P=$(cat "$H/prefix")
    local pat="$P/sbin/(libvirtd|virtqemud|virtproxyd)( |\$)"
    inns() { timeout 10 nsenter -t "$nspid" -m -u -p -- "$@"; }
    # --kill restarts after a crash: a daemon that is already gone (pkill
    # matched nothing: 1) is fine, any other failure is not
    local rc=0
    inns pkill "-$sig" -f "$pat" || rc=$?
    if [ "$rc" != 0 ] && ! { [ "$rc" = 1 ] && [ "$sig" = KILL ]; }; then
        die "lab: could not signal host $name's libvirt daemons (pkill: $rc)"
    fi
    for i in $(seq 1 300); do
        inns pgrep -f "$pat" >/dev/null || break
        sleep 0.1
    done
    inns pgrep -f "$pat" >/dev/null && die "lab: host $name's daemons did not stop"
    timeout 60 nsenter -t "$nspid" -m -u -p --wd=/ -- "$H/daemons.sh" >> "$H/ns.log" 2>&1 ||
        die "lab: host $name's daemons did not start again (see $H/ns.log)"
    wait_up "$name" || die "lab: host $name did not come back up"
    echo "lab: host $name's daemons restarted (SIG$sig)"
}

cmd_stop() {
    local name=$1 H=$HOSTS/$1 pid i
    [ -f "$H/pid" ] || return 0
    pid=$(cat "$H/pid")
    if [ -n "${LAB_VALGRIND:-}" ] && kill -0 "$pid" 2>/dev/null; then
        # Let the daemon exit cleanly so valgrind writes its leak report.
        pkill -TERM -P "$pid" 2>/dev/null || true
        for i in $(seq 1 600); do
            pgrep -P "$pid" > /dev/null || break
            sleep 0.1
        done
    fi
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        for i in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
    fi
    rm -f "$H/pid"
}

cmd_stop_all() {
    local h
    for h in "$HOSTS"/*/; do
        [ -d "$h" ] && cmd_stop "$(basename "$h")"
    done
    return 0
}

cmd_uri() {
    local addr
    addr=$(cat "$HOSTS/$1/addr")
    case ${2:-tcp} in
    tcp) echo "qemu+tcp://$addr/system" ;;
    tls) echo "qemu+tls://$addr/system" ;;
    *) die "lab: transport must be tcp or tls" ;;
    esac
}

cmd_status() {
    local h name
    for h in "$HOSTS"/*/; do
        [ -d "$h" ] || continue
        name=$(basename "$h")
        if [ -f "$h/pid" ] && kill -0 "$(cat "$h/pid")" 2>/dev/null; then
            echo "$name $(cat "$h/addr") running pid $(cat "$h/pid")"
        else
            echo "$name stopped"
        fi
    done
}

cmd=${1:-}
shift || true
case $cmd in
pki) cmd_pki ;;
start) cmd_start "$@" ;;
stop) cmd_stop "$@" ;;
restart) cmd_restart "$@" ;;
stop-all) cmd_stop_all ;;
status) cmd_status ;;
uri) cmd_uri "$@" ;;
virsh) n=$1; shift; exec "$PREFIX/bin/virsh" -c "$(cmd_uri "$n")" "$@" ;;
*) sed -n '2,12p' "$0"; exit 2 ;;
esac
