/*
 * modes: 32-bit PM -> 16-bit PM -> real mode -> 32-bit PM -> long mode.
 *
 * Expected output (exit=N on the command line, default 0):
 *   pm32: ok
 *   real: ok
 *   long: ok
 *   exit code N
 * and exit through 0xf4 with N. A failed mode check prints "<mode>: FAIL"
 * and the guest exits with 1.
 */
#include "common.h"

#define RM_BASE 0x7000          /* real-mode code is copied here (< 1 MiB) */

    MULTIBOOT_HEADER
    ENTRY32

    .pushsection .data
    .balign 8
exit_code:  .quad 0
failed:     .quad 0
    .popsection

    /* ---- 32-bit protected mode, paging off ---- */
    mov %cr0, %eax
    and $(CR0_PG | CR0_PE), %eax
    cmp $CR0_PE, %eax
    jne pm32_bad
    cmpl $MB_BOOT_MAGIC, mb_magic
    jne pm32_bad
    PRINT32 "pm32: ok\n"
    jmp 1f
pm32_bad:
    PRINT32 "pm32: FAIL\n"
    movl $1, failed
1:
    call parse_cmdline

    /* ---- down to real mode ---- */
    mov $rm_blob, %esi
    mov $RM_BASE, %edi
    mov $(rm_blob_end - rm_blob), %ecx
    rep movsb
    ljmp $SEL_CODE16, $(RM_BASE + pm16 - rm_blob)

    /* Position-independent blob, run at RM_BASE. */
    .code16
rm_blob:
pm16:                           /* 16-bit protected mode, CS base 0 */
    mov $SEL_DATA16, %ax        /* real-mode compatible limits (64 KiB) */
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    mov %cr0, %eax
    and $~CR0_PE, %eax
    mov %eax, %cr0
    ljmp $(RM_BASE >> 4), $(real - rm_blob)
real:                           /* real mode: CS = RM_BASE >> 4 */
    mov $(RM_BASE >> 4), %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $0x0ff0, %sp            /* stack just below RM_BASE + 4 KiB */
    mov $(rm_ok - rm_blob), %si
    mov %cr0, %eax
    test $CR0_PE, %al
    jz 1f
    movb $1, (rm_flag - rm_blob)
    mov $(rm_bad - rm_blob), %si
1:  lodsb                       /* DS:SI */
    test %al, %al
    jz 2f
    call rm_putc
    jmp 1b
2:  mov %cr0, %eax              /* back to protected mode; GDTR is intact */
    or $CR0_PE, %eax
    mov %eax, %cr0
    ljmpl $SEL_CODE32, $pm32_again

rm_putc:                        /* al -> COM1, polling LSR.THRE */
    push %dx
    push %ax
    mov $COM1_LSR, %dx
3:  in %dx, %al
    test $0x20, %al
    jz 3b
    pop %ax
    mov $COM1, %dx
    out %al, %dx
    pop %dx
    ret
rm_ok:   .asciz "real: ok\n"
rm_bad:  .asciz "real: FAIL\n"
rm_flag: .byte 0
rm_blob_end:

    /* ---- 32-bit protected mode again ---- */
    .code32
pm32_again:
    mov $SEL_DATA, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    mov $stack_top, %esp
    cmpb $0, RM_BASE + (rm_flag - rm_blob)
    je 1f
    movl $1, failed
1:
    ENTER_LONG long64

long64:
    LONG_ENTRY
    mov $MSR_EFER, %ecx
    rdmsr
    test $EFER_LMA, %eax
    jz 1f
    PRINT "long: ok\n"
    jmp 2f
1:  PRINT "long: FAIL\n"
    movq $1, failed(%rip)
2:  cmpq $0, failed(%rip)
    je 3f
    movq $1, exit_code(%rip)
3:  PRINT "exit code "
    PUTDEC exit_code(%rip)
    PRINT "\n"
    EXIT exit_code(%rip)

    /* ---- helpers ---- */

/* parse_cmdline (32-bit): exit_code = N from a word "exit=N" in the
 * Multiboot command line. */
    .code32
parse_cmdline:
    push %eax
    push %edx
    mov $0x74697865, %edx       /* "exit" */
    call cmdline_number
    jc 1f
    mov %eax, exit_code
1:  pop %edx
    pop %eax
    ret

    CMDLINE_LIB
    SERIAL_LIB 32, e
    .code64
    SERIAL_LIB 64, r
