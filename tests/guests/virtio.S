/*
 * virtio: a driver for two virtio-mmio devices, written to be hostile to one
 * of them. Expects a virtio-blk device at 0xc0000000 whose first sector is
 * all 0x5a, and a virtio-rng device at 0xc0001000 (Ember's layout for one
 * drive and an entropy device). 32-bit protected mode, paging off, polling
 * (no interrupts). Checks, in order:
 *
 *   rng: ok                     the rng fills a buffer
 *   blk: read ok                a good read of sector 0 returns 0x5a bytes
 *   blk: loop refused           a descriptor loop makes the device need a reset
 *   blk: outside RAM refused    a buffer at 0xf0000000 likewise
 *   blk: avail jump refused     an avail index 1000 ahead likewise
 *   blk: wrong order refused    a readable buffer after a writable one likewise
 *   blk: bad queue refused      DRIVER_OK with queue size 3 likewise
 *   blk: bad features refused   FEATURES_OK with a feature not offered stays clear
 *   rng: still ok               the other device carried on meanwhile
 *   blk: read ok after reset    a reset brings the broken device back
 *   virtio: PASS                (exit 0; a failed check prints FAIL and exits 1)
 */
#include "common.h"

#define BLK             0xc0000000
#define RNG             0xc0001000
#define R_MAGIC         0x00
#define R_DEVICE_ID     0x08
#define R_DRV_FEAT      0x20
#define R_DRV_FEAT_SEL  0x24
#define R_QUEUE_SEL     0x30
#define R_QUEUE_NUM     0x38
#define R_QUEUE_READY   0x44
#define R_QUEUE_NOTIFY  0x50
#define R_STATUS        0x70
#define R_DESC_LO       0x80
#define R_DESC_HI       0x84
#define R_AVAIL_LO      0x90
#define R_AVAIL_HI      0x94
#define R_USED_LO       0xa0
#define R_USED_HI       0xa4
#define S_ACK           1
#define S_DRIVER        2
#define S_DRIVER_OK     4
#define S_FEATURES_OK   8
#define S_NEEDS_RESET   0x40
#define F_NEXT          1
#define F_WRITE         2
#define AVAIL           0x400           /* ring offsets in a queue page */
#define USED            0x800
#define QSIZE           8
#define BUF_DATA        0x200           /* in the buffer page */
#define BUF_STATUS      0x400

    MULTIBOOT_HEADER
    ENTRY32

    /* ---- rng: one good request ---- */
    mov $RNG, %ebx
    mov $q_rng, %esi
    mov $QSIZE, %ecx
    call dev_init
    mov $q_rng, %esi
    mov $0, %eax
    mov $rng_buf, %edx
    mov $64, %ecx
    mov $F_WRITE, %edi
    call desc_simple
    mov $0, %eax
    call submit
    mov $1, %eax
    call wait_used
    test %eax, %eax
    jnz fail_rng
    cmpl $64, q_rng + USED + 8      /* used[0].len */
    jne fail_rng
    PRINT32 "rng: ok\n"

    /* ---- blk: a good read ---- */
    call blk_good_read
    jnz fail_read
    PRINT32 "blk: read ok\n"

    /* ---- blk: a descriptor loop ---- */
    call blk_fresh
    movl $F_NEXT, q_blk + 12        /* desc 0: next 1 */
    movw $1, q_blk + 14
    movl $F_NEXT, q_blk + 16 + 12   /* desc 1: next 0 */
    movw $0, q_blk + 16 + 14
    call blk_expect_broken
    jnz fail_loop
    PRINT32 "blk: loop refused\n"

    /* ---- blk: a buffer outside RAM ---- */
    call blk_fresh
    movl $0xf0000000, q_blk + 16    /* desc 1 address */
    call blk_expect_broken
    jnz fail_outside
    PRINT32 "blk: outside RAM refused\n"

    /* ---- blk: the avail index jumps ---- */
    call blk_fresh
    movw $1000, q_blk + AVAIL + 2
    mov $BLK, %ebx
    movl $0, R_QUEUE_NOTIFY(%ebx)
    call wait_broken
    jnz fail_jump
    PRINT32 "blk: avail jump refused\n"

    /* ---- blk: readable after writable ---- */
    call blk_fresh
    movw $(F_WRITE | F_NEXT), q_blk + 12     /* header marked writable, data readable */
    movw $0, q_blk + 16 + 12
    call blk_expect_broken
    jnz fail_order
    PRINT32 "blk: wrong order refused\n"

    /* ---- blk: a queue size that is not a power of two ---- */
    mov $BLK, %ebx
    mov $q_blk, %esi
    mov $3, %ecx
    call dev_init
    call wait_broken
    jnz fail_queue
    PRINT32 "blk: bad queue refused\n"

    /* ---- blk: a feature the device did not offer ---- */
    mov $BLK, %ebx
    movl $0, R_STATUS(%ebx)
    movl $S_ACK, R_STATUS(%ebx)
    movl $(S_ACK | S_DRIVER), R_STATUS(%ebx)
    movl $1, R_DRV_FEAT_SEL(%ebx)
    movl $0x80000001, R_DRV_FEAT(%ebx)      /* VERSION_1 and bit 63 */
    movl $(S_ACK | S_DRIVER | S_FEATURES_OK), R_STATUS(%ebx)
    testl $S_FEATURES_OK, R_STATUS(%ebx)
    jnz fail_features
    PRINT32 "blk: bad features refused\n"

    /* ---- rng: still serving ---- */
    mov $q_rng, %esi
    mov $1, %eax
    mov $rng_buf + 64, %edx
    mov $32, %ecx
    mov $F_WRITE, %edi
    call desc_simple
    mov $RNG, %ebx
    mov $1, %eax
    call submit
    mov $2, %eax
    call wait_used
    test %eax, %eax
    jnz fail_rng2
    PRINT32 "rng: still ok\n"

    /* ---- blk: back after a reset ---- */
    call blk_good_read
    jnz fail_reset
    PRINT32 "blk: read ok after reset\n"
    PRINT32 "virtio: PASS\n"
    EXIT $0

fail_rng:       PRINT32 "FAIL rng\n"
                jmp failed
fail_read:      PRINT32 "FAIL blk read\n"
                jmp failed
fail_loop:      PRINT32 "FAIL blk loop\n"
                jmp failed
fail_outside:   PRINT32 "FAIL blk outside RAM\n"
                jmp failed
fail_jump:      PRINT32 "FAIL blk avail jump\n"
                jmp failed
fail_order:     PRINT32 "FAIL blk order\n"
                jmp failed
fail_queue:     PRINT32 "FAIL blk queue size\n"
                jmp failed
fail_features:  PRINT32 "FAIL blk features\n"
                jmp failed
fail_rng2:      PRINT32 "FAIL rng after blk\n"
                jmp failed
fail_reset:     PRINT32 "FAIL blk after reset\n"
failed:
    EXIT $1

/* dev_init: resets the device at EBX and sets it up with one queue of ECX
 * entries in the zeroed page at ESI, accepting only VERSION_1. Clobbers EAX,
 * EDI. */
dev_init:
    push %ecx
    mov %esi, %edi
    mov $4096 / 4, %ecx
    xor %eax, %eax
    rep stosl
    pop %ecx
    movl $0, R_STATUS(%ebx)
    movl $S_ACK, R_STATUS(%ebx)
    movl $(S_ACK | S_DRIVER), R_STATUS(%ebx)
    movl $1, R_DRV_FEAT_SEL(%ebx)
    movl $1, R_DRV_FEAT(%ebx)               /* VERSION_1 (bit 32) */
    movl $0, R_DRV_FEAT_SEL(%ebx)
    movl $0, R_DRV_FEAT(%ebx)
    movl $(S_ACK | S_DRIVER | S_FEATURES_OK), R_STATUS(%ebx)
    movl $0, R_QUEUE_SEL(%ebx)
    mov %ecx, R_QUEUE_NUM(%ebx)
    mov %esi, R_DESC_LO(%ebx)
    movl $0, R_DESC_HI(%ebx)
    lea AVAIL(%esi), %eax
    mov %eax, R_AVAIL_LO(%ebx)
    movl $0, R_AVAIL_HI(%ebx)
    lea USED(%esi), %eax
    mov %eax, R_USED_LO(%ebx)
    movl $0, R_USED_HI(%ebx)
    movl $1, R_QUEUE_READY(%ebx)
    movl $(S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK), R_STATUS(%ebx)
    ret

/* desc_simple: descriptor EAX of the queue page ESI = {EDX, ECX bytes, flags
 * EDI, next 0}. Clobbers EAX. */
desc_simple:
    shl $4, %eax
    add %esi, %eax
    mov %edx, (%eax)
    movl $0, 4(%eax)
    mov %ecx, 8(%eax)
    mov %di, 12(%eax)
    movw $0, 14(%eax)
    ret

/* submit: offers chain head EAX on the queue page ESI of the device at EBX
 * and notifies queue 0. Clobbers EAX, ECX. */
submit:
    movzwl AVAIL + 2(%esi), %ecx
    push %ecx
    and $(QSIZE - 1), %ecx
    mov %ax, AVAIL + 4(%esi, %ecx, 2)
    pop %ecx
    inc %ecx
    mov %cx, AVAIL + 2(%esi)
    movl $0, R_QUEUE_NOTIFY(%ebx)
    ret

/* wait_used: waits until the used index of queue page ESI reaches EAX.
 * EAX = 0 when it did, 1 if the device at EBX needs a reset, 2 on timeout. */
wait_used:
    push %ecx
    push %edx
    mov %eax, %edx
    mov $2000000, %ecx
1:  movzwl USED + 2(%esi), %eax
    cmp %dx, %ax
    je 2f
    testl $S_NEEDS_RESET, R_STATUS(%ebx)
    jnz 3f
    pause
    loop 1b
    mov $2, %eax
    jmp 4f
2:  xor %eax, %eax
    jmp 4f
3:  mov $1, %eax
4:  pop %edx
    pop %ecx
    ret

/* wait_broken: ZF set once the device at EBX says it needs a reset, clear if it
 * never does. Clobbers ECX. */
wait_broken:
    mov $2000000, %ecx
1:  testl $S_NEEDS_RESET, R_STATUS(%ebx)
    jnz 2f
    pause
    loop 1b
    or $1, %ecx                     /* ZF clear: it never did */
    ret
2:  xor %ecx, %ecx                  /* ZF set */
    ret

/* blk_fresh: resets and sets up the block device, and writes a good read
 * request of sector 0 as descriptors 0 (header), 1 (data), 2 (status), not
 * yet offered. */
blk_fresh:
    mov $BLK, %ebx
    mov $q_blk, %esi
    mov $QSIZE, %ecx
    call dev_init
    movl $0, blk_buf                /* VIRTIO_BLK_T_IN */
    movl $0, blk_buf + 4
    movl $0, blk_buf + 8            /* sector 0 */
    movl $0, blk_buf + 12
    movb $0xff, blk_buf + BUF_STATUS
    mov $q_blk, %esi
    mov $0, %eax
    mov $blk_buf, %edx
    mov $16, %ecx
    mov $F_NEXT, %edi
    call desc_simple
    movw $1, q_blk + 14
    mov $1, %eax
    mov $blk_buf + BUF_DATA, %edx
    mov $512, %ecx
    mov $(F_WRITE | F_NEXT), %edi
    call desc_simple
    movw $2, q_blk + 16 + 14
    mov $2, %eax
    mov $blk_buf + BUF_STATUS, %edx
    mov $1, %ecx
    mov $F_WRITE, %edi
    call desc_simple
    ret

/* blk_expect_broken: offers chain 0 and checks that the device now needs a
 * reset (ZF set) rather than using it. */
blk_expect_broken:
    mov $BLK, %ebx
    mov $q_blk, %esi
    mov $0, %eax
    call submit
    jmp wait_broken

/* blk_good_read: a fresh device reads sector 0; ZF set when the status is OK
 * and the data is 512 bytes of 0x5a. */
blk_good_read:
    call blk_fresh
    mov $0, %eax
    call submit
    mov $1, %eax
    call wait_used
    test %eax, %eax
    jnz 9f
    cmpb $0, blk_buf + BUF_STATUS
    jne 9f
    mov $blk_buf + BUF_DATA, %edi
    mov $512, %ecx
    mov $0x5a, %al
    repe scasb
9:  ret

    SERIAL_LIB 32, e

    .bss
    .balign 4096
q_rng:      .skip 4096
q_blk:      .skip 4096
rng_buf:    .skip 4096
blk_buf:    .skip 4096
