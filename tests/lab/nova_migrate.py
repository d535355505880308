#!/usr/bin/python3
"""Run nova's own libvirt driver code against the lab (issue 14).

Started by cases_nova.py as a subprocess, with PYTHONPATH pointing at an
extracted copy of Debian's python3-nova (patched with patches/nova or
pristine) and LD_LIBRARY_PATH at the project's libvirt client library, in
the mount namespace of the lab host it plays the compute service of (so the
guest's disk paths and nova's instances_path are that host's).

    nova_migrate.py dest URI OUT.json
        as the destination's nova-compute: check_can_live_migrate_destination
        on a LibvirtDriver connected to URI; writes the LibvirtLiveMigrateData
        as it travels over RPC (obj_to_primitive) with what the check saw.

    nova_migrate.py migrate URI DEST_ADDR DOMAIN IN.json OUT.json
        as the source's nova-compute: the migration flags
        (_parse_migration_flags), check_can_live_migrate_source, and
        live_migration(): _live_migration_copy_disk_paths,
        _live_migration_operation (-> _get_migration_flags -> Guest.migrate ->
        migrateToURI3) in a green thread, and _live_migration_monitor
        (jobStats every 0.5 s, migrateSetMaxDowntime steps, the
        completion timeout's force_complete action -> post-copy switch),
        until nova calls post_method or recover_method.

What needs a nova deployment (database, RPC, placement, image service,
network) is stubbed, minimally, where marked STUB below.  Every libvirt call
of the migration is nova's; the helper itself only looks the domain's UUID
up and listens for libvirt's job-completed event (for the lab's checks), and
records (without changing them) the Guest calls nova makes.  The result is
OUT.json, nova's own log NOVA_LAB_LOG.
"""
import json
import os
import sys
import time

# As nova-compute does (nova/cmd/__init__.py), before anything else: the
# import monkey patches with eventlet.
import nova.monkey_patch  # noqa: E402,F401

import libvirt  # noqa: E402
from oslo_log import log as logging  # noqa: E402

import nova.conf  # noqa: E402
from nova import context as nova_context  # noqa: E402
from nova import objects  # noqa: E402
from nova.compute import vm_states  # noqa: E402
from nova.virt import fake as fake_virt  # noqa: E402
from nova.virt.libvirt import driver as libvirt_driver  # noqa: E402
from nova.virt.libvirt import guest as libvirt_guest  # noqa: E402
from nova.virt.libvirt import host as libvirt_host  # noqa: E402

CONF = nova.conf.CONF
objects.register_all()
PATCHED = hasattr(libvirt_host.Host, "tunnelled_migration_features")


def configure(uri, host, instances_path, logfile):
    logging.register_options(CONF)
    CONF([], project="nova", default_config_files=[])
    # What an operator sets in nova.conf for tunnelled post-copy block
    # migration (the settings under test), and the lab's host.
    over = {
        None: {"host": host, "instances_path": instances_path,
               "log_file": logfile, "debug": True, "use_stderr": False},
        "libvirt": {
            "virt_type": "qemu",
            "connection_uri": uri,
            "live_migration_tunnelled": True,
            "live_migration_permit_post_copy": True,
            "live_migration_permit_auto_converge": False,
            # MiB/s: the busy guest cannot converge at 8 MiB/s
            "live_migration_bandwidth": 8,
            # seconds per GiB of data_gb (4 here: nova counts at least
            # 2 GiB of RAM and 2 per disk), so the action comes after 8 s
            "live_migration_completion_timeout": 2,
            "live_migration_timeout_action": "force_complete",
        },
        # the lab's TCG guest has no instance.vcpu_model (no DB): skip the
        # CPU comparison against the source's cpu_info, as operators can
        "workarounds": {"skip_cpu_compare_on_dest": True},
    }
    for group, opts in over.items():
        for k, v in opts.items():
            CONF.set_override(k, v, group=group)
    logging.setup(CONF, "nova")


def libvirt_client_library():
    """The libvirt.so the python binding loaded (must be the project's).
    (/proc/self is not ours in a lab host's mount namespace: ask dladdr.)"""
    import ctypes

    class DlInfo(ctypes.Structure):
        _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                    ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]
    lib = ctypes.CDLL("libvirt.so.0", mode=os.RTLD_NOLOAD)
    info = DlInfo()
    ctypes.CDLL(None).dladdr(ctypes.cast(lib.virGetVersion, ctypes.c_void_p), ctypes.byref(info))
    return [os.path.realpath(info.dli_fname.decode())]


def make_driver():
    # STUB: the virtapi talks to the conductor/DB; nothing here calls it.
    drv = libvirt_driver.LibvirtDriver(fake_virt.FakeVirtAPI(), read_only=False)
    # nova-compute's init_host() starts the event loop (Host.initialize) and
    # computes the flags; the rest of init_host (instance dirs, mdev, CPU
    # power management, version checks against the DB) needs a deployment.
    drv._host.initialize()
    drv._parse_migration_flags()
    # STUB: enables/disables the Service record in the DB on connection
    # events.
    drv._set_host_enabled = lambda *a, **kw: None
    # STUB: neutron: an instance without ports (no port binding extension).
    drv._network_api.has_port_binding_extension = lambda ctx: False
    return drv


def make_instance(uuid):
    """The lab's guest as nova's Instance: its UUID is the domain's (nova
    finds the domain by UUID).  STUB: no database, so the fields a DB load
    would fill are set here, and save() does nothing."""
    inst = objects.Instance(
        uuid=uuid, id=1, vm_state=vm_states.ACTIVE, task_state="migrating",
        host=CONF.host, node=CONF.host, numa_topology=None, vcpu_model=None,
        resources=None, migration_context=None, system_metadata={}, root_device_name="/dev/vda",
        ephemeral_gb=0, root_gb=0, memory_mb=256, vcpus=1, image_ref="", device_metadata=None,
        flavor=objects.Flavor(memory_mb=256, vcpus=1, root_gb=0, ephemeral_gb=0,
                              swap=0, extra_specs={}),
        info_cache=objects.InstanceInfoCache(network_info="[]"))
    inst.save = lambda *a, **kw: None
    inst.obj_reset_changes()
    return inst


def flags_names(flags):
    return sorted(n[len("VIR_MIGRATE_"):] for n in dir(libvirt)
                  if n.startswith("VIR_MIGRATE_") and n.count("_") >= 2
                  and isinstance(getattr(libvirt, n), int) and getattr(libvirt, n)
                  and not n.startswith("VIR_MIGRATE_PARAM")
                  and bin(getattr(libvirt, n)).count("1") == 1
                  and flags & getattr(libvirt, n))


def common_facts(drv):
    conn = drv._host.get_connection()
    caps = conn.getCapabilities()
    facts = {
        "patched_nova": PATCHED,
        "nova_file": libvirt_driver.__file__,
        "libvirt_version": libvirt.getVersion(),
        "libvirt_library": libvirt_client_library(),
        "caps_tunnelled": "<tunnelled>" in caps,
    }
    if PATCHED:
        facts["host_tunnelled_features"] = sorted(drv._host.tunnelled_migration_features)
    return facts


def cmd_dest(uri, out):
    drv = make_driver()
    ctx = nova_context.get_admin_context()
    dom = drv._host.get_connection().listAllDomains()
    facts = common_facts(drv)
    facts["domains_on_dest"] = [d.name() for d in dom]
    # The domain's UUID is only known on the source; the check does not
    # look the domain up.
    inst = make_instance("00000000-0000-4000-8000-000000000001")
    # STUB: the compute nodes' resource records (DB): disk space for the
    # block migration's disk check.
    compute_info = {"disk_available_least": 100, "free_disk_gb": 100, "cpu_info": "{}"}
    data = drv.check_can_live_migrate_destination(
        ctx, inst, compute_info, compute_info, block_migration=True, disk_over_commit=False)
    facts["migrate_data"] = data.obj_to_primitive()
    with open(out, "w") as f:
        json.dump(facts, f, indent=1)


class DomainSpy:
    """Delegates to nova's virDomain proxy; records what Guest.migrate
    finally hands libvirt's migrateToURI3 (it may still change the flags)."""

    def __init__(self, dom, call):
        self.dom, self.call = dom, call

    def migrateToURI3(self, dconnuri, params, flags):
        self.call["libvirt_flags"] = flags_names(flags)
        self.call["libvirt_params"] = sorted(params)
        self.call["libvirt_migrate_disks"] = params.get("migrate_disks")
        return self.dom.migrateToURI3(dconnuri, params=params, flags=flags)

    def __getattr__(self, name):
        return getattr(self.dom, name)


class Recorder:
    """Wraps what nova calls on the guest to record it: the calls still go
    to nova's Guest methods, unchanged."""

    def __init__(self):
        self.events = []
        self.t0 = time.monotonic()

    def note(self, what, **kw):
        self.events.append(dict(kw, what=what, t=round(time.monotonic() - self.t0, 3)))

    def wrap(self, name):
        orig = getattr(libvirt_guest.Guest, name)
        rec = self

        def wrapper(guest, *a, **kw):
            if name == "migrate":
                call = dict(destination=a[0] if a else kw.get("destination"),
                            flags=flags_names(kw.get("flags", 0)),
                            migrate_disks=kw.get("migrate_disks"),
                            bandwidth=kw.get("bandwidth"),
                            has_destination_xml=bool(kw.get("destination_xml")))
            else:
                call = dict(args=repr(a))
            if name == "migrate":
                guest._domain = DomainSpy(guest._domain, call)
            try:
                r = orig(guest, *a, **kw)
            except Exception as e:
                rec.note(name, error=str(e), **call)
                raise
            finally:
                if name == "migrate":
                    guest._domain = guest._domain.dom
            if name == "get_job_info":
                rec.note(name, type=r.type, memory_processed=r.memory_processed,
                         disk_processed=r.disk_processed)
            else:
                rec.note(name, **call)
            return r
        setattr(libvirt_guest.Guest, name, wrapper)


def cmd_migrate(uri, dest_addr, domname, infile, out):
    rec = Recorder()
    for name in ("get_job_info", "migrate", "migrate_configure_max_downtime",
                 "migrate_start_postcopy", "pause", "abort_job"):
        rec.wrap(name)
    drv = make_driver()
    ctx = nova_context.get_admin_context()
    facts = common_facts(drv)
    conn = drv._host.get_connection()
    uuid = conn.lookupByName(domname).UUIDString()
    inst = make_instance(uuid)
    facts["flags_live"] = flags_names(drv._live_migration_flags)
    facts["flags_block"] = flags_names(drv._block_migration_flags)

    # The completed job's statistics: the source domain is undefined at the
    # end (nova migrates with VIR_MIGRATE_UNDEFINE_SOURCE), so take them
    # from libvirt's job-completed event, on nova's own connection.
    completed = {}

    def job_completed(conn_, dom, params, opaque):
        if dom.UUIDString() == uuid:
            completed.update(params)
    conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED,
                                job_completed, None)

    with open(infile) as f:
        dest_facts = json.load(f)
    # As over RPC from the destination's compute service.
    data = objects.LibvirtLiveMigrateData.obj_from_primitive(dest_facts["migrate_data"])
    # STUB: the compute manager sets this from the instance's block device
    # mappings (DB) before calling the driver: not booted from a volume.
    data.is_volume_backed = False
    data = drv.check_can_live_migrate_source(ctx, inst, data, block_device_info=None)
    facts["is_shared_instance_path"] = data.is_shared_instance_path
    facts["is_shared_block_storage"] = data.is_shared_block_storage
    # STUB: what pre_live_migration on the destination returns for an
    # instance without volumes, serial consoles or ports (it would also
    # create the instance directory and its disk images from the image
    # service; the lab pre-creates the disk on B, as prepare_disks does).
    data.bdms = []
    data.serial_listen_ports = []
    data.src_supports_native_luks = True
    # STUB: the Migration record (DB): save() does nothing, its status is
    # what nova's monitor reads and sets.
    migration = objects.Migration(id=1, status="running", migration_type="live-migration",
                                  source_compute=CONF.host, instance_uuid=uuid)
    migration.save = lambda *a, **kw: rec.note("migration.save", status=migration.status)
    data.migration = migration
    # STUB: no block device mappings in the database: every disk is local.
    objects.BlockDeviceMappingList.get_by_instance_uuid = \
        classmethod(lambda cls, c, u: objects.BlockDeviceMappingList(objects=[]))

    guest = drv._host.get_guest(inst)
    facts["copy_disk_paths"] = drv._live_migration_copy_disk_paths(ctx, inst, guest)
    facts["flags_this_migration"] = flags_names(
        drv._get_migration_flags(True, data) if PATCHED else drv._get_migration_flags(True))

    # What the compute manager would do next (post_live_migration, or the
    # rollback) needs the deployment: only record which one nova called.
    def post_method(context, instance, dest, block_migration, migrate_data):
        rec.note("post_method", dest=dest, block_migration=block_migration)

    def recover_method(context, instance, dest, migrate_data, migration_status="error"):
        rec.note("recover_method", dest=dest, migration_status=migration_status)

    t0 = time.monotonic()
    try:
        drv.live_migration(ctx, inst, dest_addr, post_method, recover_method,
                           block_migration=True, migrate_data=data)
        facts["live_migration_error"] = None
    except Exception as e:
        facts["live_migration_error"] = "%s: %s" % (type(e).__name__, e)
    facts["seconds"] = round(time.monotonic() - t0, 1)
    facts["migration_status"] = migration.status
    # nova's monitor returns once the job is over; its operation thread
    # (Guest.migrate) and libvirt's job-completed event may take a moment
    # more: wait for both (a green sleep lets the thread finish).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (
            [e for e in rec.events if e["what"] == "migrate"] and
            (completed or facts["migration_status"] == "error" or
             [e for e in rec.events if e["what"] == "recover_method"])):
        time.sleep(0.1)
    facts["completed_job"] = completed
    facts["events"] = rec.events
    with open(out, "w") as f:
        json.dump(facts, f, indent=1)


def main():
    cmd, uri = sys.argv[1], sys.argv[2]
    host = "b" if cmd == "dest" else "a"
    configure(uri, host, os.environ["NOVA_LAB_INSTANCES"], os.environ["NOVA_LAB_LOG"])
    if cmd == "dest":
        cmd_dest(uri, sys.argv[3])
    else:
        cmd_migrate(uri, *sys.argv[3:7])


if __name__ == "__main__":
    main()
