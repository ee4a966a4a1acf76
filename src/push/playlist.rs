//! Expanding `onair push` inputs (files, folders, .m3u/.m3u8 playlists, `-`) into an ordered
//! list of entries, with optional shuffling and looping.
//!
//! A missing input named on the command line is a usage error; a missing or remote entry inside
//! a playlist is logged and skipped. Folders are walked recursively in path order, keeping only
//! files with an audio extension. Each pass re-expands the inputs, so a looping auto-DJ picks up
//! files added to its folders.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::PushError;

/// Extensions (lowercase) that a folder walk treats as audio.
const AUDIO_EXTENSIONS: &[&str] =
    &["wav", "wave", "flac", "mp3", "ogg", "oga", "m4a", "mp4", "aac", "aif", "aiff"];
/// Nested folders and playlists deeper than this are ignored (guards against symlink loops).
const MAX_DEPTH: usize = 16;

/// One thing to play.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// An audio file, with the title a playlist's `#EXTINF` gave it (used when untagged).
    File {
        /// Path to the file.
        path: PathBuf,
        /// Fallback title from `#EXTINF`.
        title: Option<String>,
    },
    /// Raw PCM on standard input (`-`).
    Stdin,
}

/// Expands `inputs` into entries, in order.
///
/// # Errors
/// `Usage` when a command-line input does not exist.
pub fn expand(inputs: &[PathBuf]) -> Result<Vec<Entry>, PushError> {
    let mut out = Vec::new();
    for input in inputs {
        if input.as_os_str() == "-" {
            out.push(Entry::Stdin);
            continue;
        }
        if !input.exists() {
            return Err(PushError::Usage(format!("no such file or folder: {}", input.display())));
        }
        expand_path(input, None, 0, &mut out);
    }
    Ok(out)
}

fn expand_path(path: &Path, title: Option<String>, depth: usize, out: &mut Vec<Entry>) {
    if depth > MAX_DEPTH {
        tracing::warn!(path = %path.display(), "nested too deep; skipped");
    } else if path.is_dir() {
        let mut files = Vec::new();
        walk(path, depth, &mut files);
        files.sort();
        out.extend(files.into_iter().map(|path| Entry::File { path, title: None }));
    } else if is_playlist(path) {
        expand_playlist(path, depth, out);
    } else {
        out.push(Entry::File { path: path.to_path_buf(), title });
    }
}

fn walk(dir: &Path, depth: usize, files: &mut Vec<PathBuf>) {
    if depth > MAX_DEPTH {
        tracing::warn!(path = %dir.display(), "folder nested too deep; skipped");
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            tracing::warn!(path = %dir.display(), %err, "cannot read folder; skipped");
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.file_name().and_then(OsStr::to_str).is_some_and(|n| n.starts_with('.')) {
            continue;
        }
        if path.is_dir() {
            walk(&path, depth + 1, files);
        } else if has_extension(&path, AUDIO_EXTENSIONS) {
            files.push(path);
        }
    }
}

fn is_playlist(path: &Path) -> bool {
    has_extension(path, &["m3u", "m3u8"])
}

fn has_extension(path: &Path, wanted: &[&str]) -> bool {
    path.extension()
        .and_then(OsStr::to_str)
        .is_some_and(|ext| wanted.iter().any(|w| ext.eq_ignore_ascii_case(w)))
}

fn expand_playlist(path: &Path, depth: usize, out: &mut Vec<Entry>) {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) => {
            tracing::warn!(path = %path.display(), %err, "cannot read playlist; skipped");
            return;
        }
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let text = String::from_utf8_lossy(&bytes);
    let mut title = None;
    for line in text.trim_start_matches('\u{feff}').lines() {
        let line = line.trim();
        if let Some(info) = line.strip_prefix("#EXTINF:") {
            // `#EXTINF:seconds,Display title`
            title =
                info.split_once(',').map(|(_, t)| t.trim().to_owned()).filter(|t| !t.is_empty());
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry_title = title.take();
        if line.contains("://") {
            tracing::warn!(playlist = %path.display(), entry = line, "remote entries are not supported; skipped");
            continue;
        }
        let entry = base.join(line);
        if !entry.exists() {
            tracing::warn!(playlist = %path.display(), path = %entry.display(), "playlist entry not found; skipped");
            continue;
        }
        expand_path(&entry, entry_title, depth + 1, out);
    }
}

/// The order in which entries play: a fixed order or a new shuffle on each pass.
#[derive(Debug)]
pub struct Playlist {
    inputs: Vec<PathBuf>,
    shuffle: bool,
    rng: XorShift,
    last: Option<Entry>,
}

impl Playlist {
    /// A playlist over `inputs`; `seed` fixes the shuffle (tests), else it comes from the clock.
    pub fn new(inputs: Vec<PathBuf>, shuffle: bool, seed: Option<u64>) -> Self {
        let seed = seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0x9e37_79b9_7f4a_7c15, |d| {
                    d.as_nanos() as u64 ^ u64::from(std::process::id())
                })
        });
        Playlist { inputs, shuffle, rng: XorShift::new(seed), last: None }
    }

    /// The entries of the next pass (re-expanded, and reshuffled when shuffling).
    ///
    /// # Errors
    /// `Usage` when an input no longer exists.
    pub fn next_pass(&mut self) -> Result<Vec<Entry>, PushError> {
        let mut entries = expand(&self.inputs)?;
        if self.shuffle {
            self.rng.shuffle(&mut entries);
            // An auto-DJ should not play the same track twice in a row across passes.
            if entries.len() > 1 && entries.first() == self.last.as_ref() {
                let swap = 1 + self.rng.below(entries.len() - 1);
                entries.swap(0, swap);
            }
        }
        self.last = entries.last().cloned();
        Ok(entries)
    }
}

/// xorshift64*: a tiny, good-enough generator for shuffling (not for secrets).
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Fisher-Yates.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::decode::tests::tempdir;
    use std::fs;

    fn file(path: &Path) -> Entry {
        Entry::File { path: path.to_path_buf(), title: None }
    }

    fn touch(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"").unwrap();
    }

    #[test]
    fn folders_expand_recursively_in_path_order_keeping_audio_files() {
        let dir = tempdir("walk");
        for name in
            ["b.mp3", "a/2.flac", "a/1.ogg", "a/deep/x.WAV", "c.txt", ".hidden.mp3", "z.m4a"]
        {
            touch(&dir.join(name));
        }
        let got = expand(&[dir.to_path_buf()]).unwrap();
        let want: Vec<Entry> = ["a/1.ogg", "a/2.flac", "a/deep/x.WAV", "b.mp3", "z.m4a"]
            .iter()
            .map(|n| file(&dir.join(n)))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn m3u_entries_resolve_against_the_playlist_folder() {
        let dir = tempdir("m3u");
        touch(&dir.join("lists/../music/one.flac"));
        touch(&dir.join("lists/two.mp3"));
        touch(&dir.join("music/sub/three.ogg"));
        let list = dir.join("lists/show.m3u8");
        fs::write(
            &list,
            "\u{feff}#EXTM3U\n#EXTINF:12,Band - One\n../music/one.flac\n\n# a comment\n\
             two.mp3\nmissing.mp3\nhttp://example.com/x.mp3\n../music/sub\n",
        )
        .unwrap();
        let got = expand(&[list.clone(), PathBuf::from("-")]).unwrap();
        let lists = dir.join("lists");
        assert_eq!(
            got,
            vec![
                Entry::File {
                    path: lists.join("../music/one.flac"),
                    title: Some("Band - One".into())
                },
                file(&lists.join("two.mp3")),
                file(&lists.join("../music/sub/three.ogg")),
                Entry::Stdin,
            ]
        );
    }

    #[test]
    fn the_samples_playlist_lists_five_files() {
        let list = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/playlist.m3u");
        let got = expand(&[list]).unwrap();
        assert_eq!(got.len(), 5);
        let Entry::File { title, .. } = &got[1] else { panic!("not a file") };
        assert_eq!(title.as_deref(), Some("onair samples - Tone 440 Hz"));
    }

    #[test]
    fn a_missing_input_is_a_usage_error() {
        let err = expand(&[PathBuf::from("/no/such/place.flac")]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("/no/such/place.flac"));
    }

    #[test]
    fn shuffle_is_a_permutation_that_changes_each_pass() {
        let dir = tempdir("shuffle");
        let names: Vec<String> = (0..20).map(|i| format!("{i:02}.mp3")).collect();
        for n in &names {
            touch(&dir.join(n));
        }
        let mut plain = Playlist::new(vec![dir.to_path_buf()], false, Some(1));
        let ordered = plain.next_pass().unwrap();
        assert_eq!(plain.next_pass().unwrap(), ordered, "no shuffle: same order every pass");

        let mut shuffled = Playlist::new(vec![dir.to_path_buf()], true, Some(42));
        let first = shuffled.next_pass().unwrap();
        let second = shuffled.next_pass().unwrap();
        assert_ne!(first, ordered);
        assert_ne!(first, second);
        assert_ne!(second.first(), first.last(), "no track twice in a row across passes");
        let mut sorted = first.clone();
        sorted.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(sorted, ordered);
    }
}
