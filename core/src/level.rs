//! [`Level`]: one typed value of a factor or setting (an integer, a float,
//! a boolean or a string), and its canonical JSON form.
//!
//! The JSON form is part of every trial's identity: an integer is written
//! without a fraction (`32`), a float always with one or an exponent (`1.0`,
//! `0.001`, `1e+20`), so the kind survives a round trip through the store.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One typed value of a factor (a level, in design-of-experiments terms) or
/// of a fixed setting.
#[derive(Debug, Clone)]
pub enum Level {
    Int(i64),
    /// Always finite (checked where levels are made: parser, wire, store).
    Float(f64),
    Bool(bool),
    Str(String),
}

/// The kind of a [`Level`], as a schema declares it for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelKind {
    Int,
    Float,
    Bool,
    Str,
}

impl LevelKind {
    /// For "expected X" messages.
    pub fn describe(self) -> &'static str {
        match self {
            LevelKind::Int => "an integer",
            LevelKind::Float => "a number",
            LevelKind::Bool => "a boolean (true or false)",
            LevelKind::Str => "a string",
        }
    }
}

impl Level {
    pub fn kind(&self) -> LevelKind {
        match self {
            Level::Int(_) => LevelKind::Int,
            Level::Float(_) => LevelKind::Float,
            Level::Bool(_) => LevelKind::Bool,
            Level::Str(_) => LevelKind::Str,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Level::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// Floats, and integers read as floats.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Level::Float(x) => Some(*x),
            Level::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Level::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Level::Str(s) => Some(s),
            _ => None,
        }
    }

    /// This value as `kind`: an integer is accepted where a float is
    /// expected (`weight_decay = 0`); nothing else converts. A float must be
    /// finite.
    pub fn coerce(self, kind: LevelKind) -> Result<Level, String> {
        match (self, kind) {
            (Level::Int(i), LevelKind::Float) => Ok(Level::Float(i as f64)),
            (Level::Float(x), LevelKind::Float) if !x.is_finite() => Err(format!("{x} is not a finite number")),
            (l, k) if l.kind() == k => Ok(l),
            (l, k) => Err(format!("expected {}, found {}", k.describe(), l.describe())),
        }
    }

    /// The value with its kind, for "expected X, found Y".
    pub fn describe(&self) -> String {
        match self {
            Level::Int(i) => format!("the integer {i}"),
            Level::Float(x) => format!("the float {x:?}"),
            Level::Bool(b) => format!("the boolean {b}"),
            Level::Str(s) => format!("the string {}", crate::quote::short(s)),
        }
    }

    /// Parses a level typed on a command line (`--baseline lr=0.01`) as
    /// `kind`; booleans also read `on`/`off`.
    pub fn parse_as(text: &str, kind: LevelKind) -> Result<Level, String> {
        let t = text.trim();
        let bad = || format!("{} is not {}", crate::quote::short(t), kind.describe());
        match kind {
            LevelKind::Int => t.parse().map(Level::Int).map_err(|_| bad()),
            LevelKind::Float => match t.parse::<f64>() {
                Ok(x) if x.is_finite() => Ok(Level::Float(x)),
                _ => Err(bad()),
            },
            LevelKind::Bool => match t {
                "true" | "on" => Ok(Level::Bool(true)),
                "false" | "off" => Ok(Level::Bool(false)),
                _ => Err(bad()),
            },
            LevelKind::Str => Ok(Level::Str(t.to_owned())),
        }
    }

    /// The level as a report shows it: booleans as `on`/`off`, floats in
    /// their shortest form (`0.001`, `1e-5`).
    pub fn display(&self) -> String {
        match self {
            Level::Bool(true) => "on".into(),
            Level::Bool(false) => "off".into(),
            other => other.to_string(),
        }
    }
}

/// The plain form: `32`, `0.001`, `true`, `sgd` (what `--baseline` reads and
/// the JSON report's effect rows carry).
impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Level::Int(i) => write!(f, "{i}"),
            // Debug is Rust's shortest round-trip form, with an exponent for
            // very large or small values.
            Level::Float(x) => write!(f, "{x:?}"),
            Level::Bool(b) => write!(f, "{b}"),
            Level::Str(s) => f.write_str(s),
        }
    }
}

impl PartialEq for Level {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Level {}

impl std::hash::Hash for Level {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            Level::Int(i) => (0u8, i).hash(state),
            Level::Float(x) => (1u8, x.to_bits()).hash(state),
            Level::Bool(b) => (2u8, b).hash(state),
            Level::Str(s) => (3u8, s).hash(state),
        }
    }
}

impl PartialOrd for Level {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Numbers by value (integers before floats on a tie), then booleans (false
/// first), then strings; a total order, so levels can key maps.
impl Ord for Level {
    fn cmp(&self, other: &Self) -> Ordering {
        fn rank(l: &Level) -> u8 {
            match l {
                Level::Int(_) | Level::Float(_) => 0,
                Level::Bool(_) => 1,
                Level::Str(_) => 2,
            }
        }
        match (self, other) {
            (Level::Int(a), Level::Int(b)) => a.cmp(b),
            (Level::Float(a), Level::Float(b)) => a.total_cmp(b),
            (Level::Int(a), Level::Float(b)) => (*a as f64).total_cmp(b).then(Ordering::Less),
            (Level::Float(a), Level::Int(b)) => a.total_cmp(&(*b as f64)).then(Ordering::Greater),
            (Level::Bool(a), Level::Bool(b)) => a.cmp(b),
            (Level::Str(a), Level::Str(b)) => a.cmp(b),
            (a, b) => rank(a).cmp(&rank(b)),
        }
    }
}

impl Serialize for Level {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Level::Int(i) => s.serialize_i64(*i),
            Level::Float(x) => s.serialize_f64(*x),
            Level::Bool(b) => s.serialize_bool(*b),
            Level::Str(v) => s.serialize_str(v),
        }
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Bool(b) => Ok(Level::Bool(b)),
            serde_json::Value::String(s) => Ok(Level::Str(s)),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Ok(Level::Int(i))
                } else if n.is_u64() {
                    Err(D::Error::custom(format!("{n} does not fit in a 64-bit integer")))
                } else {
                    Ok(Level::Float(n.as_f64().ok_or_else(|| D::Error::custom("not a number"))?))
                }
            }
            other => Err(D::Error::custom(format!("a level is a number, boolean or string, not {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_the_kind() {
        for l in [Level::Int(32), Level::Float(32.0), Level::Float(1e-3), Level::Float(1e20), Level::Bool(true)] {
            let text = serde_json::to_string(&l).unwrap();
            let back: Level = serde_json::from_str(&text).unwrap();
            assert_eq!(back.kind(), l.kind(), "{text}");
            assert_eq!(back, l);
        }
        assert_eq!(serde_json::to_string(&Level::Float(32.0)).unwrap(), "32.0");
    }

    #[test]
    fn order_and_display() {
        assert!(Level::Int(8) < Level::Int(32));
        assert!(Level::Float(1e-3) < Level::Float(1e-2));
        assert!(Level::Bool(false) < Level::Bool(true));
        assert_eq!(Level::Float(1e-5).to_string(), "1e-5");
        assert_eq!(Level::Float(0.001).to_string(), "0.001");
        assert_eq!(Level::Bool(true).display(), "on");
        assert_eq!(Level::parse_as("off", LevelKind::Bool).unwrap(), Level::Bool(false));
        assert_eq!(Level::Int(3).coerce(LevelKind::Float).unwrap(), Level::Float(3.0));
        assert!(Level::Str("x".into()).coerce(LevelKind::Int).is_err());
    }
}
