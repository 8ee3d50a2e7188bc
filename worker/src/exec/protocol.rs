//! What an exec trainer's command writes on its metrics socket: one JSON
//! object per line.
//!
//! - a point: `{"step": 100, "epoch": 1, "train_loss": 0.71}` (every other
//!   key a metric; `step` and `epoch` optional, the last ones carry on);
//! - the result: `{"final": {"test_accuracy": 0.83}}`;
//! - a checkpoint request: `{"checkpoint": 100}`, answered `ok` (write it:
//!   every point so far is stored and the coordinator vouches for step 100)
//!   or `stop` (do not write it; the trial is no longer ours);
//! - a written checkpoint: `{"checkpointed": 100}`, once its files are on
//!   disk. Only such a checkpoint is resumed from (one killed while being
//!   written never is).
//!
//! Values are numbers, or `NaN`, `Infinity`, `-Infinity` (bare, as
//! Python's `json` writes them, or as strings): a non-finite value is a
//! divergence, not a bad line.

use serde_json::Value;
use sweep_core::point::{EPOCH_MAX, STEP_MAX};

/// The longest line read; a longer one is a bad line, skipped.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// The most metrics in one line.
pub const MAX_VALUES_PER_LINE: usize = 256;

/// One line, understood.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Point { step: Option<i64>, epoch: Option<u32>, values: Vec<(String, f64)> },
    Final(Vec<(String, f64)>),
    Checkpoint(i64),
    Checkpointed(i64),
}

/// Parses one line; `Err` says why it is a bad line.
pub fn parse(line: &str) -> Result<Message, String> {
    let line = line.trim();
    let value: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        // Python's json writes NaN and Infinity bare; read them as strings.
        Err(e) => serde_json::from_str(&quote_non_finite(line)).map_err(|_| format!("not JSON: {e}"))?,
    };
    let Value::Object(map) = value else {
        return Err("not a JSON object".into());
    };
    if let Some(v) = map.get("checkpoint") {
        if map.len() != 1 {
            return Err("`checkpoint` goes alone on its line".into());
        }
        return step(v).map(Message::Checkpoint);
    }
    if let Some(v) = map.get("checkpointed") {
        if map.len() != 1 {
            return Err("`checkpointed` goes alone on its line".into());
        }
        return step(v).map(Message::Checkpointed);
    }
    if let Some(v) = map.get("final") {
        if map.len() != 1 {
            return Err("`final` goes alone on its line".into());
        }
        let Value::Object(finals) = v else {
            return Err("`final` must be an object of metric values".into());
        };
        return values(finals.iter()).map(Message::Final);
    }
    let step = map.get("step").map(step).transpose()?;
    let epoch = match map.get("epoch") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(e) if e <= u64::from(EPOCH_MAX) => Some(e as u32),
            _ => return Err(format!("epoch {v} is not an integer from 0 to {EPOCH_MAX}")),
        },
    };
    let values = values(map.iter().filter(|(k, _)| *k != "step" && *k != "epoch"))?;
    if values.is_empty() {
        return Err("no metric in the line".into());
    }
    Ok(Message::Point { step, epoch, values })
}

fn step(v: &Value) -> Result<i64, String> {
    match v.as_i64() {
        Some(s) if (0..=STEP_MAX).contains(&s) => Ok(s),
        _ => Err(format!("step {v} is not an integer from 0 to {STEP_MAX}")),
    }
}

fn values<'a>(entries: impl Iterator<Item = (&'a String, &'a Value)>) -> Result<Vec<(String, f64)>, String> {
    let mut out = Vec::new();
    for (name, v) in entries {
        if out.len() == MAX_VALUES_PER_LINE {
            return Err(format!("more than {MAX_VALUES_PER_LINE} metrics in one line"));
        }
        sweep_core::point::loggable_name(name)?;
        let x = match v {
            Value::Number(n) => n.as_f64().ok_or_else(|| format!("{name}: {n} is not a number"))?,
            Value::String(s) => match s.as_str() {
                "NaN" | "nan" => f64::NAN,
                "Infinity" | "inf" => f64::INFINITY,
                "-Infinity" | "-inf" => f64::NEG_INFINITY,
                _ => return Err(format!("{name}: {} is not a number", sweep_core::quote::short(s))),
            },
            other => return Err(format!("{name}: {other} is not a number")),
        };
        if x.is_finite() {
            sweep_core::point::domain(name, x)?;
        }
        out.push((name.clone(), x));
    }
    Ok(out)
}

/// `NaN`, `Infinity` and `-Infinity` outside strings, quoted.
fn quote_non_finite(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + 8);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        if let Some(token) = ["-Infinity", "Infinity", "NaN"].iter().find(|t| rest.starts_with(*t)) {
            out.push('"');
            out.push_str(token);
            out.push('"');
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_finals_and_checkpoints() {
        assert_eq!(
            parse(r#"{"step": 100, "epoch": 1, "train_loss": 0.71}"#).unwrap(),
            Message::Point { step: Some(100), epoch: Some(1), values: vec![("train_loss".into(), 0.71)] }
        );
        assert_eq!(
            parse(r#"{"final": {"test_accuracy": 0.83}}"#).unwrap(),
            Message::Final(vec![("test_accuracy".into(), 0.83)])
        );
        assert_eq!(parse(r#"{"checkpoint": 7}"#).unwrap(), Message::Checkpoint(7));
        assert_eq!(parse(r#"{"checkpointed": 7}"#).unwrap(), Message::Checkpointed(7));
    }

    #[test]
    fn python_non_finite_values_are_divergence_not_bad_lines() {
        let Message::Point { values, .. } = parse(r#"{"step": 3, "loss": NaN, "x": -Infinity, "s": "NaN"}"#).unwrap()
        else {
            panic!("a point")
        };
        let get = |n: &str| values.iter().find(|(k, _)| k == n).unwrap().1;
        assert!(get("loss").is_nan() && get("x") == f64::NEG_INFINITY && get("s").is_nan());
    }

    #[test]
    fn bad_lines_say_why() {
        for (line, why) in [
            ("hello", "not JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"step": -1, "x": 1}"#, "step"),
            (r#"{"step": 1}"#, "no metric"),
            (r#"{"x": "high"}"#, "not a number"),
            (r#"{"final/x": 1}"#, "keeps"),
            (r#"{"FINAL/x": 1}"#, "keeps"),
            (r#"{"val_accuracy": 83.4}"#, "fractions"),
            (r#"{"checkpoint": 1, "x": 2}"#, "alone"),
            (r#"{"epoch": 1.5, "x": 2}"#, "epoch"),
        ] {
            let e = parse(line).unwrap_err();
            assert!(e.contains(why), "{line}: {e}");
        }
    }
}
