//! What `dump` and `stat` need of a log directory beyond `Log`: its segment files by name, and
//! whether a path names a log or one segment file. The meta file as it lies is the library's
//! [`logbus::inspect::MetaFile`].

use anyhow::{Context, Result};
use logbus::format;
use std::path::{Path, PathBuf};

/// What a path given to `dump` names.
#[derive(Debug)]
pub enum Target {
    /// A log directory.
    Log(PathBuf),
    /// One segment file.
    Segment(PathBuf),
}

/// A directory is a log; a meta file stands for its directory; any other file is taken as a
/// segment file (opening it says clearly if it is not one).
pub fn target(path: &Path) -> Result<Target> {
    let metadata = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    if metadata.is_dir() {
        return Ok(Target::Log(path.to_path_buf()));
    }
    if path.file_name().and_then(|n| n.to_str()) == Some(format::META_FILE_NAME) {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        return Ok(Target::Log(dir));
    }
    Ok(Target::Segment(path.to_path_buf()))
}

/// The segment files of a log directory, as (base position named by the file, path), in log
/// order. Temporary files (`.tmp-...`) and other names are left out.
pub fn segment_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        if let Some(base) = name.to_str().and_then(format::parse_segment_file_name) {
            files.push((base, entry.path()));
        }
    }
    files.sort_unstable_by_key(|(base, _)| *base);
    Ok(files)
}
