//! The exec trainer: any command as a trial. `[trainer] kind = "exec"`
//! names the command; its factors and settings are any names the grid
//! declares (an open [`Schema`]), given to the command as a JSON file,
//! environment variables and `{name}` placeholders in `args`.
//!
//! This module holds the trainer's spec, its schema and every rule about
//! them; the grid parser and the wire validation call these rules, the
//! worker (`worker/src/exec.rs`) runs what they accepted.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::level::Level;
use crate::quote::short;
use crate::schema::Schema;

/// Which trainer trains a grid's trials. Part of a trial's identity (a
/// different command is a different trial); BMEnet, the default, is left
/// out of the canonical form, so BMEnet trial IDs are unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum TrainerSpec {
    /// The built-in BMEnet trainer (libtorch, CIFAR-10).
    #[default]
    Bmenet,
    /// A user's command, run once per trial.
    Exec(ExecSpec),
}

impl TrainerSpec {
    pub fn is_bmenet(&self) -> bool {
        matches!(self, TrainerSpec::Bmenet)
    }

    /// The schema that checks this trainer's factors and settings.
    pub fn schema(&self) -> &'static Schema {
        match self {
            TrainerSpec::Bmenet => &crate::bmenet::SCHEMA,
            TrainerSpec::Exec(_) => &SCHEMA,
        }
    }

    /// The trainer's name, as grids write it in `[trainer] kind`.
    pub fn kind(&self) -> &'static str {
        self.schema().trainer
    }
}

/// `[trainer]` of an exec grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecSpec {
    /// The program and its fixed arguments (an argv list, no shell).
    pub command: Vec<String>,
    /// Arguments after `command`, with `{name}` replaced by the trial's
    /// level of `name` (a factor, a setting, or `seed`).
    pub args: Vec<String>,
    /// Extra environment variables for the command.
    pub env: BTreeMap<String, String>,
    /// The command's working folder (absolute; resolved against the grid
    /// file's folder). `None`: the worker's working folder.
    pub workdir: Option<PathBuf>,
    /// Seconds one attempt may run before it is stopped and failed.
    pub timeout_secs: Option<u64>,
}

/// The exec trainer's schema: open (any factor or setting name; the
/// levels' own kinds). It declares no keys; `epochs`, when a grid sets it,
/// is what progress counts epochs against.
pub static SCHEMA: Schema =
    Schema { trainer: "exec", keys: &[], default_focus: "", default_x: "", epochs_key: "epochs", open: true };

/// The exit code with which a command hands its trial back (it could not
/// train it here, e.g. the GPU is busy): the trial is queued again without
/// using an attempt (`EX_TEMPFAIL`).
pub const HAND_BACK_EXIT_CODE: i32 = 75;

/// The most of a trial's captured output a worker sends and the
/// coordinator keeps per attempt (`sweep logs`).
pub const LOG_TAIL_BYTES: usize = 64 * 1024;

/// The longest name of a factor or setting of an open schema.
pub const MAX_KEY_LEN: usize = 64;
/// The longest string level of an open schema, in bytes.
pub const MAX_STRING_LEVEL: usize = 1024;
/// The most `command` plus `args` entries, and `env` entries.
pub const MAX_ARGV: usize = 256;
/// The longest argument or environment value, in bytes.
pub const MAX_ARG_LEN: usize = 4096;
/// The most bytes of `command`, `args` and `env` together (every trial
/// carries its trainer spec).
pub const MAX_SPEC_BYTES: usize = 64 * 1024;
/// The longest `timeout`: 30 days.
pub const MAX_TIMEOUT_SECS: u64 = 30 * 24 * 3600;

/// A factor or setting name of an open schema: lower-case letters, digits
/// and `_`, starting with a letter (it becomes `SWEEP_FACTOR_<NAME>`).
pub fn key_name(name: &str) -> Result<(), String> {
    if name == "seed" {
        return Err("`seed` is the trial's own seed (`seeds = ...`, `{seed}` in args, SWEEP_SEED); give the factor \
                    another name"
            .into());
    }
    let ok = name.len() <= MAX_KEY_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not a usable name; factors and settings of an exec trainer are lower-case letters, digits \
             and `_`, starting with a letter, at most {MAX_KEY_LEN} bytes (each becomes SWEEP_FACTOR_<NAME>)",
            short(name)
        ))
    }
}

/// A level of an open schema: a finite float, a short printable string.
pub fn level(level: &Level) -> Result<(), String> {
    match level {
        Level::Float(x) if !x.is_finite() => Err(format!("{x} is not a finite number")),
        Level::Str(s) if s.len() > MAX_STRING_LEVEL => {
            Err(format!("{} is {} bytes long; the limit is {MAX_STRING_LEVEL}", short(s), s.len()))
        }
        Level::Str(s) if s.chars().any(char::is_control) => {
            Err(format!("{} contains a control character; levels must be printable", short(s)))
        }
        _ => Ok(()),
    }
}

/// How a level is written into `args` and `SWEEP_FACTOR_*`: `32`, `0.001`,
/// `true`, the string itself.
pub fn level_text(level: &Level) -> String {
    level.to_string()
}

/// The `{name}` placeholders of one argument, in order. `{{` and `}}` are
/// literal braces. `Err` for an unclosed or empty placeholder.
pub fn placeholders(arg: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    scan(arg, |piece| {
        if let Piece::Name(n) = piece {
            out.push(n);
        }
    })?;
    Ok(out)
}

/// `arg` with each `{name}` replaced by `value(name)` (the caller checked
/// every name with [`placeholders`]; an unknown one becomes empty).
pub fn fill(arg: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(arg.len());
    let scanned = scan(arg, |piece| match piece {
        Piece::Text(t) => out.push_str(t),
        Piece::Name(n) => out.push_str(&value(n).unwrap_or_default()),
    });
    match scanned {
        Ok(()) => out,
        Err(_) => arg.to_owned(),
    }
}

enum Piece<'a> {
    Text(&'a str),
    Name(&'a str),
}

fn scan<'a>(arg: &'a str, mut each: impl FnMut(Piece<'a>)) -> Result<(), String> {
    let mut rest = arg;
    while let Some(i) = rest.find(['{', '}']) {
        each(Piece::Text(&rest[..i]));
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            each(Piece::Text("{"));
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            each(Piece::Text("}"));
            rest = after;
        } else if tail.starts_with('}') {
            return Err(format!("{}: a lone `}}`; write `}}}}` for a literal brace", short(arg)));
        } else {
            let end = tail.find('}').ok_or_else(|| format!("{}: `{{` is not closed", short(arg)))?;
            let name = &tail[1..end];
            if name.is_empty() {
                return Err(format!(
                    "{}: empty placeholder `{{}}`; write `{{name}}` of a factor or setting",
                    short(arg)
                ));
            }
            each(Piece::Name(name));
            rest = &tail[end + 1..];
        }
    }
    each(Piece::Text(rest));
    Ok(())
}

/// An environment variable name a grid may set: `[A-Za-z_][A-Za-z0-9_]*`,
/// not one of the `SWEEP_` variables the worker sets.
pub fn env_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= MAX_KEY_LEN * 2
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(format!("{} is not an environment variable name", short(name)));
    }
    if name.starts_with("SWEEP_") {
        return Err(format!("{} is set by the worker for each trial (names starting SWEEP_ are its own)", short(name)));
    }
    Ok(())
}

/// One argument or environment value: bounded, no NUL (which cannot be
/// passed to a process).
pub fn arg_text(text: &str) -> Result<(), String> {
    if text.len() > MAX_ARG_LEN {
        return Err(format!("{} is {} bytes long; the limit is {MAX_ARG_LEN}", short(text), text.len()));
    }
    if text.contains('\0') {
        return Err(format!("{} contains NUL, which cannot be passed to a process", short(text)));
    }
    Ok(())
}

/// `timeout`, in seconds.
pub fn timeout(secs: i64) -> Result<u64, String> {
    match u64::try_from(secs) {
        Ok(s) if (1..=MAX_TIMEOUT_SECS).contains(&s) => Ok(s),
        _ => Err(format!("{secs} is not a timeout; give seconds from 1 to {MAX_TIMEOUT_SECS} (30 days)")),
    }
}

impl ExecSpec {
    /// Every rule of an exec spec that needs no grid; `known(name)` says
    /// whether a placeholder names a factor or setting (`seed` always
    /// does). The error is `(key, message)`, key as in `grid.toml`
    /// (`trainer.args`).
    pub fn validate(&self, known: impl Fn(&str) -> bool) -> Result<(), (&'static str, String)> {
        if self.command.is_empty() {
            return Err(("trainer.command", "must name a program, e.g. command = [\"python\", \"train.py\"]".into()));
        }
        if self.command[0].is_empty() {
            return Err(("trainer.command", "the program's name is empty".into()));
        }
        if self.command.len() + self.args.len() > MAX_ARGV {
            return Err(("trainer.args", format!("more than {MAX_ARGV} arguments in command and args together")));
        }
        for c in &self.command {
            arg_text(c).map_err(|m| ("trainer.command", m))?;
            if placeholders(c).is_ok_and(|p| !p.is_empty()) {
                return Err((
                    "trainer.command",
                    format!("{}: placeholders belong in `args`, which are filled per trial", short(c)),
                ));
            }
        }
        for a in &self.args {
            arg_text(a).map_err(|m| ("trainer.args", m))?;
            for name in placeholders(a).map_err(|m| ("trainer.args", m))? {
                if name != "seed" && !known(name) {
                    return Err((
                        "trainer.args",
                        format!("{}: `{{{}}}` names no factor or setting of this grid", short(a), short_name(name)),
                    ));
                }
            }
        }
        if self.env.len() > MAX_ARGV {
            return Err(("trainer.env", format!("more than {MAX_ARGV} variables")));
        }
        let total: usize = self.command.iter().chain(&self.args).map(String::len).sum::<usize>()
            + self.env.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        if total > MAX_SPEC_BYTES {
            return Err((
                "trainer",
                format!("command, args and env are {total} bytes together; the limit is {MAX_SPEC_BYTES}"),
            ));
        }
        for (k, v) in &self.env {
            env_name(k).map_err(|m| ("trainer.env", m))?;
            arg_text(v).map_err(|m| ("trainer.env", m))?;
        }
        if let Some(dir) = &self.workdir {
            let text = dir.to_str().ok_or(("trainer.workdir", "is not valid UTF-8".to_owned()))?;
            crate::grid_rules::data_path(text).map_err(|m| ("trainer.workdir", m))?;
            if !dir.is_absolute() {
                return Err(("trainer.workdir", format!("{} is not an absolute path", short(text))));
            }
        }
        if let Some(s) = self.timeout_secs {
            timeout(i64::try_from(s).unwrap_or(i64::MAX)).map_err(|m| ("trainer.timeout", m))?;
        }
        Ok(())
    }

    /// The arguments after `command` for one trial: placeholders filled
    /// from `level_of` (the trial's factor or setting) and its seed.
    pub fn args_for(&self, seed: u64, level_of: impl Fn(&str) -> Option<String>) -> Vec<String> {
        self.args.iter().map(|a| fill(a, |n| if n == "seed" { Some(seed.to_string()) } else { level_of(n) })).collect()
    }
}

fn short_name(name: &str) -> String {
    crate::quote::short_bare(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_found_and_filled() {
        assert_eq!(placeholders("--lr={lr}").unwrap(), vec!["lr"]);
        assert_eq!(placeholders("{a}{b} {{literal}}").unwrap(), vec!["a", "b"]);
        assert!(placeholders("{open").unwrap_err().contains("not closed"));
        assert!(placeholders("{}").unwrap_err().contains("empty"));
        assert!(placeholders("x}").unwrap_err().contains("lone"));
        let v = |n: &str| (n == "lr").then(|| "0.1".to_owned());
        assert_eq!(fill("--lr={lr} {{x}}", v), "--lr=0.1 {x}");
    }

    #[test]
    fn names_and_levels_are_checked() {
        assert!(key_name("hidden_units2").is_ok());
        assert!(key_name("Hidden").is_err());
        assert!(key_name("2x").is_err());
        assert!(key_name(&"a".repeat(65)).is_err());
        assert!(level(&Level::Float(f64::NAN)).is_err());
        assert!(level(&Level::Str("a\nb".into())).is_err());
        assert!(env_name("SWEEP_X").unwrap_err().contains("worker"));
        assert!(env_name("OMP_NUM_THREADS").is_ok());
        assert!(timeout(0).is_err() && timeout(60).is_ok());
    }

    #[test]
    fn a_spec_names_only_known_placeholders() {
        let spec = ExecSpec {
            command: vec!["python".into(), "train.py".into()],
            args: vec!["--lr".into(), "{lr}".into(), "--seed={seed}".into()],
            env: BTreeMap::new(),
            workdir: None,
            timeout_secs: None,
        };
        assert!(spec.validate(|n| n == "lr").is_ok());
        let (key, m) = spec.validate(|_| false).unwrap_err();
        assert_eq!(key, "trainer.args");
        assert!(m.contains("{lr}"), "{m}");
        assert_eq!(spec.args_for(3, |_| Some("0.5".into())), vec!["--lr", "0.5", "--seed=3"]);
    }
}
