//! Integer products against the f32 GEMM on the same shapes:
//! `cargo bench -p diffusion-quant --bench int8`. Ratios are reported in the README; no
//! test asserts speed.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use diffusion_core::Rng;
use diffusion_nn::layers::Linear;
use diffusion_quant::kernel::{Backend, PackedWeights, gemm_u8i8};
use diffusion_quant::quantizer::{Granularity, IntFormat, Quantizer, Scheme};
use diffusion_quant::{ActMode, ActRecipe, Exec, QuantLinear, Recipe};
use ndarray::{Array2, ArrayD, IxDyn};

fn int_q(bits: u32, g: Granularity) -> Quantizer {
    Quantizer::new(Scheme::Int(IntFormat::new(bits, true).unwrap()), g)
}

fn bench(c: &mut Criterion) {
    let mut rng = Rng::new(1);
    for (m, k, n) in [(512, 256, 256), (256, 1024, 1024)] {
        let mut g = c.benchmark_group(format!("{m}x{k}x{n}"));
        let x = Array2::from_shape_fn((m, k), |_| rng.normal() as f32);
        let w = Array2::from_shape_fn((n, k), |_| rng.normal() as f32 * 0.05);
        g.bench_function("f32 gemm", |b| {
            b.iter(|| diffusion_nn::matmul_view(black_box(x.view()), w.t()).unwrap())
        });
        let a: Vec<u8> = (0..m * k).map(|i| (i * 7 % 251) as u8).collect();
        let codes8: Vec<i32> = (0..n * k).map(|i| (i * 13 % 255) as i32 - 127).collect();
        let codes4: Vec<i32> = codes8.iter().map(|c| c.rem_euclid(16) - 8).collect();
        let p8 = PackedWeights::pack(&codes8, n, k, 8).unwrap();
        let p4 = PackedWeights::pack(&codes4, n, k, 4).unwrap();
        for backend in [Backend::Portable, Backend::detect()] {
            g.bench_function(format!("u8 x i8 {backend:?}"), |b| {
                b.iter(|| gemm_u8i8(black_box(&a), m, &p8, k, backend).unwrap())
            });
            g.bench_function(format!("u8 x i4 {backend:?}"), |b| {
                b.iter(|| gemm_u8i8(black_box(&a), m, &p4, k, backend).unwrap())
            });
            g.bench_function(format!("u8 x i4 groups of 64 {backend:?}"), |b| {
                b.iter(|| gemm_u8i8(black_box(&a), m, &p4, 64, backend).unwrap())
            });
        }
        // Whole layers: f32 Linear against W8A8 / W4A8 with dynamic per-token activations.
        let lin = Linear::<f32>::new(k, n, true, &mut Rng::new(2));
        let xd = ArrayD::from_shape_vec(IxDyn(&[m, k]), x.iter().copied().collect()).unwrap();
        g.bench_function("Linear f32", |b| b.iter(|| lin.apply(black_box(&xd)).unwrap()));
        let xs: Vec<f32> = x.iter().copied().collect();
        for (name, wq) in [
            ("W8A8", int_q(8, Granularity::PerRow)),
            ("W4A8", int_q(4, Granularity::PerGroup(64))),
        ] {
            let recipe = Recipe {
                weight: Some(wq),
                act: Some(ActRecipe {
                    quantizer: int_q(8, Granularity::PerRow),
                    mode: ActMode::Dynamic,
                }),
                ..Recipe::default()
            };
            let q = QuantLinear::build("l", &lin, &recipe, None).unwrap();
            g.bench_function(format!("QuantLinear {name} int"), |b| {
                b.iter(|| {
                    q.forward(black_box(&xs), m, Exec::Int(Backend::detect()))
                        .unwrap()
                })
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
