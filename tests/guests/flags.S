/*
 * flags: arithmetic flags that cross from one translated block into the next.
 * Hot loops (1000 iterations: the software CPU translates a block after 50
 * runs and links its exits) end a block with a compare and a conditional
 * branch whose target block reads the compare's flags, so translated code
 * jumps from block to block while the lazy flags are still in host
 * registers; and a loop whose branch lands inside its own block, where the
 * flags are set again before anything reads them. Each count is checked
 * against what the loop must produce.
 *
 * Expected output:
 *   flags read by the next block: 375 below, 125 equal, 500 above ok
 *   flags set again where the branch lands: 1000 ok
 *   flags: PASS
 * Exit 0 (1 on any mismatch; failed lines start with "FAIL").
 */
#include "common.h"

    MULTIBOOT_HEADER
    ENTRY32
    ENTER_LONG main64

main64:
    LONG_ENTRY

    /* ecx & 7 runs through 0..7 125 times each: below 3 three times in
     * eight, equal once, above four times. The taken JNE leaves the block
     * for `compared`, which reads CF and ZF of the CMP. */
    xor %r12d, %r12d
    xor %r13d, %r13d
    xor %r14d, %r14d
    mov $1000, %ecx
1:  mov %ecx, %eax
    and $7, %eax
    cmp $3, %eax
    jne compared
    inc %r13d
    jmp 2f
compared:
    jae 3f
    inc %r12d
    jmp 2f
3:  inc %r14d
2:  dec %ecx
    jnz 1b
    CHECK %r12, $375
    CHECK %r13, $125
    CHECK %r14, $500
    LINE_BEGIN
    PRINT "flags read by the next block: "
    PUTDEC %r12
    PRINT " below, "
    PUTDEC %r13
    PRINT " equal, "
    PUTDEC %r14
    PRINT " above"
    LINE_END

    /* An outer loop runs a block that holds an inner loop: its JNZ lands on
     * the ADD inside that same block, which sets every flag before anything
     * reads them, so the exit keeps the DEC's flags in registers. */
    xor %r12d, %r12d
    mov $100, %esi
4:  mov $10, %ecx
    mov $5, %edx
5:  add $1, %r12d
    cmp $0, %edx
    dec %ecx
    jnz 5b
    dec %esi
    jnz 4b
    CHECK %r12, $1000
    LINE_BEGIN
    PRINT "flags set again where the branch lands: "
    PUTDEC %r12
    LINE_END

    FINISH flags

    CHECK_VARS
    SERIAL_LIB 64, r
