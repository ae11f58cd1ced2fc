//! Small floating-point formats, exact to the bit: FP8 E4M3 (the `fn` variant: no
//! infinity, max 448, NaN = `S.1111.111`), FP8 E5M2 (IEEE-like: infinities, max 57344) and
//! FP4 E2M1 (no infinity or NaN, max 6).
//!
//! Encoding rounds to nearest, ties to even, in f64 (every f32 is exact there, and so is
//! the division by a power of two that finds the mantissa). Overflow either saturates to
//! the largest finite value (CUDA's `__NV_SATFINITE`, what quantization wants) or follows
//! the format ([`Overflow::Ieee`]: E5M2 gives infinity, E4M3 NaN, as PyTorch's casts do;
//! E2M1 has neither and always saturates).

use crate::error::{QuantError, Result};

/// What the format does with its top codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Specials {
    /// IEEE 754: exponent all ones is infinity (mantissa 0) or NaN.
    Ieee,
    /// Only `S.1..1.1..1` is NaN; no infinity (E4M3FN).
    NanOnly,
    /// Every code is a finite number (E2M1).
    None,
}

/// What encoding does with magnitudes above the largest finite value (after rounding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Clamp to the largest finite value (infinite inputs too).
    #[default]
    Saturate,
    /// Round as if the exponent were unbounded, then overflow to infinity (E5M2) or NaN
    /// (E4M3); E2M1, which has neither, saturates.
    Ieee,
}

/// A minifloat format of at most 8 bits: sign, `exp_bits`, `man_bits`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MiniFloat {
    pub name: &'static str,
    pub exp_bits: u32,
    pub man_bits: u32,
    pub bias: i32,
    specials: Specials,
}

/// FP8 E4M3 (OCP `E4M3FN`, PyTorch `float8_e4m3fn`).
pub const E4M3: MiniFloat = MiniFloat {
    name: "e4m3",
    exp_bits: 4,
    man_bits: 3,
    bias: 7,
    specials: Specials::NanOnly,
};

/// FP8 E5M2 (OCP `E5M2`, PyTorch `float8_e5m2`).
pub const E5M2: MiniFloat = MiniFloat {
    name: "e5m2",
    exp_bits: 5,
    man_bits: 2,
    bias: 15,
    specials: Specials::Ieee,
};

/// FP4 E2M1 (OCP MX `FP4`): values 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives.
pub const E2M1: MiniFloat = MiniFloat {
    name: "e2m1",
    exp_bits: 2,
    man_bits: 1,
    bias: 1,
    specials: Specials::None,
};

impl MiniFloat {
    /// A format by name (`e4m3`, `e5m2`, `e2m1`).
    pub fn by_name(name: &str) -> Result<Self> {
        match name {
            "e4m3" => Ok(E4M3),
            "e5m2" => Ok(E5M2),
            "e2m1" => Ok(E2M1),
            _ => Err(QuantError::Invalid {
                name: "float format",
                reason: format!("unknown format {name:?} (e4m3, e5m2, e2m1)"),
            }),
        }
    }

    /// Bits per code (1 + exponent + mantissa).
    pub fn bits(&self) -> u32 {
        1 + self.exp_bits + self.man_bits
    }

    fn sign_bit(&self) -> u8 {
        1 << (self.exp_bits + self.man_bits)
    }

    fn max_exp_field(&self) -> u32 {
        (1 << self.exp_bits) - 1
    }

    /// The largest finite magnitude (448, 57344, 6).
    pub fn max_value(&self) -> f64 {
        let m = self.man_bits as i32;
        let (e, mant) = match self.specials {
            // Top exponent is reserved; full mantissa.
            Specials::Ieee => (self.max_exp_field() as i32 - 1, (1 << m) - 1),
            // Top exponent usable except the all-ones mantissa (NaN).
            Specials::NanOnly => (self.max_exp_field() as i32, (1 << m) - 2),
            Specials::None => (self.max_exp_field() as i32, (1 << m) - 1),
        };
        (1.0 + mant as f64 / (1 << m) as f64) * 2f64.powi(e - self.bias)
    }

    fn max_code(&self) -> u8 {
        let m = self.man_bits;
        match self.specials {
            Specials::Ieee => (((self.max_exp_field() - 1) << m) | ((1 << m) - 1)) as u8,
            Specials::NanOnly => ((self.max_exp_field() << m) | ((1 << m) - 2)) as u8,
            Specials::None => ((self.max_exp_field() << m) | ((1 << m) - 1)) as u8,
        }
    }

    /// The canonical NaN code of this sign, if the format has NaN.
    pub fn nan_code(&self, negative: bool) -> Option<u8> {
        let sign = if negative { self.sign_bit() } else { 0 };
        match self.specials {
            Specials::Ieee | Specials::NanOnly => Some(sign | (self.sign_bit() - 1)),
            Specials::None => None,
        }
    }

    /// Smallest normal exponent (unbiased).
    fn min_exp(&self) -> i32 {
        1 - self.bias
    }

    /// The value of `code` (only the low [`MiniFloat::bits`] bits are read).
    pub fn decode(&self, code: u8) -> f32 {
        let m = self.man_bits;
        let code = code & ((1u16 << self.bits()) - 1) as u8;
        let neg = code & self.sign_bit() != 0;
        let e = ((code >> m) as u32) & self.max_exp_field();
        let mant = (code as u32) & ((1 << m) - 1);
        let sign = if neg { -1.0 } else { 1.0 };
        let mag = match self.specials {
            Specials::Ieee if e == self.max_exp_field() => {
                if mant == 0 {
                    f64::INFINITY
                } else {
                    f64::NAN
                }
            }
            Specials::NanOnly if e == self.max_exp_field() && mant == (1 << m) - 1 => f64::NAN,
            _ if e == 0 => mant as f64 * 2f64.powi(self.min_exp() - m as i32),
            _ => (1.0 + mant as f64 / (1u32 << m) as f64) * 2f64.powi(e as i32 - self.bias),
        };
        (sign * mag) as f32
    }

    /// `x` rounded to the nearest code (ties to even), overflow saturating.
    pub fn encode(&self, x: f32) -> Result<u8> {
        self.encode_with(x, Overflow::Saturate)
    }

    /// `x` rounded to the nearest code (ties to even) with the given overflow rule. NaN
    /// becomes the format's NaN of the same sign; E2M1 has none, so NaN is an error.
    pub fn encode_with(&self, x: f32, overflow: Overflow) -> Result<u8> {
        let neg = x.is_sign_negative();
        let sign = if neg { self.sign_bit() } else { 0 };
        if x.is_nan() {
            return self
                .nan_code(neg)
                .ok_or_else(|| QuantError::NonFinite(format!("NaN has no {} code", self.name)));
        }
        let a = (x as f64).abs();
        let overflow_code = || match (overflow, self.specials) {
            (Overflow::Ieee, Specials::Ieee) => sign | ((self.max_exp_field() as u8) << self.man_bits),
            (Overflow::Ieee, Specials::NanOnly) => sign | (self.sign_bit() - 1),
            _ => sign | self.max_code(),
        };
        if a.is_infinite() {
            return Ok(overflow_code());
        }
        if a == 0.0 {
            return Ok(sign);
        }
        let m = self.man_bits as i32;
        // Binade of `a` (f32 values, subnormals included, are normal f64 numbers), raised to
        // the format's smallest normal exponent: below it the spacing is the subnormal one.
        let e = ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023;
        let e = e.max(self.min_exp());
        let quantum = 2f64.powi(e - m);
        let steps = (a / quantum).round_ties_even();
        let r = steps * quantum;
        if r > self.max_value() {
            return Ok(overflow_code());
        }
        if r == 0.0 {
            return Ok(sign);
        }
        let re = ((r.to_bits() >> 52) & 0x7ff) as i32 - 1023;
        let code = if re < self.min_exp() {
            // Subnormal: exponent field 0, mantissa counts subnormal quanta.
            steps as u32
        } else {
            let mant = (r / 2f64.powi(re - m)) as u32 - (1 << m);
            (((re + self.bias) as u32) << m) | mant
        };
        Ok(sign | code as u8)
    }

    /// `x` rounded through the format (saturating); NaN stays NaN (E2M1: an error).
    pub fn round(&self, x: f32) -> Result<f32> {
        Ok(self.decode(self.encode(x)?))
    }

    /// The 2^bits values of every code, indexed by code.
    pub fn table(&self) -> Vec<f32> {
        (0..1u16 << self.bits()).map(|c| self.decode(c as u8)).collect()
    }
}
