#!/bin/bash
# make deb: Debian packages of libvirt 11.3.0 with the series, built to
# install over Debian's own libvirt 11.3.0 packages (bookworm-backports).
#
# Debian's packaging source (the .dsc and debian.tar.xz of 11.3.0-2~bpo12+1)
# is not downloadable here, while its binary packages and the Sources index
# (Build-Depends, the binary package list) are.  So the packages are made by
# rebuilding, not by dpkg-buildpackage:
#
#   1. download every binary package Debian built from source libvirt
#      11.3.0-2~bpo12+1 (the Package-List of the Sources index);
#   2. build the patched tree with Debian's configuration: the same paths,
#      drivers, storage backends and options, read off Debian's binaries
#      (virsh -V, the file lists, the strings the daemons carry), with
#      dpkg-buildflags' hardening flags, and install it into a staging root;
#   3. unpack each Debian package and replace its files with the staging
#      root's: every ELF file (there must be one for each, so no binary of
#      Debian's build is mixed with ours), and every other file whose content
#      differs.  A differing non-ELF file outside what the series changes
#      (DEB_EXPECTED below) means the configuration no longer matches
#      Debian's, and stops the build;
#   4. give every package the version $DEB_VERSION, which sorts above
#      Debian's, with the "(= version)" relations between them updated, a
#      changelog entry, fresh md5sums and Installed-Size, and rebuild it.
#
# Maintainer scripts, conffiles, init scripts and Debian's own files stay
# Debian's, so the packages keep Debian's behaviour and defaults (libvirtd,
# QEMU as libvirt-qemu under DAC, the AppArmor profiles).
#
# Output: build/debs/*.deb and build/debs/SUMMARY.
set -euo pipefail
. "$(dirname "$0")/common.sh"

DEB_BASE=11.3.0-2~bpo12+1
DEB_SUITE=bookworm-backports
DEB_REV=${DEB_REV:-1}
DEB_VERSION=$DEB_BASE+tunnel$DEB_REV
DEB_MAINTAINER="libvirt-tunnel maintainers <maintainers@users.noreply.r-seed-57860e92.example>"

OBJ=$BUILD_DIR/obj-deb
STAGE=$BUILD_DIR/deb/root
WORK=$BUILD_DIR/deb/work
OUT=$BUILD_DIR/debs
DL=$CACHE_DIR/debian-$DEB_BASE

# Non-ELF files the series changes, as Debian ships them.  Anything else
# that differs from Debian's means our configuration drifted from theirs.
DEB_EXPECTED='^/(etc/libvirt/libvirtd\.conf|usr/share/augeas/lenses/(tests/test_)?libvirtd\.aug|usr/share/libvirt/schemas/capability\.rng|usr/share/libvirt/api/libvirt-api\.xml|usr/share/systemtap/tapset/libvirt_functions\.stp|usr/share/man/man1/virsh\.1\.gz|usr/share/doc/libvirt-(common|doc)/NEWS\.gz|usr/share/doc/libvirt-doc/html/(news|migration|formatcaps|manpages/virsh)\.html)$'

# Files Debian changes itself (its patches, its packaging): they stay Debian's.
DEB_KEEP='^/(usr/lib/libvirt/libvirt-guests\.sh|usr/share/man/man8/libvirt-guests\.8\.gz|etc/apparmor\.d/abstractions/libvirt-(lxc|qemu)|usr/lib/systemd/system/libvirtd\.service|usr/share/doc/libvirt-doc/html/manpages/libvirt-guests\.html|usr/share/.*\.png)$'

[ -d "$SRC_DIR/.git" ] || die "no tree at $SRC_DIR; run 'make tree'"
command -v dpkg-buildflags >/dev/null || die "dpkg-dev is missing; run 'make deps'"

# --- 1. Debian's binary packages -------------------------------------------
apt_src_opts() {
    local a=$CACHE_DIR/apt
    echo -o Dir::Etc::SourceList="$a/sources.list" -o Dir::Etc::SourceParts=/dev/null \
         -o Dir::State::Lists="$a/lists" -o Dir::Cache="$a/cache" -o Dir::State::status=/dev/null
}
download_debian() {
    mkdir -p "$DL"
    [ -f "$DL/.complete" ] && return 0
    [ -f "$CACHE_DIR/apt/sources.list" ] || "$TOP/scripts/fetch-source.sh" >/dev/null
    local pkgs
    # shellcheck disable=SC2046
    pkgs=$(apt-cache $(apt_src_opts) showsrc libvirt |
        awk -v v="$DEB_BASE" '/^Package:/ {p = 0; l = 0}
                              $1 == "Version:" && $2 == v {p = 1}
                              p && /^Package-List:/ {l = 1; next}
                              p && l && /^ / {print $1; next}
                              l {l = 0}')
    [ -n "$pkgs" ] || die "the Sources index has no libvirt $DEB_BASE; run 'make source' (deb-src $DEB_SUITE)"
    local want=()
    for p in $pkgs; do
        if apt-cache show "$p=$DEB_BASE" >/dev/null 2>&1; then
            want+=("$p=$DEB_BASE")
        fi
    done
    [ ${#want[@]} -gt 30 ] || die "only ${#want[@]} of Debian's libvirt $DEB_BASE packages are in apt's lists; run 'make deps' (adds $DEB_SUITE)"
    msg "download ${#want[@]} Debian packages of libvirt $DEB_BASE"
    (cd "$DL" && rm -f ./*.deb && timeout 600 apt-get download -q "${want[@]}" > download.log 2>&1) || {
        tail -5 "$DL/download.log" >&2; die "downloading Debian's libvirt packages failed"; }
    touch "$DL/.complete"
}

# --- 2. the patched tree, configured as Debian configures it ---------------
deb_meson_opts() {
    local multiarch
    multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
    MESON_OPTS=(
        --native-file="$TOP/scripts/meson-native.ini"
        --prefix=/usr --libdir="lib/$multiarch" --libexecdir=lib/libvirt
        --sysconfdir=/etc --localstatedir=/var
        -Dbuildtype=plain -Dauto_features=disabled -Dsystem=false -Dno_git=true
        -Drunstatedir=/run -Dinitconfdir=/etc/default -Dinit_script=systemd
        -Ddocdir=/usr/share/doc/libvirt-doc
        -Dpackager=libvirt-tunnel -Dpackager_version="$DEB_VERSION"
        -Dtests=disabled -Ddocs=enabled -Dnls=enabled -Dgit_werror=disabled
        # what Debian's virsh -V lists:
        #  Hypervisors: QEMU/KVM LXC LibXL OpenVZ VMware VirtualBox ESX Test
        -Ddriver_qemu=enabled -Dqemu_user=libvirt-qemu -Dqemu_group=libvirt-qemu
        -Dqemu_moddir="/usr/lib/$multiarch/qemu" -Dqemu_datadir=/usr/share/qemu
        -Ddriver_lxc=enabled -Ddriver_libxl=enabled -Ddriver_openvz=enabled
        -Ddriver_vmware=enabled -Ddriver_vbox=enabled -Ddriver_esx=enabled -Dcurl=enabled
        -Ddriver_test=enabled
        #  Networking: Remote Network Bridging Interface udev Nwfilter
        -Ddriver_remote=enabled -Ddriver_libvirtd=enabled -Dremote_default_mode=legacy
        -Ddriver_network=enabled -Ddriver_interface=enabled -Dudev=enabled
        -Dfirewalld=enabled -Dfirewalld_zone=enabled
        -Dfirewall_backend_priority=iptables,nftables
        #  Storage: Dir Disk Filesystem SCSI Multipath iSCSI iSCSI-direct LVM RBD Gluster ZFS
        -Dstorage_dir=enabled -Dstorage_disk=enabled -Dstorage_fs=enabled
        -Dstorage_scsi=enabled -Dstorage_mpath=enabled -Dstorage_iscsi=enabled
        -Dstorage_iscsi_direct=enabled -Dlibiscsi=enabled -Dstorage_lvm=enabled
        -Dstorage_rbd=enabled -Dstorage_gluster=enabled -Dglusterfs=enabled
        -Dstorage_zfs=enabled
        #  Miscellaneous: Daemon Nodedev AppArmor SELinux Secrets Debug DTrace Readline
        -Ddriver_secrets=enabled -Dapparmor=enabled -Dsecdriver_apparmor=enabled
        -Dapparmor_profiles=enabled -Dselinux=enabled -Dsecdriver_selinux=enabled
        -Dselinux_mount=/sys/fs/selinux
        -Ddtrace=enabled -Dreadline=enabled
        # libraries and extras Debian's packages carry
        -Dattr=enabled -Daudit=enabled -Dbash_completion=enabled -Dblkid=enabled
        -Dcapng=enabled -Dfuse=enabled -Djson_c=enabled -Dlibnl=enabled
        -Dlibpcap=enabled -Dlibssh=enabled -Dlibssh2=enabled -Dnumactl=enabled
        -Dnumad=enabled -Dpciaccess=enabled -Dpolkit=enabled -Dsanlock=enabled
        -Dsasl=enabled -Dwireshark_dissector=enabled -Dnss=enabled
        -Dlogin_shell=enabled -Dssh_proxy=enabled -Dhost_validate=enabled
        -Dsysctl_config=enabled -Duserfaultfd_sysctl=enabled
        -Dchrdev_lock_files=/var/lock
        -Dloader_nvram=/usr/share/OVMF/OVMF_CODE.fd:/usr/share/OVMF/OVMF_VARS.fd:/usr/share/OVMF/OVMF_CODE.secboot.fd:/usr/share/OVMF/OVMF_VARS.fd:/usr/share/AAVMF/AAVMF_CODE.fd:/usr/share/AAVMF/AAVMF_VARS.fd:/usr/share/AAVMF/AAVMF32_CODE.fd:/usr/share/AAVMF/AAVMF32_VARS.fd
    )
}
build_stage() {
    deb_meson_opts
    # Debian's hardening and optimisation flags, without the build path
    # maps that only make sense inside dpkg-buildpackage.
    local cflags cppflags ldflags
    cflags=$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get CFLAGS | sed 's/-ffile-prefix-map=[^ ]*//g')
    cppflags=$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get CPPFLAGS)
    ldflags=$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get LDFLAGS)
    local stamp="$OBJ/.deb-options"
    local want
    want=$(printf '%s\n' "${MESON_OPTS[@]}" "$cflags" "$cppflags" "$ldflags" | sha256sum | cut -d' ' -f1)
    if [ ! -f "$OBJ/build.ninja" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        rm -rf "$OBJ"
        msg "configure obj-deb (Debian's configuration)"
        CFLAGS="$cflags $cppflags" LDFLAGS="$ldflags" \
            meson setup "$OBJ" "$SRC_DIR" "${MESON_OPTS[@]}" > "$OBJ.configure.log" 2>&1 || {
            tail -30 "$OBJ.configure.log" >&2; die "meson setup failed (full log: $OBJ.configure.log)"; }
        echo "$want" > "$stamp"
    fi
    msg "build obj-deb"
    lv_ninja "$OBJ" obj-deb
    rm -rf "$STAGE"
    DESTDIR="$STAGE" meson install -C "$OBJ" --quiet --no-rebuild > "$OBJ.install.log" 2>&1 || {
        tail -20 "$OBJ.install.log" >&2; die "staging install failed"; }
}

# --- 3. and 4. repack ------------------------------------------------------
is_elf() { [ "$(head -c4 "$1" | od -An -c | tr -d ' ')" = '177ELF' ]; }
strip_elf() {  # as dh_strip does
    case $1 in
    *.so|*.so.*) strip --remove-section=.comment --remove-section=.note --strip-unneeded "$1" ;;
    *) strip --remove-section=.comment --remove-section=.note "$1" ;;
    esac
}
# The file the staging root has for Debian's path $1, or nothing.
stage_file() {
    local p=$1
    if [ -f "$STAGE$p" ] && [ ! -L "$STAGE$p" ]; then echo "$STAGE$p"; return; fi
    case $p in
    /usr/share/man/*.gz)
        [ -f "$STAGE${p%.gz}" ] && echo "$STAGE${p%.gz}" ;;
    /usr/share/doc/*/NEWS.gz)
        echo "$SRC_DIR/NEWS.rst" ;;
    esac
}
changelog_entry() {
    local when
    when=$(date -R -d "@$(git -C "$TOP" log -1 --format=%ct 2>/dev/null || date +%s)")
    cat <<EOF
libvirt ($DEB_VERSION) $DEB_SUITE; urgency=medium

  * Rebuild of Debian's libvirt $DEB_BASE with the libvirt-tunnel series
    ($NPATCHES patches on v$LV_VERSION): tunnelled live migration carries
    post-copy, storage (NBD) and post-copy recovery through the libvirtd
    connection; 'virsh capabilities' lists them under
    <migration_features><tunnelled>.  Debian's packaging, configuration
    and maintainer scripts are unchanged.

 -- $DEB_MAINTAINER  $when

EOF
}
repack() {  # repack DEB
    local deb=$1 name dir
    name=$(dpkg-deb -f "$deb" Package)
    dir=$WORK/$name
    rm -rf "$dir"
    dpkg-deb -R "$deb" "$dir"
    local f rel src n_elf=0 n_other=0 delta=0
    while IFS= read -r -d '' f; do
        rel=${f#"$dir"}
        if is_elf "$f"; then
            [ -f "$STAGE$rel" ] || die "$name: Debian ships $rel, our build has no such file (configuration mismatch)"
            delta=$((delta - $(stat -c %s "$f")))
            cp "$f" "$WORK/.debian-elf"
            cp "$STAGE$rel" "$f"
            strip_elf "$f"
            delta=$((delta + $(stat -c %s "$f")))
            # Text in Debian's binary that ours lacks: what Debian's own
            # source patches (unavailable here) change, or the series removes.
            comm -23 <(strings -n 8 "$WORK/.debian-elf" | grep -E '[A-Za-z]{4}' | grep -E '[-_/ %]' |
                       grep -vE '\.debug$|^\.gnu_debug|/usr/lib/debug/|^\.\./\.\./|^/build/reproducible-path/|^libvirt version: ' | sort -u) \
                     <(strings -n 8 "$f" | sort -u) | sed "s|^|$name $rel: |" >> "$WORK/strings"
            n_elf=$((n_elf + 1))
            echo "$name $rel ELF" >> "$WORK/replaced"
            continue
        fi
        src=$(stage_file "$rel")
        [ -n "$src" ] || continue
        local tmp=$WORK/.cmp
        case $rel in
        *.gz) if [ "$src" = "${src%.gz}" ]; then gzip -9n < "$src" > "$tmp.gz"; else cp "$src" "$tmp.gz"; fi
              cmp -s <(gzip -dc "$f") <(gzip -dc "$tmp.gz") && continue ;;
        *.html) # the build date in the footer is not a difference
              cmp -s <(grep -v 'This page was generated at' "$f") \
                     <(grep -v 'This page was generated at' "$src") && continue
              cp "$src" "$tmp.gz" ;;
        *)    cmp -s "$f" "$src" && continue; cp "$src" "$tmp.gz" ;;
        esac
        if [[ $rel =~ $DEB_KEEP ]]; then
            echo "$name $rel kept" >> "$WORK/replaced"
            continue
        fi
        if ! [[ $rel =~ $DEB_EXPECTED ]]; then
            diff -u <(case $rel in *.gz) gzip -dc "$f";; *) cat "$f";; esac) \
                    <(case $rel in *.gz) gzip -dc "$tmp.gz";; *) cat "$tmp.gz";; esac) \
                    >> "$BUILD_DIR/deb/drift.diff" || true
            echo "$name: $rel" >> "$WORK/drift"
            continue
        fi
        delta=$((delta - $(stat -c %s "$f")))
        cat "$tmp.gz" > "$f"
        delta=$((delta + $(stat -c %s "$f")))
        n_other=$((n_other + 1))
        echo "$name $rel changed" >> "$WORK/replaced"
    done < <(find "$dir" -path "$dir/DEBIAN" -prune -o -type f -print0)

    # A changelog entry where the package has its own changelog.
    local cl=$dir/usr/share/doc/$name/changelog.Debian.gz
    if [ -f "$cl" ] && [ ! -L "$cl" ]; then
        delta=$((delta - $(stat -c %s "$cl")))
        { changelog_entry; gzip -dc "$cl"; } | gzip -9n > "$cl.new"
        mv "$cl.new" "$cl"
        delta=$((delta + $(stat -c %s "$cl")))
    fi

    # Version, the exact-version relations between the packages, size, md5sums.
    local ctl=$dir/DEBIAN/control size
    OLD=$DEB_BASE NEW=$DEB_VERSION perl -pi -e '
        s/^Version: .*/Version: $ENV{NEW}/;
        s/\((\s*[<>=]+\s*)\Q$ENV{OLD}\E\)/($1$ENV{NEW})/g
            if /^(Pre-)?Depends|^Recommends|^Suggests|^Breaks|^Conflicts|^Replaces|^Provides|^Enhances/;' "$ctl"
    if grep -v '^Version:' "$ctl" | grep -qF "$DEB_BASE)"; then
        die "$name: control still names $DEB_BASE: $(grep -F "$DEB_BASE)" "$ctl")"
    fi
    # Debian's Installed-Size, changed by what we changed.
    size=$(( $(sed -n 's/^Installed-Size: //p' "$ctl") + (delta + 1023) / 1024 ))
    sed -i "s/^Installed-Size: .*/Installed-Size: $size/" "$ctl"
    # Bug reports go to us, not to Debian.
    sed -i "s/^Maintainer: \(.*\)/Maintainer: $DEB_MAINTAINER\nOriginal-Maintainer: \1/" "$ctl"
    # md5sums as dh_md5sums writes them: without the conffiles.
    (cd "$dir" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
        xargs -0 -r md5sum > DEBIAN/md5sums)
    if [ -f "$dir/DEBIAN/conffiles" ]; then
        awk 'NR == FNR {conf[substr($0, 2)] = 1; next} !($2 in conf)' \
            "$dir/DEBIAN/conffiles" "$dir/DEBIAN/md5sums" > "$dir/DEBIAN/md5sums.new"
        mv "$dir/DEBIAN/md5sums.new" "$dir/DEBIAN/md5sums"
    fi
    [ -s "$dir/DEBIAN/md5sums" ] || rm -f "$dir/DEBIAN/md5sums"
    local arch
    arch=$(dpkg-deb -f "$deb" Architecture)
    dpkg-deb -Zxz -b "$dir" "$OUT/${name}_${DEB_VERSION}_$arch.deb" > /dev/null
    printf '%-44s %3d ELF  %2d other\n' "$name" "$n_elf" "$n_other" >> "$OUT/SUMMARY"
}

NPATCHES=$(find "$PATCH_DIR" -maxdepth 1 -name '*.patch' | wc -l)

# Packages are a function of the tree and this script: a clean clone
# reuses what an earlier run built from the same ones (outside the clone,
# like the tarball and ccache), unless DEB_REBUILD is set.
DEB_CACHE=$CACHE_DIR/debs
key=""
if [ -z "$(git -C "$SRC_DIR" status --porcelain --untracked-files=no)" ]; then
    key=$({ git -C "$SRC_DIR" rev-parse 'HEAD^{tree}'; sha256sum < "$0"; echo "$DEB_VERSION"; } |
          sha256sum | cut -c1-16)
fi
if [ -n "$key" ] && [ -z "${DEB_REBUILD:-}" ] && [ -f "$DEB_CACHE/$key/SUMMARY" ]; then
    rm -rf "$OUT"
    cp -a "$DEB_CACHE/$key" "$OUT"
    download_debian
    msg "reused the packages of this tree and script ($DEB_CACHE/$key; DEB_REBUILD=1 builds them again)"
    exit 0
fi

download_debian
build_stage
# Built aside, moved into place only once everything is checked: a failed
# run leaves no packages behind.
FINAL=$OUT
OUT=$BUILD_DIR/deb/out
rm -rf "$WORK" "$OUT" "$FINAL"
mkdir -p "$WORK" "$OUT"
: > "$WORK/replaced"
: > "$WORK/strings"
rm -f "$BUILD_DIR/deb/drift.diff"
msg "repack Debian's packages as $DEB_VERSION"
{
    echo "libvirt $DEB_VERSION: Debian's $DEB_BASE packages rebuilt with $NPATCHES patches"
    echo
} > "$OUT/SUMMARY"
for deb in "$DL"/*.deb; do
    repack "$deb"
done
if [ -s "$WORK/drift" ]; then
    sed 's/^/  /' "$WORK/drift" >&2
    die "(diffs in $BUILD_DIR/deb/drift.diff) these files differ from Debian's and the series does not change them: the configuration drifted from Debian's"
fi
{
    echo
    echo "non-ELF files the series changes:"
    grep ' changed$' "$WORK/replaced" | sed 's/ changed$//; s/^/  /'
    echo
    echo "files Debian changes itself, kept as Debian ships them:"
    grep ' kept$' "$WORK/replaced" | sed 's/ kept$//; s/^/  /'
    echo
    echo "text in Debian's binaries that ours lack (Debian's source patches, or what the series removes):"
    sed 's/^/  /' "$WORK/strings"
} >> "$OUT/SUMMARY"
# Same packages, same file layout as Debian's.
for deb in "$DL"/*.deb; do
    name=$(dpkg-deb -f "$deb" Package)
    arch=$(dpkg-deb -f "$deb" Architecture)
    ours=$OUT/${name}_${DEB_VERSION}_$arch.deb
    [ -f "$ours" ] || die "$name: no package built"
    if ! diff <(dpkg-deb -c "$deb" | awk '{print $1, $2, $6}' | sort) \
              <(dpkg-deb -c "$ours" | awk '{print $1, $2, $6}' | sort) > "$WORK/layout.diff"; then
        head -20 "$WORK/layout.diff" >&2
        die "$name: the file list, modes or owners differ from Debian's"
    fi
done
# A flat repository index, so hosts can install with apt from this directory.
echo "$DEB_BASE" > "$OUT/debian-base"   # for the lab: which Debian packages these replace
(cd "$OUT" && dpkg-scanpackages -m . /dev/null 2>/dev/null | gzip -9n > Packages.gz)
rm -rf "$WORK"
mv "$OUT" "$FINAL"
if [ -n "$key" ]; then
    rm -rf "$DEB_CACHE"   # only the latest: about 9 MiB
    mkdir -p "$DEB_CACHE"
    cp -a "$FINAL" "$DEB_CACHE/$key"
fi
n=$(find "$FINAL" -name '*.deb' | wc -l)
msg "$n packages in $FINAL (see $FINAL/SUMMARY)"
