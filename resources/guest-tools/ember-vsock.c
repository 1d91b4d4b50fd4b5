/*
 * ember-vsock: AF_VSOCK stream ends for Ember's tests; busybox has no vsock support.
 *   ember-vsock listen PORT          accept one connection on PORT, echo what arrives until
 *                                    the peer stops sending, then close
 *   ember-vsock connect CID PORT N   connect to CID:PORT, send N bytes of the test pattern
 *                                    (byte i is i % 251) while reading what comes back, then
 *                                    stop sending and read to the end
 * Lines on stdout, each with a tag the tests look for:
 *   VSOCK-LISTENING PORT, VSOCK-ECHOED BYTES                      (listen)
 *   VSOCK-CONNECTED, VSOCK-SENT N RECEIVED M MATCH yes|no         (connect)
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

static int fail(const char *what)
{
    printf("VSOCK-ERROR %s: %s\n", what, strerror(errno));
    return 1;
}

static struct sockaddr_vm address(unsigned cid, unsigned port)
{
    struct sockaddr_vm a;
    memset(&a, 0, sizeof(a));
    a.svm_family = AF_VSOCK;
    a.svm_cid = cid;
    a.svm_port = port;
    return a;
}

static int echo(unsigned port)
{
    int s = socket(AF_VSOCK, SOCK_STREAM, 0);
    struct sockaddr_vm a = address(VMADDR_CID_ANY, port);
    if (s < 0)
        return fail("socket");
    if (bind(s, (struct sockaddr *)&a, sizeof(a)) != 0)
        return fail("bind");
    if (listen(s, 4) != 0)
        return fail("listen");
    printf("VSOCK-LISTENING %u\n", port);
    fflush(stdout);
    int c = accept(s, NULL, NULL);
    if (c < 0)
        return fail("accept");
    static char buf[65536];
    unsigned long total = 0;
    for (;;) {
        ssize_t n = read(c, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return fail("read");
        if (n == 0)
            break;
        for (ssize_t done = 0; done < n;) {
            ssize_t w = write(c, buf + done, n - done);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                return fail("write");
            done += w;
        }
        total += n;
    }
    close(c);
    close(s);
    printf("VSOCK-ECHOED %lu\n", total);
    return 0;
}

static int exchange(unsigned cid, unsigned port, unsigned long size)
{
    int s = socket(AF_VSOCK, SOCK_STREAM, 0);
    struct sockaddr_vm a = address(cid, port);
    if (s < 0)
        return fail("socket");
    if (connect(s, (struct sockaddr *)&a, sizeof(a)) != 0)
        return fail("connect");
    printf("VSOCK-CONNECTED\n");
    fflush(stdout);
    static unsigned char out[65536], in[65536];
    unsigned long sent = 0, received = 0;
    int match = 1, sending = 1;
    for (;;) {
        struct pollfd p = { .fd = s, .events = POLLIN | (sending ? POLLOUT : 0) };
        if (poll(&p, 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            return fail("poll");
        }
        if (sending && (p.revents & POLLOUT)) {
            size_t n = size - sent < sizeof(out) ? size - sent : sizeof(out);
            for (size_t i = 0; i < n; i++)
                out[i] = (sent + i) % 251;
            ssize_t w = send(s, out, n, MSG_DONTWAIT);
            if (w < 0 && errno != EAGAIN && errno != EINTR)
                return fail("send");
            if (w > 0)
                sent += w;
            if (sent == size) {
                shutdown(s, SHUT_WR);
                sending = 0;
            }
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = recv(s, in, sizeof(in), MSG_DONTWAIT);
            if (n < 0 && errno != EAGAIN && errno != EINTR)
                return fail("recv");
            if (n == 0)
                break;
            for (ssize_t i = 0; i < n; i++)
                if (in[i] != (unsigned char)((received + i) % 251))
                    match = 0;
            if (n > 0)
                received += n;
        }
    }
    close(s);
    printf("VSOCK-SENT %lu RECEIVED %lu MATCH %s\n", sent, received, match ? "yes" : "no");
    return sent == size && received == size && match ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "listen") == 0)
        return echo(strtoul(argv[2], NULL, 0));
    if (argc == 5 && strcmp(argv[1], "connect") == 0)
        return exchange(strtoul(argv[2], NULL, 0), strtoul(argv[3], NULL, 0),
                        strtoul(argv[4], NULL, 0));
    fprintf(stderr, "usage: ember-vsock listen PORT | ember-vsock connect CID PORT BYTES\n");
    return 2;
}
