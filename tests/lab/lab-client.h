/*
 * Shared by the lab's libvirt clients (migrate-api, open-tunnel).
 * Define LAB_CLIENT_NAME before including.
 */
#pragma once

#include <stdio.h>
#include <stdlib.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

/* Print "NAME: ERROR: <libvirt's last error, or @what>" and exit 1. */
static void
fail(const char *what)
{
    virErrorPtr err = virGetLastError();
    printf("%s: ERROR: %s\n", LAB_CLIENT_NAME, err && err->message ? err->message : what);
    exit(1);
}

/* The typed parameter helpers, among others, need libvirt's error state. */
static void
lab_init(void)
{
    if (virInitialize() < 0)
        fail("cannot initialize libvirt");
}
