//! Save/restore images against the host, and round trips.

use super::super::host::oracle::{run_plain, Plain};
use super::super::image::{
    fldenv, fnsave, fnstenv, frstor, full_tag_word, fxrstor_image, fxsave_image, FxFormat,
    InvalidMxcsr,
};
use super::super::ops;
use super::*;

/// A random state with 32-bit FIP/FDP and an 11-bit FOP.
fn state_with_pointers(r: &mut Rng) -> Fpu {
    let mut f = rand_state(r);
    f.fip = r.next() & 0xFFFF_FFFF;
    f.fdp = r.next() & 0xFFFF_FFFF;
    f.fop = r.next() as u16 & 0x7FF;
    f
}

/// Runs `p` on the oracle state `f` (after `prep`) and, when `ok` rejects
/// the result, once more. On AMD hosts Linux clears the x87 FIP/FDP/FOP when
/// it switches to the thread (its FXSAVE-leak workaround), so a preemption
/// between the oracle's FRSTOR and the instruction can zero the pointers.
fn oracle_retry(
    f: &Fpu,
    p: Plain,
    prep: impl Fn(&mut OFrame),
    ok: impl Fn(&OFrame) -> bool,
) -> OFrame {
    let mut o = to_oracle(f);
    prep(&mut o);
    run_plain(p, &mut o);
    if !ok(&o) {
        o = to_oracle(f);
        prep(&mut o);
        run_plain(p, &mut o);
    }
    o
}

#[test]
fn fnsave_and_fnstenv_match_host() {
    let mut r = Rng::new(seed(11));
    for n in 0..iters(20_000) {
        let f = state_with_pointers(&mut r);
        let sixteen = n % 2 == 1;
        let fmt = if sixteen {
            EnvFormat::Protected16
        } else {
            EnvFormat::Protected32
        };
        // FNSAVE
        let mut soft = copy(&f);
        let img = fnsave(&mut soft, fmt);
        let len = fmt.save_len();
        let p = if sixteen {
            Plain::Fnsave16
        } else {
            Plain::Fnsave
        };
        let o = oracle_retry(&f, p, |_| {}, |o| img[..len] == o.mem[..len]);
        assert_eq!(
            hex(&img[..len]),
            hex(&o.mem[..len]),
            "fnsave {fmt:?} of {}",
            dump(&f)
        );
        assert_eq!(
            diff(&soft, &from_oracle(&o, &soft)),
            None,
            "state after fnsave"
        );
        // FNSTENV
        let mut soft = copy(&f);
        let env = fnstenv(&mut soft, fmt);
        let len = fmt.env_len();
        let p = if sixteen {
            Plain::Fnstenv16
        } else {
            Plain::Fnstenv
        };
        let o = oracle_retry(&f, p, |_| {}, |o| env[..len] == o.mem[..len]);
        assert_eq!(
            hex(&env[..len]),
            hex(&o.mem[..len]),
            "fnstenv {fmt:?} of {}",
            dump(&f)
        );
        assert_eq!(
            diff(&soft, &from_oracle(&o, &soft)),
            None,
            "state after fnstenv"
        );
        assert_eq!(
            full_tag_word(&f),
            u16::from_le_bytes([
                env[if sixteen { 4 } else { 8 }],
                env[if sixteen { 5 } else { 9 }]
            ])
        );
    }
}

#[test]
fn fnstenv_clears_pending_summary_like_host() {
    let mut r = Rng::new(seed(12));
    for _ in 0..iters(5_000) {
        let mut f = rand_state(&mut r);
        f.fsw |= r.next() as u16 & f.fcw & 0x3F;
        let cw = r.next() as u16;
        let mut o = to_oracle(&f);
        o.mem[..2].copy_from_slice(&cw.to_le_bytes());
        run_plain(Plain::FldcwFnstenv, &mut o);
        let _ = ops::fldcw(&mut f, cw);
        let env = fnstenv(&mut f, EnvFormat::Protected32);
        assert_eq!(hex(&env), hex(&o.mem[16..44]));
        assert_eq!(diff(&f, &from_oracle(&o, &f)), None);
    }
}

#[test]
fn fldenv_and_frstor_match_host() {
    let mut r = Rng::new(seed(13));
    for n in 0..iters(20_000) {
        let base = rand_state(&mut r);
        let sixteen = n % 2 == 1;
        let fmt = if sixteen {
            EnvFormat::Protected16
        } else {
            EnvFormat::Protected32
        };
        let mut img = [0u8; 108];
        for b in img.iter_mut() {
            *b = r.next() as u8;
        }
        // Mostly plausible register contents.
        for i in 0..8 {
            let off = fmt.env_len() + 10 * i;
            img[off..off + 10].copy_from_slice(&rand_f80(&mut r));
        }
        let restore = n % 4 < 2;
        let p = match (restore, sixteen) {
            (true, false) => Plain::Frstor,
            (true, true) => Plain::Frstor16,
            (false, false) => Plain::Fldenv,
            (false, true) => Plain::Fldenv16,
        };
        let mut soft = copy(&base);
        if restore {
            frstor(&mut soft, &img, fmt);
        } else {
            fldenv(&mut soft, &img, fmt);
        }
        // FIP/FDP/FOP as the hardware keeps them (FNSAVE header of the result).
        let pointers = |o: &OFrame| {
            let g32 = |off: usize| {
                u32::from_le_bytes([o.img[off], o.img[off + 1], o.img[off + 2], o.img[off + 3]])
            };
            (
                u64::from(g32(12)),
                u64::from(g32(20)),
                (g32(16) >> 16) as u16 & 0x7FF,
            )
        };
        let want = (soft.fip, soft.fdp, soft.fop);
        let o = oracle_retry(
            &base,
            p,
            |o| o.mem[..108].copy_from_slice(&img),
            |o| {
                let got = pointers(o);
                if sixteen {
                    (got.0, got.1) == (want.0, want.1)
                } else {
                    got == want
                }
            },
        );
        let hw = from_oracle(&o, &soft);
        assert_eq!(
            diff(&soft, &hw),
            None,
            "{p:?} image {}",
            hex(&img[..fmt.save_len()])
        );
        let (fip, fdp, fop) = pointers(&o);
        if sixteen {
            assert_eq!((soft.fip, soft.fdp), (fip, fdp), "{p:?} pointers");
        } else {
            assert_eq!(
                (soft.fip, soft.fdp, soft.fop),
                (fip, fdp, fop),
                "{p:?} pointers"
            );
        }
    }
}

#[test]
fn fxsave_matches_host() {
    let mut r = Rng::new(seed(14));
    for n in 0..iters(20_000) {
        let f = state_with_pointers(&mut r);
        let wide = n % 2 == 0;
        let mut o = to_oracle(&f);
        run_plain(if wide { Plain::Fxsave64 } else { Plain::Fxsave }, &mut o);
        let img = fxsave_image(
            &f,
            if wide {
                FxFormat::Bits64
            } else {
                FxFormat::Bits32
            },
        );
        // AMD hosts store FOP/FIP/FDP only while ES is set (which the oracle
        // cannot load without trapping); the image always carries them, as
        // Intel processors do.
        assert_eq!(hex(&img[..6]), hex(&o.mem[..6]), "header of {}", dump(&f));
        assert_eq!(
            hex(&img[32..160]),
            hex(&o.mem[32..160]),
            "registers of {}",
            dump(&f)
        );
    }
}

#[test]
fn fxrstor_matches_host() {
    let mut r = Rng::new(seed(15));
    for n in 0..iters(20_000) {
        let base = rand_state(&mut r);
        let wide = n % 2 == 0;
        let fmt = if wide {
            FxFormat::Bits64
        } else {
            FxFormat::Bits32
        };
        let mut src = state_with_pointers(&mut r);
        src.fsw = r.next() as u16; // any flags, ES, B, TOP
        src.fcw = r.next() as u16;
        src.fip = r.next();
        src.fdp = r.next();
        src.mxcsr = 0x1F80;
        let img = fxsave_image(&src, fmt);
        let mut o = to_oracle(&base);
        o.mem.copy_from_slice(&img);
        run_plain(
            if wide {
                Plain::Fxrstor64
            } else {
                Plain::Fxrstor
            },
            &mut o,
        );
        let mut soft = copy(&base);
        assert_eq!(fxrstor_image(&mut soft, &img, fmt), Ok(()));
        assert_eq!(
            diff(&soft, &from_oracle(&o, &soft)),
            None,
            "fxrstor of {}",
            hex(&img[..32])
        );
    }
}

#[test]
fn software_round_trips() {
    let mut r = Rng::new(seed(16));
    for _ in 0..iters(20_000) {
        let mut f = state_with_pointers(&mut r);
        f.fip = r.next();
        f.fdp = r.next();
        f.mxcsr = r.next() as u32 & 0xFFFF;
        for x in f.xmm.iter_mut() {
            *x = u128::from(r.next()) << 64 | u128::from(r.next());
        }
        // FXSAVE64 -> FXRSTOR64 is the identity.
        let img = fxsave_image(&f, FxFormat::Bits64);
        let mut g = Fpu::default();
        assert_eq!(fxrstor_image(&mut g, &img, FxFormat::Bits64), Ok(()));
        assert_eq!(diff(&f, &g), None);
        assert_eq!(
            (g.fip, g.fdp, g.fop, g.mxcsr, g.xmm),
            (f.fip, f.fdp, f.fop, f.mxcsr, f.xmm)
        );
        // Legacy layout keeps XMM8-15 of the destination.
        let img = fxsave_image(&f, FxFormat::Legacy);
        let mut g = Fpu::default();
        g.xmm[9] = 99;
        assert_eq!(fxrstor_image(&mut g, &img, FxFormat::Legacy), Ok(()));
        assert_eq!(
            (g.xmm[..8].to_vec(), g.xmm[9], g.fip),
            (f.xmm[..8].to_vec(), 99, f.fip & 0xFFFF_FFFF)
        );
        // Reserved MXCSR bits: #GP and nothing changes.
        let mut bad = img;
        bad[26] = 1;
        let mut g = copy(&f);
        g.fcw ^= 1;
        assert_eq!(
            fxrstor_image(&mut g, &bad, FxFormat::Legacy),
            Err(InvalidMxcsr)
        );
        assert_eq!(g.fcw, f.fcw ^ 1);
        // FNSAVE -> FRSTOR in every format restores registers, control, status and tags.
        for fmt in [
            EnvFormat::Protected32,
            EnvFormat::Protected16,
            EnvFormat::Real32,
            EnvFormat::Real16,
        ] {
            let mut s = copy(&f);
            let img = fnsave(&mut s, fmt);
            assert_eq!(
                (s.fcw, s.fsw, s.ftw),
                (0x037F, 0, 0),
                "FNSAVE reinitialises"
            );
            let mut g = Fpu::default();
            frstor(&mut g, &img[..fmt.save_len()], fmt);
            let mut want = copy(&f);
            super::super::stack::update_summary(&mut want);
            assert_eq!(diff(&want, &g), None, "{fmt:?}");
            let mask = match fmt {
                EnvFormat::Protected32 => 0xFFFF_FFFF,
                EnvFormat::Protected16 => 0xFFFF,
                EnvFormat::Real32 => 0xFFFF_FFFF,
                EnvFormat::Real16 => 0xF_FFFF,
            };
            assert_eq!((g.fip, g.fdp), (f.fip & mask, f.fdp & mask), "{fmt:?}");
            if fmt != EnvFormat::Protected16 {
                assert_eq!(g.fop, f.fop, "{fmt:?}");
            }
        }
    }
}
