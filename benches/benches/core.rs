//! The fused solver-step primitive against the machine's copy bandwidth, measured in the
//! same run: `lincomb` with k terms moves (k + 1) reads and 1 write per element (k + 2
//! with keep != 0), a copy 1 read + 1 write.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use diffusion_benches::randn;
use diffusion_core::{Noise, Rng, Tensor};

fn bench_lincomb(c: &mut Criterion) {
    for shape in [&[4usize, 64, 64][..], &[16, 4, 128, 128][..]] {
        let name = format!("{shape:?}");
        let x = randn(shape, 1);
        let e1 = randn(shape, 2);
        let e2 = randn(shape, 3);
        let bytes = (x.len() * 4) as u64;
        let mut g = c.benchmark_group(format!("lincomb {name}"));

        g.throughput(Throughput::Bytes(2 * bytes));
        let mut out = x.clone();
        g.bench_function("copy (baseline)", |b| b.iter(|| out.assign(&x)));

        // DDIM / Euler: x' = a x + b eps, in place.
        g.throughput(Throughput::Bytes(3 * bytes));
        let mut y = x.clone();
        g.bench_function("in place, 1 term", |b| {
            b.iter(|| y.lincomb(0.999, &[(0.01, &e1)], None).unwrap())
        });

        // DPM-Solver++ 2M: x' = a x + b d0 + c d1 into a reused buffer.
        g.throughput(Throughput::Bytes(4 * bytes));
        let mut out = x.zeros_like();
        g.bench_function("3 terms", |b| {
            b.iter(|| {
                out.lincomb(0.0, &[(0.9, &x), (0.1, &e1), (-0.05, &e2)], None)
                    .unwrap()
            })
        });

        // Ancestral / SDE step: 2 terms + Gaussian noise.
        g.throughput(Throughput::Bytes(3 * bytes));
        let mut rng = Rng::new(0);
        g.bench_function("2 terms + noise", |b| {
            b.iter(|| {
                out.lincomb(0.0, &[(0.9, &x), (0.1, &e1)], Some(Noise::new(0.3, &mut rng)))
                    .unwrap()
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench_lincomb);
criterion_main!(benches);
