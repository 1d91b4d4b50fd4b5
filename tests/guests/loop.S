/*
 * loop: the benchmark loop. 50,000,000 iterations of a 7-instruction integer body
 * (ALU, a load, a store, LEA, a counted branch): 350,000,000 guest instructions in ring 3 of
 * long mode, then back to ring 0 through #UD to print "loop: done" and exit 0. Ring 3
 * because nested KVM (kvm_pvm) runs only user code natively; on hardware KVM it makes no
 * difference. bench/mips.sh divides the instruction count by the run time.
 */
#include "common.h"

#define ITERATIONS 50000000
#define USER_CS    (SEL_UCODE64 | 3)
#define USER_SS    (SEL_UDATA | 3)
/* Data the loop touches, outside the 2 MiB page holding the page tables: nested shadow
 * paging write-protects that page, which would turn every store into an exit. */
#define SCRATCH    0x800000

    MULTIBOOT_HEADER
    ENTRY32
    ENTER_LONG main64

    .pushsection .bss
    .balign 16
kstack:     .skip 4096
kstack_top:
    .popsection

main64:
    LONG_ENTRY
    call idt_init
    lea kstack_top(%rip), %rax
    mov %rax, tss+TSS_RSP0(%rip)
    LOAD_TSS
    lea done(%rip), %rax
    mov %rax, exc_hook(%rip)
    pushq $USER_SS
    lea stack_top(%rip), %rax
    push %rax
    pushq $0x2                  /* RFLAGS */
    pushq $USER_CS
    lea user(%rip), %rax
    push %rax
    iretq

user:
    mov $SCRATCH, %rsi
    mov $1, %rax
    mov $3, %rbx
    mov $ITERATIONS, %r8
1:
    add %rbx, %rax
    xor %rax, %rcx
    mov %rcx, (%rsi)
    mov 8(%rsi), %rdx
    lea 1(%rbx,%rdx,2), %rbx
    dec %r8
    jnz 1b
    ud2                         /* back to ring 0 */

done:
    PRINT "loop: done\n"
    EXIT $0

    IDT_RUNTIME
    SERIAL_LIB 64, r
