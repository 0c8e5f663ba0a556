//! The credential store: `oauth_creds/<provider>_oauth_<N>.json` in the data directory. Files
//! hold tokens, so the folder is 0700 and every file 0600 from its creation on, and every write
//! is atomic (a temporary file, fsync, then a rename or link into place): a crash leaves the old
//! file or the new one, never a torn one, and never a moment where the file is readable by
//! others.

use super::{OAuthCredential, Provider, Source};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The folder under the data directory.
pub const DIR: &str = "oauth_creds";

const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

/// `<provider>_oauth_<n>.json`
pub fn file_name(provider: Provider, n: u32) -> String {
    format!("{}_oauth_{n}.json", provider.name())
}

/// The provider and number of a store file name, if it is one.
pub fn parse_file_name(name: &str) -> Option<(Provider, u32)> {
    let stem = name.strip_suffix(".json")?;
    let (provider, digits) = stem.rsplit_once("_oauth_")?;
    // Only the canonical spelling, so `_01` and `_1` cannot both name credential 1.
    let n: u32 = digits.parse().ok().filter(|n: &u32| n.to_string() == digits)?;
    Provider::ALL.into_iter().find(|p| p.name() == provider).map(|p| (p, n))
}

/// A store file found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    pub provider: Provider,
    pub n: u32,
    pub path: PathBuf,
}

/// The store's `*.json` files: the well-named ones sorted by provider and number, and the
/// paths of the others (which cannot say their provider).
pub fn list(data_dir: &Path) -> io::Result<(Vec<StoredFile>, Vec<PathBuf>)> {
    let entries = match fs::read_dir(data_dir.join(DIR)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(e),
    };
    let (mut stored, mut strays) = (Vec::new(), Vec::new());
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        if !name.ends_with(".json") || !path.is_file() {
            continue;
        }
        match parse_file_name(name) {
            Some((provider, n)) => stored.push(StoredFile { provider, n, path }),
            None => strays.push(path),
        }
    }
    stored.sort_by_key(|f| (f.provider, f.n));
    strays.sort();
    Ok((stored, strays))
}

/// Reads one credential file; the error says why, never what the file holds.
pub fn read(provider: Provider, path: &Path) -> Result<OAuthCredential, String> {
    let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
    OAuthCredential::from_json(provider, Source::File(path.to_path_buf()), &text)
}

/// Stores `text` as a new file of `provider`, numbered one more than the highest number in use
/// (gaps are not filled, so a number never names two accounts in turn). Returns its path.
pub fn create(data_dir: &Path, provider: Provider, text: &str) -> io::Result<PathBuf> {
    let dir = ensure_dir(data_dir)?;
    let (stored, _) = list(data_dir)?;
    let mut n = stored.iter().filter(|f| f.provider == provider).map(|f| f.n).max().unwrap_or(0) + 1;
    let tmp = write_temp(&dir, text.as_bytes())?;
    // A link fails when the name exists, so a file created meanwhile by another process is
    // never overwritten: the next number is tried instead.
    let placed = loop {
        let path = dir.join(file_name(provider, n));
        match fs::hard_link(&tmp, &path) {
            Ok(()) => break Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => break Err(e),
        }
    };
    let _ = fs::remove_file(&tmp);
    sync_dir(&dir);
    placed
}

/// Writes a stored credential back to its file (keeping the fields it does not know).
pub fn rewrite(cred: &OAuthCredential) -> io::Result<()> {
    match &cred.source {
        Source::File(path) => write_atomic(path, cred.to_file_text().as_bytes()),
        Source::Env(_) => Err(io::Error::other("a credential from variables has no file")),
    }
}

/// Replaces `path` with `bytes`, mode 0600, atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = write_temp(&dir, bytes)?;
    let renamed = fs::rename(&tmp, path);
    if renamed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    renamed?;
    sync_dir(&dir);
    Ok(())
}

/// `oauth_creds/`, created 0700, or narrowed to 0700 if it exists.
fn ensure_dir(data_dir: &Path) -> io::Result<PathBuf> {
    let dir = data_dir.join(DIR);
    fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(&dir)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(DIR_MODE))?;
    Ok(dir)
}

/// A fresh temporary file in `dir` (same file system, so it can be renamed into place) with
/// `bytes` on disk.
fn write_temp(dir: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(".keyrelay-{}-{}.tmp", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(&tmp)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map(|()| tmp)
}

/// Makes a rename or link durable; best effort, since not every file system allows it.
fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A temporary directory removed on drop.
    pub(crate) struct Scratch(pub PathBuf);

    impl Scratch {
        pub(crate) fn new(tag: &str) -> Scratch {
            static N: AtomicU64 = AtomicU64::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("keyrelay-unit-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            Scratch(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn file_names() {
        assert_eq!(file_name(Provider::QwenCode, 3), "qwen_code_oauth_3.json");
        assert_eq!(parse_file_name("gemini_cli_oauth_12.json"), Some((Provider::GeminiCli, 12)));
        assert_eq!(parse_file_name("iflow_oauth_1.json"), Some((Provider::Iflow, 1)));
        for bad in ["gemini_oauth_1.json", "iflow_oauth_01.json", "iflow_oauth_.json", "iflow_oauth_1.env"] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn create_numbers_after_the_highest_with_private_modes() {
        let scratch = Scratch::new("store");
        let first = create(&scratch.0, Provider::Iflow, "{}").unwrap();
        assert_eq!(first, scratch.0.join("oauth_creds/iflow_oauth_1.json"));
        fs::rename(&first, scratch.0.join("oauth_creds/iflow_oauth_5.json")).unwrap();
        let next = create(&scratch.0, Provider::Iflow, "{\"a\":1}").unwrap();
        assert_eq!(next, scratch.0.join("oauth_creds/iflow_oauth_6.json"));
        assert_eq!(
            create(&scratch.0, Provider::GeminiCli, "{}").unwrap().file_name().unwrap(),
            "gemini_cli_oauth_1.json"
        );
        assert_eq!((mode(&next), mode(&scratch.0.join(DIR))), (0o600, 0o700));
        assert_eq!(fs::read_to_string(&next).unwrap(), "{\"a\":1}");
        let (stored, strays) = list(&scratch.0).unwrap();
        assert_eq!(stored.len(), 3);
        assert!(strays.is_empty(), "no temporary file is left: {strays:?}");
        assert_eq!(fs::read_dir(scratch.0.join(DIR)).unwrap().count(), 3);
    }

    #[test]
    fn rewrite_keeps_unknown_fields_and_the_mode() {
        let scratch = Scratch::new("rewrite");
        let path = create(&scratch.0, Provider::GeminiCli, r#"{"refresh_token":"r","future_field":[1,2]}"#).unwrap();
        let mut cred = read(Provider::GeminiCli, &path).unwrap();
        cred.needs_login = true;
        rewrite(&cred).unwrap();
        let again: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(again, serde_json::json!({"refresh_token": "r", "future_field": [1, 2], "needs_login": true}));
        assert_eq!(mode(&path), 0o600);
    }
}
