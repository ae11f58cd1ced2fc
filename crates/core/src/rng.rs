//! A counter-based random number generator (Philox4x32-10, Salmon et al. 2011).
//!
//! Every random value is a pure function of `(seed, stream, counter)`, so a tensor of
//! Gaussian noise can be filled in parallel chunks (or by a GPU kernel running the same
//! function) and still be identical for any number of threads.

use rand_core::RngCore;

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// The Philox4x32 bijection with 10 rounds: four 32-bit counter words and a 64-bit key
/// in, four uniformly distributed 32-bit words out.
#[inline]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let p0 = u64::from(M0) * u64::from(c[0]);
        let p1 = u64::from(M1) * u64::from(c[2]);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// Four independent standard normals from one Philox block: each 32-bit word becomes a
/// uniform `u = (w + 1/2) 2^-32` in (0, 1), mapped through the normal quantile function
/// [`normal_quantile`]. No rejection, so variate `n` is addressable by its index.
#[inline]
pub fn normal_quad(seed: u64, stream: u64, block: u64) -> [f64; 4] {
    let r = philox4x32_10(
        [
            block as u32,
            (block >> 32) as u32,
            stream as u32,
            (stream >> 32) as u32,
        ],
        [seed as u32, (seed >> 32) as u32],
    );
    const SCALE: f64 = 1.0 / 4_294_967_296.0;
    r.map(|w| normal_quantile((f64::from(w) + 0.5) * SCALE))
}

/// The standard normal quantile function for `p` in (0, 1) by Acklam's rational
/// approximation (relative error below 1.2e-9). The central region (95% of draws) is a
/// rational polynomial with no transcendental call, which makes Gaussian noise an order
/// of magnitude cheaper than Box-Muller; the tails take one `ln` and one `sqrt`.
#[inline]
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e+01,
        2.209460984245205e+02,
        -2.759285104469687e+02,
        1.383577518672690e+02,
        -3.066479806614716e+01,
        2.506628277459239e+00,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e+01,
        1.615858368580409e+02,
        -1.556989798598866e+02,
        6.680131188771972e+01,
        -1.328068155288572e+01,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e+00,
        -2.549732539343734e+00,
        4.374664141464968e+00,
        2.938163982698783e+00,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-03,
        3.224671290700398e-01,
        2.445134137142996e+00,
        3.754408661907416e+00,
    ];
    const P_LOW: f64 = 0.02425;
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < P_LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - P_LOW {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// An explicit, seedable random stream. Cloning it forks an identical stream.
///
/// Normal variate number `n` of a draw that starts at block `offset` is lane `n % 4` of
/// [`normal_quad`]`(seed, stream, offset + n / 4)`; a draw of `len` normals advances the
/// offset by `ceil(len / 4)` blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    seed: u64,
    stream: u64,
    offset: u64,
}

impl Rng {
    /// A stream determined by `seed` alone.
    pub fn new(seed: u64) -> Self {
        Self::with_stream(seed, 0)
    }

    /// One of 2^64 independent streams under the same seed (for example one per purpose).
    pub fn with_stream(seed: u64, stream: u64) -> Self {
        Self {
            seed,
            stream,
            offset: 0,
        }
    }

    /// A stream positioned after `offset` consumed blocks: restores a saved
    /// ([`Rng::seed`], [`Rng::stream`], [`Rng::offset`]) exactly, for resumable runs.
    pub fn from_parts(seed: u64, stream: u64, offset: u64) -> Self {
        Self { seed, stream, offset }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The stream id.
    pub fn stream(&self) -> u64 {
        self.stream
    }

    /// Blocks consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reserves the blocks for `len` normal variates and returns a position from which
    /// they can be generated in any order (see [`NormalBlock::normal`]).
    pub fn reserve_normals(&mut self, len: usize) -> NormalBlock {
        let start = NormalBlock {
            seed: self.seed,
            stream: self.stream,
            offset: self.offset,
        };
        self.offset += (len as u64).div_ceil(4);
        start
    }

    /// Fills `out` with standard normal variates.
    pub fn fill_normal(&mut self, out: &mut [f64]) {
        let block = self.reserve_normals(out.len());
        block.fill(0, out);
    }

    /// One standard normal variate (consumes one block).
    pub fn normal(&mut self) -> f64 {
        let mut z = [0.0];
        self.fill_normal(&mut z);
        z[0]
    }

    /// A uniform variate in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn next_block(&mut self) -> [u32; 4] {
        let b = self.offset;
        self.offset += 1;
        philox4x32_10(
            [
                b as u32,
                (b >> 32) as u32,
                self.stream as u32,
                (self.stream >> 32) as u32,
            ],
            [self.seed as u32, (self.seed >> 32) as u32],
        )
    }
}

/// The start of a reserved run of normal variates; `normal(n)` is the n-th of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormalBlock {
    pub seed: u64,
    pub stream: u64,
    pub offset: u64,
}

impl NormalBlock {
    /// The `n`-th normal variate of this run.
    #[inline]
    pub fn normal(&self, n: u64) -> f64 {
        normal_quad(self.seed, self.stream, self.offset + n / 4)[(n % 4) as usize]
    }

    /// Writes variates `first .. first + out.len()` of this run into `out`.
    pub fn fill(&self, first: u64, out: &mut [f64]) {
        let mut n = first;
        let mut i = 0;
        while i < out.len() {
            let quad = normal_quad(self.seed, self.stream, self.offset + n / 4);
            let lane = (n % 4) as usize;
            let take = (4 - lane).min(out.len() - i);
            out[i..i + take].copy_from_slice(&quad[lane..lane + take]);
            i += take;
            n += take as u64;
        }
    }
}

impl RngCore for Rng {
    fn next_u32(&mut self) -> u32 {
        self.next_block()[0]
    }

    fn next_u64(&mut self) -> u64 {
        let r = self.next_block();
        (u64::from(r[1]) << 32) | u64::from(r[0])
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(16) {
            let r = self.next_block();
            let bytes: Vec<u8> = r.iter().flat_map(|w| w.to_le_bytes()).collect();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123's `tests/kat_vectors`, the three `philox4x32 10` lines.
    #[test]
    fn philox_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn normals_have_unit_moments() {
        let mut rng = Rng::new(7);
        let n = 200_000;
        let mut z = vec![0.0; n];
        rng.fill_normal(&mut z);
        let mean = z.iter().sum::<f64>() / n as f64;
        let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        let kurt = z.iter().map(|v| (v - mean).powi(4)).sum::<f64>() / n as f64 / var.powi(2);
        // Standard errors: mean 1/sqrt(n) ~ 2.2e-3, variance sqrt(2/n) ~ 3.2e-3.
        assert!(mean.abs() < 0.011, "mean {mean}");
        assert!((var - 1.0).abs() < 0.016, "variance {var}");
        assert!((kurt - 3.0).abs() < 0.1, "kurtosis {kurt}");
    }

    #[test]
    fn draws_are_position_addressable() {
        let mut a = Rng::new(3);
        let mut whole = vec![0.0; 9];
        a.fill_normal(&mut whole);
        let mut b = Rng::new(3);
        let block = b.reserve_normals(9);
        let mut tail = vec![0.0; 6];
        block.fill(3, &mut tail);
        assert_eq!(&whole[3..], &tail[..]);
        assert_eq!(a, b);
        // The next draw continues after the reserved blocks in both.
        assert_eq!(a.normal(), b.normal());
    }

    #[test]
    fn quantile_matches_known_values() {
        // Standard normal quantiles (e.g. Abramowitz & Stegun, Table 26.5).
        for (p, z) in [
            (0.5, 0.0),
            (0.975, 1.959963984540054),
            (0.8413447460685429, 1.0),
            (0.001, -3.090232306167814),
            (1e-9, -5.997807015007687),
            (0.9999, 3.719016485455709),
        ] {
            let got = normal_quantile(p);
            assert!(
                (got - z).abs() <= 1.2e-9 * z.abs().max(1.0),
                "p = {p}: {got} vs {z}"
            );
        }
    }

    #[test]
    fn streams_and_seeds_differ() {
        let z = |seed, stream| Rng::with_stream(seed, stream).normal();
        assert_ne!(z(1, 0), z(2, 0));
        assert_ne!(z(1, 0), z(1, 1));
    }
}
