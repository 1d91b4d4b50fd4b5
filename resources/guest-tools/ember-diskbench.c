/*
 * ember-diskbench: a disk benchmark for Ember's bench/disk.sh, the same binary under every
 * VMM compared.
 *   ember-diskbench DEVICE read|write seq|rand BLOCK_BYTES TOTAL_BYTES
 * Reads or writes TOTAL_BYTES in BLOCK_BYTES requests with O_DIRECT (no guest page cache),
 * in order or at random block-aligned offsets within the first TOTAL_BYTES (a fixed
 * generator, so every run does the same requests), and prints
 *   diskbench <read|write> <seq|rand> <block> <MiB/s> <IOPS>
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: ember-diskbench DEVICE read|write seq|rand BLOCK TOTAL\n");
        return 2;
    }
    int writing = strcmp(argv[2], "write") == 0;
    int random = strcmp(argv[3], "rand") == 0;
    size_t block = strtoull(argv[4], NULL, 0);
    uint64_t total = strtoull(argv[5], NULL, 0);
    if (block == 0 || block % 512 || total < block) {
        fprintf(stderr, "ember-diskbench: bad sizes\n");
        return 2;
    }
    int fd = open(argv[1], (writing ? O_WRONLY : O_RDONLY) | O_DIRECT);
    if (fd < 0) {
        perror("ember-diskbench: open");
        return 1;
    }
    void *buf;
    if (posix_memalign(&buf, 4096, block) != 0)
        return 1;
    memset(buf, 0x5a, block);
    uint64_t blocks = total / block, state = 0x9e3779b97f4a7c15ull;
    double start = now();
    for (uint64_t i = 0; i < blocks; i++) {
        uint64_t n = i;
        if (random) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            n = (state >> 33) % blocks;
        }
        ssize_t done = writing ? pwrite(fd, buf, block, n * block)
                               : pread(fd, buf, block, n * block);
        if (done != (ssize_t)block) {
            perror("ember-diskbench: I/O");
            return 1;
        }
    }
    if (writing && fdatasync(fd) != 0) {
        perror("ember-diskbench: fdatasync");
        return 1;
    }
    double secs = now() - start;
    printf("diskbench %s %s %zu %.1f %.0f\n", argv[2], argv[3], block,
           blocks * block / secs / (1 << 20), blocks / secs);
    return 0;
}
