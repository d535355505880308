/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * api_probe: how long a daemon takes to answer one API call on a
 * connection that is already open, which is what a management
 * application (nova, an agent) sees.  `virsh list` in a loop measures
 * that plus a process start and a connection handshake each time.
 *
 *   api_probe URI INTERVAL_MS MAX
 *
 * Opens URI once, then every INTERVAL_MS times virConnectListAllDomains()
 * and prints one line per call: when it started (CLOCK_MONOTONIC, in ms,
 * the clock of Python's time.monotonic()) and the milliseconds it took.
 * It stops after MAX calls or as soon as its standard input closes (the
 * bench closes it when the migration is over).  Exits 1 with a message
 * on any error (the lab's clients' fail()).
 */
#include <poll.h>
#include <time.h>
#include <unistd.h>

#define LAB_CLIENT_NAME "api_probe"
#include "lab-client.h"

static double
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

int
main(int argc, char **argv)
{
    virConnectPtr conn;
    int interval, max, i;

    if (argc != 4 || (interval = atoi(argv[2])) <= 0 || (max = atoi(argv[3])) <= 0) {
        fprintf(stderr, "usage: api_probe URI INTERVAL_MS MAX\n");
        return 2;
    }
    lab_init();
    if (!(conn = virConnectOpen(argv[1])))
        fail("cannot connect");
    printf("READY\n");
    fflush(stdout);

    for (i = 0; i < max; i++) {
        struct pollfd in = { .fd = STDIN_FILENO, .events = POLLIN };
        virDomainPtr *doms = NULL;
        double t0 = now_ms();
        int n = virConnectListAllDomains(conn, &doms, 0);
        double t1 = now_ms();
        int j;

        if (n < 0)
            fail("list failed");
        for (j = 0; j < n; j++)
            virDomainFree(doms[j]);
        free(doms);
        printf("%.1f %.3f\n", t0, t1 - t0);
        fflush(stdout);
        /* stdin readable means closed (the bench writes nothing) */
        if (poll(&in, 1, interval) != 0)
            break;
    }
    virConnectClose(conn);
    return 0;
}
