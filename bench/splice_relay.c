/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * splice_relay.c: a TCP relay that moves data with splice(2) through a
 * pipe, so that no byte is copied to or from user space. bench.py runs
 * two of them where it runs two socat relays otherwise: the upper bound
 * of what a tunnel with fewer copies could reach on this machine.
 *
 *     splice_relay LISTEN_ADDR LISTEN_PORT TARGET_ADDR TARGET_PORT
 *
 * Each accepted connection gets a child process and its own connection
 * to the target. Both directions are relayed, each through its own pipe.
 * A child ends when both directions have ended, or after a minute
 * without any event; the relay ends when it is killed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define PIPE_BYTES (1 << 20)
#define IDLE_MS 60000

struct direction {
    int src;
    int dst;
    int pipe[2];
    size_t queued;  /* bytes in the pipe */
    bool full;      /* the last splice into the pipe found no room */
    bool eof;       /* src ended */
    bool done;      /* dst was shut down, or is gone */
};

static void
pump_in(struct direction *d)
{
    while (!d->eof) {
        ssize_t n = splice(d->src, NULL, d->pipe[1], NULL, PIPE_BYTES,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            d->queued += n;
        } else if (n == 0) {
            d->eof = true;
        } else if (errno == EAGAIN) {
            /* the socket is empty, or the pipe full: which one, the next
             * splice out of the pipe tells */
            d->full = d->queued > 0;
            return;
        } else if (errno != EINTR) {
            d->eof = true;
        }
    }
}

static void
pump_out(struct direction *d)
{
    while (d->queued > 0) {
        ssize_t n = splice(d->pipe[0], NULL, d->dst, NULL, d->queued,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            d->queued -= n;
            d->full = false;
        } else if (n < 0 && errno == EAGAIN) {
            return;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            /* dst is gone: what is left can go nowhere */
            d->queued = 0;
            d->eof = d->done = true;
            return;
        }
    }
    if (d->eof && !d->done) {
        shutdown(d->dst, SHUT_WR);
        d->done = true;
    }
}

static int
relay(int a, int b)
{
    struct direction dirs[2] = {
        { .src = a, .dst = b },
        { .src = b, .dst = a },
    };
    size_t i;

    for (i = 0; i < 2; i++) {
        if (pipe2(dirs[i].pipe, O_NONBLOCK) < 0)
            return -1;
        /* a smaller pipe only costs more syscalls */
        fcntl(dirs[i].pipe[1], F_SETPIPE_SZ, PIPE_BYTES);
        fcntl(dirs[i].src, F_SETFL, O_NONBLOCK);
    }

    while (!dirs[0].done || !dirs[1].done) {
        struct pollfd fds[2] = { { .fd = a }, { .fd = b } };
        int r;

        for (i = 0; i < 2; i++) {
            struct direction *d = &dirs[i];
            if (!d->eof && !d->full)
                fds[i].events |= POLLIN;
            if (d->queued > 0)
                fds[1 - i].events |= POLLOUT;
        }
        r = poll(fds, 2, IDLE_MS);
        if (r == 0)
            return -1;
        if (r < 0 && errno != EINTR)
            return -1;
        for (i = 0; i < 2; i++) {
            pump_in(&dirs[i]);
            pump_out(&dirs[i]);
        }
    }
    return 0;
}

static void
parse_addr(const char *addr, const char *port, struct sockaddr_in *sa)
{
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons(atoi(port));
    if (inet_pton(AF_INET, addr, &sa->sin_addr) != 1) {
        fprintf(stderr, "not an IPv4 address: %s\n", addr);
        exit(2);
    }
}

int
main(int argc, char **argv)
{
    struct sockaddr_in listen_sa;
    struct sockaddr_in target_sa;
    int one = 1;
    int srv;

    if (argc != 5) {
        fprintf(stderr, "usage: %s LISTEN_ADDR LISTEN_PORT TARGET_ADDR TARGET_PORT\n",
                argv[0]);
        return 2;
    }
    parse_addr(argv[1], argv[2], &listen_sa);
    parse_addr(argv[3], argv[4], &target_sa);
    srv = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(srv, (struct sockaddr *)&listen_sa, sizeof(listen_sa)) < 0 ||
        listen(srv, 16) < 0) {
        perror("listen");
        return 1;
    }

    for (;;) {
        int conn = accept4(srv, NULL, NULL, SOCK_CLOEXEC);
        pid_t pid;

        if (conn < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            perror("accept");
            return 1;
        }
        pid = fork();
        if (pid == 0) {
            int peer = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

            close(srv);
            if (peer < 0 ||
                connect(peer, (struct sockaddr *)&target_sa, sizeof(target_sa)) < 0)
                _exit(1);
            _exit(relay(conn, peer) < 0 ? 1 : 0);
        }
        close(conn);
        /* reap the children that ended, so that the relay's own wait4()
         * counts their CPU */
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
    }
}
