//! Evaluation of generated four-voice music against the real chorales: pitch and duration
//! distribution overlap, chord accuracy per beat (a template recogniser), voice-leading
//! rates; and the baseline that samples every voice from its marginal distributions.

use std::collections::BTreeMap;

use diffusion_core::Rng;
use diffusion_discrete::categorical;

use crate::score::{Note, Score};

/// Conventional SATB ranges (MIDI): soprano C4-G5, alto G3-C5, tenor C3-G4, bass E2-C4.
pub const SATB_RANGES: [(u8, u8); 4] = [(60, 79), (55, 72), (48, 67), (40, 60)];

/// Histogram intersection `sum_i min(p_i, q_i)` of two normalised histograms of values.
pub fn overlap<T: Ord + Copy>(a: &[T], b: &[T]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let hist = |v: &[T]| {
        let mut h: BTreeMap<T, f64> = BTreeMap::new();
        for &x in v {
            *h.entry(x).or_default() += 1.0 / v.len() as f64;
        }
        h
    };
    let (ha, hb) = (hist(a), hist(b));
    ha.iter().map(|(k, p)| p.min(*hb.get(k).unwrap_or(&0.0))).sum()
}

/// The pitch sounding in each 16th column of a track (`None` in rests); a later note
/// replaces an earlier one still sounding.
pub fn sounding(notes: &[Note], length: u32) -> Vec<Option<u8>> {
    let mut out = vec![None; length as usize];
    for n in notes {
        for c in n.onset..(n.onset + n.duration).min(length) {
            out[c as usize] = Some(n.pitch);
        }
    }
    out
}

/// Chord qualities the recogniser knows, as pitch-class templates above the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Quality {
    Major,
    Minor,
    Diminished,
    Dominant7,
}

const TEMPLATES: [(Quality, &[u8]); 4] = [
    (Quality::Major, &[0, 4, 7]),
    (Quality::Minor, &[0, 3, 7]),
    (Quality::Diminished, &[0, 3, 6]),
    (Quality::Dominant7, &[0, 4, 7, 10]),
];

/// The chord of a set of sounding pitches: the (root pitch class, quality) whose template
/// scores best, +1 for each sounding voice in it and -1 for each outside; ties go to the
/// template with fewer tones, then the root equal to the bass's pitch class, then the lower
/// root. `None` when nothing sounds.
pub fn recognise(pitches: &[u8]) -> Option<(u8, Quality)> {
    let bass = *pitches.iter().min()?;
    // (score, fewer tones, root is the bass, lower root) ranks the candidates.
    type Rank = (i32, i32, i32, i32);
    let mut best: Option<(Rank, (u8, Quality))> = None;
    for root in 0..12u8 {
        for (q, tpl) in TEMPLATES {
            let score: i32 = pitches
                .iter()
                .map(|p| {
                    if tpl.contains(&((p + 12 - root) % 12)) {
                        1
                    } else {
                        -1
                    }
                })
                .sum();
            let key = (
                score,
                -(tpl.len() as i32),
                (bass % 12 == root) as i32,
                -(root as i32),
            );
            if best.is_none_or(|(k, _)| key > k) {
                best = Some((key, (root, q)));
            }
        }
    }
    best.map(|(_, c)| c)
}

/// The chord label at every beat (every 4th column) of a score.
pub fn beat_chords(score: &Score) -> Vec<Option<(u8, Quality)>> {
    let voices: Vec<Vec<Option<u8>>> = score
        .tracks
        .iter()
        .map(|t| sounding(&t.notes, score.length))
        .collect();
    (0..score.length as usize)
        .step_by(4)
        .map(|c| {
            let ps: Vec<u8> = voices.iter().filter_map(|v| v[c]).collect();
            recognise(&ps)
        })
        .collect()
}

/// Fraction of the real score's labelled beats where the generated score has the same chord.
pub fn chord_accuracy(generated: &Score, real: &Score) -> (usize, usize) {
    let (g, r) = (beat_chords(generated), beat_chords(real));
    let mut hit = 0;
    let mut total = 0;
    for (i, rc) in r.iter().enumerate() {
        if let Some(rc) = rc {
            total += 1;
            if g.get(i).copied().flatten() == Some(*rc) {
                hit += 1;
            }
        }
    }
    (hit, total)
}

/// Voice-leading counts of a four-voice score: `(events, total)` pairs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct VoiceLeading {
    /// Notes outside their voice's range / notes.
    pub range: (usize, usize),
    /// Columns where a voice sounds below the next lower one / columns where both sound.
    pub crossing: (usize, usize),
    /// Moves in parallel fifths or octaves (unisons and compound intervals included) / moves
    /// where both voices of a pair change pitch in the same direction, over every pair.
    pub parallel: (usize, usize),
}

impl VoiceLeading {
    fn add(&mut self, o: &VoiceLeading) {
        for (a, b) in [
            (&mut self.range, o.range),
            (&mut self.crossing, o.crossing),
            (&mut self.parallel, o.parallel),
        ] {
            a.0 += b.0;
            a.1 += b.1;
        }
    }

    /// The three rates.
    pub fn rates(&self) -> [f64; 3] {
        let r = |(a, b): (usize, usize)| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        [r(self.range), r(self.crossing), r(self.parallel)]
    }
}

/// Voice-leading counts of one score whose tracks are S, A, T, B (extra tracks ignored).
/// `voices` restricts the range check to those tracks (e.g. the generated ones).
pub fn voice_leading(score: &Score, voices: &[usize]) -> VoiceLeading {
    let mut out = VoiceLeading::default();
    let n = score.tracks.len().min(4);
    for &v in voices.iter().filter(|&&v| v < n) {
        let (lo, hi) = SATB_RANGES[v];
        for note in &score.tracks[v].notes {
            out.range.1 += 1;
            if note.pitch < lo || note.pitch > hi {
                out.range.0 += 1;
            }
        }
    }
    let s: Vec<Vec<Option<u8>>> = score.tracks[..n]
        .iter()
        .map(|t| sounding(&t.notes, score.length))
        .collect();
    for v in 0..n.saturating_sub(1) {
        for c in 0..score.length as usize {
            if let (Some(up), Some(down)) = (s[v][c], s[v + 1][c]) {
                out.crossing.1 += 1;
                if up < down {
                    out.crossing.0 += 1;
                }
            }
        }
    }
    for i in 0..n {
        for j in i + 1..n {
            let mut prev: Option<(u8, u8)> = None;
            for c in 0..score.length as usize {
                let cur = match (s[i][c], s[j][c]) {
                    (Some(a), Some(b)) => (a, b),
                    _ => {
                        prev = None;
                        continue;
                    }
                };
                if let Some((pa, pb)) = prev
                    && pa != cur.0
                    && pb != cur.1
                {
                    let same_dir = (cur.0 > pa) == (cur.1 > pb);
                    if same_dir {
                        out.parallel.1 += 1;
                        let class = |a: u8, b: u8| (a as i32 - b as i32).rem_euclid(12);
                        let (before, after) = (class(pa, pb), class(cur.0, cur.1));
                        if before == after && (after == 0 || after == 7) {
                            out.parallel.0 += 1;
                        }
                    }
                }
                prev = Some(cur);
            }
        }
    }
    out
}

/// Metrics of generated scores against the real ones (same pieces, same order), over the
/// generated `targets` tracks.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Report {
    pub pitch_overlap: f64,
    pub duration_overlap: f64,
    pub chord_accuracy: f64,
    pub voice_leading: VoiceLeading,
}

/// The report of `generated` against `real` on the `targets` tracks.
pub fn evaluate(generated: &[Score], real: &[Score], targets: &[usize]) -> Report {
    let collect = |s: &[Score], f: &dyn Fn(&Note) -> u32| -> Vec<u32> {
        s.iter()
            .flat_map(|x| targets.iter().filter_map(move |&t| x.tracks.get(t)))
            .flat_map(|t| t.notes.iter().map(f))
            .collect()
    };
    let pitch = |n: &Note| n.pitch as u32;
    let dur = |n: &Note| n.duration;
    let (mut hit, mut total) = (0, 0);
    let mut vl = VoiceLeading::default();
    for (g, r) in generated.iter().zip(real) {
        let (h, t) = chord_accuracy(g, r);
        hit += h;
        total += t;
        vl.add(&voice_leading(g, targets));
    }
    Report {
        pitch_overlap: overlap(&collect(generated, &pitch), &collect(real, &pitch)),
        duration_overlap: overlap(&collect(generated, &dur), &collect(real, &dur)),
        chord_accuracy: if total == 0 {
            0.0
        } else {
            hit as f64 / total as f64
        },
        voice_leading: vl,
    }
}

/// Per-voice marginal distributions of pitch and duration, for the baseline.
#[derive(Clone, Debug, Default)]
pub struct Marginals {
    pitch: Vec<Vec<f64>>,
    duration: Vec<Vec<f64>>,
}

impl Marginals {
    /// Counts over `scores` (per track index).
    pub fn fit(scores: &[Score], tracks: usize) -> Self {
        let mut m = Self {
            pitch: vec![vec![0.0; 128]; tracks],
            duration: vec![vec![0.0; 257]; tracks],
        };
        for s in scores {
            for (i, t) in s.tracks.iter().enumerate().take(tracks) {
                for n in &t.notes {
                    m.pitch[i][n.pitch as usize] += 1.0;
                    m.duration[i][(n.duration as usize).min(256)] += 1.0;
                }
            }
        }
        m
    }

    /// `given` with every `targets` track replaced by notes drawn independently from that
    /// voice's marginals, back to back from column 0 (the last one cut at the end).
    pub fn sample(&self, given: &Score, targets: &[usize], rng: &mut Rng) -> Score {
        let mut out = given.clone();
        for &t in targets {
            let mut notes = Vec::new();
            let mut c = 0;
            while c < given.length {
                let d = (categorical(&self.duration[t], rng.uniform()) as u32)
                    .max(1)
                    .min(given.length - c);
                let p = categorical(&self.pitch[t], rng.uniform()) as u8;
                notes.push(Note {
                    onset: c,
                    duration: d,
                    pitch: p,
                });
                c += d;
            }
            out.tracks[t].notes = notes;
        }
        out
    }
}
