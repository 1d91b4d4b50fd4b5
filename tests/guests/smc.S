/*
 * smc: self-modifying code in long mode. Each case runs a piece of code,
 * rewrites an immediate operand in it, and runs it again: the second run must
 * see the new byte. The cases cover the places a decoded-code cache can keep
 * stale bytes: the page of a function that already ran, the target page of a
 * direct JMP or CALL that a block follows, and the very next instruction of
 * the block doing the store.
 *
 * Expected output:
 *   same page: 0x11 then 0x22 ok
 *   jmp target page: 0x33 then 0x44 ok
 *   call target page: 0x56 then 0x67 ok
 *   next instruction: 0x77 ok
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

    FINISH smc

fn_same:
    mov $0x11, %eax
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

    CHECK_VARS
    SERIAL_LIB 64, r
