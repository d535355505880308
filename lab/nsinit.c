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

/* Only there so that SIGCHLD, ignored by default, wakes sigsuspend() */
static void
on_child(int sig)
{
    (void)sig;
}

int
main(int argc, char **argv)
{
    struct sigaction sa = { .sa_handler = on_term };
    struct sigaction sc = { .sa_handler = on_child };
    sigset_t block, orig, wake;
    pid_t child;

    if (argc < 2) {
        fprintf(stderr, "usage: nsinit command [args...]\n");
        return 2;
    }
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGCHLD, &sc, NULL);
    /* Blocked but for sigsuspend(): a child that dies, or a SIGTERM that
     * comes, between the check and the sleep wakes the sleep up. */
    sigemptyset(&block);
    sigaddset(&block, SIGCHLD);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &orig);
    wake = orig;
    sigdelset(&wake, SIGCHLD);
    sigdelset(&wake, SIGTERM);
    sigdelset(&wake, SIGINT);

    child = fork();
    if (child == 0) {
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGCHLD, SIG_DFL);
        sigprocmask(SIG_SETMASK, &orig, NULL);
        execvp(argv[1], argv + 1);
        perror("nsinit: exec");
        _exit(127);
    }
    /* Reap whatever comes: the namespace may have no process but this one
     * for a while (its daemon killed) before new ones start, and the QEMUs
     * they daemonize end up here when they die. */
    while (!stop) {
        if (waitpid(-1, NULL, WNOHANG) > 0)
            continue;
        sigsuspend(&wake);
    }
    kill(-1, SIGKILL);
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
        ;
    return 0;
}
