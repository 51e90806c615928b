//! Strict reading of experiments files: every mistake is reported as `file:line:col: key: message`
//! with a did-you-mean, and nothing runs or is written.
//!
//! serde_yaml forgets positions once a document is a `Value` (and inside internally tagged enums
//! such as `task: {name: copy, ...}`), so errors are raised on key paths (`experiments[0].train.lr`)
//! and mapped back to the source by [`Positions`], a table of every key's line and column built
//! from a second, position-aware parse (yaml-rust2's marked events; aliases are not expanded there).
//!
//! Hostile input is refused before it can cost time or memory: files over [`MAX_FILE_BYTES`],
//! directories, non-UTF-8 bytes, nesting deeper than [`MAX_DEPTH`]; alias bombs are stopped by
//! serde_yaml's repetition limit; grids over [`MAX_RUNS`] runs are counted, not expanded.

use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Largest experiments file accepted (10 MiB); real ones are a few KiB.
pub const MAX_FILE_BYTES: u64 = 10 << 20;
/// Largest grid accepted; counted before expansion, so a huge grid costs nothing.
pub const MAX_RUNS: u64 = 100_000;
/// Deepest nesting of mappings and sequences accepted.
pub const MAX_DEPTH: usize = 64;

/// One mistake in an input file, at a 1-based line and column (0: the whole line).
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    pub line: usize,
    pub col: usize,
    /// Key path such as `experiments[0].train.lr`; empty when the mistake is not under a key.
    pub key: String,
    pub message: String,
}

/// Bad input: exit code 2. Displays one `file:line:col: key: message` line per issue.
#[derive(Debug, thiserror::Error)]
pub struct BadInput {
    pub file: String,
    pub issues: Vec<Issue>,
}

/// A bad command-line option (exit code 2); nothing was written.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct BadOption(anyhow::Error);

pub fn bad_option(e: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(BadOption(e.into()))
}

impl BadInput {
    pub fn one(
        file: impl Into<String>,
        line: usize,
        col: usize,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        BadInput {
            file: file.into(),
            issues: vec![Issue {
                line,
                col,
                key: key.into(),
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, is) in self.issues.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            // Column 0: the mistake is a whole line or cell (a CSV row), not a place in it.
            match is.col {
                0 => write!(f, "{}:{}: ", self.file, is.line)?,
                col => write!(f, "{}:{}:{}: ", self.file, is.line, col)?,
            }
            if !is.key.is_empty() {
                write!(f, "{}: ", is.key)?;
            }
            write!(f, "{}", is.message)?;
        }
        Ok(())
    }
}

/// Reads an input file, refusing directories, files over [`MAX_FILE_BYTES`] and non-UTF-8 bytes.
pub fn read_source(path: &Path) -> Result<String, BadInput> {
    let name = path.display().to_string();
    let bad = |msg: String| BadInput::one(name.clone(), 1, 1, "", msg);
    let meta = std::fs::metadata(path).map_err(|e| bad(format!("cannot read the file: {e}")))?;
    if meta.is_dir() {
        return Err(bad(
            "is a directory, expected an experiments YAML file".into()
        ));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(bad(format!(
            "file is {} bytes; experiments files are limited to {MAX_FILE_BYTES} bytes",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    use std::io::Read;
    // Read at most one byte past the cap: the file may be a pipe or grow while we read.
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| bad(format!("cannot read the file: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(bad(format!("file is over {MAX_FILE_BYTES} bytes")));
    }
    String::from_utf8(bytes)
        .map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            let head = &e.as_bytes()[..at];
            let line = head.iter().filter(|&&b| b == b'\n').count() + 1;
            let col = at - head.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) + 1;
            BadInput::one(
                name.clone(),
                line,
                col,
                "",
                format!(
                    "invalid UTF-8 (byte 0x{:02x} at offset {at}); the file must be UTF-8 text",
                    e.as_bytes()[at]
                ),
            )
        })
        // A byte-order mark (some Windows editors write one) is not YAML: drop it.
        .map(|text| match text.strip_prefix('\u{feff}') {
            Some(rest) => rest.to_string(),
            None => text,
        })
}

/// Line and column (1-based) of every key, and of every sequence item, by key path.
/// Paths are segment lists: mapping keys as written, sequence indices in decimal.
#[derive(Debug, Default)]
pub struct Positions {
    at: HashMap<Vec<String>, (usize, usize)>,
    /// The text of every scalar written as the value of a `name` key, exactly as written: serde
    /// reads `name: 0123` into a `String` as `0123`, a `Value` keeps only the number 123.
    names: HashMap<Vec<String>, String>,
}

enum Frame {
    /// A mapping: the key whose value is being read, and every key seen so far with its line.
    Map {
        key: Option<String>,
        seen: HashMap<String, usize>,
    },
    Seq {
        index: usize,
    },
}

struct Collector {
    positions: Positions,
    path: Vec<String>,
    frames: Vec<Frame>,
    /// The first reason to refuse the document: too deep, a duplicate key, a custom tag.
    refused: Option<(Marker, String)>,
}

impl Collector {
    /// The path of the node that starts now (a value in the current frame), or None for a key.
    fn enter_value(&mut self, mark: Marker) -> Option<bool> {
        match self.frames.last_mut() {
            None => {
                // The document's root: where a mistake of the whole file is reported.
                self.positions
                    .at
                    .entry(vec![])
                    .or_insert((mark.line(), mark.col() + 1));
                Some(false)
            }
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::Map { key: Some(_), .. }) => Some(true),
            Some(Frame::Seq { index }) => {
                self.path.push(index.to_string());
                let p = self.path.clone();
                self.positions
                    .at
                    .entry(p)
                    .or_insert((mark.line(), mark.col() + 1));
                Some(true)
            }
        }
    }

    /// After a value ends: the map expects a key again, the sequence moves to its next index.
    fn leave_value(&mut self) {
        match self.frames.last_mut() {
            Some(Frame::Map {
                key: key @ Some(_), ..
            }) => {
                *key = None;
                self.path.pop();
            }
            Some(Frame::Seq { index }) => {
                *index += 1;
                self.path.pop();
            }
            Some(Frame::Map { key: None, .. }) | None => {}
        }
    }

    fn scalar_or_alias(&mut self, text: String, mark: Marker) {
        match self.enter_value(mark) {
            None => {
                // A mapping key: remember where it is written.
                self.path.push(text.clone());
                self.positions
                    .at
                    .entry(self.path.clone())
                    .or_insert((mark.line(), mark.col() + 1));
                if let Some(Frame::Map { key, seen }) = self.frames.last_mut() {
                    if let Some(first) = seen.insert(text.clone(), mark.line()) {
                        let msg = format!("duplicate key `{text}` (first written at line {first})");
                        self.refused.get_or_insert((mark, msg));
                    }
                    *key = Some(text);
                }
            }
            Some(_) => {
                // An alias's value is the anchor's, not the text `*alias`.
                if self.path.last().is_some_and(|k| k == "name") && text != "*alias" {
                    self.positions.names.insert(self.path.clone(), text);
                }
                self.leave_value()
            }
        }
    }

    fn open(&mut self, frame: Frame, mark: Marker) {
        if self.enter_value(mark).is_none() {
            // A complex key (a mapping or sequence used as a key): give it a placeholder name.
            self.path.push("?".into());
            if let Some(Frame::Map { key, .. }) = self.frames.last_mut() {
                *key = Some("?".into());
            }
        }
        self.frames.push(frame);
        if self.frames.len() > MAX_DEPTH {
            self.refused
                .get_or_insert((mark, format!("nesting deeper than {MAX_DEPTH} levels")));
        }
    }
}

impl MarkedEventReceiver for Collector {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.refused.is_some() {
            return;
        }
        // Local tags (`!name`) ask for types we do not have; serde_yaml would silently drop them.
        if let Event::Scalar(_, _, _, Some(t))
        | Event::MappingStart(_, Some(t))
        | Event::SequenceStart(_, Some(t)) = &ev
        {
            if t.handle != "!!" && t.handle != "tag:yaml.org,2002:" {
                self.refused = Some((
                    mark,
                    format!(
                        "YAML tag `{}{}` is not supported; remove it",
                        t.handle, t.suffix
                    ),
                ));
                return;
            }
        }
        match ev {
            Event::Scalar(text, ..) => self.scalar_or_alias(text, mark),
            Event::Alias(_) => self.scalar_or_alias("*alias".into(), mark),
            Event::MappingStart(..) => self.open(
                Frame::Map {
                    key: None,
                    seen: HashMap::new(),
                },
                mark,
            ),
            Event::SequenceStart(..) => self.open(Frame::Seq { index: 0 }, mark),
            Event::MappingEnd | Event::SequenceEnd => {
                self.frames.pop();
                self.leave_value();
            }
            _ => {}
        }
    }
}

impl Positions {
    /// Parses `text` (the first document only) for positions; a syntax error is an [`Issue`].
    pub fn parse(text: &str) -> Result<Self, Issue> {
        let mut c = Collector {
            positions: Positions::default(),
            path: vec![],
            frames: vec![],
            refused: None,
        };
        let mut parser = Parser::new_from_str(text);
        if let Err(e) = parser.load(&mut c, false) {
            let m = e.marker();
            return Err(Issue {
                line: m.line(),
                col: m.col() + 1,
                key: String::new(),
                message: format!("YAML syntax error: {}", e.info()),
            });
        }
        if let Some((m, message)) = c.refused {
            return Err(Issue {
                line: m.line(),
                col: m.col() + 1,
                key: strict_key(&c.path),
                message,
            });
        }
        Ok(c.positions)
    }

    pub fn get(&self, path: &[String]) -> Option<(usize, usize)> {
        self.at.get(path).copied()
    }

    /// The text written as the value at `path` (a `name` key's), as serde reads it into a string.
    pub fn name_text(&self, path: &[String]) -> Option<&str> {
        self.names.get(path).map(String::as_str)
    }

    /// Position of the longest prefix of `path` that is written in the file, and that prefix's length.
    pub fn nearest(&self, path: &[String]) -> Option<((usize, usize), usize)> {
        (1..=path.len())
            .rev()
            .find_map(|n| self.get(&path[..n]).map(|p| (p, n)))
    }
}

/// A value that did not read: where under it (key path) and serde's message in the file's terms.
#[derive(Debug)]
pub struct Unread {
    pub path: Vec<String>,
    pub message: String,
}

impl Unread {
    /// A key that `T` requires is absent (the message serde gives once every key present has read).
    fn is_missing_key(&self) -> bool {
        self.message.starts_with("missing field `")
    }
}

/// Reads `value` as a `T`; a failure names the key path of the mistake (for an unknown key, the
/// unknown key itself) and carries serde's message with a did-you-mean.
pub fn read<T: DeserializeOwned>(value: Value) -> Result<T, Unread> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = path_segments(e.path());
        let message = with_hint(&e.into_inner().to_string());
        let path = unknown_key_path(&path, &message).unwrap_or(path);
        Unread { path, message }
    })
}

/// What [`read_keys`] found in a value.
pub struct Reading<T> {
    /// The whole value as a `T`, or else the keys that read on their own (None if they do not).
    pub value: Option<T>,
    /// The value without its bad keys, for a merge to go on with; None when nothing of it can be
    /// judged (not a mapping, or an unknown variant name).
    pub kept: Option<Value>,
    pub issues: Vec<Issue>,
}

/// Reads the mapping `value` as a `T` and, when it does not read, finds every mistake in it, not
/// only serde's first: each key is read again on its own (beside `tag`, the key that names an
/// internally tagged enum's variant, without which the other keys mean nothing), so one bad key
/// hides no other. `layer`: the value is one layer of a merge (the defaults, or an experiment over
/// them), so keys it lacks, the tag included, are not mistakes: the merged value is checked for
/// those. `locate` turns a key path under `value` and a message into an issue.
pub fn read_keys<T: DeserializeOwned>(
    value: &Value,
    tag: Option<&str>,
    layer: bool,
    locate: &dyn Fn(&[String], String) -> Issue,
) -> Reading<T> {
    let whole = match read::<T>(value.clone()) {
        Ok(t) => {
            return Reading {
                value: Some(t),
                kept: Some(value.clone()),
                issues: vec![],
            }
        }
        Err(e) => e,
    };
    let unjudged = |issues: Vec<Issue>| Reading {
        value: None,
        kept: None,
        issues,
    };
    let issue = |e: Unread| locate(&e.path, e.message);
    // Inside a tagged enum serde loses the path, so any mistake may be a key's; elsewhere a
    // mistake at the root (a list where a mapping belongs) is the value's own.
    let keyed = tag.is_some() || !whole.path.is_empty() || whole.is_missing_key();
    let Value::Mapping(map) = value else {
        return unjudged(vec![issue(whole)]);
    };
    if !keyed {
        return unjudged(vec![issue(whole)]);
    }
    let tag_entry = tag.and_then(|t| map.iter().find(|(k, _)| k.as_str() == Some(t)));
    if let Some(t) = tag {
        let Some((k, v)) = tag_entry else {
            // Which keys belong is known only under a name, which another layer may give.
            return match layer {
                true => Reading {
                    value: None,
                    kept: Some(value.clone()),
                    issues: vec![],
                },
                false => unjudged(vec![issue(whole)]),
            };
        };
        let alone = Mapping::from_iter([(k.clone(), v.clone())]);
        if let Err(e) = read::<T>(Value::Mapping(alone)) {
            if !e.is_missing_key() {
                // An unknown variant: which keys belong is unknown, so they are not judged.
                return unjudged(vec![locate(&[t.to_string()], e.message)]);
            }
        }
    }
    let mut issues = vec![];
    let mut kept = Mapping::from_iter(tag_entry.map(|(t, tv)| (t.clone(), tv.clone())));
    for (k, v) in map {
        if tag_entry.is_some_and(|(t, _)| t == k) {
            continue;
        }
        let mut one = Mapping::from_iter(tag_entry.map(|(t, tv)| (t.clone(), tv.clone())));
        one.insert(k.clone(), v.clone());
        let mut e = match read::<T>(Value::Mapping(one)) {
            Err(e) if !e.is_missing_key() => e,
            _ => {
                kept.insert(k.clone(), v.clone());
                continue;
            }
        };
        // Inside a tagged enum serde loses the path; the key is the one read.
        let key = match k {
            Value::String(s) => s.clone(),
            other => serde_yaml::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_string(),
        };
        if e.path.first() != Some(&key) {
            e.path.insert(0, key);
        }
        issues.push(issue(e));
    }
    if issues.is_empty() && !(layer && whole.is_missing_key()) {
        issues.push(issue(whole));
    }
    Reading {
        value: read::<T>(Value::Mapping(kept.clone())).ok(),
        kept: Some(Value::Mapping(kept)),
        issues,
    }
}

/// serde_path_to_error's path as key segments (sequence indices in decimal).
pub fn path_segments(p: &serde_path_to_error::Path) -> Vec<String> {
    use serde_path_to_error::Segment;
    p.iter()
        .filter_map(|s| match s {
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Map { key } => Some(key.clone()),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

/// For "unknown field `x`" errors: the path of `x` itself, so the position is the typo's.
pub fn unknown_key_path(path: &[String], message: &str) -> Option<Vec<String>> {
    let name = unknown_name(message)?;
    if message.contains("unknown variant") {
        return None;
    }
    let mut p = path.to_vec();
    if p.last().map(String::as_str) != Some(name) {
        p.push(name.to_string());
    }
    Some(p)
}

fn strict_key(path: &[String]) -> String {
    display_path(path)
}

/// `experiments`, `0`, `train` → `experiments[0].train`.
pub fn display_path(path: &[String]) -> String {
    let mut s = String::new();
    for seg in path {
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            s.push_str(&format!("[{seg}]"));
        } else {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(seg);
        }
    }
    s
}

/// The closest of `allowed` to `typo`, if close enough to be a likely misspelling.
pub fn closest<'a>(typo: &str, allowed: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    allowed
        .into_iter()
        .map(|a| (strsim::damerau_levenshtein(typo, a), a))
        .filter(|&(d, a)| d <= (a.len().max(typo.len()) / 3).max(2))
        .min_by_key(|&(d, _)| d)
        .map(|(_, a)| a)
}

/// The name in serde's "unknown field `x`" / "unknown variant `x`" messages.
pub fn unknown_name(message: &str) -> Option<&str> {
    let rest = ["unknown field `", "unknown variant `"]
        .iter()
        .find_map(|p| message.split_once(p).map(|(_, r)| r))?;
    rest.split('`').next()
}

/// Names listed after "expected" in serde's unknown field/variant messages.
fn expected_names(message: &str) -> Vec<&str> {
    let Some((_, rest)) = message.split_once("expected") else {
        return vec![];
    };
    rest.split('`').skip(1).step_by(2).collect()
}

/// serde's message in the file's terms (no Rust type names), plus " (did you mean `y`?)" when it
/// names an unknown key close to an allowed one.
pub fn with_hint(message: &str) -> String {
    let message = plain(message);
    let Some(name) = unknown_name(&message) else {
        return message;
    };
    // A key with no letter or digit (a YAML merge key `<<`, say) resembles nothing.
    if !name.chars().any(char::is_alphanumeric) {
        return message;
    }
    let allowed = expected_names(&message);
    // A truncated key (`hiden` for `hidden_size`, 3+ characters) is close to the allowed key's start.
    let n = name.chars().count();
    let prefix = |a: &str| a.chars().take(n + 1).collect::<String>();
    let hint = closest(name, allowed.iter().copied()).or_else(|| {
        allowed
            .iter()
            .copied()
            .filter(|a| n >= 3 && strsim::damerau_levenshtein(name, &prefix(a)) <= 1)
            .min_by_key(|a| a.len())
    });
    match hint {
        Some(m) => format!("{message} (did you mean `{m}`?)"),
        None => message,
    }
}

/// serde's wording with the Rust type names it leaks replaced by what the file should hold.
fn plain(message: &str) -> String {
    let mut m = message.to_string();
    for (rust, file) in [
        (
            "struct FileSchema",
            "a mapping with `experiments` (and optionally `defaults`)",
        ),
        (
            "struct Experiment",
            "an experiment mapping (`task`, `arch`, `train`, ...)",
        ),
        (
            "struct Defaults",
            "a mapping of defaults (`task`, `arch`, `train`, ...)",
        ),
        (
            "internally tagged enum ArchConfig",
            "an `arch` mapping with a `name`",
        ),
        (
            "internally tagged enum TaskConfig",
            "a `task` mapping with a `name`",
        ),
        ("struct TrainConfig", "a `train` mapping"),
    ] {
        m = m.replace(rust, file);
    }
    for big in [
        " as u128, expected any YAML value",
        " as i128, expected any YAML value",
    ] {
        m = m.replace(big, ": too large a number");
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<String> {
        s.split('/').map(String::from).collect()
    }

    #[test]
    fn positions_of_keys_and_items() {
        let text = "defaults:\n  train: {steps: 3}\nexperiments:\n  - name: a\n    grid:\n      arch.hidden_size: [1, 2]\n  - name: b\n";
        let pos = Positions::parse(text).unwrap();
        assert_eq!(pos.get(&p("defaults")), Some((1, 1)));
        assert_eq!(pos.get(&p("defaults/train/steps")), Some((2, 11)));
        // A block mapping in a sequence is marked on its first line (the column is the parser's).
        assert_eq!(pos.get(&p("experiments/0")).map(|p| p.0), Some(4));
        assert_eq!(
            pos.get(&p("experiments/0/grid/arch.hidden_size")),
            Some((6, 7))
        );
        assert_eq!(pos.get(&p("experiments/1/name")), Some((7, 5)));
        assert_eq!(
            pos.nearest(&p("experiments/1/train/lr"))
                .map(|(p, n)| (p.0, n)),
            Some((7, 2))
        );
    }

    #[test]
    fn messages_name_what_the_file_holds_and_hint_truncated_keys_only() {
        let m = with_hint("invalid type: sequence, expected struct FileSchema");
        assert!(
            !m.contains("FileSchema") && m.contains("`experiments`"),
            "{m}"
        );
        let m =
            with_hint("unknown field `hiden`, expected one of `hidden_size`, `layers`, `dropout`");
        assert!(m.ends_with("(did you mean `hidden_size`?)"), "{m}");
        let m = with_hint("unknown field `<<`, expected one of `lr`, `steps`");
        assert!(!m.contains("did you mean"), "{m}");
    }

    #[test]
    fn hint_names_the_closest_allowed_key() {
        let m = "unknown field `lrr`, expected one of `steps`, `lr`, `batch_size`";
        assert_eq!(unknown_name(m), Some("lrr"));
        assert!(
            with_hint(m).ends_with("(did you mean `lr`?)"),
            "{}",
            with_hint(m)
        );
        assert_eq!(
            with_hint("unknown field `zzzzzzzz`, expected `lr`"),
            "unknown field `zzzzzzzz`, expected `lr`"
        );
        assert_eq!(
            display_path(&p("experiments/3/train/lr")),
            "experiments[3].train.lr"
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("x: {}{}", "[".repeat(200), "]".repeat(200));
        let e = Positions::parse(&text).unwrap_err();
        assert!(e.message.contains("nesting deeper"), "{e:?}");
    }
}
