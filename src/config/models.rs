//! Model names in the configuration: `IGNORE_MODELS_*`/`WHITELIST_MODELS_*` filters,
//! `MODEL_ALIASES`, and the `*`/`?` globs both use.

use crate::error::{Error, Result};
use crate::providers;
use std::collections::BTreeMap;

/// Which model ids a provider shows and serves.
#[derive(Debug, Clone, Default)]
pub struct ModelFilter {
    ignore: Vec<String>,
    whitelist: Vec<String>,
}

impl ModelFilter {
    /// Whether any `IGNORE_MODELS_*` or `WHITELIST_MODELS_*` glob is set.
    pub fn is_set(&self) -> bool {
        !self.ignore.is_empty() || !self.whitelist.is_empty()
    }

    pub(super) fn parse(ignore: Option<&str>, whitelist: Option<&str>) -> ModelFilter {
        let globs = |v: Option<&str>| -> Vec<String> {
            v.unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
        };
        ModelFilter { ignore: globs(ignore), whitelist: globs(whitelist) }
    }

    /// Whitelist wins over the blacklist; both match the bare id or `provider/id`.
    pub fn allows(&self, provider: &str, id: &str) -> bool {
        let full = format!("{provider}/{id}");
        let hit = |globs: &[String]| globs.iter().any(|g| glob_match(g, id) || glob_match(g, &full));
        hit(&self.whitelist) || !hit(&self.ignore)
    }
}

/// `*` and `?` globs, case-sensitive.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// `MODEL_ALIASES`, in the order exact names first, then globs in the order given.
#[derive(Debug, Clone, Default)]
pub struct ModelAliases {
    exact: BTreeMap<String, String>,
    globs: Vec<(String, String)>,
}

impl ModelAliases {
    /// Parses the JSON object of `MODEL_ALIASES`; every target must be `provider/model`.
    pub(super) fn parse(raw: Option<&str>) -> Result<ModelAliases> {
        let Some(raw) = raw else { return Ok(ModelAliases::default()) };
        let bad = |why: String| Error::Config(format!("MODEL_ALIASES {why}"));
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(raw)
            .map_err(|e| bad(format!("must be a JSON object of names to provider/model: {e}")))?;
        let mut aliases = ModelAliases::default();
        for (name, target) in map {
            let target = match target.as_str() {
                Some(t) if providers::split_model(t).is_some() => t.to_string(),
                _ => return Err(bad(format!("maps '{name}' to {target}, which is not a \"provider/model\" string"))),
            };
            if name.contains(['*', '?']) {
                aliases.globs.push((name, target));
            } else {
                aliases.exact.insert(name, target);
            }
        }
        Ok(aliases)
    }

    /// The `provider/model` a name stands for: an exact name wins over a glob.
    pub fn lookup(&self, name: &str) -> Option<&str> {
        self.exact
            .get(name)
            .or_else(|| self.globs.iter().find(|(glob, _)| glob_match(glob, name)).map(|(_, t)| t))
            .map(String::as_str)
    }

    /// How many names and globs there are.
    pub fn len(&self) -> usize {
        self.exact.len() + self.globs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The exact alias names, for model lists.
    pub fn names(&self) -> impl Iterator<Item = (&str, &str)> {
        self.exact.iter().map(|(n, t)| (n.as_str(), t.as_str()))
    }
}
