/*
 * stall: keeps its vCPU busy in one long instruction or loop, chosen by the
 * word "stall=K" on the command line, to show that the VMM can still stop the
 * VM and still deliver interrupts. 32-bit protected mode, paging off. Prints
 * "stall: K" first, then never prints again unless K is 'q'.
 *
 *   l  REP LODSB, ECX = 0xffffffff, from RAM on into unassigned addresses
 *   i  REP INSB from unassigned port 0x2f0 to unassigned MMIO at 0xd0000000
 *   o  REP OUTSB from RAM to unassigned port 0x2f0
 *   s  REP STOSB to unassigned MMIO
 *   m  REP MOVSB from unassigned MMIO to unassigned MMIO
 *   h  CLI; HLT
 *   j  CLI; JMP to itself
 *   q  the BIOS timer interrupt (IRQ0 at vector 8, 18.2 Hz) enabled, then
 *      REP LODSB as for 'l': its handler prints "stall: interrupted" and exits
 *      with 0, so the interrupt must arrive in the middle of the instruction.
 * Without a known K it prints "stall: ?" and exits with 1.
 */
#include "common.h"

#define UNASSIGNED_PORT 0x2f0
#define UNASSIGNED_MMIO 0xd0000000
#define BIOS_IRQ0_VECTOR 8

    MULTIBOOT_HEADER
    ENTRY32

    call parse_cmdline
    PRINT32 "stall: "
    movzbl kind, %eax
    call putc32
    PRINT32 "\n"
    mov $0xffffffff, %ecx
    movzbl kind, %eax
    cmp $'l', %al
    je lodsb_
    cmp $'i', %al
    je insb_
    cmp $'o', %al
    je outsb_
    cmp $'s', %al
    je stosb_
    cmp $'m', %al
    je movsb_
    cmp $'h', %al
    je hlt_
    cmp $'j', %al
    je jmp_
    cmp $'q', %al
    je irq_
    EXIT $1

lodsb_:
    xor %esi, %esi
    rep lodsb
    jmp done
insb_:
    mov $UNASSIGNED_MMIO, %edi
    mov $UNASSIGNED_PORT, %dx
    rep insb
    jmp done
outsb_:
    xor %esi, %esi
    mov $UNASSIGNED_PORT, %dx
    rep outsb
    jmp done
stosb_:
    mov $UNASSIGNED_MMIO, %edi
    rep stosb
    jmp done
movsb_:
    mov $UNASSIGNED_MMIO, %esi
    mov $UNASSIGNED_MMIO + 0x1000000, %edi
    rep movsb
    jmp done
hlt_:
    cli
    hlt
    jmp done
jmp_:
    cli
1:  jmp 1b
irq_:
    mov $BIOS_IRQ0_VECTOR * 8 + idt, %edi
    mov $on_irq, %eax
    mov %ax, (%edi)                 /* offset 15:0 */
    movw $SEL_CODE32, 2(%edi)
    movw $0x8e00, 4(%edi)           /* present 32-bit interrupt gate, DPL 0 */
    shr $16, %eax
    mov %ax, 6(%edi)                /* offset 31:16 */
    lidt idt_ptr
    xor %esi, %esi
    sti
    rep lodsb
    cli
    jmp done

on_irq:
    PRINT32 "stall: interrupted\n"
    EXIT $0

done:
    PRINT32 "stall: the instruction finished\n"
    EXIT $1

/* parse_cmdline: kind = the character after "stall=" on the Multiboot command
 * line, or '?'. */
parse_cmdline:
    pusha
    movb $'?', kind
    MB_CMDLINE 9f
1:  cmpb $0, (%esi)
    je 9f
    cmpl $0x6c617473, (%esi)        /* "stal" */
    jne 2f
    cmpw $0x3d6c, 4(%esi)           /* "l=" */
    jne 2f
    movzbl 6(%esi), %eax
    mov %al, kind
    jmp 9f
2:  inc %esi
    jmp 1b
9:  popa
    ret

    SERIAL_LIB 32, e

    .data
kind:   .byte 0
    .balign 8
idt_ptr:
    .word 256 * 8 - 1
    .long idt
    .bss
    .balign 8
idt:    .skip 256 * 8
