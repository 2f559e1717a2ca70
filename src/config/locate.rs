//! Finding where in the file a problem is: byte spans from `toml`'s spanned document, turned into
//! line and column, and nearest-key suggestions for misspelt keys.

use std::fmt;
use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::{Problem, Rejected};

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LineCol {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub col: usize,
}

impl LineCol {
    /// The line and column of byte `offset` in `text`.
    pub fn of(text: &str, offset: usize) -> LineCol {
        let offset = offset.min(text.len());
        let before = &text[..floor_char_boundary(text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        LineCol {
            line,
            col: before[line_start..].chars().count() + 1,
        }
    }
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One step of a path into the document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    /// A table key.
    Key(&'static str),
    /// An array index.
    Index(usize),
}

/// A path to a key, e.g. `zones[1].enter_rssi`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// The path `key`.
    pub fn key(key: &'static str) -> KeyPath {
        KeyPath(vec![Seg::Key(key)])
    }

    /// This path extended by `key`.
    pub fn join(&self, key: &'static str) -> KeyPath {
        let mut v = self.0.clone();
        v.push(Seg::Key(key));
        KeyPath(v)
    }

    /// This path extended by an array index.
    pub fn index(&self, i: usize) -> KeyPath {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        KeyPath(v)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A parsed document that remembers where every key and value is.
pub struct Document<'a> {
    text: &'a str,
    root: Spanned<DeTable<'a>>,
}

impl<'a> Document<'a> {
    /// Parses TOML syntax, reporting every syntax error found.
    pub fn parse(text: &'a str) -> Result<Document<'a>, Rejected> {
        let (root, errors) = DeTable::parse_recoverable(text);
        if errors.is_empty() {
            return Ok(Document { text, root });
        }
        Err(Rejected::at_first_sight(
            errors
                .iter()
                .map(|e| Problem {
                    at: LineCol::of(text, e.span().map_or(0, |s| s.start)),
                    key: "(syntax)".into(),
                    message: first_line(e.message()).to_owned(),
                })
                .collect(),
        ))
    }

    /// Deserialises the document and checks it, turning every type or unknown-key error and every
    /// problem `semantic` finds into a located problem.
    ///
    /// serde stops at the first error, so a field engineer with three typos would fix them one
    /// `check-config` at a time. Instead, each error's key (or array item) is taken out of a copy
    /// of the document and deserialisation is tried again, until it succeeds or nothing more can
    /// be taken out. Problems are named from the original document, so keys and array indices are
    /// those of the file even after an item before them was taken out.
    ///
    /// The semantic checks then run on what was read, so a range mistake shows in the same run as
    /// a typo. Their problems are kept only where the file was read as written: not in a table
    /// that lost a key (a default stands in for it, and "exit_rssi must be below enter_rssi"
    /// about a default the engineer never wrote would mislead), not in an array that lost an item
    /// (the indices would be off), not anywhere when a top-level key was taken out, and not in
    /// a table `depends` says refers to a table that lost something (`("offers", "zones")`: an
    /// offer's zone ids are checked against the zones). Those held back are named in
    /// [`Rejected::unchecked`], so the engineer knows the next run may find more.
    pub fn check<T: DeserializeOwned>(
        &self,
        semantic: impl FnOnce(&T) -> Vec<(KeyPath, String)>,
        depends: &[(&str, &str)],
    ) -> Result<T, Rejected> {
        let (value, mut problems, touched) = self.recover::<T>();
        let Some(value) = value else {
            return Err(Rejected::at_first_sight(problems));
        };
        // A path is read as written when nothing was taken out of it, of what holds it, or of
        // what it holds (a problem about a whole table may be about any of its keys).
        let intact = |path: &str| !touched.iter().any(|t| within(path, t) || within(t, path));
        problems.extend(
            semantic(&value)
                .into_iter()
                .filter(|(path, _)| {
                    let path = path.to_string();
                    intact(&path)
                        && depends
                            .iter()
                            .all(|(table, on)| !within(&path, table) || intact(on))
                })
                .map(|(path, message)| self.problem_at(&path, message)),
        );
        if problems.is_empty() {
            return Ok(value);
        }
        problems.sort_by_key(|p| p.at);
        let mut unchecked = unchecked(&touched, depends, &intact, &|table| {
            self.root
                .get_ref()
                .iter()
                .any(|(k, _)| k.get_ref() == table)
        });
        // In the order of the problems that held them back; a dependent table comes last.
        unchecked.sort_by_key(|path| {
            let first = problems.iter().filter(|p| within(&p.key, path));
            first
                .map(|p| p.at)
                .min()
                .map_or((1, None), |at| (0, Some(at)))
        });
        Err(Rejected {
            problems,
            unchecked,
        })
    }

    /// Deserialises with recovery (see [`Document::check`]): the value, if one could be read at
    /// all, the problems, and the paths of the tables and arrays something was taken out of.
    fn recover<T: DeserializeOwned>(&self) -> (Option<T>, Vec<Problem>, Vec<String>) {
        let mut root = self.root.clone();
        let mut problems = Vec::new();
        let mut touched = Vec::new();
        // Keys taken out because their value was wrong, by the span of their table: the
        // "missing field" that taking out a required key causes is not a second problem.
        let mut taken: Vec<(Range<usize>, String)> = Vec::new();
        loop {
            let de = toml::de::Deserializer::from(root.clone());
            let e = match T::deserialize(de) {
                Ok(value) => return (Some(value), problems, touched),
                Err(e) => e,
            };
            let span = e.span().unwrap_or(0..0);
            let message = first_line(e.message());
            let caused_by_us = missing_field(message)
                .is_some_and(|field| taken.iter().any(|(t, k)| *t == span && k == field));
            let key = self.key_at(&span);
            if !caused_by_us {
                problems.push(Problem {
                    at: LineCol::of(self.text, span.start),
                    key: key.clone().unwrap_or_else(|| "(document)".into()),
                    message: explain(message, key.as_deref()),
                });
            }
            let whole = root.span();
            if span == whole
                || problems.len() >= MAX_PROBLEMS
                || !take_out_of_table(root.get_mut(), whole, &span, &mut taken)
            {
                break;
            }
            touched.push(key.as_deref().map_or("", parent).to_owned());
        }
        problems.sort_by_key(|p| p.at);
        (None, problems, touched)
    }

    /// A problem for `path`, located at the key if it is in the file, else at the nearest enclosing
    /// table that is (a default value that is invalid in context, e.g. a zone's default exit_rssi).
    pub fn problem_at(&self, path: &KeyPath, message: String) -> Problem {
        Problem {
            at: LineCol::of(self.text, self.span_of(path).start),
            key: path.to_string(),
            message,
        }
    }

    fn span_of(&self, path: &KeyPath) -> Range<usize> {
        let mut best = 0..0;
        let mut value: Option<&Spanned<DeValue<'a>>> = None;
        let mut table: Option<&DeTable<'a>> = Some(self.root.get_ref());
        for seg in &path.0 {
            match (seg, table, value.map(|v| v.get_ref())) {
                (Seg::Key(k), Some(t), _) => {
                    let Some((key, v)) = t.iter().find(|(key, _)| key.get_ref() == k) else {
                        return best;
                    };
                    best = key.span();
                    value = Some(v);
                    table = match v.get_ref() {
                        DeValue::Table(t) => Some(t),
                        _ => None,
                    };
                }
                (Seg::Index(i), _, Some(DeValue::Array(a))) => {
                    let Some(v) = a.get(*i) else {
                        return best;
                    };
                    best = v.span();
                    value = Some(v);
                    table = match v.get_ref() {
                        DeValue::Table(t) => Some(t),
                        _ => None,
                    };
                }
                _ => return best,
            }
        }
        best
    }

    /// The name of the key whose span starts where an error points, if any.
    fn key_at(&self, span: &Range<usize>) -> Option<String> {
        fn walk(t: &DeTable<'_>, span: &Range<usize>, prefix: &str) -> Option<String> {
            for (k, v) in t.iter() {
                let name = if prefix.is_empty() {
                    k.get_ref().to_string()
                } else {
                    format!("{prefix}.{}", k.get_ref())
                };
                match v.get_ref() {
                    DeValue::Table(inner) => {
                        if let Some(found) = walk(inner, span, &name) {
                            return Some(found);
                        }
                    }
                    DeValue::Array(items) => {
                        for (i, item) in items.iter().enumerate() {
                            let item_name = format!("{name}[{i}]");
                            if let DeValue::Table(inner) = item.get_ref() {
                                if let Some(found) = walk(inner, span, &item_name) {
                                    return Some(found);
                                }
                            }
                            // A table item is named too: "missing field" points at its header.
                            if item.span() == *span {
                                return Some(item_name);
                            }
                        }
                    }
                    _ => {}
                }
                // After the items: an array of tables spans its first header, as its first item does.
                if k.span() == *span
                    || (v.span() == *span && !matches!(v.get_ref(), DeValue::Table(_)))
                {
                    return Some(name);
                }
            }
            None
        }
        walk(self.root.get_ref(), span, "")
    }
}

/// The table or array holding `path` ("zones[0].exit_rssi" → "zones[0]", "zones[1]" → "zones",
/// "bogus" → "", the whole document).
/// The tables and arrays whose range checks `check` held back, outermost only: each one
/// something was taken out of, then each table in the file that depends on one.
fn unchecked(
    touched: &[String],
    depends: &[(&str, &str)],
    intact: &impl Fn(&str) -> bool,
    in_file: &impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let dependents = depends
        .iter()
        .filter(|(table, on)| !intact(on) && in_file(table))
        .map(|(table, _)| (*table).to_owned());
    for path in touched.iter().cloned().chain(dependents) {
        if out.iter().any(|o| within(&path, o)) {
            continue;
        }
        out.retain(|o| !within(o, &path));
        out.push(path);
    }
    out
}

fn parent(path: &str) -> &str {
    path.rfind(['.', '[']).map_or("", |i| &path[..i])
}

/// Whether `path` is `table` or inside it; everything is inside "", the whole document.
fn within(path: &str, table: &str) -> bool {
    path.strip_prefix(table)
        .is_some_and(|rest| table.is_empty() || rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Enough for any file a person wrote; a file that is not a beacond config at all stops here.
const MAX_PROBLEMS: usize = 50;

/// The field named by serde's "missing field `x`".
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// Takes the deepest key, array item or table whose span is `span` out of `value`, recording a
/// key taken out of a table as (table span, key). False if nothing has that span.
fn take_out(
    value: &mut Spanned<DeValue<'_>>,
    span: &Range<usize>,
    taken: &mut Vec<(Range<usize>, String)>,
) -> bool {
    let own = value.span();
    match value.get_mut() {
        DeValue::Table(table) => take_out_of_table(table, own, span, taken),
        DeValue::Array(items) => {
            for item in items.iter_mut() {
                if take_out(item, span, taken) {
                    return true;
                }
            }
            let Some(i) = items.iter().position(|item| item.span() == *span) else {
                return false;
            };
            // DeArray has no `remove`; rebuilding it is cheap at config sizes.
            *items = items
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, item)| item.clone())
                .collect();
            true
        }
        _ => false,
    }
}

fn take_out_of_table(
    table: &mut DeTable<'_>,
    own: Range<usize>,
    span: &Range<usize>,
    taken: &mut Vec<(Range<usize>, String)>,
) -> bool {
    for (_, v) in table.iter_mut() {
        if take_out(v, span, taken) {
            return true;
        }
    }
    let Some(key) = table
        .iter()
        .find(|(k, v)| k.span() == *span || v.span() == *span)
        .map(|(k, _)| k.get_ref().to_string())
    else {
        return false;
    };
    table.remove(key.as_str());
    taken.push((own, key));
    true
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s).trim()
}

/// Rewrites serde's "unknown field `x`, expected one of `a`, `b`" into a suggestion of the closest key,
/// and "unknown variant" likewise for enum values.
fn explain(message: &str, _key: Option<&str>) -> String {
    for what in ["unknown field", "unknown variant"] {
        let Some(rest) = message.strip_prefix(what) else {
            continue;
        };
        let names: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
        let Some((given, expected)) = names.split_first() else {
            break;
        };
        let valid = expected.join(", ");
        let noun = if what == "unknown field" {
            "key"
        } else {
            "value"
        };
        return match closest(given, expected) {
            Some(best) => {
                format!("unknown {noun} `{given}`; did you mean `{best}`? (valid: {valid})")
            }
            None => format!("unknown {noun} `{given}` (valid: {valid})"),
        };
    }
    plain_types(message)
}

/// Says serde's Rust type names ("expected f64", "expected struct HubConfig") in words a field
/// engineer reads TOML in.
fn plain_types(message: &str) -> String {
    let Some((head, expected)) = message.rsplit_once(", expected ") else {
        return match message {
            "wanted string or table" => {
                "expected one of this key's names, in quotes (the example config lists them)".into()
            }
            _ => message.to_owned(),
        };
    };
    let words = match expected {
        "f32" | "f64" => "a number, e.g. 2 or 2.5",
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" => "a whole number from 0 to 4294967295",
        "u64" | "usize" => "a whole number, 0 or more",
        "i8" => "a whole number from -128 to 127",
        "i16" => "a whole number from -32768 to 32767",
        "i32" => "a whole number from -2147483648 to 2147483647",
        "i64" | "isize" => "a whole number",
        "a sequence" => "an array, e.g. [1, 2] or [\"a\", \"b\"]",
        "a boolean" => "true or false",
        other if other.starts_with("struct ") => "a table ([section] or { key = value })",
        other => other,
    };
    format!("{head}, expected {words}")
}

/// The candidate most like `given`, if any is close enough to be a plausible typo.
pub fn closest<'c>(given: &str, candidates: &[&'c str]) -> Option<&'c str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(given, c), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_within_its_tables_and_arrays_not_their_neighbours() {
        assert_eq!(parent("zones[0].exit_rssi"), "zones[0]");
        assert_eq!(parent("zones[1]"), "zones");
        assert_eq!(parent("presence.filter"), "presence");
        assert_eq!(parent("bogus"), "");
        assert!(within("zones[0].exit_rssi", "zones[0]"));
        assert!(within("zones[0].exit_rssi", "zones"));
        assert!(within("zones", "zones"));
        assert!(within("presence.filter", ""));
        assert!(!within("zones[10].id", "zones[1]"));
        assert!(!within("zones_extra", "zones"));
        assert!(!within("zones", "zones[0]"));
    }

    #[test]
    fn line_and_column_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(LineCol::of(text, 0), LineCol { line: 1, col: 1 });
        assert_eq!(LineCol::of(text, 6), LineCol { line: 2, col: 1 });
        // 'é' is two bytes but one column: the space after it is column 3.
        assert_eq!(LineCol::of(text, 9), LineCol { line: 2, col: 3 });
    }

    #[test]
    fn suggestions_need_a_plausible_typo() {
        assert_eq!(
            closest("enter_rsi", &["enter_rssi", "exit_rssi"]),
            Some("enter_rssi")
        );
        assert_eq!(closest("colour", &["enter_rssi", "exit_rssi"]), None);
    }

    #[test]
    fn type_names_are_said_in_toml_words() {
        assert_eq!(
            plain_types("invalid type: string \"2\", expected f64"),
            "invalid type: string \"2\", expected a number, e.g. 2 or 2.5"
        );
        assert_eq!(
            plain_types("invalid value: integer `-3`, expected usize"),
            "invalid value: integer `-3`, expected a whole number, 0 or more"
        );
        assert_eq!(
            plain_types("invalid type: integer `5`, expected struct HubConfig"),
            "invalid type: integer `5`, expected a table ([section] or { key = value })"
        );
        assert_eq!(
            plain_types("invalid type: integer `5`, expected a string"),
            "invalid type: integer `5`, expected a string"
        );
    }

    #[test]
    fn key_paths_display_like_toml() {
        let p = KeyPath::key("zones").index(2).join("enter_rssi");
        assert_eq!(p.to_string(), "zones[2].enter_rssi");
    }
}
