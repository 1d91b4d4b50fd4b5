/*
 * clock: watches its time-stamp counter. Prints "clock: start", then, in a loop
 * that never ends, "tsc: N" each time N = TSC >> 30 changes (about every 0.3 to
 * 1 s): consecutive lines differ by 1 while the guest's time runs evenly, so a
 * larger step shows time that passed while the guest could not see it (a pause
 * whose time was not stopped). 32-bit protected mode, paging off.
 */
#include "common.h"

    MULTIBOOT_HEADER
    ENTRY32
    PRINT32 "clock: start\n"
    mov $0xffffffff, %ebx       /* the last N printed: none yet */
1:
    rdtsc
    shrd $30, %edx, %eax        /* eax = (edx:eax) >> 30, low 32 bits */
    cmp %eax, %ebx
    je 1b
    mov %eax, %ebx
    PRINT32 "tsc: "
    call putdec32
    PRINT32 "\n"
    jmp 1b

    SERIAL_LIB 32, e
