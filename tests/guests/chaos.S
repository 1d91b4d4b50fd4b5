/*
 * chaos: a hostile guest for Ember's chaos test. Seeded by "seed=N" on the
 * command line (decimal), it runs random code at CPL 0 in long mode, forever:
 *
 *   - Every one of the 256 vectors goes through IST1 to reset_world, which
 *     restores a sane machine (GDT, TSS, IDT, 4 GiB identity map, CR0/CR4/EFER,
 *     EOIs), writes random values to every kind of port and MMIO range Ember
 *     serves, fills two pages at CHUNK with fresh random code (random bytes
 *     salted with system instructions), loads random registers that mostly
 *     point into a scratch area, and IRETQs into the code with random flags.
 *   - The PIT, reprogrammed at every reset to tick at about 1 kHz, is the
 *     watchdog: its IRQ0 reaches the vCPU through the 8259 (vector 0x20) and
 *     as an NMI through the IOAPIC (pins 0 and 2), so code that loops or halts
 *     gets replaced even with interrupts off, unless it breaks the APIC.
 *
 * It prints "chaos: seed N" first and "chaos: K resets" every 256 resets.
 * It never exits by itself on purpose; the random code or random port writes
 * may power it off, reset it, end it through the debug-exit port, or triple
 * fault it. The test decides what counts as a VMM failure.
 */
#include "common.h"

#define CHUNK           0x300000        /* 2 pages of random code */
#define SCRATCH         0x400000        /* 4 MiB the registers point into */
#define SCRATCH_STACK   0x600000
#define LAPIC_BASE      0xfee00000
#define IOAPIC_BASE     0xfec00000
#define TESTDEV_MMIO    0xff000000
#define UNASSIGNED_MMIO 0xd0000000
#define CR0_SANE        0x80010033      /* PG WP NE ET MP PE */
#define CR4_SANE        0x620           /* OSXMMEXCPT OSFXSR PAE */
#define EFER_SANE       0x901           /* NXE LME SCE (LMA follows) */
#define RFLAGS_RANDOM   0x0cd5          /* OF DF SF ZF AF PF CF */
#define RFLAGS_IF       0x200
#define TEMPLATES       48              /* entries in the template table */
#define DEADLY          9               /* the first ones: they load system state that
                                           can stop exceptions from being delivered */

    MULTIBOOT_HEADER
    ENTRY32
    call parse_seed
    ENTER_LONG main64

main64:
    LONG_ENTRY
    PRINT "chaos: seed "
    PUTDEC seed(%rip)
    PRINT "\n"
    mov seed(%rip), %rax
    mov $0x9e3779b97f4a7c15, %rdx
    imul %rdx, %rax
    or $1, %rax                 /* xorshift state must not be zero */
    mov %rax, rng(%rip)
    jmp reset_world

/* ---- the world, restored at every vector ---- */

reset_world:
    lgdt gdt_ptr(%rip)
    LONG_ENTRY
    lea ist_top(%rip), %rsp
    call build_page_tables
    mov $world_pml4, %eax
    mov %rax, %cr3
    mov $CR4_SANE, %eax
    mov %rax, %cr4
    mov $CR0_SANE, %eax
    mov %rax, %cr0
    mov $MSR_EFER, %ecx
    mov $EFER_SANE, %eax
    xor %edx, %edx
    wrmsr
    call build_idt
    lea ist_top(%rip), %rax
    mov %rax, tss+TSS_IST1(%rip)
    LOAD_TSS
    call start_watchdog
    mov $LAPIC_BASE + 0xb0, %eax
    movl $0, (%rax)             /* and to the local APIC */
    incq resets(%rip)
    testq $255, resets(%rip)
    jnz 1f
    call report
1:  call poke_ports
    call poke_mmio
    call make_chunk
    jmp enter_chunk

/* start_watchdog: both 8259s initialised (vectors 0x20 and 0x28, only IRQ0
 * unmasked, which also ends any interrupt in service), IOAPIC pins 0 and 2 as
 * edge-triggered NMIs to APIC 0, and PIT channel 0 as a rate generator at
 * about 1 kHz. */
start_watchdog:
    lea watchdog_ports(%rip), %rsi
    mov $14, %ecx
1:  movzwl (%rsi), %edx
    mov 2(%rsi), %al
    out %al, %dx
    add $4, %rsi
    loop 1b
    mov $IOAPIC_BASE, %edi
    lea watchdog_ioapic(%rip), %rsi
    mov $4, %ecx
2:  mov (%rsi), %eax
    mov %eax, (%rdi)                    /* IOREGSEL */
    mov 4(%rsi), %eax
    mov %eax, 0x10(%rdi)                /* IOWIN */
    add $8, %rsi
    loop 2b
    ret

/* report: "chaos: K resets" on a UART put back in a printable state. */
report:
    mov $0x3fb, %dx
    mov $3, %al                 /* 8N1, DLAB off */
    out %al, %dx
    mov $0x3f9, %dx
    xor %al, %al                /* no UART interrupts */
    out %al, %dx
    mov $0x3fc, %dx
    out %al, %dx                /* MCR: no loopback */
    PRINT "chaos: "
    PUTDEC resets(%rip)
    PRINT " resets\n"
    ret

/* build_page_tables: identity map of 4 GiB with 2 MiB pages. */
build_page_tables:
    lea world_pdpt(%rip), %rax
    or $3, %rax
    mov %rax, world_pml4(%rip)
    lea world_pds(%rip), %rdi
    xor %ecx, %ecx
1:  mov %rcx, %rdx                      /* pdpt[i] -> pds + i * 4096 */
    shl $12, %rdx
    lea 3(%rdi, %rdx), %rax
    mov %rax, world_pdpt(, %rcx, 8)
    inc %ecx
    cmp $4, %ecx
    jb 1b
    mov $0x83, %eax                     /* P RW PS */
    mov $2048, %ecx
2:  mov %rax, (%rdi)
    add $0x200000, %rax
    add $8, %rdi
    loop 2b
    ret

/* build_idt: all 256 gates to reset_world through IST1. */
build_idt:
    lea reset_world(%rip), %rax
    lea idt(%rip), %rdi
    mov $256, %ecx
1:  mov %ax, (%rdi)
    movw $SEL_CODE64, 2(%rdi)
    movw $0x8e01, 4(%rdi)               /* IST 1, present interrupt gate */
    mov %rax, %rdx
    shr $16, %rdx
    mov %dx, 6(%rdi)
    shr $16, %rdx
    mov %edx, 8(%rdi)
    movl $0, 12(%rdi)
    add $16, %rdi
    loop 1b
    lidt idt_ptr(%rip)
    ret

/* rand: rax = the next value of the xorshift64 stream. */
rand:
    push %rdx
    mov rng(%rip), %rax
    test %rax, %rax
    jnz 1f
    mov $0x2545f4914f6cdd1d, %rax       /* random code zeroed the state */
1:  mov %rax, %rdx
    shl $13, %rdx
    xor %rdx, %rax
    mov %rax, %rdx
    shr $7, %rdx
    xor %rdx, %rax
    mov %rax, %rdx
    shl $17, %rdx
    xor %rdx, %rax
    mov %rax, rng(%rip)
    pop %rdx
    ret

/* poke_ports: 0-7 writes of random 1, 2 or 4-byte values to ports Ember
 * serves (or, one time in 8, any port). Writes that would end the VM at once
 * (i8042 reset, ACPI sleep and reset registers) pass one time in 64; the
 * debug-exit port is never written here. */
poke_ports:
    call rand
    mov %rax, %r8
    and $7, %r8d
1:  test %r8d, %r8d
    jz 9f
    dec %r8d
    call rand
    mov %rax, %r9                       /* choice bits */
    call rand
    mov %rax, %r10                      /* value */
    mov %r9, %rcx
    and $15, %ecx
    lea port_table(%rip), %rsi
    movzwl (%rsi, %rcx, 4), %edx        /* base */
    movzwl 2(%rsi, %rcx, 4), %ecx       /* count */
    mov %r9, %rax
    shr $8, %rax
    and $0xffff, %eax
    test %ecx, %ecx
    jz 2f                               /* count 0: any port */
    push %rdx
    xor %edx, %edx
    div %ecx
    mov %edx, %eax
    pop %rdx
    add %eax, %edx
    jmp 3f
2:  mov %eax, %edx
3:  cmp $EXIT_PORT, %dx
    je 1b
    cmp $0x64, %dx
    je 4f
    cmp $0x600, %dx
    jb 5f
    cmp $0x602, %dx
    ja 5f
4:  mov %r9, %rax
    shr $32, %rax
    test $63, %eax
    jnz 1b
5:  mov %r10, %rax
    mov %r9, %rcx
    shr $40, %rcx
    and $3, %ecx
    jz 6f
    cmp $1, %ecx
    je 7f
    out %al, %dx
    jmp 1b
6:  out %ax, %dx
    jmp 1b
7:  out %eax, %dx
    jmp 1b
9:  ret

/* poke_mmio: 0-3 random 32-bit writes to the local APIC, the IOAPIC (an index,
 * then its window), pc-testdev's memory and an unassigned address, and one
 * read of each kind. */
poke_mmio:
    call rand
    mov %rax, %r8
    and $3, %r8d
1:  test %r8d, %r8d
    jz 9f
    dec %r8d
    call rand
    mov %rax, %r9
    call rand
    mov %rax, %r10
    mov %r9, %rcx
    and $3, %ecx
    mov %r9, %rdi
    shr $8, %rdi
    cmp $1, %ecx
    je 2f
    cmp $2, %ecx
    je 3f
    cmp $3, %ecx
    je 4f
    and $0x3f0, %edi                    /* local APIC register */
    add $LAPIC_BASE, %edi
    jmp 5f
2:  mov $IOAPIC_BASE, %edi
    mov %r9, %rax
    shr $32, %rax
    and $0x3f, %eax
    mov %eax, (%rdi)                    /* IOREGSEL */
    add $0x10, %edi                     /* IOWIN */
    jmp 5f
3:  and $0xfffc, %edi
    add $TESTDEV_MMIO, %edi
    jmp 5f
4:  and $0xfffc, %edi
    add $UNASSIGNED_MMIO, %edi
5:  mov %r10d, (%rdi)
    mov (%rdi), %eax
    jmp 1b
9:  ret

/* make_chunk: CHUNK..CHUNK+8 KiB of random bytes, then 64 system
 * instructions from the template table at random places; the deadly ones
 * are picked one time in eight as often as the others. */
make_chunk:
    mov $CHUNK, %edi
    mov $1024, %ecx
1:  call rand
    mov %rax, (%rdi)
    add $8, %rdi
    loop 1b
    mov $64, %ecx
2:  call rand
    mov %rax, %r11                      /* bits 60-62 decide about deadly ones */
    mov $CHUNK, %edi
    mov %rax, %rsi
    shr $16, %rsi
    and $0x1ffc, %esi
    add %rsi, %rdi                      /* where */
    and $0xffff, %eax
    xor %edx, %edx
    push %rcx
    mov $TEMPLATES, %ecx
    div %ecx
    pop %rcx
    cmp $DEADLY, %edx
    jae 4f
    shr $60, %r11
    test $7, %r11d
    jz 4f
    add $DEADLY, %edx                   /* a benign one instead */
4:
    lea templates(%rip), %rsi
    mov 1(%rsi, %rdx, 4), %ax           /* first two bytes */
    mov %ax, (%rdi)
    mov 3(%rsi, %rdx, 4), %al           /* third (the rest stays random) */
    cmpb $3, (%rsi, %rdx, 4)
    jne 3f
    mov %al, 2(%rdi)
3:  loop 2b
    ret

/* enter_chunk: random registers, mostly pointing into SCRATCH, and IRETQ to
 * a random place in the first page of CHUNK with random flags. */
enter_chunk:
    pushq $SEL_DATA
    call rand
    and $0xffff0, %eax
    add $SCRATCH_STACK, %rax
    push %rax                           /* RSP */
    call rand
    mov %rax, %rdx
    and $RFLAGS_RANDOM, %eax
    or $2, %eax
    test $0x700, %edx                   /* IF seven times in eight */
    jz 1f
    or $RFLAGS_IF, %eax
1:  push %rax                           /* RFLAGS */
    pushq $SEL_CODE64
    call rand
    and $0xff, %eax
    add $CHUNK, %rax
    push %rax                           /* RIP */
    .irp reg, rbx, rcx, rdx, rsi, rdi, rbp, r8, r9, r10, r11, r12, r13, r14, r15
    call random_register
    mov %rax, %\reg
    .endr
    and $0xffff, %ecx                   /* mostly modest counts for REP */
    call random_register
    iretq

/* random_register: rax = a random value; three times in four an address in
 * SCRATCH. */
random_register:
    call rand
    test $3, %al
    jz 1f
    and $0x3ffff8, %eax
    add $SCRATCH, %rax
1:  ret

/* ---- 32-bit: seed = N from "seed=N" (0 without one) ---- */
    .code32
parse_seed:
    push %eax
    push %edx
    mov $0x64656573, %edx               /* "seed" */
    call cmdline_number
    jc 1f
    mov %eax, seed
1:  pop %edx
    pop %eax
    ret

    CMDLINE_LIB
    .code64
    SERIAL_LIB 64, r

    .section .rodata
    .balign 4
/* Ports Ember serves (base, count); count 0 means any of the 65536. */
port_table:
    .word 0x3f8, 8,  0x60, 1,  0x64, 1,  0x70, 2
    .word 0x20, 2,   0xa0, 2,  0x40, 4,  0x61, 1
    .word 0x600, 3,  0xe0, 4,  0x3f8, 8, 0x20, 2
    .word 0x40, 4,   0x70, 2,  0, 0,     0, 0
/* (port, value) pairs written by start_watchdog. */
watchdog_ports:
    .word 0x20, 0x11,  0x21, 0x20,  0x21, 0x04,  0x21, 0x01,  0x21, 0xfe
    .word 0xa0, 0x11,  0xa1, 0x28,  0xa1, 0x02,  0xa1, 0x01,  0xa1, 0xff
    .word 0x43, 0x34,  0x40, 0xa9,  0x40, 0x04,  0x20, 0x20
/* (IOAPIC register, value) pairs written by start_watchdog: redirection
 * entries 0 and 2, NMI delivery to physical APIC 0. */
watchdog_ioapic:
    .long 0x11, 0,  0x10, 0x400,  0x15, 0,  0x14, 0x400
/* System instructions salted into the random code: length, then up to 3
 * bytes (a shorter one is followed by random bytes). */
templates:
    .byte 2, 0x0f, 0x30, 0      /* wrmsr */
    .byte 3, 0x0f, 0x22, 0xc0   /* mov cr0, rax */
    .byte 3, 0x0f, 0x22, 0xd8   /* mov cr3, rax */
    .byte 3, 0x0f, 0x22, 0xe0   /* mov cr4, rax */
    .byte 3, 0x0f, 0x01, 0x10   /* lgdt [rax] */
    .byte 3, 0x0f, 0x01, 0x18   /* lidt [rax] */
    .byte 3, 0x0f, 0x00, 0xd8   /* ltr ax */
    .byte 3, 0x0f, 0x00, 0xd0   /* lldt ax */
    .byte 2, 0x8e, 0xd0, 0      /* mov ss, ax */
    .byte 2, 0x0f, 0x32, 0      /* rdmsr */
    .byte 3, 0x44, 0x0f, 0x22   /* mov cr8, r.. */
    .byte 2, 0xf3, 0xa4, 0      /* rep movsb */
    .byte 2, 0xf3, 0xaa, 0      /* rep stosb */
    .byte 2, 0xf3, 0x6c, 0      /* rep insb */
    .byte 2, 0xf3, 0x6e, 0      /* rep outsb */
    .byte 3, 0xf3, 0x48, 0xa5   /* rep movsq */
    .byte 2, 0xf3, 0xa6, 0      /* repe cmpsb */
    .byte 1, 0xee, 0, 0         /* out dx, al */
    .byte 1, 0xef, 0, 0         /* out dx, eax */
    .byte 1, 0xec, 0, 0         /* in al, dx */
    .byte 2, 0x66, 0xed, 0      /* in ax, dx */
    .byte 1, 0xcd, 0, 0         /* int n */
    .byte 1, 0xfb, 0, 0         /* sti */
    .byte 1, 0xfa, 0, 0         /* cli */
    .byte 1, 0xf4, 0, 0         /* hlt */
    .byte 2, 0x48, 0xcf, 0      /* iretq */
    .byte 2, 0x0f, 0x05, 0      /* syscall */
    .byte 3, 0x48, 0x0f, 0x07   /* sysretq */
    .byte 2, 0x0f, 0x34, 0      /* sysenter */
    .byte 3, 0x0f, 0x01, 0xf8   /* swapgs */
    .byte 2, 0x0f, 0xa2, 0      /* cpuid */
    .byte 3, 0x0f, 0x01, 0xf9   /* rdtscp */
    .byte 3, 0x0f, 0xae, 0x00   /* fxsave [rax] */
    .byte 3, 0x0f, 0xae, 0x08   /* fxrstor [rax] */
    .byte 3, 0x0f, 0xae, 0x10   /* ldmxcsr [rax] */
    .byte 2, 0x8e, 0xd8, 0      /* mov ds, ax */
    .byte 3, 0x0f, 0x01, 0x38   /* invlpg [rax] */
    .byte 3, 0x0f, 0xc7, 0x08   /* cmpxchg8b [rax] */
    .byte 3, 0x48, 0x0f, 0xc7   /* cmpxchg16b (ModRM random) */
    .byte 2, 0xf0, 0x0f, 0      /* lock 0f .. */
    .byte 1, 0x9d, 0, 0         /* popf */
    .byte 1, 0xcc, 0, 0         /* int3 */
    .byte 1, 0xf1, 0, 0         /* int1 */
    .byte 2, 0x0f, 0x0b, 0      /* ud2 */
    .byte 2, 0x0f, 0x09, 0      /* wbinvd */
    .byte 2, 0xdb, 0xe3, 0      /* fninit */
    .byte 2, 0xd9, 0xfa, 0      /* fsqrt */
    .byte 2, 0x0f, 0x31, 0      /* rdtsc */

    .data
    .balign 8
seed:   .quad 0
rng:    .quad 0
resets: .quad 0
idt_ptr:
    .word 256 * 16 - 1
    .quad idt
    .balign 16
tss:    .skip 104

    .bss
    .balign 4096
world_pml4: .skip 4096
world_pdpt: .skip 4096
world_pds:  .skip 4 * 4096
idt:    .skip 256 * 16
ist:    .skip 16384
ist_top:
