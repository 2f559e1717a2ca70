//! `--set KEY=VALUE`: one scenario with one thing changed, without copying and editing its file.
//!
//! Why: whether the engine's numbers hold in a store that is a little quieter, busier or slower
//! than the shipped ones is the question a tuning has to answer (docs/presence.md, "Robustness"),
//! and a copied file per variation drifts from the one it was copied from. Overrides are applied to
//! the TOML text with `toml_edit` before the scenario is parsed and validated, so a value of the
//! wrong type or a misspelt key is reported by the same checks, with the same messages, as in a
//! file.

use thiserror::Error;
use toml_edit::{DocumentMut, Item, Table, TableLike, Value};

/// An override that cannot be applied.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("--set {arg}: {message}")]
pub struct OverrideError {
    /// The override as given.
    pub arg: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// One step of a key: a table key, with an index when it names one entry of an array of tables.
#[derive(Debug, PartialEq, Eq)]
struct Step<'a> {
    key: &'a str,
    index: Option<usize>,
}

/// `text` with every `KEY=VALUE` of `sets` applied, in order.
///
/// A key is a dotted path (`radio.shadowing_sigma_db`). A step that names an array of tables
/// (`zones`) applies the rest of the path to every entry, or to one with an index (`zones[1]`). A
/// missing table is created (`presence.exit_margin_db` in a scenario without `[presence]`). The
/// value is TOML (`-72`, `1.5`, `true`, `[1.0, 6.0]`); anything that does not parse as TOML is
/// taken as a string, so `presence.filter=kalman` needs no quotes.
pub fn apply(text: &str, sets: &[String]) -> Result<String, OverrideError> {
    if sets.is_empty() {
        return Ok(text.to_owned());
    }
    let mut doc: DocumentMut = text.parse().map_err(|e| OverrideError {
        arg: sets[0].clone(),
        message: format!("the scenario itself is not valid TOML: {e}"),
    })?;
    for arg in sets {
        let fail = |message: String| OverrideError {
            arg: arg.clone(),
            message,
        };
        let (key, raw) = arg
            .split_once('=')
            .ok_or_else(|| fail("expected KEY=VALUE, e.g. radio.shadowing_sigma_db=1.5".into()))?;
        let steps = parse_key(key.trim()).map_err(&fail)?;
        let value = parse_value(raw.trim());
        set_in(doc.as_table_mut(), &steps, &value).map_err(&fail)?;
    }
    Ok(doc.to_string())
}

fn parse_key(key: &str) -> Result<Vec<Step<'_>>, String> {
    let bad = || format!("{key:?} is not a key; write it dotted, e.g. zones[0].enter_rssi");
    if key.is_empty() {
        return Err(bad());
    }
    key.split('.')
        .map(|part| {
            let (name, index) = match part.split_once('[') {
                None => (part, None),
                Some((name, rest)) => {
                    let i = rest
                        .strip_suffix(']')
                        .and_then(|i| i.parse::<usize>().ok())
                        .ok_or_else(bad)?;
                    (name, Some(i))
                }
            };
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if ok {
                Ok(Step { key: name, index })
            } else {
                Err(bad())
            }
        })
        .collect()
}

fn parse_value(raw: &str) -> Value {
    raw.parse::<Value>().unwrap_or_else(|_| Value::from(raw))
}

/// Sets `steps` to `value` under `table`.
fn set_in(table: &mut dyn TableLike, steps: &[Step<'_>], value: &Value) -> Result<(), String> {
    let (step, rest) = steps.split_first().expect("keys have at least one step");
    if rest.is_empty() {
        if step.index.is_some() {
            return Err(format!(
                "an index on the last key is not supported; set the whole array, e.g. {}=[1.0, 2.0]",
                step.key
            ));
        }
        if table
            .get(step.key)
            .is_some_and(|i| i.is_table_like() || i.is_array_of_tables())
        {
            return Err(format!("{} is a table; set one of its keys", step.key));
        }
        match table.get_mut(step.key) {
            // Replacing only the value keeps the line's comment.
            Some(Item::Value(v)) => {
                let decor = v.decor().clone();
                *v = value.clone();
                *v.decor_mut() = decor;
            }
            _ => {
                table.insert(step.key, Item::Value(value.clone()));
            }
        }
        return Ok(());
    }
    if table.get(step.key).is_none() {
        if step.index.is_some() {
            return Err(format!("the scenario has no [[{}]]", step.key));
        }
        let mut t = Table::new();
        t.set_implicit(false);
        table.insert(step.key, Item::Table(t));
    }
    match table.get_mut(step.key).expect("present or just inserted") {
        Item::ArrayOfTables(entries) => {
            let len = entries.len();
            match step.index {
                Some(i) => {
                    let entry = entries.get_mut(i).ok_or_else(|| {
                        format!("[[{}]] has {len} entries, numbered from 0", step.key)
                    })?;
                    set_in(entry, rest, value)
                }
                None => entries
                    .iter_mut()
                    .try_for_each(|entry| set_in(entry, rest, value)),
            }
        }
        item => {
            if step.index.is_some() {
                return Err(format!("{} is not an array of tables", step.key));
            }
            match item.as_table_like_mut() {
                Some(t) => set_in(t, rest, value),
                None => Err(format!("{} is a value, not a table", step.key)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"name = "x"
[radio]
shadowing_sigma_db = 2.5 # slow wander
[[zones]]
id = "a"
enter_rssi = -75
[[zones]]
id = "b"
enter_rssi = -75
"#;

    fn set(sets: &[&str]) -> Result<toml::Table, OverrideError> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        apply(TEXT, &sets).map(|t| t.parse().expect("valid TOML"))
    }

    #[test]
    fn a_dotted_key_replaces_a_value_and_keeps_its_comment() {
        let sets = vec!["radio.shadowing_sigma_db=1.5".to_string()];
        let out = apply(TEXT, &sets).unwrap();
        assert!(
            out.contains("shadowing_sigma_db = 1.5 # slow wander"),
            "{out}"
        );
    }

    #[test]
    fn an_array_of_tables_is_set_in_every_entry_or_in_one() {
        let t = set(&["zones.enter_rssi=-72"]).unwrap();
        let zones = t["zones"].as_array().unwrap();
        assert!(zones
            .iter()
            .all(|z| z["enter_rssi"].as_integer() == Some(-72)));
        let t = set(&["zones[1].enter_rssi=-70"]).unwrap();
        let zones = t["zones"].as_array().unwrap();
        assert_eq!(zones[0]["enter_rssi"].as_integer(), Some(-75));
        assert_eq!(zones[1]["enter_rssi"].as_integer(), Some(-70));
    }

    #[test]
    fn a_missing_table_is_created_and_bare_words_are_strings() {
        let t = set(&["presence.filter=kalman", "presence.exit_margin_db=6.0"]).unwrap();
        assert_eq!(t["presence"]["filter"].as_str(), Some("kalman"));
        assert_eq!(t["presence"]["exit_margin_db"].as_float(), Some(6.0));
        let t = set(&["shoppers.entrance=[1.0, 6.0]"]).unwrap();
        assert_eq!(t["shoppers"]["entrance"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn later_overrides_win() {
        let t = set(&["radio.shadowing_sigma_db=1", "radio.shadowing_sigma_db=4"]).unwrap();
        assert_eq!(t["radio"]["shadowing_sigma_db"].as_integer(), Some(4));
    }

    #[test]
    fn mistakes_name_the_override_and_what_to_do() {
        let err = |s: &str| set(&[s]).unwrap_err();
        assert!(err("radio").message.contains("KEY=VALUE"));
        assert!(err("radio=1").message.contains("radio is a table"));
        assert!(err("zones[5].enter_rssi=-70")
            .message
            .contains("has 2 entries"));
        assert!(err("name.x=1").message.contains("name is a value"));
        assert!(err("beacons[0].x=1").message.contains("no [[beacons]]"));
        assert!(err("radio..x=1").message.contains("is not a key"));
        assert!(err("zones[x].enter_rssi=1")
            .message
            .contains("is not a key"));
        assert!(err("radio.shadowing_sigma_db[0]=1")
            .message
            .contains("set the whole array"));
        assert_eq!(err("radio=1").arg, "radio=1");
    }
}
