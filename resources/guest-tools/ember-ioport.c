/*
 * ember-ioport: port I/O from a guest's user space, for Ember's tests.
 *   ember-ioport write PORT VALUE     writes one byte (outb); PORT and VALUE in C notation
 *   ember-ioport read PORT            reads one byte (inb) and prints it in hex
 * Needs root (iopl 3). Built statically by resources/build-guest.sh into the initramfs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>

static unsigned long number(const char *text, unsigned long max)
{
    char *end;
    unsigned long v = strtoul(text, &end, 0);
    if (*text == '\0' || *end != '\0' || v > max) {
        fprintf(stderr, "ember-ioport: bad number %s\n", text);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    if (argc < 3 || (strcmp(argv[1], "write") == 0 && argc != 4) ||
        (strcmp(argv[1], "read") == 0 && argc != 3)) {
        fprintf(stderr, "usage: ember-ioport write PORT VALUE | read PORT\n");
        return 2;
    }
    unsigned short port = (unsigned short)number(argv[2], 0xffff);
    if (iopl(3) != 0) {
        perror("ember-ioport: iopl");
        return 1;
    }
    if (strcmp(argv[1], "write") == 0)
        outb((unsigned char)number(argv[3], 0xff), port);
    else
        printf("%#04x\n", inb(port));
    return 0;
}
