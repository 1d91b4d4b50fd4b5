/*
 * exceptions: long-mode IDT. Raises #DE, #UD, #GP (non-canonical address
 * and bad selector), a #DF on IST2, #BP, int 0x80 and int 0x81 on IST1;
 * checks vector, error code, the pushed RIP (offset from the start of the
 * instruction: 0 for faults, its length for traps), CS and the stack.
 * The SSE cases run one loop body 100 times first, so that the software
 * CPU has translated it when CR0.TS and the MXCSR masks change under it.
 * int3 and int n come last: some KVM backends (kvm_pvm) cannot run them
 * and stop the VM, and the earlier lines should still show up there.
 *
 * Expected output:
 *   #DE: vector=0 rip=+0 ok
 *   #UD: vector=6 rip=+0 ok
 *   #GP non-canonical: vector=13 err=0x0 rip=+0 ok
 *   #GP bad selector: vector=13 err=0x1000 rip=+0 ok
 *   #DF on IST2: vector=8 err=0x0 stack=ist2 ok
 *   #BP: vector=3 rip=+1 ok
 *   int 0x80: vector=128 rip=+2 ok
 *   int 0x81 on IST1: vector=129 rip=+2 stack=ist1 ok
 *   hot SSE, masked 1.0/0.0: +inf, ZE set ok
 *   #NM in hot SSE code: vector=7 rip=+0 ok
 *   #XM in hot SSE code: vector=19 rip=+0 ok
 *   exceptions: PASS
 * Exit 0 (1 on any mismatch; failed lines start with "FAIL").
 */
#include "common.h"

    MULTIBOOT_HEADER
    ENTRY32
    ENTER_LONG main64

    .pushsection .data
    .balign 8
sse_one:     .double 1.0
sse_zero:    .double 0.0
sse_result:  .double 0.0
mxcsr_value: .long 0
    .balign 8
sse_runs:    .quad 0
    .popsection

    .pushsection .bss
    .balign 16
ist1_stack: .skip 4096
ist1_top:
ist2_stack: .skip 4096
ist2_top:
    .popsection

/* Checks common to every case: vector, CS and the interrupted RSP. */
.macro CHECK_BASIC vec
    CHECK last_vec(%rip), $\vec
    CHECK last_cs(%rip), $SEL_CODE64
    CHECK last_rsp(%rip), try_rsp(%rip)
.endm

main64:
    LONG_ENTRY
    call idt_init
    lea ist1_top(%rip), %rax
    mov %rax, tss+TSS_IST1(%rip)
    lea ist2_top(%rip), %rax
    mov %rax, tss+TSS_IST2(%rip)
    LOAD_TSS
    movb $1, idt + 16 * 129 + 4(%rip)   /* int 0x81 -> IST1 */
    movb $2, idt + 16 * 8 + 4(%rip)     /* #DF -> IST2 */

    /* #DE: divide by zero, a fault: RIP points at the div */
    mov $1, %eax
    xor %edx, %edx
    xor %ecx, %ecx
    TRY div %ecx
    RIP_OFFSET
    CHECK_BASIC 0
    CHECK %r15, $0
    LINE_BEGIN
    PRINT "#DE: "
    PRINT_VEC
    PRINT_RIP
    LINE_END

    /* #UD: ud2 */
    TRY ud2
    RIP_OFFSET
    CHECK_BASIC 6
    CHECK %r15, $0
    LINE_BEGIN
    PRINT "#UD: "
    PRINT_VEC
    PRINT_RIP
    LINE_END

    /* #GP(0): load through a non-canonical address */
    mov $0x8000000000000000, %rbx
    TRY mov (%rbx), %rax
    RIP_OFFSET
    CHECK_BASIC 13
    CHECK last_err(%rip), $0
    CHECK %r15, $0
    LINE_BEGIN
    PRINT "#GP non-canonical: "
    PRINT_VEC
    PRINT " err=0x"
    PUTHEX last_err(%rip)
    PRINT_RIP
    LINE_END

    /* #GP(selector): selector 0x1000 is beyond the GDT limit */
    mov $0x1000, %eax
    TRY mov %ax, %ds
    RIP_OFFSET
    CHECK_BASIC 13
    CHECK last_err(%rip), $0x1000
    CHECK %r15, $0
    LINE_BEGIN
    PRINT "#GP bad selector: "
    PRINT_VEC
    PRINT " err=0x"
    PUTHEX last_err(%rip)
    PRINT_RIP
    LINE_END

    /* #DF: mark the #DE gate not present, then divide by zero. Delivering
     * #DE raises #NP (contributory), which turns into #DF (error code 0)
     * on the IST2 stack. The saved RIP of a #DF is not architecturally
     * defined, so it is not checked. */
    andb $0x7f, idt + 5(%rip)
    mov $1, %eax
    xor %edx, %edx
    xor %ecx, %ecx
    TRY div %ecx
    orb $0x80, idt + 5(%rip)
    CHECK_BASIC 8
    CHECK last_err(%rip), $0
    lea ist2_top - 40(%rip), %rax
    CHECK last_frame(%rip), %rax
    LINE_BEGIN
    PRINT "#DF on IST2: "
    PRINT_VEC
    PRINT " err=0x"
    PUTHEX last_err(%rip)
    lea ist2_top - 40(%rip), %rax
    cmp last_frame(%rip), %rax
    jne 1f
    PRINT " stack=ist2"
    jmp 2f
1:  PRINT " stack=other"
2:  LINE_END

    /* #BP: int3 is a trap: RIP points after it (1 byte) */
    TRY int3
    RIP_OFFSET
    CHECK_BASIC 3
    CHECK %r15, $1
    LINE_BEGIN
    PRINT "#BP: "
    PRINT_VEC
    PRINT_RIP
    LINE_END

    /* int 0x80: software interrupt, RIP after the 2-byte instruction */
    TRY int $0x80
    RIP_OFFSET
    CHECK_BASIC 128
    CHECK %r15, $2
    LINE_BEGIN
    PRINT "int 0x80: "
    PRINT_VEC
    PRINT_RIP
    LINE_END

    /* int 0x81 through an IST1 gate: the frame must be at the top of the
     * IST1 stack (5 qwords: SS, RSP, RFLAGS, CS, RIP) */
    TRY int $0x81
    RIP_OFFSET
    CHECK_BASIC 129
    CHECK %r15, $2
    lea ist1_top - 40(%rip), %rax
    CHECK last_frame(%rip), %rax
    LINE_BEGIN
    PRINT "int 0x81 on IST1: "
    PRINT_VEC
    PRINT_RIP
    lea ist1_top - 40(%rip), %rax
    cmp last_frame(%rip), %rax
    jne 1f
    PRINT " stack=ist1"
    jmp 2f
1:  PRINT " stack=other"
2:  LINE_END

    /* SSE in hot code: phase 0 divides 1.0 by 0.0 100 times with every
     * exception masked (+inf, MXCSR.ZE set); phase 1 runs the same code once
     * with CR0.TS set (#NM), phase 2 once with divide-by-zero unmasked (#XM,
     * CR4.OSXMMEXCPT set). */
    mov %cr4, %rax
    or $0x600, %rax                 /* OSFXSR | OSXMMEXCPT */
    mov %rax, %cr4
    movl $0x1f80, mxcsr_value(%rip)
    ldmxcsr mxcsr_value(%rip)
    movsd sse_one(%rip), %xmm0
    xor %r13d, %r13d
    xor %r14d, %r14d
    mov $100, %r12d
sse_again:
    /* A count of runs, written in the same block before the SSE instruction:
     * translated code keeps r14 in a host register, which must reach the
     * guest's state when that instruction leaves the block with #NM/#XM. */
    add $1, %r14
    mov %r14, sse_runs(%rip)
    TRY divsd sse_zero(%rip), %xmm0
    cmp $1, %r13d
    je sse_nm_done
    cmp $2, %r13d
    je sse_xm_done
    movsd %xmm0, sse_result(%rip)
    movsd sse_one(%rip), %xmm0
    dec %r12d
    jnz sse_again
    mov sse_result(%rip), %rax
    mov $0x7ff0000000000000, %rcx
    CHECK %rax, %rcx
    CHECK last_vec(%rip), $-1
    stmxcsr mxcsr_value(%rip)
    mov mxcsr_value(%rip), %eax
    and $4, %eax
    CHECK %rax, $4
    LINE_BEGIN
    PRINT "hot SSE, masked 1.0/0.0: +inf, ZE set"
    LINE_END
    mov %cr0, %rax
    or $8, %rax                     /* TS */
    mov %rax, %cr0
    mov $1, %r13d
    lea sse_again(%rip), %rax
    jmp *%rax                       /* into the block that ran 100 times */
sse_nm_done:
    clts
    RIP_OFFSET
    CHECK_BASIC 7
    CHECK %r15, $0
    CHECK %r14, $101
    CHECK sse_runs(%rip), $101
    LINE_BEGIN
    PRINT "#NM in hot SSE code: "
    PRINT_VEC
    PRINT_RIP
    LINE_END
    movl $0x1d80, mxcsr_value(%rip)  /* ZM clear */
    ldmxcsr mxcsr_value(%rip)
    mov $2, %r13d
    lea sse_again(%rip), %rax
    jmp *%rax
sse_xm_done:
    RIP_OFFSET
    CHECK_BASIC 19
    CHECK %r15, $0
    CHECK %r14, $102
    movl $0x1f80, mxcsr_value(%rip)
    ldmxcsr mxcsr_value(%rip)
    LINE_BEGIN
    PRINT "#XM in hot SSE code: "
    PRINT_VEC
    PRINT_RIP
    LINE_END

    FINISH exceptions

    CHECK_VARS
    IDT_RUNTIME
    SERIAL_LIB 64, r
