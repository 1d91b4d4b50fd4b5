/*
 * probe: 8/16/32-bit reads of an I/O port and of an MMIO address that have
 * nothing behind them, in 32-bit protected mode with paging off. A VMM
 * returns all ones for both. (QEMU 7.2 returns all ones for the port but
 * 0 for unassigned MMIO, with TCG and KVM alike.) Port 0x2f0 is unused on
 * a PC (COM2 is 0x2f8) and unbacked in QEMU too; 0xd0000000 is in the PCI
 * hole below 4 GiB.
 *
 * Expected output:
 *   port 0x2f0: inb=0xff inw=0xffff inl=0xffffffff
 *   mmio 0xd0000000: readb=0xff readw=0xffff readl=0xffffffff
 *   probe: done
 * Exit 0 whatever the values (the test compares the output).
 */
#include "common.h"

#ifndef PROBE_PORT
#define PROBE_PORT  0x2f0
#endif
#ifndef PROBE_MMIO
#define PROBE_MMIO  0xd0000000
#endif

    MULTIBOOT_HEADER
    ENTRY32

    mov $PROBE_PORT, %edx
    PRINT32 "port 0x"
    PUTHEX32 %edx
    PRINT32 ": inb=0x"
    xor %eax, %eax
    inb %dx, %al
    PUTHEX32 %eax
    PRINT32 " inw=0x"
    xor %eax, %eax
    inw %dx, %ax
    PUTHEX32 %eax
    PRINT32 " inl=0x"
    inl %dx, %eax
    PUTHEX32 %eax
    PRINT32 "\n"

    mov $PROBE_MMIO, %ebx
    PRINT32 "mmio 0x"
    PUTHEX32 %ebx
    PRINT32 ": readb=0x"
    movzbl (%ebx), %eax
    PUTHEX32 %eax
    PRINT32 " readw=0x"
    movzwl (%ebx), %eax
    PUTHEX32 %eax
    PRINT32 " readl=0x"
    movl (%ebx), %eax
    PUTHEX32 %eax
    PRINT32 "\n"

    PRINT32 "probe: done\n"
    EXIT $0

    SERIAL_LIB 32, e
