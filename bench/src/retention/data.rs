//! The retention benchmark's data: many files of random data, of which a
//! fixed share is rewritten with new random data each day. Small files
//! rather than a few large ones, so that "1 % a day" means 1 % of the
//! blocks and an incremental carries just that share.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::setup::Rng;

/// Which files a day's change rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Changes {
    /// Files not rewritten before, in turn (wrapping around after the
    /// last): each day's changes are new data, so the changes since a
    /// full grow by the share every day.
    Fresh,
    /// Distinct files picked at random each day; a file may be picked
    /// again on a later day, as hot files change again.
    Random,
}

/// The files of one dataset and the generator of their changes. Two
/// instances made with the same arguments write the same bytes and
/// rewrite the same files on the same days, so every strategy backs up
/// the same history.
#[derive(Debug)]
pub struct Files {
    dir: PathBuf,
    file_bytes: usize,
    count: u64,
    /// Share of the files rewritten a day (0.01 for 1 %).
    share: f64,
    changes: Changes,
    /// With [`Changes::Fresh`], the next file to rewrite.
    next: u64,
    rng: Rng,
}

impl Files {
    /// Writes `count` files of `file_bytes` random bytes under `dir`.
    pub fn create(
        dir: &Path,
        count: u64,
        file_bytes: u64,
        share: f64,
        changes: Changes,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let mut files = Self {
            dir: dir.to_path_buf(),
            file_bytes: usize::try_from(file_bytes).context("file size")?,
            count,
            share,
            changes,
            next: 0,
            rng: Rng::new(seed),
        };
        for i in 0..count {
            files.write(i)?;
        }
        Ok(files)
    }

    fn path(&self, i: u64) -> PathBuf {
        self.dir.join(format!("f{i:06}.bin"))
    }

    /// (Re)writes file `i` with new random bytes, whole.
    fn write(&mut self, i: u64) -> anyhow::Result<()> {
        let mut buf = Vec::with_capacity(self.file_bytes);
        self.rng.fill(&mut buf, self.file_bytes);
        let path = self.path(i);
        std::fs::write(&path, &buf).with_context(|| format!("write {}", path.display()))
    }

    /// How many files day `day` (1, 2, ...) rewrites: what brings the
    /// files rewritten since day 0 to `day × share × count`, rounded down.
    /// So a share that is no whole number of files (1 % of 1024) still
    /// comes out right over the run, instead of being rounded every day.
    pub fn due(&self, day: u32) -> u64 {
        let upto = |d: u32| (f64::from(d) * self.share * self.count as f64).floor() as u64;
        (upto(day) - upto(day.saturating_sub(1))).min(self.count)
    }

    /// Rewrites day `day`'s share of the files, chosen as `changes` says.
    /// Returns the bytes written.
    pub fn change(&mut self, day: u32) -> anyhow::Result<u64> {
        let due = self.due(day);
        let mut picked = BTreeSet::new();
        while (picked.len() as u64) < due {
            let file = match self.changes {
                Changes::Fresh => {
                    self.next = (self.next + 1) % self.count;
                    self.next
                }
                Changes::Random => self.rng.below(self.count),
            };
            picked.insert(file);
        }
        for &i in &picked {
            self.write(i)?;
        }
        Ok(due * self.file_bytes as u64)
    }
}
