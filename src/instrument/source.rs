//! Where the master comes from: a local file, DhanHQ's published CSV with a
//! daily on-disk cache, or the sample embedded in the binary.
//!
//! Degrade, don't die: with a URL source, a failed download falls back to
//! the cache (saying how old it is), then to the embedded sample with a
//! warning; the engine keeps serving segment + security-id subscriptions.
//! Only an explicit local file that cannot be read or is not a master is an
//! error, because that is a mistake in the command line to fix now.
//!
//! Downloads use `ureq` (blocking, rustls with ring: the TLS stack the relay
//! already has) once at start-up, off every hot path.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::{Date, Master};

/// DhanHQ's published compact scrip master.
pub const DHAN_MASTER_URL: &str = "https://images.dhan.co/api-data/api-scrip-master.csv";
/// The cache file's name inside the cache directory.
pub const CACHE_FILE: &str = "api-scrip-master.csv";
/// Largest master accepted from the network.
const MAX_DOWNLOAD: u64 = 512 * 1024 * 1024;

/// A master source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The sample embedded in the binary.
    Sample,
    /// A local CSV file.
    File(PathBuf),
    /// An `http(s)://` URL, cached for the day.
    Url(String),
}

impl Source {
    /// `sample`, an `http(s)://` URL, or a file path.
    pub fn parse(s: &str) -> Source {
        let t = s.trim();
        if t.eq_ignore_ascii_case("sample") {
            Source::Sample
        } else if t.starts_with("http://") || t.starts_with("https://") {
            Source::Url(t.to_string())
        } else {
            Source::File(PathBuf::from(t))
        }
    }
}

/// A source and, for URLs, where to cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceConfig {
    /// What to load.
    pub source: Source,
    /// Cache directory for downloads; default [`default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Download time limit.
    pub timeout: Duration,
}

impl SourceConfig {
    /// A source with the default cache and timeout.
    pub fn new(source: Source) -> SourceConfig {
        SourceConfig {
            source,
            cache_dir: None,
            timeout: Duration::from_secs(120),
        }
    }
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig::new(Source::Sample)
    }
}

/// `$XDG_CACHE_HOME/dhan-relay`, else `~/.cache/dhan-relay`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty());
    let base = match xdg {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".cache"),
    };
    Some(base.join("dhan-relay"))
}

/// Where the loaded master came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The embedded sample, as configured (demo mode).
    Sample,
    /// A local file.
    File(PathBuf),
    /// Downloaded now (and cached there, if the cache was writable).
    Downloaded {
        /// From.
        url: String,
        /// Cached at.
        cached: Option<PathBuf>,
    },
    /// Today's cached copy of a download.
    Cache {
        /// The cache file.
        path: PathBuf,
        /// Its age.
        age: Duration,
        /// Whether it is from an earlier day (the download failed).
        stale: bool,
    },
    /// The embedded sample, because nothing better could be had.
    Fallback,
}

/// A loaded master and how it was had.
#[derive(Debug)]
pub struct Loaded {
    /// The master.
    pub master: Master,
    /// Where it came from.
    pub origin: Origin,
    /// Things the operator should know (failed download, stale cache, …).
    pub warnings: Vec<String>,
}

impl Loaded {
    /// Whether this is the master the operator asked for: a watchlist
    /// symbol missing from it is a configuration error. The embedded sample
    /// is not (a missing symbol is left out with a warning).
    pub fn authoritative(&self) -> bool {
        !matches!(self.origin, Origin::Sample | Origin::Fallback)
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        let from = match &self.origin {
            Origin::Sample => "the embedded sample master".to_string(),
            Origin::File(p) => p.display().to_string(),
            Origin::Downloaded { url, cached } => match cached {
                Some(c) => format!("{url} (cached at {})", c.display()),
                None => url.clone(),
            },
            Origin::Cache { path, age, .. } => {
                format!("the cache {} ({} old)", path.display(), human_age(*age))
            }
            Origin::Fallback => "the embedded sample master (fallback)".to_string(),
        };
        format!("instruments from {from}: {}", self.master.report())
    }
}

/// `42 min`, `5 h`, `3 days`.
pub fn human_age(d: Duration) -> String {
    let m = d.as_secs() / 60;
    match m {
        0..=89 => format!("{m} min"),
        90..=2879 => format!("{} h", (m + 30) / 60),
        _ => format!("{} days", (m + 720) / 1440),
    }
}

/// Loads the master per `cfg`, as of `now` (which decides whether a cached
/// download is today's).
pub fn load(cfg: &SourceConfig, now: SystemTime) -> Result<Loaded, String> {
    match &cfg.source {
        Source::Sample => Ok(Loaded {
            master: Master::sample(),
            origin: Origin::Sample,
            warnings: Vec::new(),
        }),
        Source::File(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| format!("cannot read instruments file {}: {e}", path.display()))?;
            let master = Master::parse(&bytes)
                .map_err(|e| format!("instruments file {}: {e}", path.display()))?;
            Ok(Loaded {
                master,
                origin: Origin::File(path.clone()),
                warnings: Vec::new(),
            })
        }
        Source::Url(url) => Ok(load_url(url, cfg, now)),
    }
}

/// The daily reload: the day's master, never a stale one. A URL is
/// downloaded again (today's cache is reused only when written at or after
/// `fresh_since`, e.g. by a start earlier this morning past the maintenance
/// time) and cached; a file is read again. Any failure is an error, so the
/// caller keeps the master it has instead of falling back to an older
/// cache or the embedded sample.
pub fn reload(cfg: &SourceConfig, fresh_since: SystemTime) -> Result<Loaded, String> {
    let Source::Url(url) = &cfg.source else {
        return load(cfg, fresh_since);
    };
    let cache = cfg
        .cache_dir
        .clone()
        .or_else(default_cache_dir)
        .map(|d| d.join(CACHE_FILE));
    if let Some(path) = &cache {
        let written = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if let Some(written) = written.filter(|w| *w >= fresh_since) {
            if let Ok(master) = std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|b| Master::parse(&b).map_err(|e| e.to_string()))
            {
                let age = SystemTime::now()
                    .duration_since(written)
                    .unwrap_or_default();
                return Ok(Loaded {
                    master,
                    origin: Origin::Cache {
                        path: path.clone(),
                        age,
                        stale: false,
                    },
                    warnings: Vec::new(),
                });
            }
        }
    }
    let bytes = download(url, cfg.timeout)?;
    let master = Master::parse(&bytes).map_err(|e| format!("{url}: {e}"))?;
    let mut warnings = Vec::new();
    let cached = cache.and_then(|path| match store(&path, &bytes) {
        Ok(()) => Some(path),
        Err(e) => {
            warnings.push(format!(
                "cannot cache the instrument master at {}: {e}",
                path.display()
            ));
            None
        }
    });
    Ok(Loaded {
        master,
        origin: Origin::Downloaded {
            url: url.clone(),
            cached,
        },
        warnings,
    })
}

fn file_age(path: &Path, now: SystemTime) -> Option<(Duration, bool)> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    let age = now.duration_since(modified).unwrap_or_default();
    let fresh = Date::today_ist(modified) == Date::today_ist(now);
    Some((age, fresh))
}

fn load_url(url: &str, cfg: &SourceConfig, now: SystemTime) -> Loaded {
    let mut warnings = Vec::new();
    let cache_dir = cfg.cache_dir.clone().or_else(default_cache_dir);
    let cache = cache_dir.as_ref().map(|d| d.join(CACHE_FILE));
    let cached = cache
        .as_ref()
        .and_then(|p| file_age(p, now).map(|(age, fresh)| (p.clone(), age, fresh)));
    let from_cache = |path: &Path, age: Duration, stale: bool, warnings: &mut Vec<String>| {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        let master = Master::parse(&bytes).map_err(|e| e.to_string())?;
        if stale {
            warnings.push(format!(
                "using the cached instrument master {} from {} ago; contracts listed since then are missing",
                path.display(),
                human_age(age)
            ));
        }
        Ok::<_, String>(Loaded {
            master,
            origin: Origin::Cache {
                path: path.to_path_buf(),
                age,
                stale,
            },
            warnings: std::mem::take(warnings),
        })
    };
    // Today's download is reused all day.
    if let Some((path, age, true)) = &cached {
        match from_cache(path, *age, false, &mut warnings) {
            Ok(l) => return l,
            Err(e) => warnings.push(format!(
                "cached instrument master {} is unusable ({e}); downloading again",
                path.display()
            )),
        }
    }
    let started = Instant::now();
    match download(url, cfg.timeout).and_then(|bytes| {
        let master = Master::parse(&bytes).map_err(|e| format!("{url}: {e}"))?;
        Ok((bytes, master))
    }) {
        Ok((bytes, master)) => {
            log::info!(
                "downloaded the instrument master ({:.1} MB) from {url} in {:.1} s",
                bytes.len() as f64 / 1e6,
                started.elapsed().as_secs_f64()
            );
            let stored = cache.as_ref().and_then(|path| match store(path, &bytes) {
                Ok(()) => Some(path.clone()),
                Err(e) => {
                    warnings.push(format!(
                        "cannot cache the instrument master at {}: {e}",
                        path.display()
                    ));
                    None
                }
            });
            Loaded {
                master,
                origin: Origin::Downloaded {
                    url: url.to_string(),
                    cached: stored,
                },
                warnings,
            }
        }
        Err(e) => {
            warnings.push(format!("cannot download the instrument master: {e}"));
            if let Some((path, age, _)) = &cached {
                match from_cache(path, *age, true, &mut warnings) {
                    Ok(l) => return l,
                    Err(e) => warnings.push(format!(
                        "cached instrument master {} is unusable: {e}",
                        path.display()
                    )),
                }
            }
            warnings.push(
                "no instrument master available: using the small sample embedded in the binary; \
                 symbols outside it will not resolve (subscribe by exchangeSegment and securityId, \
                 or pass --instruments FILE)"
                    .to_string(),
            );
            Loaded {
                master: Master::sample(),
                origin: Origin::Fallback,
                warnings,
            }
        }
    }
}

/// GET `url` into memory (ureq over rustls).
pub fn download(url: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|p| url.starts_with(p));
    let mut config = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_global(Some(timeout))
        .user_agent(concat!("dhan-relay/", env!("CARGO_PKG_VERSION")));
    if loopback {
        // A proxy from the environment must not capture loopback.
        config = config.proxy(None);
    }
    let agent = ureq::Agent::new_with_config(config.build());
    let mut response = agent.get(url).call().map_err(|e| format!("{url}: {e}"))?;
    response
        .body_mut()
        .with_config()
        .limit(MAX_DOWNLOAD)
        .read_to_vec()
        .map_err(|e| format!("{url}: {e}"))
}

/// Writes `bytes` to `path` atomically (temporary file, then rename).
fn store(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert_eq!(Source::parse("sample"), Source::Sample);
        assert_eq!(
            Source::parse("https://x/y.csv"),
            Source::Url("https://x/y.csv".into())
        );
        assert_eq!(
            Source::parse("data/master.csv"),
            Source::File("data/master.csv".into())
        );
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(human_age(Duration::from_secs(5 * 60)), "5 min");
        assert_eq!(human_age(Duration::from_secs(5 * 3600)), "5 h");
        assert_eq!(human_age(Duration::from_secs(3 * 86_400)), "3 days");
    }

    #[test]
    fn the_daily_reload_never_falls_back_to_an_old_cache_or_the_sample() {
        let dir = std::env::temp_dir().join(format!("dhan-relay-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cache = dir.join(CACHE_FILE);
        std::fs::write(&cache, include_bytes!("sample-master.csv")).unwrap();
        let cfg = SourceConfig {
            cache_dir: Some(dir.clone()),
            timeout: Duration::from_secs(2),
            // Nothing listens on port 1: the download fails at once.
            ..SourceConfig::new(Source::Url("http://127.0.0.1:1/master.csv".into()))
        };
        let written = std::fs::metadata(&cache).unwrap().modified().unwrap();
        let later = written + Duration::from_secs(60);
        let e = reload(&cfg, later).map(|l| l.describe()).unwrap_err();
        assert!(e.contains("127.0.0.1:1"), "{e}");
        // A cache written since the given moment is today's download.
        let l = reload(&cfg, written).unwrap();
        assert!(matches!(l.origin, Origin::Cache { stale: false, .. }));
        assert!(!l.master.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
