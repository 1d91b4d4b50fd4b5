//! Directed cases for the translator's shortcuts that random sequences reach too rarely: a
//! condition read straight from the host flags an arithmetic or TEST template left (INC/DEC
//! keep CF, which the host's own step does not, and take it from flags still in registers),
//! at every operand width, from edge-case operands; and guest registers held in host
//! registers where a template must not load one over another.
//! Each case runs in the differential test's machine on the interpreter and on the JIT (every
//! block translated before its first run); the interpreter is the oracle here, as the
//! differential suites check it against KVM.

use ember_tests::difftest::compare::compare;
use ember_tests::difftest::gen::{self, Case};
use ember_tests::difftest::interp::{InterpMachine, Tier};
use ember_tests::difftest::state::InitialState;
use ember_tests::difftest::suite;

/// Sequences, each an arithmetic instruction and then readers of its flags.
const SEQUENCES: &[(&str, &[u8])] = &[
    (
        // dec eax; setb cl; setz dl; cmovb rsi, rdi; jb +0
        "dec eax, then CF readers",
        &[
            0xff, 0xc8, 0x0f, 0x92, 0xc1, 0x0f, 0x94, 0xc2, 0x48, 0x0f, 0x42, 0xf7, 0x72, 0x00,
        ],
    ),
    (
        // inc rax; jae +7; mov rbx, 1; seto dl
        "inc rax, then jae",
        &[
            0x48, 0xff, 0xc0, 0x73, 0x07, 0x48, 0xc7, 0xc3, 0x01, 0x00, 0x00, 0x00, 0x0f, 0x90,
            0xc2,
        ],
    ),
    (
        // dec al; setae cl; setbe dl
        "dec al, then CF readers",
        &[0xfe, 0xc8, 0x0f, 0x93, 0xc1, 0x0f, 0x96, 0xc2],
    ),
    (
        // inc bx; seta cl; sets dl
        "inc bx, then seta",
        &[0x66, 0xff, 0xc3, 0x0f, 0x97, 0xc1, 0x0f, 0x98, 0xc2],
    ),
    (
        // add eax, ebx; seta cl; setl dl
        "add eax, ebx",
        &[0x01, 0xd8, 0x0f, 0x97, 0xc1, 0x0f, 0x9c, 0xc2],
    ),
    (
        // sub al, bl; setbe cl; sets dl; setp bh
        "sub al, bl",
        &[
            0x28, 0xd8, 0x0f, 0x96, 0xc1, 0x0f, 0x98, 0xc2, 0x0f, 0x9a, 0xc7,
        ],
    ),
    (
        // and rax, rbx; setg cl; setle dl
        "and rax, rbx",
        &[0x48, 0x21, 0xd8, 0x0f, 0x9f, 0xc1, 0x0f, 0x9e, 0xc2],
    ),
    (
        // adc ax, bx; setb cl; seto dl
        "adc ax, bx",
        &[0x66, 0x11, 0xd8, 0x0f, 0x92, 0xc1, 0x0f, 0x90, 0xc2],
    ),
    (
        // sbb rax, rbx; jb +0; setl cl
        "sbb rax, rbx",
        &[0x48, 0x19, 0xd8, 0x72, 0x00, 0x0f, 0x9c, 0xc1],
    ),
    (
        // cmp rax, rbx; cmovl rcx, rdx; setae dl
        "cmp rax, rbx",
        &[0x48, 0x39, 0xd8, 0x48, 0x0f, 0x4c, 0xca, 0x0f, 0x93, 0xc2],
    ),
    (
        // test eax, ebx; setl cl; sete dl; setp bh
        "test eax, ebx",
        &[
            0x85, 0xd8, 0x0f, 0x9c, 0xc1, 0x0f, 0x94, 0xc2, 0x0f, 0x9a, 0xc7,
        ],
    ),
    (
        // test al, bl; sets cl; setg dl; js +0
        "test al, bl",
        &[0x84, 0xd8, 0x0f, 0x98, 0xc1, 0x0f, 0x9f, 0xc2, 0x78, 0x00],
    ),
    (
        // xor ecx, ecx; dec ecx; setb dl  (CF from before the XOR: clear)
        "xor, dec, setb",
        &[0x31, 0xc9, 0xff, 0xc9, 0x0f, 0x92, 0xc2],
    ),
    (
        // cmp rax, rbx; dec ecx; setb dl  (CF of the compare, still in registers)
        "cmp, dec, setb",
        &[0x48, 0x39, 0xd8, 0xff, 0xc9, 0x0f, 0x92, 0xc2],
    ),
    (
        // add eax, ebx; inc ecx; setb dl  (CF of the addition, still in registers)
        "add, inc, setb",
        &[0x01, 0xd8, 0xff, 0xc1, 0x0f, 0x92, 0xc2],
    ),
    (
        // dec ecx; cmovz rsi, rdi; setb dl  (the CMOV must not lose DEC's carry-in)
        "dec, cmovz, setb",
        &[0xff, 0xc9, 0x48, 0x0f, 0x44, 0xf7, 0x0f, 0x92, 0xc2],
    ),
    (
        // add rax, 5; and eax, 0xfff; add rax, rbx; sub rbx, 3; xor ebx, eax; setz cl: rax
        // and rbx are held in host registers and computed in place, from immediates and
        // from each other, with dead flags and then live ones.
        "in-place arithmetic on held registers",
        &[
            0x48, 0x83, 0xc0, 0x05, 0x25, 0xff, 0x0f, 0x00, 0x00, 0x48, 0x01, 0xd8, 0x48, 0x83,
            0xeb, 0x03, 0x31, 0xc3, 0x0f, 0x94, 0xc1,
        ],
    ),
    (
        // lea rbx, [rsi + rbx*2]; add rax, rbx; add rbx, 1: rbx, named four times, is held
        // in a host register; rsi, named once, is not, and must not be loaded over it.
        "lea into a held index register",
        &[
            0x48, 0x8d, 0x1c, 0x5e, 0x48, 0x01, 0xd8, 0x48, 0x83, 0xc3, 0x01,
        ],
    ),
];

/// Operand values around the edges where carries and overflows happen.
const EDGES: &[u64] = &[
    0,
    1,
    u64::MAX,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    0xffff_ffff,
    0x8000_0000,
    0x7fff_ffff,
    0xffff,
    0x8000,
    0xff,
    0x80,
    0x7f,
];

#[test]
fn translated_flag_shortcuts_match_the_interpreter() {
    let config = suite::FAST.config;
    let mut interp = InterpMachine::with_tier(Tier::Interpreter).expect("software CPU machine");
    let mut jit = InterpMachine::with_tier(Tier::Jit).expect("software CPU machine");
    let mut failures = Vec::new();
    let mut cases = 0;
    for (name, code) in SEQUENCES {
        for (n, &a) in EDGES.iter().enumerate() {
            for (m, &b) in EDGES.iter().enumerate() {
                let seed = (n * EDGES.len() + m) as u64;
                let mut case: Case = gen::generate(seed, &config);
                case.code = code.to_vec();
                let mut init = InitialState::from_seed(seed, config.groups);
                init.gpr[0] = a;
                init.gpr[3] = b;
                // Both values of CF going in.
                init.rflags = (init.rflags & !1) | (seed & 1);
                let expected = interp.run(&case, &init);
                let got = jit.run(&case, &init);
                let diffs = compare(&expected, &got);
                cases += 1;
                if !diffs.is_empty() {
                    failures.push(format!("{name} (rax {a:#x}, rbx {b:#x}): {diffs:?}"));
                }
            }
        }
    }
    println!("{cases} cases");
    assert!(
        failures.is_empty(),
        "the JIT differs from the interpreter in {} of {cases} cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
