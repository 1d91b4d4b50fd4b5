/*
 * common.h - shared definitions and gas macros for the Ember test guests.
 *
 * GNU as, AT&T syntax, run through the C preprocessor (so comments are C
 * style: a '#' at the start of a line would be a preprocessor directive).
 * Every guest is assembled as x86-64 with .code32/.code16/.code64 switches,
 * linked at 1 MiB by link.ld and converted to ELF32 for the Multiboot loader.
 *
 * Conventions
 *   - Serial output goes to the 16550 THR at 0x3f8 after polling LSR bit 5.
 *   - Exit: a 32-bit write of v to port 0xf4 (isa-debug-exit, status (v<<1)|1).
 *   - Library routines preserve every register except the flags.
 *   - Lines end in "\n" only.
 */

#define COM1            0x3f8
#define COM1_LSR        0x3fd
#define EXIT_PORT       0xf4

#define MB_HDR_MAGIC    0x1BADB002
#define MB_HDR_FLAGS    0x00000003      /* page-align modules, want mem info */
#define MB_BOOT_MAGIC   0x2BADB002

/* GDT layout shared by all guests (see GDT_TABLE). The order of 0x10..0x30
 * is what SYSCALL/SYSRET want: STAR[47:32]=0x10 (CS 0x10, SS 0x18) and
 * STAR[63:48]=0x23 (SYSRET to 64-bit: CS 0x33, SS 0x2b). */
#define SEL_CODE32      0x08
#define SEL_CODE64      0x10
#define SEL_DATA        0x18
#define SEL_UCODE32     0x20
#define SEL_UDATA       0x28
#define SEL_UCODE64     0x30
#define SEL_CODE16      0x38
#define SEL_DATA16      0x40
#define SEL_TSS         0x48

#define MSR_EFER        0xc0000080
#define MSR_STAR        0xc0000081
#define MSR_LSTAR       0xc0000082
#define MSR_SFMASK      0xc0000084
#define EFER_SCE        (1 << 0)
#define EFER_LME        (1 << 8)
#define EFER_LMA        (1 << 10)
#define EFER_NXE        (1 << 11)

#define CR0_PE          (1 << 0)
#define CR0_WP          (1 << 16)
#define CR0_PG          (1 << 31)
#define CR4_PAE         (1 << 5)

/* Offsets in the 64-bit TSS */
#define TSS_RSP0        4
#define TSS_IST1        36
#define TSS_IST2        44

/* ------------------------------------------------------------------ */
/* Boot: Multiboot header, 32-bit entry, GDT, stack                    */
/* ------------------------------------------------------------------ */

.macro MULTIBOOT_HEADER
    .pushsection .multiboot, "a"
    .balign 4
    .long MB_HDR_MAGIC, MB_HDR_FLAGS, -(MB_HDR_MAGIC + MB_HDR_FLAGS)
    .popsection
.endm

/* Flat GDT, the TSS slot is filled in by LOAD_TSS. */
.macro GDT_TABLE
    .pushsection .data
    .balign 16
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff    /* 0x08 code32, DPL0, 4 GiB */
    .quad 0x00af9a000000ffff    /* 0x10 code64, DPL0 (L=1) */
    .quad 0x00cf92000000ffff    /* 0x18 data, DPL0, 4 GiB */
    .quad 0x00cffa000000ffff    /* 0x20 code32, DPL3 */
    .quad 0x00cff2000000ffff    /* 0x28 data, DPL3 */
    .quad 0x00affa000000ffff    /* 0x30 code64, DPL3 */
    .quad 0x00009a000000ffff    /* 0x38 code16, base 0, limit 64 KiB */
    .quad 0x000092000000ffff    /* 0x40 data16, base 0, limit 64 KiB */
gdt_tss:
    .quad 0, 0                  /* 0x48 64-bit TSS, 16 bytes */
gdt_end:
gdt_ptr:
    .word gdt_end - gdt - 1
    .quad gdt
    .popsection
.endm

/* _start: runs in 32-bit PM as left by the loader. Saves EAX/EBX, loads our
 * GDT and flat segments, clears .bss, sets up the stack, then falls through
 * into the code that follows the macro. */
.macro ENTRY32
    GDT_TABLE
    .pushsection .data
    .balign 8
mb_magic:   .quad 0             /* EAX at entry */
mb_info:    .quad 0             /* EBX at entry */
    .popsection
    .pushsection .bss
    .balign 4096
stack:      .skip 16384
stack_top:
    .popsection

    .text
    .code32
    .globl _start
_start:
    cli
    cld
    mov %eax, mb_magic
    mov %ebx, mb_info
    lgdt gdt_ptr
    ljmp $SEL_CODE32, $.Lflat\@
.Lflat\@:
    mov $SEL_DATA, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    mov $__bss_start, %edi      /* clear .bss (stack included) */
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb
    mov $stack_top, %esp
.endm

/* 32-bit: ESI = the Multiboot command line (NUL-terminated), or a jump to
 * \none when the loader passed none. Clobbers EBX. */
.macro MB_CMDLINE none
    mov mb_info, %ebx
    testl $4, (%ebx)
    jz \none
    mov 16(%ebx), %esi
    test %esi, %esi
    jz \none
.endm

/* 32-bit library: cmdline_number finds the word "KEY=N" on the Multiboot
 * command line, KEY being the four bytes in EDX (little-endian, e.g.
 * 0x74697865 for "exit"), and returns N (decimal, at most 100000 or so) in
 * EAX with CF clear; CF set when it is absent. Preserves other registers. */
.macro CMDLINE_LIB
    .code32
cmdline_number:
    push %ebx
    push %ecx
    push %esi
    MB_CMDLINE .Lnone\@
    mov $' ', %cl               /* previous character */
.Lscan\@:
    movzbl (%esi), %eax
    test %al, %al
    jz .Lnone\@
    cmp $' ', %cl               /* only at the start of a word */
    jne .Lnext\@
    cmp %edx, (%esi)
    jne .Lnext\@
    cmpb $'=', 4(%esi)
    jne .Lnext\@
    add $5, %esi
    xor %eax, %eax
.Ldigit\@:
    movzbl (%esi), %ecx
    sub $'0', %ecx
    cmp $9, %ecx
    ja .Lfound\@
    imul $10, %eax
    add %ecx, %eax
    inc %esi
    cmp $100000, %eax           /* no overflow on silly input */
    jb .Ldigit\@
.Lfound\@:
    clc
    jmp .Lout\@
.Lnext\@:
    mov %al, %cl
    inc %esi
    jmp .Lscan\@
.Lnone\@:
    stc
.Lout\@:
    pop %esi
    pop %ecx
    pop %ebx
    ret
.endm

/* Exit through isa-debug-exit with the value in the operand (32 or 64-bit
 * code: the encodings used are the same). Never returns. */
.macro EXIT val
    mov \val, %eax
    out %eax, $EXIT_PORT
.Lhang\@:
    cli
    hlt
    jmp .Lhang\@
.endm

/* ------------------------------------------------------------------ */
/* Serial library: emitted once per bitness.                           */
/*   SERIAL_LIB 32, e   or   SERIAL_LIB 64, r                          */
/* putc<N>(al), puts<N>(si: NUL-terminated), puthex<N>(ax: minimal hex */
/* digits, no prefix), putdec<N>(ax: unsigned decimal)                 */
/* ------------------------------------------------------------------ */
.macro SERIAL_LIB n, R
putc\n:
    push %\R\()dx
    push %\R\()ax
    mov $COM1_LSR, %dx
.Lwait\@:
    in %dx, %al
    test $0x20, %al             /* THR empty */
    jz .Lwait\@
    pop %\R\()ax
    mov $COM1, %dx
    out %al, %dx
    pop %\R\()dx
    ret

puts\n:
    push %\R\()si
    push %\R\()ax
.Lputs\@:
    movzbl (%\R\()si), %eax
    test %al, %al
    jz .Lputs_done\@
    call putc\n
    add $1, %\R\()si
    jmp .Lputs\@
.Lputs_done\@:
    pop %\R\()ax
    pop %\R\()si
    ret

puthex\n:                       /* digits are pushed, then popped */
    push %\R\()ax
    push %\R\()cx
    push %\R\()dx
    xor %ecx, %ecx
.Lhex\@:
    mov %\R\()ax, %\R\()dx
    and $15, %edx
    push %\R\()dx
    add $1, %ecx
    shr $4, %\R\()ax
    jnz .Lhex\@
.Lhexout\@:
    pop %\R\()ax
    cmp $10, %al
    jb .Lhexdigit\@
    add $('a' - '0' - 10), %al
.Lhexdigit\@:
    add $'0', %al
    call putc\n
    sub $1, %ecx
    jnz .Lhexout\@
    pop %\R\()dx
    pop %\R\()cx
    pop %\R\()ax
    ret

putdec\n:
    push %\R\()ax
    push %\R\()cx
    push %\R\()dx
    push %\R\()bx
    mov $10, %ebx
    xor %ecx, %ecx
.Ldec\@:
    xor %edx, %edx
    div %\R\()bx
    push %\R\()dx
    add $1, %ecx
    test %\R\()ax, %\R\()ax
    jnz .Ldec\@
.Ldecout\@:
    pop %\R\()ax
    add $'0', %al
    call putc\n
    sub $1, %ecx
    jnz .Ldecout\@
    pop %\R\()bx
    pop %\R\()dx
    pop %\R\()cx
    pop %\R\()ax
    ret
.endm

/* Print a string literal; 32-bit and 64-bit flavours. */
.macro PRINT32 s
    .pushsection .rodata
.Lstr\@: .asciz "\s"
    .popsection
    push %esi
    mov $.Lstr\@, %esi
    call puts32
    pop %esi
.endm

.macro PRINT s
    .pushsection .rodata
.Lstr\@: .asciz "\s"
    .popsection
    push %rsi
    lea .Lstr\@(%rip), %rsi
    call puts64
    pop %rsi
.endm

.macro PUTHEX32 v
    push %eax
    mov \v, %eax
    call puthex32
    pop %eax
.endm

/* 64-bit: print a value (register, immediate or 64-bit memory operand). */
.macro PUTHEX v
    push %rax
    mov \v, %rax
    call puthex64
    pop %rax
.endm

.macro PUTDEC v
    push %rax
    mov \v, %rax
    call putdec64
    pop %rax
.endm

/* ------------------------------------------------------------------ */
/* Long mode: identity map of the first 1 GiB with 2 MiB pages (all    */
/* entries present, writable, user), PAE + LME + PG, far jump to       */
/* \target in 64-bit code (CS = SEL_CODE64).                           */
/* ------------------------------------------------------------------ */
.macro ENTER_LONG target
    .pushsection .bss
    .balign 4096
pml4:   .skip 4096
pdpt:   .skip 4096
pd:     .skip 4096
    .popsection
    movl $pdpt + 7, pml4
    movl $pd + 7, pdpt
    mov $pd, %edi
    mov $0x87, %eax             /* P | RW | US | PS (2 MiB) */
    mov $512, %ecx
.Lpde\@:
    mov %eax, (%edi)
    movl $0, 4(%edi)
    add $0x200000, %eax
    add $8, %edi
    loop .Lpde\@
    mov %cr4, %eax
    or $CR4_PAE, %eax
    mov %eax, %cr4
    mov $pml4, %eax
    mov %eax, %cr3
    mov $MSR_EFER, %ecx
    rdmsr
    or $EFER_LME, %eax
    wrmsr
    mov %cr0, %eax
    or $(CR0_PG | CR0_PE), %eax
    mov %eax, %cr0
    ljmp $SEL_CODE64, $\target
.endm

/* First thing in 64-bit code: data segments and a fresh 64-bit stack. */
.macro LONG_ENTRY
    .code64
    mov $SEL_DATA, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    lea stack_top(%rip), %rsp
.endm

/* ------------------------------------------------------------------ */
/* 64-bit checks. CHECK a, b compares two 64-bit operands (not rsp-    */
/* relative, not r8/r9) and marks the current line failed on mismatch. */
/* LINE_BEGIN prints "FAIL " for a failed line; LINE_END prints " ok"  */
/* or counts the failure. FINISH prints "<name>: PASS|FAIL" and exits  */
/* with 0 or 1.                                                        */
/* ------------------------------------------------------------------ */
.macro CHECK_VARS
    .pushsection .data
    .balign 8
cur_fail:   .quad 0
fail_count: .quad 0
    .popsection
.endm

.macro CHECK actual, expected
    push %r8
    push %r9
    mov \actual, %r8
    mov \expected, %r9
    cmp %r9, %r8
    je .Lok\@
    movq $1, cur_fail(%rip)
.Lok\@:
    pop %r9
    pop %r8
.endm

.macro LINE_BEGIN
    cmpq $0, cur_fail(%rip)
    je .Lok\@
    PRINT "FAIL "
.Lok\@:
.endm

.macro LINE_END
    cmpq $0, cur_fail(%rip)
    jne .Lbad\@
    PRINT " ok\n"
    jmp .Ldone\@
.Lbad\@:
    PRINT "\n"
    incq fail_count(%rip)
    movq $0, cur_fail(%rip)
.Ldone\@:
.endm

.macro FINISH name
    cmpq $0, fail_count(%rip)
    jne .Lfail\@
    PRINT "\name: PASS\n"
    EXIT $0
.Lfail\@:
    PRINT "\name: FAIL\n"
    EXIT $1
.endm

/* ------------------------------------------------------------------ */
/* 64-bit IDT, exception stubs, TSS.                                   */
/*                                                                     */
/* Every vector 0-31, 0x80 and 0x81 gets a stub; all stubs go to one   */
/* handler that records the frame in last_* and then resumes at        */
/* resume_rip (set by TRY). An exception with resume_rip == 0 is       */
/* unexpected: it is reported and the guest exits with 1, except that  */
/* an unexpected #UD jumps to exc_hook if set (usermode uses ud2 to    */
/* return from ring 3).                                                */
/* Gates: interrupt gates, DPL0, except 0x80 which is DPL3.            */
/* ------------------------------------------------------------------ */

/* Vectors that push an error code. */
#define HAS_ERR(v) ((v) == 8 || (v) == 10 || (v) == 11 || (v) == 12 || (v) == 13 || (v) == 14 || (v) == 17 || (v) == 21 || (v) == 29 || (v) == 30)

.macro ISR_STUB v
isr_stub_\v:
    .if !HAS_ERR(\v)
    pushq $0                    /* dummy error code */
    .endif
    pushq $\v
    jmp isr_common
.endm

.macro IDT_RUNTIME
    .pushsection .data
    .balign 8
resume_rip: .quad 0             /* where the next exception resumes */
exc_hook:   .quad 0             /* if set, gets an unexpected #UD */
try_start:  .quad 0             /* address of the instruction under test */
try_rsp:    .quad 0             /* rsp when it ran */
last_vec:   .quad 0
last_err:   .quad 0
last_rip:   .quad 0
last_cs:    .quad 0
last_rflags: .quad 0
last_rsp:   .quad 0             /* rsp saved in the frame */
last_ss:    .quad 0
last_frame: .quad 0             /* address of the frame (the RIP slot) */
last_cr2:   .quad 0
isr_table:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad isr_stub_\v
    .endr
idt_ptr:
    .word 256 * 16 - 1
    .quad idt
    .balign 16
tss:
    .skip 104
    .popsection
    .pushsection .bss
    .balign 4096
idt:    .skip 256 * 16
    .popsection

    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,128,129
    ISR_STUB \v
    .endr

isr_common:
    /* stack: rax, vector, error, rip, cs, rflags, rsp, ss */
    push %rax
    cmpq $0, resume_rip(%rip)
    jne .Lrecord
    cmpq $6, 8(%rsp)            /* an unexpected #UD goes to exc_hook, */
    jne .Lrecord                /* if set, with last_* left untouched */
    mov exc_hook(%rip), %rax
    test %rax, %rax
    jz .Lrecord
    jmp *%rax
.Lrecord:
    mov 8(%rsp), %rax
    mov %rax, last_vec(%rip)
    mov 16(%rsp), %rax
    mov %rax, last_err(%rip)
    mov 24(%rsp), %rax
    mov %rax, last_rip(%rip)
    mov 32(%rsp), %rax
    mov %rax, last_cs(%rip)
    mov 40(%rsp), %rax
    mov %rax, last_rflags(%rip)
    mov 48(%rsp), %rax
    mov %rax, last_rsp(%rip)
    mov 56(%rsp), %rax
    mov %rax, last_ss(%rip)
    lea 24(%rsp), %rax
    mov %rax, last_frame(%rip)
    mov %cr2, %rax
    mov %rax, last_cr2(%rip)
    mov resume_rip(%rip), %rax
    test %rax, %rax
    jz .Lunexpected
    mov %rax, 24(%rsp)          /* resume after the instruction under test */
    movq $0, resume_rip(%rip)
    pop %rax
    add $16, %rsp               /* vector, error code */
    iretq
.Lunexpected:
    PRINT "FAIL unexpected exception: vector="
    PUTDEC last_vec(%rip)
    PRINT " err=0x"
    PUTHEX last_err(%rip)
    PRINT " rip=0x"
    PUTHEX last_rip(%rip)
    PRINT " cs=0x"
    PUTHEX last_cs(%rip)
    PRINT " cr2=0x"
    PUTHEX last_cr2(%rip)
    PRINT "\n"
    EXIT $1

/* idt_init: fill the gates and load the IDT. Clobbers nothing. */
idt_init:
    push %rax
    push %rcx
    push %rdx
    push %rdi
    xor %ecx, %ecx
.Lgates:
    lea isr_table(%rip), %rax
    mov (%rax, %rcx, 8), %rax
    mov $0x8e, %edx
    call set_gate
    inc %ecx
    cmp $32, %ecx
    jb .Lgates
    mov $128, %ecx
    lea isr_stub_128(%rip), %rax
    mov $0xee, %edx             /* DPL3: int 0x80 allowed from ring 3 */
    call set_gate
    mov $129, %ecx
    lea isr_stub_129(%rip), %rax
    mov $0x8e, %edx
    call set_gate
    lidt idt_ptr(%rip)
    pop %rdi
    pop %rdx
    pop %rcx
    pop %rax
    ret

/* set_gate: vector ecx, handler rax, type/attribute byte dl (IST 0). */
set_gate:
    push %rax
    push %rdi
    mov %ecx, %edi
    shl $4, %edi
    add $idt, %rdi
    mov %ax, (%rdi)             /* offset 15:0 */
    movw $SEL_CODE64, 2(%rdi)
    movb $0, 4(%rdi)            /* IST */
    mov %dl, 5(%rdi)            /* P, DPL, type */
    shr $16, %rax
    mov %ax, 6(%rdi)            /* offset 31:16 */
    shr $16, %rax
    mov %eax, 8(%rdi)           /* offset 63:32 */
    movl $0, 12(%rdi)
    pop %rdi
    pop %rax
    ret
.endm

/* Put the TSS into its GDT slot and load TR. Fill tss+TSS_RSP0/IST before
 * they are needed (the CPU reads them at each stack switch). */
.macro LOAD_TSS
    lea tss(%rip), %rax
    lea gdt_tss(%rip), %rdi
    movw $103, (%rdi)           /* limit */
    mov %ax, 2(%rdi)            /* base 15:0 */
    shr $16, %rax
    mov %al, 4(%rdi)            /* base 23:16 */
    movb $0x89, 5(%rdi)         /* present, DPL0, available 64-bit TSS */
    movb $0, 6(%rdi)
    mov %ah, 7(%rdi)            /* base 31:24 */
    shr $16, %rax
    mov %eax, 8(%rdi)           /* base 63:32 */
    movl $0, 12(%rdi)
    movw $104, tss+102(%rip)    /* I/O bitmap base beyond the limit: none */
    mov $SEL_TSS, %ax
    ltr %ax
.endm

/* TRY insn: run one instruction that is expected to raise an exception
 * (or trap). Records its address and rsp, arms resume_rip to the next
 * instruction and sets last_vec to -1 so that "nothing happened" shows.
 * Clobbers r15. Usable from ring 3 too (the variables are user pages). */
.macro TRY insn:vararg
    lea .Lstart\@(%rip), %r15
    mov %r15, try_start(%rip)
    lea .Lend\@(%rip), %r15
    mov %r15, resume_rip(%rip)
    mov %rsp, try_rsp(%rip)
    movq $-1, last_vec(%rip)
.Lstart\@:
    \insn
.Lend\@:
.endm

/* r15 = last_rip - try_start: where the pushed RIP points, relative to
 * the start of the instruction under test. */
.macro RIP_OFFSET
    mov last_rip(%rip), %r15
    sub try_start(%rip), %r15
.endm

/* Print "vector=N", or "vector=none" when TRY saw no exception. */
.macro PRINT_VEC
    PRINT "vector="
    cmpq $-1, last_vec(%rip)
    jne .Lnum\@
    PRINT "none"
    jmp .Ldone\@
.Lnum\@:
    PUTDEC last_vec(%rip)
.Ldone\@:
.endm

/* Print " rip=+N" with N from RIP_OFFSET (r15); " rip=?" if no exception. */
.macro PRINT_RIP
    cmpq $-1, last_vec(%rip)
    jne .Lnum\@
    PRINT " rip=?"
    jmp .Ldone\@
.Lnum\@:
    PRINT " rip=+"
    PUTDEC %r15
.Ldone\@:
.endm
