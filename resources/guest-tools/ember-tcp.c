/*
 * ember-tcp: one TCP stream with large reads and writes, for Ember's network tests and
 * benchmark (busybox's nc moves 1 KiB per system call, which measures nc, not the network).
 *   ember-tcp send ADDR PORT [BYTES]   connect; send BYTES zero bytes, or standard input
 *                                      until its end; then wait for the peer to close
 *   ember-tcp recv PORT                listen on PORT, print "EMBER-TCP-LISTENING PORT" on
 *                                      standard error, accept one connection and copy it to
 *                                      standard output until the peer closes
 * Both print "EMBER-TCP <sent|received> BYTES bytes in SECONDS s" on standard error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (256 * 1024)
static char buf[CHUNK];

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int fail(const char *what)
{
    fprintf(stderr, "ember-tcp: %s: %s\n", what, strerror(errno));
    return 1;
}

static int do_send(const char *addr, int port, const char *bytes)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
        fprintf(stderr, "ember-tcp: bad address %s\n", addr);
        return 2;
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa) != 0)
        return fail("connect");
    unsigned long long left = bytes ? strtoull(bytes, NULL, 0) : 0, total = 0;
    double start = now();
    for (;;) {
        size_t n;
        if (bytes) {
            if (left == 0)
                break;
            n = left < CHUNK ? (size_t)left : CHUNK;
            left -= n;
        } else {
            ssize_t r = read(0, buf, CHUNK);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0)
                return fail("read");
            if (r == 0)
                break;
            n = (size_t)r;
        }
        if (write_all(s, buf, n) != 0)
            return fail("send");
        total += n;
    }
    shutdown(s, SHUT_WR);
    while (read(s, buf, CHUNK) > 0) /* the peer closes once it has everything */
        ;
    fprintf(stderr, "EMBER-TCP sent %llu bytes in %.3f s\n", total, now() - start);
    return close(s) == 0 ? 0 : 1;
}

static int do_recv(int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
    int one = 1, s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0)
        return fail("socket");
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(s, 1) != 0)
        return fail("listen");
    fprintf(stderr, "EMBER-TCP-LISTENING %d\n", port);
    int c = accept(s, NULL, NULL);
    if (c < 0)
        return fail("accept");
    unsigned long long total = 0;
    double start = now();
    for (;;) {
        ssize_t r = read(c, buf, CHUNK);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return fail("receive");
        if (r == 0)
            break;
        if (write_all(1, buf, (size_t)r) != 0)
            return fail("write");
        total += (unsigned long long)r;
    }
    fprintf(stderr, "EMBER-TCP received %llu bytes in %.3f s\n", total, now() - start);
    close(c);
    return close(s) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && argc <= 5 && strcmp(argv[1], "send") == 0)
        return do_send(argv[2], atoi(argv[3]), argc == 5 ? argv[4] : NULL);
    if (argc == 3 && strcmp(argv[1], "recv") == 0)
        return do_recv(atoi(argv[2]));
    fprintf(stderr, "usage: ember-tcp send ADDR PORT [BYTES] | ember-tcp recv PORT\n");
    return 2;
}
