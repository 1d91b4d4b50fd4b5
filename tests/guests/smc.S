/*
 * smc: self-modifying code in long mode. Each case runs a piece of code,
 * rewrites an immediate operand in it, and runs it again: the second run must
 * see the new byte. The cases cover the places a decoded-code cache can keep
 * stale bytes: the page of a function that already ran, the target page of a
 * direct JMP or CALL that a block follows, and the very next instruction of
 * the block doing the store. Two more cases run code hot enough for the software CPU to
 * translate it (it does after 50 runs of a block) before rewriting it: a function called
 * from a loop, and a loop that rewrites an instruction of its own body on one iteration.
 *
 * Expected output:
 *   same page: 0x11 then 0x22 ok
 *   jmp target page: 0x33 then 0x44 ok
 *   call target page: 0x56 then 0x67 ok
 *   next instruction: 0x77 ok
 *   hot function: 0x88 then 0x99 ok
 *   hot loop: 0x103 ok
 *   smc: PASS
 * Exit 0 (1 on any mismatch; failed lines start with "FAIL").
 */
#include "common.h"

    MULTIBOOT_HEADER
    ENTRY32
    ENTER_LONG main64

main64:
    LONG_ENTRY

    /* A function in this page. */
    call fn_same
    mov %rax, %r12
    movb $0x22, fn_same + 1(%rip)
    call fn_same
    mov %rax, %r13
    CHECK %r12, $0x11
    CHECK %r13, $0x22
    LINE_BEGIN
    PRINT "same page: 0x"
    PUTHEX %r12
    PRINT " then 0x"
    PUTHEX %r13
    LINE_END

    /* A JMP to another page, whose target is then rewritten. */
    call fn_jmp
    mov %rax, %r12
    movb $0x44, jmp_target + 1(%rip)
    call fn_jmp
    mov %rax, %r13
    CHECK %r12, $0x33
    CHECK %r13, $0x44
    LINE_BEGIN
    PRINT "jmp target page: 0x"
    PUTHEX %r12
    PRINT " then 0x"
    PUTHEX %r13
    LINE_END

    /* A CALL to another page, whose callee is then rewritten. */
    call fn_call
    mov %rax, %r12
    movb $0x66, call_target + 1(%rip)
    call fn_call
    mov %rax, %r13
    CHECK %r12, $0x56
    CHECK %r13, $0x67
    LINE_BEGIN
    PRINT "call target page: 0x"
    PUTHEX %r12
    PRINT " then 0x"
    PUTHEX %r13
    LINE_END

    /* A store to the next instruction of the same straight-line code. */
    xor %eax, %eax
    movb $0x77, 1f + 1(%rip)
1:  mov $0x11, %al
    mov %rax, %r12
    CHECK %r12, $0x77
    LINE_BEGIN
    PRINT "next instruction: 0x"
    PUTHEX %r12
    LINE_END

    /* A function translated after many calls, rewritten, then called as often again. */
    mov $200, %ecx
2:  call fn_hot
    dec %ecx
    jnz 2b
    mov %rax, %r12
    movl $0x99, fn_hot + 1(%rip)
    mov $200, %ecx
3:  call fn_hot
    dec %ecx
    jnz 3b
    mov %rax, %r13
    CHECK %r12, $0x88
    CHECK %r13, $0x99
    LINE_BEGIN
    PRINT "hot function: 0x"
    PUTHEX %r12
    PRINT " then 0x"
    PUTHEX %r13
    LINE_END

    /* A hot loop adding 1 each iteration, until it rewrites its own body to add 2: 141
     * iterations (ECX 200 down to 60) add 1, the other 59 add 2. Its page is written
     * before its code first runs, so a cached write translation of the page exists when
     * the translated loop stores to its own code. */
    movq $0, hot_scratch(%rip)
    xor %r12, %r12
    mov $200, %ecx
    lea hot_loop(%rip), %rax
    call *%rax      /* indirect: decoding the block above does not reach hot_loop's page */
    CHECK %r12, $0x103
    LINE_BEGIN
    PRINT "hot loop: 0x"
    PUTHEX %r12
    LINE_END

    FINISH smc

fn_same:
    mov $0x11, %eax
    ret

fn_hot:
    mov $0x88, %eax
    ret

fn_jmp:
    xor %eax, %eax
    jmp jmp_target

fn_call:
    xor %eax, %eax
    call call_target
    add $1, %eax
    ret

    .balign 4096
jmp_target:
    mov $0x33, %eax
    ret

    .balign 4096
call_target:
    mov $0x55, %eax
    ret

    .balign 4096
hot_loop:
    mov $1, %eax
    add %rax, %r12
    cmp $60, %ecx
    jne 1f
    movl $2, hot_loop + 1(%rip)
1:  dec %ecx
    jnz hot_loop
    ret
hot_scratch:
    .quad 0

    .balign 4096    /* hot_loop's page holds nothing that runs earlier */

    CHECK_VARS
    SERIAL_LIB 64, r
