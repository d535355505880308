/*
 * workload.c: in-guest integrity workload for the migration lab
 *
 * Runs as part of the lab guest's init.  It:
 *  - dirties MEM MiB of anonymous memory at RATE MiB/s.  Every page carries
 *    a header (magic, page index, generation) and a payload derived from
 *    (index, generation).  Each pass verifies every page against the
 *    generation written by the previous pass, then writes the next one;
 *  - writes 4 KiB blocks to each given disk with O_DIRECT: block s % N gets
 *    sequence number s, with a header and a CRC32-protected payload derived
 *    from (disk, s).  Each block is read back and checked; every completed
 *    lap of the ring re-reads and checks the whole ring;
 *  - prints one status line a second on the console:
 *      WL t=<s> mem_gen=<g> mem_pages=<n> mem_err=<e> disk=<name>:<seq>:<err> ...
 *    with <seq> the number of the last block written *and* verified.
 *
 * The host-side verifier (lab/verify-disk.py) recomputes every block from
 * the same formulas, so a disk image can be proven byte-identical to what
 * the guest wrote.  Keep the two in sync.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <linux/fs.h>

#define PAGE 4096
#define BLK 4096
#define MEM_MAGIC 0x4d454d57u   /* "WMEM" */
#define DISK_MAGIC 0x4b53444cu  /* "LDSK" */
#define MAX_DISKS 8

static uint64_t
mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint32_t crc_table[256];

static void
crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t
crc32_buf(const unsigned char *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    while (n--)
        c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
pace(double start, double done_units, double rate)
{
    /* sleep until done_units at `rate` units/s would be due */
    double due = start + done_units / rate;
    double t = now();
    if (rate > 0 && due > t)
        usleep((useconds_t)((due - t) * 1e6));
}

/* ---- memory ---- */

struct page_hdr {
    uint32_t magic;
    uint32_t idx;
    uint64_t gen;
};

static unsigned long mem_mib = 64;
static double mem_rate = 32;          /* MiB/s */
static atomic_ulong mem_gen;
static atomic_ulong mem_err;
static atomic_ulong mem_pages;
static int inject_mem_fault;          /* -X: self-test of the verifier */

static void
page_fill(uint64_t *w, uint32_t idx, uint64_t gen)
{
    struct page_hdr *h = (struct page_hdr *)w;
    uint64_t seed = mix(((uint64_t)idx << 32) ^ gen);
    h->magic = MEM_MAGIC;
    h->idx = idx;
    h->gen = gen;
    for (size_t i = 2; i < PAGE / 8; i++)
        w[i] = seed ^ (i * 0x9e3779b97f4a7c15ULL);
}

static int
page_check(const uint64_t *w, uint32_t idx, uint64_t gen)
{
    const struct page_hdr *h = (const struct page_hdr *)w;
    uint64_t seed = mix(((uint64_t)idx << 32) ^ gen);
    if (h->magic != MEM_MAGIC || h->idx != idx || h->gen != gen)
        return -1;
    for (size_t i = 2; i < PAGE / 8; i++)
        if (w[i] != (seed ^ (i * 0x9e3779b97f4a7c15ULL)))
            return -1;
    return 0;
}

static void *
mem_thread(void *opaque)
{
    size_t npages = mem_mib * 1024 * 1024 / PAGE;
    unsigned char *mem;
    (void)opaque;

    mem = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (mem == MAP_FAILED) {
        printf("WL fatal: mmap %lu MiB: %s\n", mem_mib, strerror(errno));
        atomic_fetch_add(&mem_err, 1);
        return NULL;
    }
    for (uint64_t gen = 1;; gen++) {
        double start = now();
        for (size_t p = 0; p < npages; p++) {
            uint64_t *w = (uint64_t *)(mem + p * PAGE);
            if (gen > 1 && page_check(w, p, gen - 1) < 0) {
                unsigned long e = atomic_fetch_add(&mem_err, 1);
                if (e < 10) {
                    const struct page_hdr *h = (const struct page_hdr *)w;
                    printf("WL mem error: page %zu expected gen %" PRIu64
                           " found magic %08x idx %u gen %" PRIu64 "\n",
                           p, gen - 1, h->magic, h->idx, h->gen);
                }
            }
            page_fill(w, p, gen);
            atomic_fetch_add(&mem_pages, 1);
            if ((p & 63) == 63)
                pace(start, (p + 1) * (double)PAGE / (1024 * 1024), mem_rate);
        }
        atomic_store(&mem_gen, gen);
        if (inject_mem_fault && gen == 2)
            mem[PAGE * (npages / 2) + 100] ^= 0x01;   /* must be caught next pass */
    }
    return NULL;
}

/* ---- disks ---- */

struct disk {
    char name[32];
    char path[64];
    uint64_t nblocks;       /* ring size */
    double rate;            /* blocks/s */
    atomic_ulong seq;       /* last block written+verified, +1 (0 = none) */
    atomic_ulong err;
};

static struct disk disks[MAX_DISKS];
static int ndisks;
static unsigned long ring_blocks = 2048;   /* 8 MiB */
static double disk_rate = 100;             /* blocks/s */

struct disk_hdr {
    uint32_t magic;
    uint32_t crc;        /* crc32 of the block with this field zeroed */
    uint64_t seq;
    uint64_t blk;
    char name[16];
};

static uint64_t
name_hash(const char *name)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *name; name++)
        h = (h ^ (unsigned char)*name) * 1099511628211ULL;
    return h;
}

static void
block_fill(unsigned char *b, const char *name, uint64_t seq, uint64_t nblocks)
{
    struct disk_hdr *h = (struct disk_hdr *)b;
    uint64_t *w = (uint64_t *)b;
    uint64_t seed = mix(name_hash(name) ^ (seq * 0x100000001b3ULL));
    memset(h, 0, sizeof(*h));
    h->magic = DISK_MAGIC;
    h->seq = seq;
    h->blk = seq % nblocks;
    strncpy(h->name, name, sizeof(h->name) - 1);
    for (size_t i = sizeof(*h) / 8; i < BLK / 8; i++)
        w[i] = seed ^ (i * 0x9e3779b97f4a7c15ULL);
    h->crc = crc32_buf(b, BLK);
}

static int
block_check(const unsigned char *b, const char *name, uint64_t seq, uint64_t nblocks)
{
    static __thread unsigned char want[BLK] __attribute__((aligned(BLK)));
    block_fill(want, name, seq, nblocks);
    return memcmp(want, b, BLK) == 0 ? 0 : -1;
}

static void
disk_error(struct disk *d, const char *what, uint64_t seq)
{
    unsigned long e = atomic_fetch_add(&d->err, 1);
    if (e < 10)
        printf("WL disk error: %s %s seq %" PRIu64 "\n", d->name, what, seq);
}

static void *
disk_thread(void *opaque)
{
    struct disk *d = opaque;
    unsigned char *buf, *rbuf;
    double start = now();
    int fd;

    if (posix_memalign((void **)&buf, BLK, BLK) || posix_memalign((void **)&rbuf, BLK, BLK))
        abort();
    fd = open(d->path, O_RDWR | O_DIRECT | O_SYNC);
    if (fd < 0) {
        printf("WL fatal: open %s: %s\n", d->path, strerror(errno));
        atomic_fetch_add(&d->err, 1);
        return NULL;
    }
    for (uint64_t s = 0;; s++) {
        uint64_t blk = s % d->nblocks;
        block_fill(buf, d->name, s, d->nblocks);
        if (pwrite(fd, buf, BLK, blk * BLK) != BLK) {
            disk_error(d, "write", s);
        } else if (pread(fd, rbuf, BLK, blk * BLK) != BLK ||
                   block_check(rbuf, d->name, s, d->nblocks) < 0) {
            disk_error(d, "readback", s);
        }
        atomic_store(&d->seq, s + 1);
        if (blk == d->nblocks - 1) {
            /* a lap is complete: the whole ring must hold the last lap */
            for (uint64_t b = 0; b < d->nblocks; b++) {
                uint64_t want = s - (d->nblocks - 1) + b;
                if (pread(fd, rbuf, BLK, b * BLK) != BLK ||
                    block_check(rbuf, d->name, want, d->nblocks) < 0)
                    disk_error(d, "lap-check", want);
            }
        }
        pace(start, s + 1, d->rate);
    }
    return NULL;
}

static void
usage(void)
{
    fprintf(stderr,
            "usage: workload [-m MiB] [-r MiB/s] [-b ring-blocks] [-w blocks/s] [-X] [disk...]\n"
            "  disk is a device name under /dev (vdb) or a path\n"
            "  -X flips one memory bit after pass 2 (verifier self-test)\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    pthread_t th;
    double t0;
    int c;

    setvbuf(stdout, NULL, _IOLBF, 0);
    crc_init();
    while ((c = getopt(argc, argv, "m:r:b:w:X")) != -1) {
        switch (c) {
        case 'm': mem_mib = strtoul(optarg, NULL, 10); break;
        case 'r': mem_rate = strtod(optarg, NULL); break;
        case 'b': ring_blocks = strtoul(optarg, NULL, 10); break;
        case 'w': disk_rate = strtod(optarg, NULL); break;
        case 'X': inject_mem_fault = 1; break;
        default: usage();
        }
    }
    for (; optind < argc && ndisks < MAX_DISKS; optind++) {
        struct disk *d = &disks[ndisks++];
        uint64_t bytes = 0;
        int fd;
        const char *slash = strrchr(argv[optind], '/');
        /* "vdb" means /dev/vdb; a path is used as it is (host self-tests) */
        snprintf(d->name, sizeof(d->name), "%s", slash ? slash + 1 : argv[optind]);
        if (slash)
            snprintf(d->path, sizeof(d->path), "%s", argv[optind]);
        else
            snprintf(d->path, sizeof(d->path), "/dev/%s", argv[optind]);
        d->nblocks = ring_blocks;
        d->rate = disk_rate;
        if ((fd = open(d->path, O_RDONLY)) >= 0) {
            if (ioctl(fd, BLKGETSIZE64, &bytes) == 0 && bytes / BLK < d->nblocks)
                d->nblocks = bytes / BLK;
            close(fd);
        }
    }

    printf("WL start mem=%luMiB rate=%.0fMiB/s ring=%lu disk_rate=%.0f/s disks=%d\n",
           mem_mib, mem_rate, ring_blocks, disk_rate, ndisks);
    if (mem_mib)
        pthread_create(&th, NULL, mem_thread, NULL);
    for (int i = 0; i < ndisks; i++)
        pthread_create(&th, NULL, disk_thread, &disks[i]);

    t0 = now();
    for (unsigned long tick = 1;; tick++) {
        char line[512];
        int n;
        pace(t0, tick, 1);
        n = snprintf(line, sizeof(line), "WL t=%lu mem_gen=%lu mem_pages=%lu mem_err=%lu",
                     tick, atomic_load(&mem_gen), atomic_load(&mem_pages),
                     atomic_load(&mem_err));
        for (int i = 0; i < ndisks && n < (int)sizeof(line); i++)
            n += snprintf(line + n, sizeof(line) - n, " disk=%s:%lu:%lu:%" PRIu64,
                          disks[i].name, atomic_load(&disks[i].seq),
                          atomic_load(&disks[i].err), disks[i].nblocks);
        puts(line);
    }
    return 0;
}
