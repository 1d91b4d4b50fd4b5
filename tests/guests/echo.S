/*
 * echo: serial input. Prints "echo: ready", then copies every byte read
 * from the 16550 (poll LSR bit 0, read RBR) back to the serial port. After
 * echoing a 'q' it prints "\nbye" and exits with 0.
 *
 * Expected output for the input "hello\nq":
 *   echo: ready
 *   hello
 *   q
 *   bye
 * Exit 0. Without a 'q' on input it waits forever.
 */
#include "common.h"

    MULTIBOOT_HEADER
    ENTRY32

    PRINT32 "echo: ready\n"
next:
    mov $COM1_LSR, %dx
1:  in %dx, %al
    test $0x01, %al             /* data ready */
    jz 1b
    mov $COM1, %dx
    in %dx, %al                 /* RBR */
    call putc32
    cmp $'q', %al
    jne next
    PRINT32 "\nbye\n"
    EXIT $0

    SERIAL_LIB 32, e
