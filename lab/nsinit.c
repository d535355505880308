/*
 * nsinit: PID 1 of a lab host's PID namespace.
 *
 * Runs its arguments as a child and reaps every process that is reparented
 * to it (QEMU is daemonized by libvirt, so it ends up here).  Without a
 * reaper, dead QEMUs stay zombies and libvirt waits for them to vanish.
 * On SIGTERM/SIGINT it kills everything in the namespace and exits, which
 * tears the host down.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void
on_term(int sig)
{
    (void)sig;
    stop = 1;
}

int
main(int argc, char **argv)
{
    struct sigaction sa = { .sa_handler = on_term };
    pid_t child;

    if (argc < 2) {
        fprintf(stderr, "usage: nsinit command [args...]\n");
        return 2;
    }
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    child = fork();
    if (child == 0) {
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        execvp(argv[1], argv + 1);
        perror("nsinit: exec");
        _exit(127);
    }
    while (!stop) {
        pid_t p = waitpid(-1, NULL, 0);
        if (p < 0 && errno == ECHILD)
            pause();
    }
    kill(-1, SIGKILL);
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
        ;
    return 0;
}
