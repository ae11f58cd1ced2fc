//! Train-step (forward + epsilon-MSE gradient + backward + AdamW) and inference timings of
//! the reference architectures at the PyTorch baseline's batch sizes, on 2 rayon threads,
//! plus sgemm 1024. Compare with PyTorch on the same machine: `cargo xtask bench --torch`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use diffusion_core::Rng;
use diffusion_nn::models::{Dit, DitConfig, MlpConfig, MlpDenoiser, UNet, UNetConfig, WhiteBoxDit};
use diffusion_nn::{Network, Parameters};
use ndarray::{ArrayD, IxDyn};

fn randn(shape: &[usize], rng: &mut Rng) -> ArrayD<f32> {
    let mut v = vec![0.0; shape.iter().product()];
    rng.fill_normal(&mut v);
    ArrayD::from_shape_vec(IxDyn(shape), v.iter().map(|&x| x as f32).collect()).unwrap()
}

/// Adam moments, kept outside the model like an optimizer would.
struct AdamW {
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    step: i32,
}

impl AdamW {
    fn new(model: &dyn Parameters<f32>) -> Self {
        let mut m = Vec::new();
        model.visit(&mut |_, p| m.push(vec![0.0; p.value.len()]));
        Self {
            v: m.clone(),
            m,
            step: 0,
        }
    }
    fn update(&mut self, model: &mut dyn Parameters<f32>) {
        let (lr, b1, b2, eps, wd) = (1e-4f32, 0.9f32, 0.999f32, 1e-8f32, 1e-2f32);
        self.step += 1;
        let (c1, c2) = (1.0 - b1.powi(self.step), 1.0 - b2.powi(self.step));
        let mut i = 0;
        model.visit_mut(&mut |_, p| {
            let (m, v) = (&mut self.m[i], &mut self.v[i]);
            i += 1;
            let (w, g) = (p.value.as_slice_mut().unwrap(), p.grad.as_slice().unwrap());
            for j in 0..w.len() {
                m[j] = b1 * m[j] + (1.0 - b1) * g[j];
                v[j] = b2 * v[j] + (1.0 - b2) * g[j] * g[j];
                w[j] = w[j] * (1.0 - lr * wd) - lr * (m[j] / c1) / ((v[j] / c2).sqrt() + eps);
            }
        });
    }
}

fn bench_model<N: Network<f32>>(c: &mut Criterion, name: &str, mut model: N, batch: usize) {
    let mut rng = Rng::new(0);
    let mut shape = vec![batch];
    shape.extend(model.input_shape());
    let x = randn(&shape, &mut rng);
    let eps = randn(&shape, &mut rng);
    let t: Vec<f32> = (0..batch).map(|i| ((i * 37) % 1000) as f32).collect();
    let mut opt = AdamW::new(&model);
    let n = x.len() as f32;
    c.bench_function(&format!("{name}/train_step"), |b| {
        b.iter(|| {
            model.zero_grad();
            let (y, cache) = model.forward(&x, &t, None).unwrap();
            let dy = (&y - &eps) * (2.0 / n);
            black_box(model.backward(&cache, &dy).unwrap());
            opt.update(&mut model);
        })
    });
    c.bench_function(&format!("{name}/infer"), |b| {
        b.iter(|| black_box(model.infer(&x, &t, None).unwrap()))
    });
}

fn models(c: &mut Criterion) {
    let _ = rayon::ThreadPoolBuilder::new().num_threads(2).build_global();
    let mut rng = Rng::new(1);
    bench_model(
        c,
        "mlp",
        MlpDenoiser::<f32>::new(MlpConfig::default(), &mut rng).unwrap(),
        4096,
    );
    bench_model(
        c,
        "dit-tiny",
        Dit::<f32>::new(DitConfig::default(), &mut rng).unwrap(),
        64,
    );
    bench_model(
        c,
        "unet-small",
        UNet::<f32>::new(UNetConfig::default(), &mut rng).unwrap(),
        16,
    );
    bench_model(
        c,
        "whitebox-dit",
        WhiteBoxDit::<f32>::new(Default::default(), &mut rng).unwrap(),
        64,
    );
}

fn sgemm(c: &mut Criterion) {
    let _ = rayon::ThreadPoolBuilder::new().num_threads(2).build_global();
    let n = 1024;
    let mut rng = Rng::new(2);
    let a = randn(&[n, n], &mut rng)
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let b = randn(&[n, n], &mut rng)
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let mut group = c.benchmark_group("sgemm");
    group.throughput(criterion::Throughput::Elements((2 * n * n * n) as u64));
    group.bench_function("1024 (elements = flops)", |bch| {
        bch.iter(|| black_box(diffusion_nn::matmul_2d(&a, &b)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    targets = sgemm, models
}
criterion_main!(benches);
