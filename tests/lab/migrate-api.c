/*
 * migrate-api: migrate a domain with virDomainMigrateToURI3() and typed
 * parameters, the way management software (nova, python3-libvirt) does.
 *
 *   migrate-api SRC_URI DOMAIN DEST_URI [options]
 *     --flag NAME          live, p2p, tunnelled, postcopy, postcopy-resume,
 *                          copy-storage-all, copy-storage-inc, tls, persistent,
 *                          undefinesource, abort-on-error, unsafe, parallel
 *     --disk TARGET        add a VIR_MIGRATE_PARAM_MIGRATE_DISKS entry
 *     --bandwidth MIB      VIR_MIGRATE_PARAM_BANDWIDTH
 *     --postcopy-bandwidth MIB  VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY
 *     --dname NAME         VIR_MIGRATE_PARAM_DEST_NAME
 *     --parallel-connections N  VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS
 *
 * Prints "migrate-api: OK" or "migrate-api: ERROR: <libvirt message>" and
 * exits 0 or 1 accordingly.
 */
#include <string.h>

#define LAB_CLIENT_NAME "migrate-api"
#include "lab-client.h"

static const struct {
    const char *name;
    unsigned long flag;
} flags[] = {
    { "live", VIR_MIGRATE_LIVE },
    { "p2p", VIR_MIGRATE_PEER2PEER },
    { "tunnelled", VIR_MIGRATE_TUNNELLED },
    { "postcopy", VIR_MIGRATE_POSTCOPY },
    { "postcopy-resume", VIR_MIGRATE_POSTCOPY_RESUME },
    { "copy-storage-all", VIR_MIGRATE_NON_SHARED_DISK },
    { "copy-storage-inc", VIR_MIGRATE_NON_SHARED_INC },
    { "tls", VIR_MIGRATE_TLS },
    { "persistent", VIR_MIGRATE_PERSIST_DEST },
    { "undefinesource", VIR_MIGRATE_UNDEFINE_SOURCE },
    { "abort-on-error", VIR_MIGRATE_ABORT_ON_ERROR },
    { "unsafe", VIR_MIGRATE_UNSAFE },
    { "parallel", VIR_MIGRATE_PARALLEL },
};

int
main(int argc, char **argv)
{
    virTypedParameterPtr params = NULL;
    int nparams = 0, maxparams = 0;
    unsigned long fl = 0;
    virConnectPtr conn;
    virDomainPtr dom;

    if (argc < 4) {
        fprintf(stderr, "usage: migrate-api SRC_URI DOMAIN DEST_URI [options]\n");
        return 2;
    }
    lab_init();
    for (int i = 4; i < argc; i++) {
        const char *opt = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!val) {
            fprintf(stderr, "migrate-api: %s needs a value\n", opt);
            return 2;
        }
        i++;
        if (strcmp(opt, "--flag") == 0) {
            size_t k;
            for (k = 0; k < sizeof(flags) / sizeof(flags[0]); k++)
                if (strcmp(flags[k].name, val) == 0)
                    break;
            if (k == sizeof(flags) / sizeof(flags[0])) {
                fprintf(stderr, "migrate-api: unknown flag %s\n", val);
                return 2;
            }
            fl |= flags[k].flag;
        } else if (strcmp(opt, "--disk") == 0) {
            if (virTypedParamsAddString(&params, &nparams, &maxparams,
                                        VIR_MIGRATE_PARAM_MIGRATE_DISKS, val) < 0)
                fail("params");
        } else if (strcmp(opt, "--bandwidth") == 0) {
            if (virTypedParamsAddULLong(&params, &nparams, &maxparams,
                                        VIR_MIGRATE_PARAM_BANDWIDTH,
                                        strtoull(val, NULL, 10)) < 0)
                fail("params");
        } else if (strcmp(opt, "--postcopy-bandwidth") == 0) {
            if (virTypedParamsAddULLong(&params, &nparams, &maxparams,
                                        VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY,
                                        strtoull(val, NULL, 10)) < 0)
                fail("params");
        } else if (strcmp(opt, "--parallel-connections") == 0) {
            if (virTypedParamsAddInt(&params, &nparams, &maxparams,
                                     VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS,
                                     atoi(val)) < 0)
                fail("params");
        } else if (strcmp(opt, "--dname") == 0) {
            if (virTypedParamsAddString(&params, &nparams, &maxparams,
                                        VIR_MIGRATE_PARAM_DEST_NAME, val) < 0)
                fail("params");
        } else {
            fprintf(stderr, "migrate-api: unknown option %s\n", opt);
            return 2;
        }
    }

    if (!(conn = virConnectOpen(argv[1])))
        fail("cannot connect to the source");
    if (!(dom = virDomainLookupByName(conn, argv[2])))
        fail("no such domain");
    if (virDomainMigrateToURI3(dom, argv[3], params, nparams, fl) < 0)
        fail("migration failed");
    printf("migrate-api: OK\n");
    virTypedParamsFree(params, nparams);
    virDomainFree(dom);
    virConnectClose(conn);
    return 0;
}
