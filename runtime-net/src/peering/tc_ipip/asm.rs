//! A small eBPF assembler: the instructions the IPIP programs need, with jumps to named labels
//! resolved when the program is finished. Pure; no kernel involved.

use std::collections::HashMap;

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        // `dst_reg:4, src_reg:4` bit fields: the first field takes the low bits on
        // little-endian hosts, the high bits on big-endian ones.
        let regs = if cfg!(target_endian = "little") {
            (src << 4) | (dst & 0x0f)
        } else {
            (dst << 4) | (src & 0x0f)
        };
        Insn {
            code,
            regs,
            off,
            imm,
        }
    }

    /// The instruction as the kernel reads it (little- or big-endian as the host).
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = self.regs;
        b[2..4].copy_from_slice(&self.off.to_ne_bytes());
        b[4..8].copy_from_slice(&self.imm.to_ne_bytes());
        b
    }
}

/// A register, `r0`–`r10`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reg(u8);

/// Return value / helper result.
pub const R0: Reg = Reg(0);
/// First helper argument; the context at entry.
pub const R1: Reg = Reg(1);
/// Second helper argument.
pub const R2: Reg = Reg(2);
/// Third helper argument.
pub const R3: Reg = Reg(3);
/// Fourth helper argument.
pub const R4: Reg = Reg(4);
/// Fifth helper argument.
pub const R5: Reg = Reg(5);
/// Kept across helper calls.
pub const R6: Reg = Reg(6);
/// Kept across helper calls.
pub const R7: Reg = Reg(7);
/// Kept across helper calls.
pub const R8: Reg = Reg(8);
/// Kept across helper calls.
pub const R9: Reg = Reg(9);
/// Frame pointer (read-only); the stack lies below it.
pub const FP: Reg = Reg(10);

/// Width of a memory access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// 1 byte.
    B = 0x10,
    /// 2 bytes.
    H = 0x08,
    /// 4 bytes.
    W = 0x00,
    /// 8 bytes.
    DW = 0x18,
}

/// Arithmetic operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alu {
    /// `+=`
    Add = 0x00,
    /// `-=`
    Sub = 0x10,
    /// `|=`
    Or = 0x40,
    /// `&=`
    And = 0x50,
    /// `<<=`
    Lsh = 0x60,
    /// `>>=` (logical)
    Rsh = 0x70,
    /// `^=`
    Xor = 0xa0,
    /// `=`
    Mov = 0xb0,
}

/// Conditions of a jump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    /// `==`
    Eq = 0x10,
    /// `>` (unsigned)
    Gt = 0x20,
    /// `!=`
    Ne = 0x50,
}

const LDX: u8 = 0x01;
const ST: u8 = 0x02;
const STX: u8 = 0x03;
const ALU32: u8 = 0x04;
const JMP: u8 = 0x05;
const JMP32: u8 = 0x06;
const ALU64: u8 = 0x07;
const MEM: u8 = 0x60;
const SRC_REG: u8 = 0x08;
const END_TO_BE: u8 = 0xd8;
const CALL: u8 = 0x80;
const EXIT: u8 = 0x90;

/// A label was jumped to but never placed, placed twice, or too far away.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AsmError {
    /// Jump to a label that was never placed.
    #[error("eBPF program: jump to undefined label {0:?}")]
    Undefined(&'static str),
    /// A label placed twice.
    #[error("eBPF program: label {0:?} placed twice")]
    Twice(&'static str),
    /// A jump farther than a 16-bit offset reaches.
    #[error("eBPF program: jump to {0:?} is out of range")]
    Range(&'static str),
}

/// A program being written: instructions and the labels their jumps go to.
#[derive(Debug, Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: HashMap<&'static str, usize>,
    jumps: Vec<(usize, &'static str)>,
    twice: Option<&'static str>,
}

impl Asm {
    fn push(&mut self, i: Insn) -> &mut Self {
        self.insns.push(i);
        self
    }

    /// Places `name` at the next instruction.
    pub fn label(&mut self, name: &'static str) -> &mut Self {
        if self.labels.insert(name, self.insns.len()).is_some() {
            self.twice.get_or_insert(name);
        }
        self
    }

    /// 64-bit `dst op= imm` (the immediate is sign-extended).
    pub fn alu64_imm(&mut self, op: Alu, dst: Reg, imm: i32) -> &mut Self {
        self.push(Insn::new(ALU64 | op as u8, dst.0, 0, 0, imm))
    }

    /// 64-bit `dst op= src`.
    pub fn alu64_reg(&mut self, op: Alu, dst: Reg, src: Reg) -> &mut Self {
        self.push(Insn::new(ALU64 | op as u8 | SRC_REG, dst.0, src.0, 0, 0))
    }

    /// 32-bit `dst op= imm` (the upper half of `dst` becomes zero).
    pub fn alu32_imm(&mut self, op: Alu, dst: Reg, imm: i32) -> &mut Self {
        self.push(Insn::new(ALU32 | op as u8, dst.0, 0, 0, imm))
    }

    /// 32-bit `dst op= src` (the upper half of `dst` becomes zero).
    pub fn alu32_reg(&mut self, op: Alu, dst: Reg, src: Reg) -> &mut Self {
        self.push(Insn::new(ALU32 | op as u8 | SRC_REG, dst.0, src.0, 0, 0))
    }

    /// `dst = imm` (64-bit, sign-extended).
    pub fn mov_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.alu64_imm(Alu::Mov, dst, imm)
    }

    /// `dst = src` (64-bit).
    pub fn mov_reg(&mut self, dst: Reg, src: Reg) -> &mut Self {
        self.alu64_reg(Alu::Mov, dst, src)
    }

    /// Converts the low 16 bits of `dst` to network byte order (upper bits cleared).
    pub fn be16(&mut self, dst: Reg) -> &mut Self {
        self.push(Insn::new(ALU32 | END_TO_BE, dst.0, 0, 0, 16))
    }

    /// `dst = *(size *)(src + off)` (zero-extended).
    pub fn ldx(&mut self, size: Size, dst: Reg, src: Reg, off: i16) -> &mut Self {
        self.push(Insn::new(LDX | MEM | size as u8, dst.0, src.0, off, 0))
    }

    /// `*(size *)(dst + off) = imm`.
    pub fn st(&mut self, size: Size, dst: Reg, off: i16, imm: i32) -> &mut Self {
        self.push(Insn::new(ST | MEM | size as u8, dst.0, 0, off, imm))
    }

    /// `*(size *)(dst + off) = src`.
    pub fn stx(&mut self, size: Size, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.push(Insn::new(STX | MEM | size as u8, dst.0, src.0, off, 0))
    }

    fn jump(&mut self, code: u8, dst: Reg, src: Reg, imm: i32, to: &'static str) -> &mut Self {
        self.jumps.push((self.insns.len(), to));
        self.push(Insn::new(code, dst.0, src.0, 0, imm))
    }

    /// `if (u32)dst cond imm goto to` (compares the low 32 bits only).
    pub fn jmp32_imm(&mut self, cond: Cond, dst: Reg, imm: i32, to: &'static str) -> &mut Self {
        self.jump(JMP32 | cond as u8, dst, Reg(0), imm, to)
    }

    /// `if (u32)dst cond imm` skip the next `n` instructions.
    pub fn skip32_imm(&mut self, cond: Cond, dst: Reg, imm: i32, n: i16) -> &mut Self {
        self.push(Insn::new(JMP32 | cond as u8, dst.0, 0, n, imm))
    }

    /// `if dst cond imm` (64-bit) skip the next `n` instructions.
    pub fn skip_imm(&mut self, cond: Cond, dst: Reg, imm: i32, n: i16) -> &mut Self {
        self.push(Insn::new(JMP | cond as u8, dst.0, 0, n, imm))
    }

    /// `dst = map` for the map behind file descriptor `fd` (two instruction slots; the kernel
    /// puts the map's address in).
    pub fn ld_map_fd(&mut self, dst: Reg, fd: i32) -> &mut Self {
        const LD_IMM64: u8 = 0x18;
        const PSEUDO_MAP_FD: u8 = 1;
        self.push(Insn::new(LD_IMM64, dst.0, PSEUDO_MAP_FD, 0, fd))
            .push(Insn::new(0, 0, 0, 0, 0))
    }

    /// `if dst cond imm goto to` (64-bit; the immediate is sign-extended).
    pub fn jmp_imm(&mut self, cond: Cond, dst: Reg, imm: i32, to: &'static str) -> &mut Self {
        self.jump(JMP | cond as u8, dst, Reg(0), imm, to)
    }

    /// `if dst cond src goto to` (64-bit).
    pub fn jmp_reg(&mut self, cond: Cond, dst: Reg, src: Reg, to: &'static str) -> &mut Self {
        self.jump(JMP | cond as u8 | SRC_REG, dst, src, 0, to)
    }

    /// `goto to`.
    pub fn ja(&mut self, to: &'static str) -> &mut Self {
        self.jump(JMP, Reg(0), Reg(0), 0, to)
    }

    /// Calls kernel helper number `helper` (arguments in `r1`–`r5`, result in `r0`).
    pub fn call(&mut self, helper: i32) -> &mut Self {
        self.push(Insn::new(JMP | CALL, 0, 0, 0, helper))
    }

    /// Returns `r0`.
    pub fn exit(&mut self) -> &mut Self {
        self.push(Insn::new(JMP | EXIT, 0, 0, 0, 0))
    }

    /// The finished program, every jump pointed at its label.
    pub fn finish(mut self) -> Result<Vec<Insn>, AsmError> {
        if let Some(name) = self.twice {
            return Err(AsmError::Twice(name));
        }
        for (at, name) in &self.jumps {
            let target = *self.labels.get(name).ok_or(AsmError::Undefined(name))?;
            let off = target as i64 - (*at as i64 + 1);
            self.insns[*at].off = i16::try_from(off).map_err(|_| AsmError::Range(name))?;
        }
        Ok(self.insns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(a: Asm) -> Vec<[u8; 8]> {
        a.finish()
            .unwrap()
            .into_iter()
            .map(Insn::to_bytes)
            .collect()
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn encodes_as_the_kernel_reads_it() {
        let mut a = Asm::default();
        a.mov_imm(R0, -1)
            .mov_reg(R6, R1)
            .ldx(Size::W, R2, R6, 16)
            .stx(Size::H, FP, -22, R3)
            .st(Size::W, FP, -24, 0x45)
            .be16(R2)
            .call(50)
            .exit();
        let b = bytes(a);
        let le = cfg!(target_endian = "little");
        let ne16 = |v: i16| v.to_ne_bytes();
        let ne32 = |v: i32| v.to_ne_bytes();
        assert_eq!(b[0][..2], [0xb7, 0x00]);
        assert_eq!(b[0][4..], ne32(-1));
        assert_eq!(b[1][..2], [0xbf, 0x16]);
        assert_eq!(b[2][..2], [0x61, 0x62]);
        assert_eq!(b[2][2..4], ne16(16));
        assert_eq!(b[3][..2], [0x6b, 0x3a]);
        assert_eq!(b[3][2..4], ne16(-22));
        assert_eq!(b[4][..2], [0x62, 0x0a]);
        assert_eq!(b[5][..2], [0xdc, 0x02]);
        assert_eq!(b[5][4..], ne32(16));
        assert_eq!(
            b[6],
            [
                0x85,
                0,
                0,
                0,
                if le { 50 } else { 0 },
                0,
                0,
                if le { 0 } else { 50 }
            ]
        );
        assert_eq!(b[7], [0x95, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn jumps_land_on_their_labels_both_ways() {
        let mut a = Asm::default();
        a.label("top")
            .jmp32_imm(Cond::Ne, R2, 4, "out")
            .mov_imm(R0, 0)
            .ja("top")
            .label("out")
            .exit();
        let p = a.finish().unwrap();
        assert_eq!(p[0].off, 2, "forward: skips two instructions");
        assert_eq!(p[0].code, 0x56);
        assert_eq!(p[2].off, -3, "backward: to the first instruction");
    }

    #[test]
    fn undefined_and_twice_placed_labels_are_refused() {
        let mut a = Asm::default();
        a.ja("nowhere").exit();
        assert_eq!(a.finish(), Err(AsmError::Undefined("nowhere")));
        let mut a = Asm::default();
        a.label("x").label("x").exit();
        assert_eq!(a.finish(), Err(AsmError::Twice("x")));
    }
}
