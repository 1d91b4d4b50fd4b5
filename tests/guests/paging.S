/*
 * paging: 4 KiB pages in long mode. The 2 MiB at 0x400000 are remapped
 * through a page table with one page per case:
 *   0x400000 not present        read and write -> #PF, CR2, error code
 *   0x401000 read-only (WP=1)   write -> #PF P=1 W=1
 *   0x402000 NX (EFER.NXE)      fetch -> #PF P=1 I/D=1; then NX cleared
 *   0x403000 A=0 D=0            hardware sets A on read, D on write
 *   0x404000 old -> new page    INVLPG makes the new mapping visible
 *   0x405000 code, then other code  a hot loop calling it (directly and
 *                               through a register) runs the new code after
 *                               the PTE changes and CR3 is reloaded
 *
 * Expected output:
 *   #PF read not-present: vector=14 cr2=0x400ab8 err=0x0 rip=+0 ok
 *   #PF write not-present: vector=14 cr2=0x400ab8 err=0x2 rip=+0 ok
 *   #PF write read-only: vector=14 cr2=0x401010 err=0x3 rip=+0 ok
 *   #PF fetch NX: vector=14 cr2=0x402000 err=0x11 rip=0x402000 ok
 *   fetch after clearing NX: ok
 *   accessed/dirty: after read A=1 D=0, after write A=1 D=1 ok
 *   invlpg: before=0x1111111111111111 after=0x2222222222222222 ok
 *   hot calls across a CR3 reload: before=0xfa0 after=0x1130 ok
 *   paging: PASS
 * Exit 0 (1 on any mismatch; failed lines start with "FAIL").
 */
#include "common.h"

#define VA          0x400000    /* covered by pd[2] */
#define PTE_P       0x1
#define PTE_RW      0x2
#define PTE_A       0x20
#define PTE_D       0x40
#define PTE_NX_BIT  63

    MULTIBOOT_HEADER
    ENTRY32
    ENTER_LONG main64

    .pushsection .bss
    .balign 4096
pt:         .skip 4096          /* page table for VA .. VA+2 MiB */
page_ro:    .skip 4096
page_code:  .skip 4096
page_ad:    .skip 4096
page_old:   .skip 4096
page_new:   .skip 4096
page_fa:    .skip 4096
page_fb:    .skip 4096
    .popsection

/* Print the #PF fields shared by the first cases. */
.macro PF_LINE what
    LINE_BEGIN
    PRINT "\what: "
    PRINT_VEC
    PRINT " cr2=0x"
    PUTHEX last_cr2(%rip)
    PRINT " err=0x"
    PUTHEX last_err(%rip)
.endm

main64:
    LONG_ENTRY
    call idt_init
    mov $MSR_EFER, %ecx         /* NX bit usable */
    rdmsr
    or $EFER_NXE, %eax
    wrmsr
    mov %cr0, %rax              /* supervisor writes honour R/O pages */
    or $CR0_WP, %eax
    mov %rax, %cr0

    /* page table: pt[0] stays 0 (not present) */
    lea page_ro(%rip), %rax
    or $PTE_P, %rax
    mov %rax, pt + 1 * 8(%rip)
    lea page_code(%rip), %rax
    or $(PTE_P | PTE_RW), %rax
    bts $PTE_NX_BIT, %rax
    mov %rax, pt + 2 * 8(%rip)
    lea page_ad(%rip), %rax
    or $(PTE_P | PTE_RW), %rax
    mov %rax, pt + 3 * 8(%rip)
    lea page_old(%rip), %rax
    or $(PTE_P | PTE_RW), %rax
    mov %rax, pt + 4 * 8(%rip)
    lea pt(%rip), %rax
    or $(PTE_P | PTE_RW), %rax
    mov %rax, pd + 2 * 8(%rip)  /* replaces the 2 MiB page at VA */
    mov %cr3, %rax              /* flush the TLB */
    mov %rax, %cr3

    /* not present, read: err = 0 (P=0 W=0 U=0) */
    mov $VA + 0xab8, %rbx
    TRY mov (%rbx), %rax
    RIP_OFFSET
    CHECK last_vec(%rip), $14
    CHECK last_cr2(%rip), %rbx
    CHECK last_err(%rip), $0
    CHECK %r15, $0
    PF_LINE "#PF read not-present"
    PRINT_RIP
    LINE_END

    /* not present, write: err = 2 (W=1) */
    TRY movq $0x1234, (%rbx)
    RIP_OFFSET
    CHECK last_vec(%rip), $14
    CHECK last_cr2(%rip), %rbx
    CHECK last_err(%rip), $2
    CHECK %r15, $0
    PF_LINE "#PF write not-present"
    PRINT_RIP
    LINE_END

    /* read-only page: a read works, a write faults with err = 3 (P=1 W=1) */
    mov $VA + 0x1000 + 0x10, %rbx
    mov (%rbx), %rax
    TRY movq $0x1234, (%rbx)
    RIP_OFFSET
    CHECK last_vec(%rip), $14
    CHECK last_cr2(%rip), %rbx
    CHECK last_err(%rip), $3
    CHECK %r15, $0
    PF_LINE "#PF write read-only"
    PRINT_RIP
    LINE_END

    /* NX page holding a "ret": jumping there faults on the fetch with
     * err = 0x11 (P=1 I/D=1) and RIP = CR2 = the page */
    movb $0xc3, page_code(%rip)
    mov $VA + 0x2000, %rbx
    TRY jmp *%rbx
    CHECK last_vec(%rip), $14
    CHECK last_cr2(%rip), %rbx
    CHECK last_err(%rip), $0x11
    CHECK last_rip(%rip), %rbx
    PF_LINE "#PF fetch NX"
    PRINT " rip=0x"
    PUTHEX last_rip(%rip)
    LINE_END

    /* clear NX, INVLPG, and the same code runs (a fault here would be
     * reported as unexpected) */
    btrq $PTE_NX_BIT, pt + 2 * 8(%rip)
    invlpg (%rbx)
    call *%rbx
    PRINT "fetch after clearing NX: ok\n"

    /* accessed and dirty bits, set by the page walker */
    mov $VA + 0x3000, %rbx
    mov (%rbx), %rax
    mov pt + 3 * 8(%rip), %r12
    and $(PTE_A | PTE_D), %r12  /* after the read */
    movq $0x5678, (%rbx)
    mov pt + 3 * 8(%rip), %r13
    and $(PTE_A | PTE_D), %r13  /* after the write */
    CHECK %r12, $PTE_A
    CHECK %r13, $(PTE_A | PTE_D)
    LINE_BEGIN
    PRINT "accessed/dirty: after read A="
    bt $5, %r12
    call put_cf
    PRINT " D="
    bt $6, %r12
    call put_cf
    PRINT ", after write A="
    bt $5, %r13
    call put_cf
    PRINT " D="
    bt $6, %r13
    call put_cf
    LINE_END

    /* INVLPG: map page_old, read, switch the PTE to page_new, invlpg */
    mov $0x1111111111111111, %rax
    mov %rax, page_old(%rip)
    mov $0x2222222222222222, %rax
    mov %rax, page_new(%rip)
    mov $VA + 0x4000, %rbx
    mov (%rbx), %r12            /* also loads the TLB entry */
    lea page_new(%rip), %rax
    or $(PTE_P | PTE_RW), %rax
    mov %rax, pt + 4 * 8(%rip)
    invlpg (%rbx)
    mov (%rbx), %r13
    CHECK %r12, page_old(%rip)
    CHECK %r13, page_new(%rip)
    LINE_BEGIN
    PRINT "invlpg: before=0x"
    PUTHEX %r12
    PRINT " after=0x"
    PUTHEX %r13
    LINE_END

    /* Hot code across a CR3 reload: 200 rounds of calls to VA+0x5000 (the
     * software CPU translates and chains them), then the page there is
     * replaced, CR3 reloaded, and the same loop must run the new code. */
    mov %cr4, %rax              /* CR4.PGE: the reload keeps global entries */
    or $0x80, %rax              /* (none here: no PTE has G set) */
    mov %rax, %cr4
    mov $0xc30000000ab8, %rax   /* mov $0xa, %eax; ret */
    mov %rax, page_fa(%rip)
    mov $0xc30000000bb8, %rax   /* mov $0xb, %eax; ret */
    mov %rax, page_fb(%rip)
    lea page_fa(%rip), %rax
    call hot_calls
    mov %r12, %r13
    lea page_fb(%rip), %rax
    call hot_calls
    CHECK %r13, $4000
    CHECK %r12, $4400
    LINE_BEGIN
    PRINT "hot calls across a CR3 reload: before=0x"
    PUTHEX %r13
    PRINT " after=0x"
    PUTHEX %r12
    LINE_END

    FINISH paging

hot_calls:                      /* maps the page at rax to VA+0x5000, reloads CR3;
                                   r12 = sum of 200 direct and 200 indirect calls there */
    or $(PTE_P | PTE_RW), %rax
    mov %rax, pt + 5 * 8(%rip)
    mov %cr3, %rax
    mov %rax, %cr3
    xor %r12d, %r12d
    mov $200, %ecx
    mov $VA + 0x5000, %rbx
1:  call VA + 0x5000
    add %rax, %r12
    call *%rbx
    add %rax, %r12
    dec %ecx
    jnz 1b
    ret

put_cf:                         /* print "1" if CF else "0" */
    push %rax
    setc %al
    add $'0', %al
    call putc64
    pop %rax
    ret

    CHECK_VARS
    IDT_RUNTIME
    SERIAL_LIB 64, r
