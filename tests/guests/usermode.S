/*
 * usermode: ring 3 in long mode. IRETQ into ring 3; hlt and cli in ring 3
 * -> #GP(0) on the TSS.RSP0 stack; SYSCALL/SYSRET (STAR, LSTAR, SFMASK,
 * EFER.SCE); int 0x80 through a DPL3 gate (stack switch to TSS.RSP0).
 *
 * Ring 3 cannot print. The kernel runs one short ring-3 routine per step
 * (run_user: IRETQ to it); the routine records what it sees and ends with
 * ud2, whose #UD brings the kernel back (exc_hook), which then checks and
 * prints. The SYSCALL handler only records and returns with SYSRET.
 *
 * Expected output:
 *   iretq to ring 3: cs=0x33 ss=0x2b ok
 *   hlt in ring 3: vector=13 err=0x0 rip=+0 cs=0x33 stack=rsp0 ok
 *   cli in ring 3: vector=13 err=0x0 rip=+0 cs=0x33 stack=rsp0 ok
 *   syscall: cs=0x10 ss=0x18 rcx=syscall+2 r11.DF=1 rflags.DF=0 ok
 *   sysret: cs=0x33 ss=0x2b ok
 *   int 0x80 from ring 3: vector=128 rip=+2 cs=0x33 stack=rsp0 ok
 *   usermode: PASS
 * Exit 0 (1 on any mismatch; failed lines start with "FAIL").
 */
#include "common.h"

#define RFLAGS_DF   0x400
#define USER_CS     (SEL_UCODE64 | 3)
#define USER_SS     (SEL_UDATA | 3)

    MULTIBOOT_HEADER
    ENTRY32
    ENTER_LONG main64

    .pushsection .bss
    .balign 4096
kstack0:    .skip 4096          /* TSS.RSP0 */
kstack0_top:
ustack:     .skip 4096          /* ring-3 stack */
ustack_top:
    .popsection
    .pushsection .data
    .balign 8
k_saved_rsp: .quad 0            /* kernel rsp while ring 3 runs */
u_cs:       .quad 0             /* selectors seen in ring 3 after IRETQ */
u_ss:       .quad 0
u_cs2:      .quad 0             /* ... after SYSRET */
u_ss2:      .quad 0
sc_cs:      .quad 0             /* seen by the SYSCALL handler */
sc_ss:      .quad 0
sc_rflags:  .quad 0
sc_rcx:     .quad 0
sc_r11:     .quad 0
    .popsection

/* Run the ring-3 routine \entry until it executes ud2 (USER_DONE). */
.macro RUN_USER entry
    lea \entry(%rip), %rax
    call run_user
.endm

/* End of a ring-3 routine: back to the kernel through #UD. */
.macro USER_DONE
    movq $0, resume_rip(%rip)
    ud2
.endm

/* Check and print an exception taken in ring 3: the frame must be at the
 * top of the RSP0 stack and hold the ring-3 CS, SS and RSP. */
.macro USER_FAULT_LINE what, vec, err, ripoff
    RIP_OFFSET
    CHECK last_vec(%rip), $\vec
    CHECK last_cs(%rip), $USER_CS
    CHECK last_ss(%rip), $USER_SS
    CHECK last_rsp(%rip), try_rsp(%rip)
    CHECK %r15, $\ripoff
    lea kstack0_top - 40(%rip), %rax
    CHECK last_frame(%rip), %rax
    .ifnb \err
    CHECK last_err(%rip), $\err
    .endif
    LINE_BEGIN
    PRINT "\what: "
    PRINT_VEC
    .ifnb \err
    PRINT " err=0x"
    PUTHEX last_err(%rip)
    .endif
    PRINT_RIP
    PRINT " cs=0x"
    PUTHEX last_cs(%rip)
    call print_stack
    LINE_END
.endm

main64:
    LONG_ENTRY
    call idt_init
    lea kstack0_top(%rip), %rax
    mov %rax, tss+TSS_RSP0(%rip)
    LOAD_TSS
    mov $MSR_EFER, %ecx
    rdmsr
    or $EFER_SCE, %eax
    wrmsr
    mov $MSR_STAR, %ecx         /* SYSCALL: CS 0x10, SS 0x18; SYSRET: 0x33/0x2b */
    xor %eax, %eax
    mov $((SEL_UCODE32 | 3) << 16 | SEL_CODE64), %edx
    wrmsr
    mov $MSR_LSTAR, %ecx
    lea syscall_entry(%rip), %rax
    mov %rax, %rdx
    shr $32, %rdx
    wrmsr
    mov $MSR_SFMASK, %ecx
    mov $0x40700, %eax          /* clear AC, DF, IF, TF on entry */
    xor %edx, %edx
    wrmsr

    /* 1. IRETQ into ring 3 */
    RUN_USER user_iretq
    CHECK u_cs(%rip), $USER_CS
    CHECK u_ss(%rip), $USER_SS
    LINE_BEGIN
    PRINT "iretq to ring 3: cs=0x"
    PUTHEX u_cs(%rip)
    PRINT " ss=0x"
    PUTHEX u_ss(%rip)
    LINE_END

    /* 2, 3. privileged instructions in ring 3 */
    RUN_USER user_hlt
    USER_FAULT_LINE "hlt in ring 3", 13, 0, 0
    RUN_USER user_cli
    USER_FAULT_LINE "cli in ring 3", 13, 0, 0

    /* 4. SYSCALL and SYSRET */
    RUN_USER user_syscall
    mov sc_rcx(%rip), %r12
    lea syscall_insn(%rip), %rax
    sub %rax, %r12              /* rcx - address of the syscall */
    mov sc_r11(%rip), %r13
    and $RFLAGS_DF, %r13
    shr $10, %r13
    mov sc_rflags(%rip), %r14
    and $RFLAGS_DF, %r14
    shr $10, %r14
    CHECK sc_cs(%rip), $SEL_CODE64
    CHECK sc_ss(%rip), $SEL_DATA
    CHECK %r12, $2
    CHECK %r13, $1
    CHECK %r14, $0
    LINE_BEGIN
    PRINT "syscall: cs=0x"
    PUTHEX sc_cs(%rip)
    PRINT " ss=0x"
    PUTHEX sc_ss(%rip)
    PRINT " rcx=syscall+"
    PUTDEC %r12
    PRINT " r11.DF="
    PUTDEC %r13
    PRINT " rflags.DF="
    PUTDEC %r14
    LINE_END
    CHECK u_cs2(%rip), $USER_CS
    CHECK u_ss2(%rip), $USER_SS
    LINE_BEGIN
    PRINT "sysret: cs=0x"
    PUTHEX u_cs2(%rip)
    PRINT " ss=0x"
    PUTHEX u_ss2(%rip)
    LINE_END

    /* 5. int 0x80 through the DPL3 gate */
    RUN_USER user_int80
    USER_FAULT_LINE "int 0x80 from ring 3", 128, , 2

    FINISH usermode

/* ---------------- ring 3 routines ---------------- */
user_iretq:
    mov %cs, %rax
    mov %rax, u_cs(%rip)
    mov %ss, %rax
    mov %rax, u_ss(%rip)
    USER_DONE

user_hlt:
    TRY hlt
    USER_DONE

user_cli:
    TRY cli
    USER_DONE

user_syscall:
    std                         /* SFMASK must clear DF in the handler */
syscall_insn:
    syscall
    cld
    mov %cs, %rax
    mov %rax, u_cs2(%rip)
    mov %ss, %rax
    mov %rax, u_ss2(%rip)
    USER_DONE

user_int80:
    TRY int $0x80
    USER_DONE

/* ---------------- ring 0 ---------------- */
/* run_user: IRETQ to the ring-3 routine at rax (RFLAGS = 0x2: interrupts
 * off); returns when it executes ud2. Clobbers everything but rsp. */
run_user:
    mov %rsp, k_saved_rsp(%rip)
    lea user_returned(%rip), %rcx
    mov %rcx, exc_hook(%rip)
    pushq $USER_SS
    lea ustack_top(%rip), %rcx
    push %rcx
    pushq $0x2
    pushq $USER_CS
    push %rax
    iretq

user_returned:                  /* #UD from ring 3, via exc_hook */
    movq $0, exc_hook(%rip)
    mov k_saved_rsp(%rip), %rsp
    mov $SEL_DATA, %ax
    mov %ax, %ss
    mov %ax, %ds
    mov %ax, %es
    ret

/* SYSCALL entry: on the ring-3 stack, rcx = return RIP, r11 = RFLAGS.
 * Records what it sees; returns with SYSRET only if it runs in ring 0. */
syscall_entry:
    mov %rcx, sc_rcx(%rip)
    mov %r11, sc_r11(%rip)
    mov %cs, %rax
    mov %rax, sc_cs(%rip)
    mov %ss, %rax
    mov %rax, sc_ss(%rip)
    pushfq
    pop %rax
    mov %rax, sc_rflags(%rip)
    cmpq $SEL_CODE64, sc_cs(%rip)
    jne 1f
    sysretq
1:  USER_DONE                   /* not ring 0: give up on this step */

print_stack:                    /* " stack=rsp0" if the frame is on RSP0 */
    push %rax
    lea kstack0_top - 40(%rip), %rax
    cmp last_frame(%rip), %rax
    jne 1f
    PRINT " stack=rsp0"
    jmp 2f
1:  PRINT " stack=other"
2:  pop %rax
    ret

    CHECK_VARS
    IDT_RUNTIME
    SERIAL_LIB 64, r
