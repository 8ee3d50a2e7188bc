//! grid.toml robustness: fuzz-style properties that no input (mutations of
//! the example, arbitrary and TOML-like strings, deep nesting) makes the
//! parser panic, and that whatever it accepts passes `validate`.
//!
//! Part of the grid.toml suite (`grid_parse_ok.rs`, `grid_errors.rs`,
//! `grid_validate.rs`, `grid_fuzz.rs`); the example file and the shared
//! helpers are in `tests/common`. Line numbers refer to the example's text.

mod common;

use common::{parse, EXAMPLE, GRID_FILE};
use proptest::prelude::*;
use sweep_core::GridError;

// ---- robustness ------------------------------------------------------------

/// An edit to the example's text.
#[derive(Debug, Clone)]
enum Mutation {
    SetByte(usize, u8),
    InsertByte(usize, u8),
    DeleteByte(usize),
    DeleteLine(usize),
    DuplicateLine(usize),
    /// Swap the right-hand sides of two `key = value` lines.
    SwapValues(usize, usize),
    /// Replace a line's right-hand side with a value from elsewhere.
    ReplaceValue(usize, &'static str),
}

const ODD_VALUES: &[&str] = &[
    "0",
    "-1",
    "[]",
    "[[]]",
    "\"\"",
    "\"8\"",
    "nan",
    "-inf",
    "1e999",
    "true",
    "{}",
    "{ a = 1 }",
    "9223372036854775807",
    "-9223372036854775808",
    "0x7fffffff",
    "1979-05-27",
    "[1, \"a\"]",
    "[8, 8]",
    "\"é\u{1F600}\"",
    "'''\nmulti\n'''",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![any::<u8>(), prop::sample::select(b"[]=\"'#,.\n -0189{}".to_vec())];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        (any::<usize>(), byte).prop_map(|(i, b)| Mutation::InsertByte(i, b)),
        any::<usize>().prop_map(Mutation::DeleteByte),
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapValues(a, b)),
        (any::<usize>(), prop::sample::select(ODD_VALUES)).prop_map(|(a, v)| Mutation::ReplaceValue(a, v)),
    ]
}

fn apply(text: &str, mutations: &[Mutation]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for m in mutations {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let n = bytes.len().max(1);
        let nl = lines.len().max(1);
        let value_lines: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].contains('=')).collect();
        match *m {
            Mutation::SetByte(i, b) if !bytes.is_empty() => bytes[i % n] = b,
            Mutation::InsertByte(i, b) => bytes.insert(i % (bytes.len() + 1), b),
            Mutation::DeleteByte(i) if !bytes.is_empty() => {
                bytes.remove(i % n);
            }
            Mutation::DeleteLine(i) if !lines.is_empty() => {
                lines.remove(i % nl);
                bytes = lines.join("\n").into_bytes();
            }
            Mutation::DuplicateLine(i) if !lines.is_empty() => {
                let l = lines[i % nl].clone();
                lines.insert(i % nl, l);
                bytes = lines.join("\n").into_bytes();
            }
            Mutation::SwapValues(a, b) if !value_lines.is_empty() => {
                let (a, b) = (value_lines[a % value_lines.len()], value_lines[b % value_lines.len()]);
                let split = |l: &str| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()));
                if let (Some((ka, va)), Some((kb, vb))) = (split(&lines[a]), split(&lines[b])) {
                    lines[a] = format!("{ka}={vb}");
                    lines[b] = format!("{kb}={va}");
                }
                bytes = lines.join("\n").into_bytes();
            }
            Mutation::ReplaceValue(a, v) if !value_lines.is_empty() => {
                let a = value_lines[a % value_lines.len()];
                if let Some((k, _)) = lines[a].split_once('=') {
                    lines[a] = format!("{k}= {v}");
                }
                bytes = lines.join("\n").into_bytes();
            }
            _ => {}
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The example with `optimizer` and `lr` moved from [train] to [grid].
fn factor_example() -> String {
    let text = EXAMPLE
        .replacen(
            "batchnorm = [true, false]\n",
            "batchnorm = [true, false]\noptimizer = [\"sgd\", \"adam\"]\nlr = [1e-3, 1e-2]\n",
            1,
        )
        .lines()
        .filter(|l| !l.starts_with("optimizer = \"sgd\"") && !l.starts_with("lr = 1e-4"))
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    let spec = parse(&text).expect("the factor example parses");
    assert_eq!(spec.cell_count(), 48 * 4, "optimizer and lr are factors");
    text
}

/// What must hold for any input: no panic; an error names the file and a
/// real position; an accepted spec passes `validate` and respects the size
/// limit (so the parser and the wire validator agree).
fn check_any_input(text: &str) -> Result<(), TestCaseError> {
    match parse(text) {
        Ok(spec) => {
            prop_assert!(spec.validate().is_ok(), "parsed but invalid: {:?}", spec.validate());
            prop_assert!((spec.cell_count() * spec.seeds.len()) as u64 <= sweep_core::grid::MAX_TRIALS);
        }
        Err(GridError::Invalid { line, column, ref message, .. }) => {
            let lines = text.split('\n').count();
            prop_assert!(line >= 1 && line <= lines, "line {} of {}", line, lines);
            prop_assert!(column >= 1);
            prop_assert!(!message.is_empty());
            let shown = parse(text).unwrap_err().to_string();
            let prefix = format!("{GRID_FILE}:{line}:{column}: ");
            prop_assert!(shown.starts_with(&prefix), "{}", shown);
        }
        Err(other) => prop_assert!(false, "unexpected error kind {:?}", other),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_examples_never_panic(mutations in prop::collection::vec(mutation(), 1..6)) {
        check_any_input(&apply(EXAMPLE, &mutations))?;
    }

    /// The same with [train] keys as factors (issue 9): mutations move
    /// values between [grid] and [train], retype levels, and so on.
    #[test]
    fn mutated_factor_examples_never_panic(mutations in prop::collection::vec(mutation(), 1..6)) {
        check_any_input(&apply(&factor_example(), &mutations))?;
    }

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        check_any_input(&text)?;
    }

    #[test]
    fn toml_like_strings_never_panic(text in "([a-z_]{1,8} = [-0-9a-z\"\\[\\], .]{0,12}\n|\\[[a-z]{1,6}\\]\n){0,12}") {
        check_any_input(&text)?;
    }
}

#[test]
fn deeply_nested_values_are_refused_not_a_stack_overflow() {
    for depth in [1_000usize, 100_000, 1_000_000] {
        for (open, close) in [("[", "]"), ("{a=", "}")] {
            let text = format!("x = {}1{}\n{EXAMPLE}", open.repeat(depth), close.repeat(depth));
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.len() < 400, "{depth}: {} bytes", e.len());
        }
        let text = format!("{} = 1\n{EXAMPLE}", vec!["a"; depth].join("."));
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.len() < 400, "{depth}: {} bytes", e.len());
    }
}
