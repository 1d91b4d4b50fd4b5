/*
 * smp: every processor the ACPI MADT describes comes up. 32-bit protected
 * mode, paging off, on the BSP and on every AP.
 *
 *   1. RSDP: scan 0xe0000-0xfffff on 16-byte boundaries for "RSD PTR "
 *      with a valid checksum over the first 20 bytes (and, for revision
 *      >= 2, over its full length). XSDT if revision >= 2 and the XSDT
 *      address is set and below 4 GiB, else RSDT; its checksum is checked.
 *      Its "APIC" entry is the MADT; checksum checked; the APIC IDs of
 *      enabled Processor Local APIC entries (type 0, flags bit 0) are
 *      collected in table order.
 *   2. xAPIC at 0xfee00000: the BSP software-enables its LAPIC (SVR), copies
 *      the real-mode trampoline to 0x8000 and sends INIT (all excluding
 *      self, level, assert), then STARTUP with vector 0x08 (all excluding
 *      self). If not all APs are up after 2^20 polls it sends a second
 *      STARTUP and polls up to 2^24 more times. No timing values are
 *      printed: the output depends only on the firmware tables.
 *   3. Each AP: real mode at 0800:0000 -> lgdt (the guest's GDT) -> 32-bit
 *      protected mode; reads its LAPIC ID (0xfee00020 bits 31:24); sets its
 *      bit in online_map and increments ap_count (both lock'ed, in that
 *      order); then cli; hlt forever.
 *   4. The BSP adds its own LAPIC ID to online_map, and once ap_count
 *      reaches N-1 compares online_map with the MADT's APIC IDs.
 *
 * Expected output with 4 CPUs (QEMU -smp 4: APIC IDs 0-3):
 *   madt: 4 cpus, apic ids 0 1 2 3
 *   online: 4 cpus, apic ids 0 1 2 3
 *   smp: PASS
 * With 1 CPU (no IPIs are sent):
 *   madt: 1 cpus, apic ids 0
 *   online: 1 cpus, apic ids 0
 *   smp: PASS
 * Exit 0. Failures print a "FAIL ..." line (e.g. "FAIL timeout: 3 of 4 cpus
 * online"), then "smp: FAIL", and exit with 1.
 */
#include "common.h"

#define LAPIC_ID        0xfee00020      /* bits 31:24 */
#define LAPIC_SVR       0xfee000f0
#define LAPIC_ICR_LO    0xfee00300      /* writing it sends the IPI */
#define LAPIC_ICR_HI    0xfee00310
#define SVR_ENABLE      (1 << 8)
#define SVR_VECTOR      0xff
#define ICR_PENDING     (1 << 12)       /* delivery status */
/* Destination shorthand 11b (all excluding self) = bits 19:18, trigger
 * mode level = bit 15, level assert = bit 14, delivery mode = bits 10:8. */
#define ICR_ALL_BUT_SELF 0x000c0000
#define ICR_LEVEL       (1 << 15)
#define ICR_ASSERT      (1 << 14)
#define ICR_DM_INIT     0x500
#define ICR_DM_STARTUP  0x600

#define TRAMP_BASE      0x8000          /* AP real-mode entry, 0800:0000 */
#define SIPI_VECTOR     (TRAMP_BASE >> 12)

/* Poll bounds. Under QEMU the APs are all up within 2^16 polls (TCG) or
 * 2^11 (KVM), but one poll costs from a few ns (hardware) to ~0.3 us (TCG,
 * where pause leaves the translated block) and ~3 us (nested KVM with
 * paging off): 2^20 + 2^24 polls give up after ~5 s under TCG. */
#define WAIT_FIRST      (1 << 20)       /* polls after the first STARTUP */
#define WAIT_SECOND     (1 << 24)       /* polls after the second one */
#define ICR_WAIT        (1 << 20)       /* polls for the delivery status */

#define SIG_RSD         0x20445352      /* "RSD " */
#define SIG_PTR         0x20525450      /* "PTR " */
#define SIG_RSDT        0x54445352      /* "RSDT" */
#define SIG_XSDT        0x54445358      /* "XSDT" */
#define SIG_APIC        0x43495041      /* "APIC" */

    MULTIBOOT_HEADER
    ENTRY32

    .pushsection .data
    .balign 64
ap_count:   .long 0             /* APs that reached 32-bit PM */
    .balign 4
online_map: .skip 32            /* bit per online APIC ID (0-255) */
madt_map:   .skip 32            /* bit per enabled MADT APIC ID */
madt_count: .long 0             /* N */
madt_ids:   .skip 256           /* APIC IDs in MADT order */
    .popsection

/* Print a 32-bit value (register, immediate or memory) in decimal. */
.macro PUTDEC32 v
    push %eax
    mov \v, %eax
    call putdec32
    pop %eax
.endm

/* Print "FAIL <msg>" and a newline, then fail. */
.macro FAIL32 msg
    PRINT32 "FAIL \msg\n"
    jmp fail
.endm

    /* ---- 1. ACPI: RSDP -> RSDT/XSDT -> MADT ---- */
    call find_rsdp
    test %esi, %esi
    jnz 1f
    FAIL32 "rsdp: none with a valid checksum in 0xe0000-0xfffff"
1:  mov 16(%esi), %ebx          /* RSDT address */
    mov $4, %ebp                /* entry size */
    mov $SIG_RSDT, %edx
    cmpb $2, 15(%esi)           /* revision */
    jb 2f
    cmpl $0, 28(%esi)           /* XSDT above 4 GiB: use the RSDT */
    jne 2f
    cmpl $0, 24(%esi)
    je 2f
    mov 24(%esi), %ebx
    mov $8, %ebp
    mov $SIG_XSDT, %edx
2:  test %ebx, %ebx
    jnz 3f
    FAIL32 "rsdp: no rsdt/xsdt address"
3:  cmp %edx, (%ebx)
    je 4f
    FAIL32 "rsdt/xsdt: bad signature"
4:  mov 4(%ebx), %ecx           /* length */
    cmp $36, %ecx
    jae 5f
    FAIL32 "rsdt/xsdt: bad length"
5:  mov %ebx, %esi
    call acpi_sum
    test %al, %al
    jz 6f
    FAIL32 "rsdt/xsdt: bad checksum"
6:  lea 36(%ebx), %edi          /* entries */
    sub $36, %ecx
7:  cmp %ebp, %ecx
    jb 9f
    mov (%edi), %esi
    cmp $8, %ebp
    jne 8f
    cmpl $0, 4(%edi)            /* a table above 4 GiB is not ours */
    jne 10f
8:  test %esi, %esi
    jz 10f
    cmpl $SIG_APIC, (%esi)
    je madt_found
10: add %ebp, %edi
    sub %ebp, %ecx
    jmp 7b
9:  FAIL32 "madt: no APIC table in the rsdt/xsdt"

madt_found:                     /* esi = MADT */
    mov 4(%esi), %ecx
    cmp $44, %ecx
    jae 1f
    FAIL32 "madt: bad length"
1:  call acpi_sum
    test %al, %al
    jz 2f
    FAIL32 "madt: bad checksum"
2:  lea (%esi, %ecx), %edx      /* end of table */
    lea 44(%esi), %edi          /* first entry */
3:  lea 2(%edi), %eax
    cmp %edx, %eax
    ja madt_done                /* no room for another entry header */
    movzbl 1(%edi), %ecx        /* entry length */
    cmp $2, %ecx
    jb madt_bad_entry
    lea (%edi, %ecx), %eax
    cmp %edx, %eax
    ja madt_bad_entry
    cmpb $0, (%edi)             /* Processor Local APIC */
    jne 4f
    cmp $8, %ecx
    jb madt_bad_entry
    testb $1, 4(%edi)           /* enabled */
    jz 4f
    movzbl 3(%edi), %eax        /* APIC ID */
    bts %eax, madt_map
    jc madt_dup
    mov madt_count, %ebx
    mov %al, madt_ids(%ebx)
    incl madt_count
4:  add %ecx, %edi
    jmp 3b
madt_bad_entry:
    FAIL32 "madt: bad entry length"
madt_dup:
    PRINT32 "FAIL madt: duplicate apic id "
    PUTDEC32 %eax
    PRINT32 "\n"
    jmp fail

madt_done:
    PRINT32 "madt: "
    PUTDEC32 madt_count
    PRINT32 " cpus, apic ids"
    xor %ebx, %ebx
1:  cmp madt_count, %ebx
    jae 2f
    mov $' ', %al
    call putc32
    movzbl madt_ids(%ebx), %eax
    call putdec32
    inc %ebx
    jmp 1b
2:  PRINT32 "\n"
    cmpl $0, madt_count
    jne 3f
    FAIL32 "madt: no enabled processor local apic"
3:

    /* ---- 2. BSP: own LAPIC ID, then INIT + STARTUP to the others ---- */
    mov LAPIC_ID, %eax
    shr $24, %eax
    lock btsl %eax, online_map
    cmpl $1, madt_count
    je all_online               /* uniprocessor: nothing to start */

    mov LAPIC_SVR, %eax         /* software-enable the local APIC */
    and $~0xff, %eax
    or $(SVR_ENABLE | SVR_VECTOR), %eax
    mov %eax, LAPIC_SVR

    mov $tramp, %esi            /* the AP trampoline, at 0x8000 */
    mov $TRAMP_BASE, %edi
    mov $(tramp_end - tramp), %ecx
    rep movsb

    mov $(ICR_ALL_BUT_SELF | ICR_LEVEL | ICR_ASSERT | ICR_DM_INIT), %eax
    call send_ipi
    mov $(ICR_ALL_BUT_SELF | ICR_ASSERT | ICR_DM_STARTUP | SIPI_VECTOR), %eax
    call send_ipi
    mov $WAIT_FIRST, %ecx
    call wait_aps
    jnc all_online
    mov $(ICR_ALL_BUT_SELF | ICR_ASSERT | ICR_DM_STARTUP | SIPI_VECTOR), %eax
    call send_ipi
    mov $WAIT_SECOND, %ecx
    call wait_aps
    jnc all_online
    PRINT32 "FAIL timeout: "
    mov ap_count, %eax
    inc %eax
    PUTDEC32 %eax
    PRINT32 " of "
    PUTDEC32 madt_count
    PRINT32 " cpus online\n"
    jmp fail

    /* ---- 4. compare what came up with the MADT ---- */
all_online:
    mov $online_map, %esi
    call map_count
    mov %eax, %edx              /* distinct online APIC IDs */
    PRINT32 "online: "
    PUTDEC32 %edx
    PRINT32 " cpus, apic ids"
    xor %ebx, %ebx
1:  bt %ebx, online_map
    jnc 2f
    mov $' ', %al
    call putc32
    PUTDEC32 %ebx
2:  inc %ebx
    cmp $256, %ebx
    jb 1b
    PRINT32 "\n"
    mov ap_count, %eax          /* two CPUs with one APIC ID? */
    inc %eax
    cmp %edx, %eax
    je 3f
    PRINT32 "FAIL online: "
    PUTDEC32 %eax
    PRINT32 " cpus reported, "
    PUTDEC32 %edx
    PRINT32 " distinct apic ids\n"
    jmp fail
3:  xor %ebx, %ebx
4:  mov online_map(, %ebx, 4), %eax
    cmp madt_map(, %ebx, 4), %eax
    jne 5f
    inc %ebx
    cmp $8, %ebx
    jb 4b
    PRINT32 "smp: PASS\n"
    EXIT $0
5:  FAIL32 "online apic ids differ from the madt's"

fail:
    PRINT32 "smp: FAIL\n"
    EXIT $1

    /* ---- 3. AP trampoline: copied to TRAMP_BASE, entered at 0800:0000 ---- */
    .code16
tramp:
    cli
    mov %cs, %ax
    mov %ax, %ds
    lgdtl (tramp_gdtr - tramp)  /* the guest's GDT, 32-bit base */
    mov %cr0, %eax
    or $CR0_PE, %eax
    mov %eax, %cr0
    ljmpl $SEL_CODE32, $ap_pm32
    .balign 4
tramp_gdtr:
    .word gdt_end - gdt - 1
    .long gdt
tramp_end:

    .code32
ap_pm32:                        /* no stack: registers only */
    mov $SEL_DATA, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    mov LAPIC_ID, %eax
    shr $24, %eax
    lock btsl %eax, online_map  /* the bit first: ap_count publishes it */
    lock incl ap_count
1:  cli
    hlt
    jmp 1b

    /* ---- helpers (32-bit; BSP only) ---- */

/* find_rsdp: esi = first valid RSDP in 0xe0000-0xfffff, or 0. */
find_rsdp:
    push %eax
    push %ecx
    mov $0xe0000, %esi
1:  cmpl $SIG_RSD, (%esi)
    jne 2f
    cmpl $SIG_PTR, 4(%esi)
    jne 2f
    mov $20, %ecx               /* ACPI 1.0 checksum */
    call acpi_sum
    test %al, %al
    jnz 2f
    cmpb $2, 15(%esi)
    jb 3f
    mov 20(%esi), %ecx          /* revision >= 2: extended checksum too */
    cmp $36, %ecx
    jb 2f
    cmp $0x1000, %ecx
    ja 2f
    call acpi_sum
    test %al, %al
    jz 3f
2:  add $16, %esi
    cmp $0x100000, %esi
    jb 1b
    xor %esi, %esi
3:  pop %ecx
    pop %eax
    ret

/* acpi_sum: al = byte sum of ecx bytes at esi (0 for a valid table).
 * Clobbers eax. */
acpi_sum:
    push %esi
    push %ecx
    xor %eax, %eax
    test %ecx, %ecx
    jz 2f
1:  add (%esi), %al
    inc %esi
    dec %ecx
    jnz 1b
2:  pop %ecx
    pop %esi
    ret

/* send_ipi: write ICR high (0: the shorthand needs no destination), then
 * ICR low = eax, and poll the delivery status (bounded). */
send_ipi:
    push %ecx
    movl $0, LAPIC_ICR_HI
    mov %eax, LAPIC_ICR_LO
    mov $ICR_WAIT, %ecx
1:  testl $ICR_PENDING, LAPIC_ICR_LO
    jz 2f
    pause
    dec %ecx
    jnz 1b
    FAIL32 "icr: delivery status stays pending"
2:  pop %ecx
    ret

/* wait_aps: poll up to ecx times for ap_count >= madt_count - 1.
 * CF clear when they all arrived, set on timeout. Clobbers ecx. */
wait_aps:
    push %eax
    push %edx
    mov madt_count, %edx
    dec %edx
1:  mov ap_count, %eax
    cmp %edx, %eax
    jae 2f
    pause
    dec %ecx
    jnz 1b
    stc
    jmp 3f
2:  clc
3:  pop %edx
    pop %eax
    ret

/* map_count: eax = number of set bits in the 256-bit map at esi. */
map_count:
    push %ecx
    xor %eax, %eax
    xor %ecx, %ecx
1:  bt %ecx, (%esi)
    adc $0, %eax
    inc %ecx
    cmp $256, %ecx
    jb 1b
    pop %ecx
    ret

    SERIAL_LIB 32, e
