/*
 * open-tunnel: call virDomainMigrateOpenTunnel(), the series' private RPC
 * that opens an extra stream of an incoming tunnelled migration, the way a
 * migration source does, so the lab can test its refusals: only the
 * connection that prepared the incoming migration may open its streams.
 *
 *   open-tunnel URI DOMAIN KIND [--target DISK] [--readonly]
 *
 * Prints "open-tunnel: OK" or "open-tunnel: ERROR: <libvirt message>" and
 * exits 0 or 1 accordingly.
 */
#include <string.h>

#define LAB_CLIENT_NAME "open-tunnel"
#include "lab-client.h"

/* private: exported by libvirt.so for the daemons, declared here */
extern int virDomainMigrateOpenTunnel(virDomainPtr dom, const char *kind,
                                      const char *target, virStreamPtr st,
                                      unsigned int flags);

int
main(int argc, char **argv)
{
    virConnectPtr conn;
    virDomainPtr dom;
    virStreamPtr st;
    const char *target = NULL;
    int readonly = 0;
    int i;

    if (argc < 4) {
        fprintf(stderr, "usage: open-tunnel URI DOMAIN KIND [--target DISK] [--readonly]\n");
        return 2;
    }
    for (i = 4; i < argc; i++) {
        if (strcmp(argv[i], "--readonly") == 0) {
            readonly = 1;
        } else if (strcmp(argv[i], "--target") == 0 && i + 1 < argc) {
            target = argv[++i];
        } else {
            fprintf(stderr, "open-tunnel: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    lab_init();
    if (readonly)
        conn = virConnectOpenReadOnly(argv[1]);
    else
        conn = virConnectOpen(argv[1]);
    if (!conn)
        fail("cannot connect");
    if (!(dom = virDomainLookupByName(conn, argv[2])))
        fail("no such domain");
    if (!(st = virStreamNew(conn, VIR_STREAM_NONBLOCK)))
        fail("cannot create a stream");
    if (virDomainMigrateOpenTunnel(dom, argv[3], target, st, 0) < 0)
        fail("cannot open the tunnel");
    printf("open-tunnel: OK\n");
    virStreamAbort(st);
    virStreamFree(st);
    virDomainFree(dom);
    virConnectClose(conn);
    return 0;
}
