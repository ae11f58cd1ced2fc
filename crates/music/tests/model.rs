//! The column transformer's gradients, generation and training plumbing.

use diffusion_core::Rng;
use diffusion_discrete::{Process, VqSchedule};
use diffusion_music::{
    ColumnTransformer, Grid, ModelConfig, MusicError, SampleConfig, Task, TrainConfig, Vocab, bundled_path,
    generate, load_chorales, train,
};
use diffusion_nn::Parameters;
use ndarray::{ArrayD, IxDyn};

fn tiny(vocab: usize, tracks: usize, steps: usize) -> ModelConfig {
    ModelConfig {
        vocab,
        tracks,
        token_dim: 3,
        width: 8,
        heads: 2,
        depth: 2,
        steps,
    }
}

fn param_value(m: &ColumnTransformer<f64>, name: &str, i: usize) -> f64 {
    let mut v = f64::NAN;
    m.visit(&mut |n, p| {
        if n == name {
            v = p.value.as_slice().unwrap()[i];
        }
    });
    v
}

fn set_param(m: &mut ColumnTransformer<f64>, name: &str, i: usize, v: f64) {
    m.visit_mut(&mut |n, p| {
        if n == name {
            p.value.as_slice_mut().unwrap()[i] = v;
        }
    });
}

fn param_grad(m: &ColumnTransformer<f64>, name: &str, i: usize) -> f64 {
    let mut v = f64::NAN;
    m.visit(&mut |n, p| {
        if n == name {
            v = p.grad.as_slice().unwrap()[i];
        }
    });
    v
}

#[test]
fn model_gradients_match_finite_differences_in_f64() {
    let cfg = tiny(7, 2, 10);
    let mut rng = Rng::new(1);
    let mut model = ColumnTransformer::<f64>::new(cfg, &mut rng).unwrap();
    let (batch, len, rows) = (2, 5, 4);
    let tokens: Vec<u32> = (0..batch * len * rows).map(|i| (i * 5 % 7) as u32).collect();
    let flags: Vec<f32> = (0..batch * len * 2).map(|i| (i % 3 == 0) as u32 as f32).collect();
    let (ts, first) = ([3usize, 9], [0usize, 17]);
    let weights: Vec<f64> = (0..batch * len * rows * 7).map(|_| rng.normal()).collect();
    let loss = |m: &ColumnTransformer<f64>| -> f64 {
        let (y, _) = m.forward(&tokens, &flags, &ts, &first, len).unwrap();
        y.iter().zip(&weights).map(|(a, b)| a * b).sum()
    };
    model.zero_grad();
    let (y, cache) = model.forward(&tokens, &flags, &ts, &first, len).unwrap();
    let dy = ArrayD::from_shape_vec(IxDyn(y.shape()), weights.clone()).unwrap();
    model.backward(&cache, &dy).unwrap();
    let mut checked = 0;
    let mut names = Vec::new();
    model.visit(&mut |n, p| names.push((n.to_string(), p.value.len())));
    for (name, n) in names {
        for i in [0, n / 3, n - 1] {
            let v = param_value(&model, &name, i);
            let h = 1e-5;
            set_param(&mut model, &name, i, v + h);
            let up = loss(&model);
            set_param(&mut model, &name, i, v - h);
            let down = loss(&model);
            set_param(&mut model, &name, i, v);
            let fd = (up - down) / (2.0 * h);
            let g = param_grad(&model, &name, i);
            assert!(
                (fd - g).abs() < 1e-6 * (1.0 + fd.abs()),
                "{name}[{i}]: analytic {g} vs fd {fd}"
            );
            checked += 1;
        }
    }
    assert!(checked > 40);
}

fn chorale_grid(columns: usize) -> (Grid, Vocab) {
    let vocab = Vocab::chorales();
    let c = &load_chorales(&bundled_path()).unwrap()[3];
    (Grid::encode(&c.score, &vocab).unwrap().window(0, columns), vocab)
}

#[test]
fn generation_keeps_given_cells_and_fills_the_rest_validly() {
    let (grid, vocab) = chorale_grid(32);
    let process = Process::mask_and_replace(vocab.size(), 20, VqSchedule::default()).unwrap();
    let model = ColumnTransformer::<f32>::new(tiny(vocab.size(), 4, 20), &mut Rng::new(2)).unwrap();
    let cfg = SampleConfig {
        steps: 7,
        temperature: 1.0,
    };
    let out = generate(
        &model,
        &process,
        &vocab,
        &grid,
        &Task::harmonize(4),
        cfg,
        &mut Rng::new(3),
    )
    .unwrap();
    out.validate(&vocab).unwrap();
    for c in 0..32 {
        assert_eq!((out.get(0, c), out.get(1, c)), (grid.get(0, c), grid.get(1, c)));
        for r in 0..8 {
            assert_ne!(out.get(r, c), vocab.mask());
        }
    }
    let again = generate(
        &model,
        &process,
        &vocab,
        &grid,
        &Task::harmonize(4),
        cfg,
        &mut Rng::new(3),
    )
    .unwrap();
    assert_eq!(out, again, "the seed determines the sample");
    let infill = Task::Infill { start: 8, len: 16 };
    let out = generate(&model, &process, &vocab, &grid, &infill, cfg, &mut Rng::new(4)).unwrap();
    for c in (0..8).chain(24..32) {
        for r in 0..8 {
            assert_eq!(out.get(r, c), grid.get(r, c));
        }
    }
}

#[test]
fn unsupported_shapes_are_errors() {
    let (grid, vocab) = chorale_grid(16);
    let process = Process::mask_and_replace(vocab.size(), 20, VqSchedule::default()).unwrap();
    let three = ColumnTransformer::<f32>::new(tiny(vocab.size(), 3, 20), &mut Rng::new(2)).unwrap();
    let cfg = SampleConfig::default();
    let r = generate(
        &three,
        &process,
        &vocab,
        &grid,
        &Task::harmonize(4),
        SampleConfig { steps: 5, ..cfg },
        &mut Rng::new(0),
    );
    assert!(matches!(r, Err(MusicError::Unsupported(_))));
    let four = ColumnTransformer::<f32>::new(tiny(vocab.size(), 4, 20), &mut Rng::new(2)).unwrap();
    let bad_span = Task::Infill { start: 10, len: 16 };
    assert!(matches!(
        generate(
            &four,
            &process,
            &vocab,
            &grid,
            &bad_span,
            SampleConfig { steps: 5, ..cfg },
            &mut Rng::new(0)
        ),
        Err(MusicError::Unsupported(_))
    ));
    // More sampling steps than the process has.
    assert!(
        generate(
            &four,
            &process,
            &vocab,
            &grid,
            &Task::harmonize(4),
            cfg,
            &mut Rng::new(0)
        )
        .is_err()
    );
}

#[test]
fn a_few_training_steps_run_and_give_finite_losses() {
    let vocab = Vocab::chorales();
    let scores: Vec<_> = load_chorales(&bundled_path())
        .unwrap()
        .into_iter()
        .take(10)
        .map(|c| c.score)
        .collect();
    let process = Process::mask_and_replace(vocab.size(), 20, VqSchedule::default()).unwrap();
    let mut model = ColumnTransformer::<f32>::new(tiny(vocab.size(), 4, 20), &mut Rng::new(5)).unwrap();
    let cfg = TrainConfig {
        steps: 3,
        batch: 2,
        window: 16,
        ..TrainConfig::default()
    };
    let losses = train(&mut model, &process, &vocab, &scores, &cfg, |_, _| {}).unwrap();
    assert_eq!(losses.len(), 3);
    assert!(losses.iter().all(|l| l.is_finite() && *l > 0.0));
    let too_long = TrainConfig {
        window: 10_000,
        ..cfg
    };
    assert!(matches!(
        train(&mut model, &process, &vocab, &scores, &too_long, |_, _| {}),
        Err(MusicError::Unsupported(_))
    ));
}

#[test]
fn saved_models_load_identically_and_harmonise_a_midi_melody() {
    let vocab = Vocab::chorales();
    let process = Process::mask_and_replace(vocab.size(), 20, VqSchedule::default()).unwrap();
    let model = ColumnTransformer::<f32>::new(tiny(vocab.size(), 4, 20), &mut Rng::new(9)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    let back = ColumnTransformer::<f32>::load(dir.path()).unwrap();
    assert_eq!(back.config(), model.config());
    let mut a = Vec::new();
    model.visit(&mut |n, p| a.push((n.to_string(), p.value.clone())));
    let mut b = Vec::new();
    back.visit(&mut |n, p| b.push((n.to_string(), p.value.clone())));
    assert_eq!(a, b);
    assert!(matches!(
        ColumnTransformer::<f32>::load(&dir.path().join("missing")),
        Err(MusicError::Io { .. })
    ));

    // A one-track melody through MIDI, harmonised into four voices.
    let c = &load_chorales(&bundled_path()).unwrap()[0];
    let mut melody = c.score.clone();
    melody.tracks.truncate(1);
    let melody = diffusion_music::read_midi(&diffusion_music::write_midi(&melody).unwrap()).unwrap();
    let cfg = SampleConfig {
        steps: 4,
        temperature: 1.0,
    };
    let out = diffusion_music::harmonize(&back, &process, &vocab, &melody, cfg, &mut Rng::new(1)).unwrap();
    assert_eq!(out.tracks.len(), 4);
    assert_eq!(out.tracks[0].notes, c.score.tracks[0].notes);
    assert_eq!(out.tracks[3].name, "Bass");
    assert!(out.tracks[1..].iter().any(|t| !t.notes.is_empty()));
}
