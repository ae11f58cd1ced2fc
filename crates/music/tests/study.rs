//! The slow study behind the README's results table (ignored in CI):
//! `STUDY_STEPS=2000 cargo test -p diffusion-music --test study -- --ignored --nocapture`.

use std::time::Instant;

use diffusion_core::Rng;
use diffusion_discrete::{Process, VqSchedule};
use diffusion_music::chorale::split;
use diffusion_music::metrics::{Marginals, Report, VoiceLeading, evaluate, voice_leading};
use diffusion_music::{
    ColumnTransformer, Grid, ModelConfig, SampleConfig, Score, Task, TrainConfig, Vocab, bundled_path,
    generate, load_chorales, train,
};
use diffusion_train::LrSchedule;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn row(name: &str, r: &Report) {
    let [range, cross, par] = r.voice_leading.rates();
    println!(
        "| {name} | {:.3} | {:.3} | {:.3} | {:.4} | {:.4} | {:.4} |",
        r.pitch_overlap, r.duration_overlap, r.chord_accuracy, range, cross, par
    );
}

#[test]
#[ignore = "slow study: trains a model (minutes)"]
fn chorale_study() {
    let steps = env("STUDY_STEPS", 2000);
    let window = env("STUDY_WINDOW", 64);
    let sample_steps = env("STUDY_SAMPLE_STEPS", 50);
    let all = load_chorales(&bundled_path()).unwrap();
    let (train_set, test_set) = split(&all, 10, 0);
    let vocab = Vocab::chorales();
    let process = Process::mask_and_replace(vocab.size(), 100, VqSchedule::default()).unwrap();
    let cfg = ModelConfig {
        vocab: vocab.size(),
        tracks: 4,
        token_dim: 32,
        width: 128,
        heads: 4,
        depth: 4,
        steps: 100,
    };
    let scores: Vec<Score> = train_set.iter().map(|c| c.score.clone()).collect();
    let model = match std::env::var("STUDY_MODEL") {
        // Evaluate a model saved by an earlier run (STUDY_OUT) without training.
        Ok(dir) => ColumnTransformer::<f32>::load(std::path::Path::new(&dir)).unwrap(),
        Err(_) => {
            let mut model = ColumnTransformer::<f32>::new(cfg, &mut Rng::new(0)).unwrap();
            let tc = TrainConfig {
                steps,
                batch: 8,
                window,
                lr: LrSchedule {
                    peak: 1e-3,
                    warmup_steps: 100.min(steps as u64 / 10),
                    total_steps: steps as u64,
                    min_lr: 1e-5,
                },
                ..TrainConfig::default()
            };
            let t0 = Instant::now();
            let losses = train(&mut model, &process, &vocab, &scores, &tc, |s, l| {
                if s % 100 == 0 {
                    eprintln!("step {s} loss {l:.4} ({:.0} s)", t0.elapsed().as_secs_f64());
                }
            })
            .unwrap();
            if let Ok(dir) = std::env::var("STUDY_OUT") {
                model.save(std::path::Path::new(&dir)).unwrap();
            }
            let tail = &losses[losses.len().saturating_sub(100)..];
            println!(
                "trained {steps} steps in {:.0} s, mean loss of the last 100 steps {:.4}",
                t0.elapsed().as_secs_f64(),
                tail.iter().sum::<f64>() / tail.len() as f64
            );

            model
        }
    };
    // Harmonisation (soprano -> ATB) and infilling a bar, on the first 64 columns of each
    // held-out chorale.
    let eval_len = 64;
    let real: Vec<Score> = test_set
        .iter()
        .map(|c| {
            Grid::encode(&c.score, &vocab)
                .unwrap()
                .window(0, eval_len)
                .decode(&vocab, &c.score.meta())
                .unwrap()
        })
        .collect();
    let temperature = std::env::var("STUDY_TEMPERATURE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let sc = SampleConfig {
        steps: sample_steps,
        temperature,
    };
    println!("sampling: {sample_steps} steps, temperature {temperature}");
    let mut rng = Rng::new(7);
    let t1 = Instant::now();
    let mut harm = Vec::new();
    let mut from_bass = Vec::new();
    let mut infill = Vec::new();
    for s in &real {
        let g = Grid::encode(s, &vocab).unwrap();
        let h = generate(&model, &process, &vocab, &g, &Task::harmonize(4), sc, &mut rng).unwrap();
        harm.push(h.decode(&vocab, &s.meta()).unwrap());
        let bass_given = Task::Tracks(vec![false, false, false, true]);
        let b = generate(&model, &process, &vocab, &g, &bass_given, sc, &mut rng).unwrap();
        from_bass.push(b.decode(&vocab, &s.meta()).unwrap());
        let f = generate(
            &model,
            &process,
            &vocab,
            &g,
            &Task::Infill { start: 16, len: 16 },
            sc,
            &mut rng,
        )
        .unwrap();
        infill.push(f.decode(&vocab, &s.meta()).unwrap());
    }
    eprintln!("sampled in {:.0} s", t1.elapsed().as_secs_f64());
    let notes_per_voice = |v: &[Score]| -> Vec<usize> {
        (0..4)
            .map(|t| v.iter().map(|s| s.tracks[t].notes.len()).sum())
            .collect()
    };
    println!(
        "notes per voice (S, A, T, B): real {:?}, harmonised {:?}",
        notes_per_voice(&real),
        notes_per_voice(&harm)
    );
    let marg = Marginals::fit(&scores, 4);
    let baseline: Vec<Score> = real
        .iter()
        .map(|s| marg.sample(s, &[1, 2, 3], &mut rng))
        .collect();
    let targets = [1, 2, 3];
    let mut own = VoiceLeading::default();
    for s in &real {
        let v = voice_leading(s, &targets);
        own.range.0 += v.range.0;
        own.range.1 += v.range.1;
        own.crossing.0 += v.crossing.0;
        own.crossing.1 += v.crossing.1;
        own.parallel.0 += v.parallel.0;
        own.parallel.1 += v.parallel.1;
    }
    let own = Report {
        pitch_overlap: 1.0,
        duration_overlap: 1.0,
        chord_accuracy: 1.0,
        voice_leading: own,
    };
    println!(
        "| ({} held-out chorales, first {eval_len} 16ths) | pitch overlap | duration overlap | chord acc. | range viol. | crossings | parallel 5/8 |",
        real.len()
    );
    println!("|---|---|---|---|---|---|---|");
    row("real chorales (ATB)", &own);
    row("diffusion: harmonise S -> ATB", &evaluate(&harm, &real, &targets));
    row(
        "marginal baseline: S -> ATB",
        &evaluate(&baseline, &real, &targets),
    );
    let sat = [0, 1, 2];
    // Crossings and parallels count every voice pair; only the range check follows `sat`.
    let mut own_sat = own.voice_leading;
    own_sat.range = (0, 0);
    for s in &real {
        let v = voice_leading(s, &sat);
        own_sat.range.0 += v.range.0;
        own_sat.range.1 += v.range.1;
    }
    row(
        "real chorales (SAT)",
        &Report {
            voice_leading: own_sat,
            ..own
        },
    );
    row("diffusion: B -> SAT", &evaluate(&from_bass, &real, &sat));
    let base_bass: Vec<Score> = real.iter().map(|s| marg.sample(s, &sat, &mut rng)).collect();
    row("marginal baseline: B -> SAT", &evaluate(&base_bass, &real, &sat));
    // Infilling is scored on the regenerated bar alone (columns 16..32).
    let bar = |v: &[Score]| -> Vec<Score> {
        v.iter()
            .map(|s| {
                Grid::encode(s, &vocab)
                    .unwrap()
                    .window(16, 16)
                    .decode(&vocab, &s.meta())
                    .unwrap()
            })
            .collect()
    };
    let real_bar = bar(&real);
    let mut own_bar = VoiceLeading::default();
    for s in &real_bar {
        let v = voice_leading(s, &[0, 1, 2, 3]);
        own_bar.range.0 += v.range.0;
        own_bar.range.1 += v.range.1;
        own_bar.crossing.0 += v.crossing.0;
        own_bar.crossing.1 += v.crossing.1;
        own_bar.parallel.0 += v.parallel.0;
        own_bar.parallel.1 += v.parallel.1;
    }
    row(
        "real chorales, bar 2 (SATB)",
        &Report {
            voice_leading: own_bar,
            ..own
        },
    );
    row(
        "diffusion: infill bar 2 (SATB)",
        &evaluate(&bar(&infill), &real_bar, &[0, 1, 2, 3]),
    );
    let marg_bar: Vec<Score> = real
        .iter()
        .map(|s| marg.sample(s, &[0, 1, 2, 3], &mut rng))
        .collect();
    row(
        "marginal baseline: bar 2 (SATB)",
        &evaluate(&bar(&marg_bar), &real_bar, &[0, 1, 2, 3]),
    );
}
