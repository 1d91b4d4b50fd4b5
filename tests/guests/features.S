/*
 * features: the SSE extensions a processor advertises are the ones it runs.
 * For instructions of SSE3 (including FISTTP), SSSE3, SSE4.1 and SSE4.2
 * (both those the software CPU computes itself and those it runs on the
 * host's own instruction), reads the extension's bit of CPUID leaf 1 ECX and
 * runs the instruction: an advertised one must run, one not advertised must
 * raise #UD. Ember's software CPU advertises what its host allows
 * (EMBER_HOST_CPU_MASK hides host features from it).
 *
 * Expected output on a processor with all four extensions:
 *   sse3-addsubps: cpuid=1 vector=none ok
 *   sse3-haddpd: cpuid=1 vector=none ok
 *   sse3-movddup: cpuid=1 vector=none ok
 *   sse3-lddqu: cpuid=1 vector=none ok
 *   sse3-fisttp: cpuid=1 vector=none ok
 *   ssse3-pshufb: cpuid=1 vector=none ok
 *   ssse3-palignr: cpuid=1 vector=none ok
 *   sse4.1-roundps: cpuid=1 vector=none ok
 *   sse4.1-dpps: cpuid=1 vector=none ok
 *   sse4.1-pmulld: cpuid=1 vector=none ok
 *   sse4.1-ptest: cpuid=1 vector=none ok
 *   sse4.2-pcmpgtq: cpuid=1 vector=none ok
 *   sse4.2-crc32: cpuid=1 vector=none ok
 *   features: PASS
 * Where an extension is not advertised its lines read "cpuid=0 vector=6".
 * Exit 0 (1 on any mismatch; failed lines start with "FAIL").
 */
#include "common.h"

#define CR0_MP          (1 << 1)
#define CR0_EM          (1 << 2)
#define CR4_OSFXSR      (1 << 9)
#define CR4_OSXMMEXCPT  (1 << 10)

    MULTIBOOT_HEADER
    ENTRY32
    ENTER_LONG main64

    .pushsection .data
    .balign 16
operand:    .quad 0x3ff0000000000000, 0x4000000000000000
advertised: .quad 0
    .popsection

/* PROBE name, bit, insn: CPUID.1:ECX[bit] set means insn must run, clear
 * means it must raise #UD. Prints "name: cpuid=B vector=V". */
.macro PROBE name, bit, insn:vararg
    mov $1, %eax
    xor %ecx, %ecx
    cpuid
    shr $\bit, %ecx
    and $1, %ecx
    mov %rcx, advertised(%rip)
    lea operand(%rip), %rsi
    TRY \insn
    mov $6, %rax
    mov $-1, %rbx
    cmpq $0, advertised(%rip)
    cmovne %rbx, %rax
    CHECK last_vec(%rip), %rax
    LINE_BEGIN
    PRINT "\name: cpuid="
    PUTDEC advertised(%rip)
    PRINT " "
    PRINT_VEC
    LINE_END
.endm

main64:
    LONG_ENTRY
    call idt_init
    mov %cr0, %rax
    and $~CR0_EM, %rax
    or $CR0_MP, %rax
    mov %rax, %cr0
    mov %cr4, %rax
    or $(CR4_OSFXSR | CR4_OSXMMEXCPT), %rax
    mov %rax, %cr4
    fninit
    movdqa operand(%rip), %xmm0
    movdqa operand(%rip), %xmm1

    PROBE sse3-addsubps, 0, addsubps %xmm1, %xmm0
    PROBE sse3-haddpd, 0, haddpd %xmm1, %xmm0
    PROBE sse3-movddup, 0, movddup %xmm1, %xmm0
    PROBE sse3-lddqu, 0, lddqu (%rsi), %xmm0
    fld1
    PROBE sse3-fisttp, 0, fisttpl (%rsi)
    fninit
    PROBE ssse3-pshufb, 9, pshufb %xmm1, %xmm0
    PROBE ssse3-palignr, 9, palignr $3, %xmm1, %xmm0
    PROBE sse4.1-roundps, 19, roundps $1, %xmm1, %xmm0
    PROBE sse4.1-dpps, 19, dpps $0xf1, %xmm1, %xmm0
    PROBE sse4.1-pmulld, 19, pmulld %xmm1, %xmm0
    PROBE sse4.1-ptest, 19, ptest %xmm1, %xmm0
    PROBE sse4.2-pcmpgtq, 20, pcmpgtq %xmm1, %xmm0
    PROBE sse4.2-crc32, 20, crc32l %ecx, %eax

    FINISH features

    CHECK_VARS
    IDT_RUNTIME
    SERIAL_LIB 64, r
