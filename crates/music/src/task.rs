//! Which cells are given: the conditioning of a generation task, as one flag per
//! (column, track), column-major (`given[column * tracks + track]`).

use crate::error::{MusicError, Result};

/// A generation task over a grid of `tracks` tracks and `columns` columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Task {
    /// Generate the tracks whose flag is false, given the others in full (all false: from
    /// scratch; harmonisation: only the soprano given).
    Tracks(Vec<bool>),
    /// Regenerate every track in columns `start..start + len`, given everything else.
    Infill { start: usize, len: usize },
}

impl Task {
    /// Soprano (track 0) given, the other voices generated.
    pub fn harmonize(tracks: usize) -> Self {
        Task::Tracks((0..tracks).map(|i| i == 0).collect())
    }

    /// The given-flags of this task, checked against the grid's shape.
    pub fn given(&self, tracks: usize, columns: usize) -> Result<Vec<bool>> {
        match self {
            Task::Tracks(g) => {
                if g.len() != tracks {
                    return Err(MusicError::Unsupported(format!(
                        "{} track flags for {tracks} tracks",
                        g.len()
                    )));
                }
                Ok((0..columns).flat_map(|_| g.iter().copied()).collect())
            }
            &Task::Infill { start, len } => {
                if len == 0 || start + len > columns {
                    return Err(MusicError::Unsupported(format!(
                        "infill span {start}..{} outside 0..{columns}",
                        start + len
                    )));
                }
                Ok((0..columns)
                    .flat_map(|c| std::iter::repeat_n(!(start..start + len).contains(&c), tracks))
                    .collect())
            }
        }
    }
}

/// Grid tokens (row-major `[rows, columns]`) in the model's column-major order.
pub(crate) fn to_columns(tokens: &[u32], rows: usize, columns: usize) -> Vec<u32> {
    (0..columns)
        .flat_map(|c| (0..rows).map(move |r| tokens[r * columns + c]))
        .collect()
}

/// Column-major tokens back to row-major.
pub(crate) fn to_rows(tokens: &[u32], rows: usize, columns: usize) -> Vec<u32> {
    (0..rows)
        .flat_map(|r| (0..columns).map(move |c| tokens[c * rows + r]))
        .collect()
}
