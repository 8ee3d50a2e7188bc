//! The report's provenance: where and how each trial ran (device, libtorch
//! threads, the fixed settings it trained with, precision included), at
//! which step the diverged ones diverged, and which trained on fewer images
//! than the grid asked for. Notes for the text formats; one row per trial
//! for JSON.

use std::collections::BTreeMap;

use serde::Serialize;
use sweep_core::schema::Place;
use sweep_core::{Cell, Level, Provenance, Settings, TrialResult, TrialState};

use super::design::Design;

/// Most trials named in one note.
const MAX_NAMED: usize = 8;

/// One trial's provenance (the JSON report's `trials` array).
#[derive(Debug, Serialize, PartialEq)]
pub(super) struct TrialRow {
    /// One key per factor.
    #[serde(flatten)]
    pub cell: Cell,
    pub seed: u64,
    pub state: TrialState,
    /// `cpu`, `cuda:0`; empty when the coordinator did not record it.
    pub device: String,
    /// libtorch intra-op threads; 0 when unknown or libtorch's default.
    pub threads: u32,
    pub diverged_step: Option<i64>,
    /// Set only when fewer than `data.train_subset` images were available.
    pub train_images_used: Option<u64>,
    /// The fixed settings it trained with, the defaults a trial leaves out
    /// filled in; `null` when the coordinator did not say (an older one).
    pub settings: Option<Settings>,
    /// What its result was produced with (code version, libtorch, device
    /// model, dataset checksum); `null` when its worker did not say.
    pub provenance: Option<Provenance>,
}

/// One row per trial, in the order given (the report sorts trials first).
pub(super) fn trial_rows(_design: &Design, trials: &[TrialResult]) -> Vec<TrialRow> {
    trials
        .iter()
        .map(|t| TrialRow {
            cell: (*t.cell).clone(),
            seed: t.seed,
            state: t.state,
            device: t.device.clone(),
            threads: t.threads,
            diverged_step: t.diverged_step,
            train_images_used: t.train_images_used,
            settings: trained_with(t),
            provenance: (!t.provenance.is_empty()).then(|| (*t.provenance).clone()),
        })
        .collect()
}

/// "Produced with: sweep 0.1.0 (g1a2b3c), libtorch 2.11.0, on AMD EPYC
/// 7B13, dataset sha256 3f2a…": each provenance field of the results that
/// carry one, with trial counts where they differ, and a warning when the
/// code, libtorch or data differ between trials. `None` when no result
/// carries provenance (an older worker or coordinator).
fn produced_with(trials: &[TrialResult]) -> Option<String> {
    let results: Vec<&TrialResult> =
        trials.iter().filter(|t| matches!(t.state, TrialState::Succeeded | TrialState::Diverged)).collect();
    let with: Vec<&Provenance> = results.iter().map(|t| t.provenance.as_ref()).filter(|p| !p.is_empty()).collect();
    if with.is_empty() {
        return None;
    }
    let field = |label: &str, get: fn(&Provenance) -> String| -> (String, bool) {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for p in &with {
            let v = get(p);
            *counts.entry(if v.is_empty() { "unknown".into() } else { v }).or_default() += 1;
        }
        let mixed = counts.len() > 1;
        let text = if mixed {
            counts
                .iter()
                .map(|(v, n)| format!("{v} ({n} trial{})", if *n == 1 { "" } else { "s" }))
                .collect::<Vec<_>>()
                .join(" or ")
        } else {
            counts.into_keys().next().unwrap_or_default()
        };
        (format!("{label} {text}"), mixed)
    };
    let parts = [
        field("code", |p| p.code_version.clone()),
        field("libtorch", |p| p.libtorch.clone()),
        field("device", |p| p.device_name.clone()),
        field("dataset sha256", |p| p.dataset_sha256.chars().take(16).collect()),
    ];
    let mut text = format!(
        "Produced with ({} of {} results recorded it): {}.",
        with.len(),
        results.len(),
        parts.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>().join("; ")
    );
    let mixed: Vec<&str> = ["code", "libtorch", "dataset"]
        .iter()
        .zip([&parts[0], &parts[1], &parts[3]])
        .filter(|(_, (_, m))| *m)
        .map(|(name, _)| *name)
        .collect();
    if !mixed.is_empty() {
        text += &format!(
            " WARNING: the trials ran under different {}: part of a difference between cells can come from that; rerun the odd ones under one version.",
            mixed.join(", ")
        );
    }
    Some(text)
}

/// The fixed settings `t` trained with: its stored settings, plus the
/// default of each setting the schema leaves out of a trial at its default
/// (and that is not one of its factors). `None` when nothing was stored:
/// a coordinator from before results carried settings sends none, and
/// guessing defaults would state settings no one recorded.
fn trained_with(t: &TrialResult) -> Option<Settings> {
    if t.settings.is_empty() {
        return None;
    }
    let mut settings = (*t.settings).clone();
    if t.trainer != sweep_core::schema().trainer {
        return Some(settings);
    }
    let schema = sweep_core::schema();
    for name in schema.names(Place::Setting).into_iter().chain(schema.names(Place::Analysis)) {
        if t.cell.get(name).is_none() && !settings.contains_key(name) {
            if let Some(d) = schema.default_of(name).filter(|d| schema.omitted(name, d)) {
                settings.insert(name.to_owned(), d);
            }
        }
    }
    Some(settings)
}

/// "Trained with: epochs=6, lr=0.1 (4 trials) or 0.01 (4 trials), ...": each
/// fixed `[train]` setting of the sweep's trials (not the analyses, which
/// have their own sections), in the schema's order, with its trial counts
/// where trials differ.
fn settings_note(trials: &[TrialResult]) -> Option<String> {
    let schema = sweep_core::schema();
    // What a trial trained with follows from its settings, cell and
    // trainer, which trials share: worked out once per distinct triple.
    let mut groups: std::collections::HashMap<(*const Settings, *const sweep_core::Cell, &str), (&TrialResult, usize)> =
        std::collections::HashMap::new();
    for t in trials {
        let key = (std::sync::Arc::as_ptr(&t.settings), std::sync::Arc::as_ptr(&t.cell), t.trainer.as_str());
        groups.entry(key).or_insert((t, 0)).1 += 1;
    }
    let mut values: BTreeMap<String, BTreeMap<Level, usize>> = BTreeMap::new();
    for (t, count) in groups.into_values() {
        for (name, level) in trained_with(t).unwrap_or_default() {
            if schema.key(&name).is_some_and(|k| k.place == Place::Analysis) {
                continue;
            }
            *values.entry(name).or_default().entry(level).or_default() += count;
        }
    }
    let mut names: Vec<&String> = values.keys().collect();
    names.sort_by_key(|n| (schema.position(n), n.as_str()));
    let parts: Vec<String> = names
        .into_iter()
        .map(|name| {
            let levels = &values[name];
            if levels.len() == 1 {
                format!("{name}={}", levels.keys().next().expect("one level"))
            } else {
                let each: Vec<String> =
                    levels.iter().map(|(l, n)| format!("{l} ({n} trial{})", if *n == 1 { "" } else { "s" })).collect();
                format!("{name}={}", each.join(" or "))
            }
        })
        .collect();
    (!parts.is_empty()).then(|| format!("Trained with: {}.", parts.join(", ")))
}

fn trial_name(design: &Design, t: &TrialResult) -> String {
    format!("{} seed {}", design.cell_name(&t.cell), t.seed)
}

fn named(items: &[String]) -> String {
    if items.len() <= MAX_NAMED {
        items.join("; ")
    } else {
        format!("{}; and {} more", items[..MAX_NAMED].join("; "), items.len() - MAX_NAMED)
    }
}

fn setting(device: &str, threads: u32) -> String {
    match threads {
        0 => format!("{device} (libtorch's default threads)"),
        1 => format!("{device} with 1 libtorch thread"),
        n => format!("{device} with {n} libtorch threads"),
    }
}

/// The provenance notes under the report's tables.
pub(super) fn notes(design: &Design, trials: &[TrialResult]) -> Vec<String> {
    let mut notes = Vec::new();
    let ran: Vec<&TrialResult> = trials
        .iter()
        .filter(|t| matches!(t.state, TrialState::Succeeded | TrialState::Diverged | TrialState::Failed))
        .collect();
    let mut settings: BTreeMap<(String, u32), usize> = BTreeMap::new();
    let mut unrecorded = 0;
    for t in &ran {
        if t.device.is_empty() {
            unrecorded += 1;
        } else {
            *settings.entry((t.device.clone(), t.threads)).or_default() += 1;
        }
    }
    let mut parts: Vec<String> =
        settings.iter().map(|((d, n), count)| format!("{count} on {}", setting(d, *n))).collect();
    if unrecorded > 0 {
        parts.push(format!("{unrecorded} with no device recorded"));
    }
    let mut text = if parts.is_empty() {
        "Provenance: no trial has run yet.".to_owned()
    } else {
        format!("Provenance: of the {} trials that ran, {}.", ran.len(), parts.join(", "))
    };
    if settings.len() > 1 {
        text += " This sweep mixes devices or thread counts, so part of a difference between cells can come from where they ran.";
    }
    text += " Results depend on the device and on the number of libtorch threads (intra-op reductions add \
             in a different order), so a rerun with another --threads or device differs slightly, seed for seed; \
             compare runs made with the same settings.";
    notes.push(text);
    notes.extend(settings_note(trials));
    notes.extend(produced_with(trials));

    let diverged: Vec<String> = trials
        .iter()
        .filter(|t| t.state == TrialState::Diverged)
        .map(|t| match t.diverged_step {
            Some(s) => format!("{} at step {s}", trial_name(design, t)),
            None => format!("{} (step not recorded)", trial_name(design, t)),
        })
        .collect();
    if !diverged.is_empty() {
        notes.push(format!("Where the diverged trials diverged: {}.", named(&diverged)));
    }

    let short: Vec<String> = trials
        .iter()
        .filter_map(|t| t.train_images_used.map(|n| format!("{} used {n}", trial_name(design, t))))
        .collect();
    if !short.is_empty() {
        notes.push(format!(
            "WARNING: {} trials trained on fewer images than [data] train_subset asked for (the dataset is \
             smaller), so their cells are not comparable with a run on the full subset: {}.",
            short.len(),
            named(&short)
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(depth: i64, seed: u64, state: TrialState, device: &str, threads: u32) -> TrialResult {
        let cell: Cell = [
            ("depth", Level::Int(depth)),
            ("skip", Level::Bool(false)),
            ("init", Level::Str("default".into())),
            ("batchnorm", Level::Bool(false)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        TrialResult {
            trial_id: String::new(),
            cell: cell.into(),
            cell_key: String::new(),
            seed,
            state,
            final_train_loss: None,
            final_test_loss: None,
            final_test_accuracy: None,
            best_test_accuracy: None,
            wall_seconds: None,
            device: device.into(),
            threads,
            diverged_step: None,
            train_images_used: None,
            settings: std::sync::Arc::new(
                [("lr".to_owned(), Level::Float(0.1)), ("epochs".to_owned(), Level::Int(6))].into_iter().collect(),
            ),
            provenance: Default::default(),
            trainer: "bmenet".into(),
            finals: Default::default(),
        }
    }

    fn produced(code: &str) -> Provenance {
        Provenance {
            code_version: code.into(),
            libtorch: "2.11.0".into(),
            device_name: "AMD EPYC 7B13".into(),
            dataset_sha256: "3f2a".repeat(16),
        }
    }

    #[test]
    fn the_provenance_note_says_what_produced_the_results_and_flags_mixed_versions() {
        let mut ts = vec![trial(8, 0, TrialState::Succeeded, "cpu", 1), trial(8, 1, TrialState::Succeeded, "cpu", 1)];
        let none = notes(&Design::of(&ts), &ts).join("\n");
        assert!(!none.contains("Produced with"), "nothing recorded, nothing said: {none}");
        ts[0].provenance = produced("0.1.0 (g1a2b3c)").into();
        ts[1].provenance = produced("0.1.0 (g1a2b3c)").into();
        let one = notes(&Design::of(&ts), &ts).join("\n");
        assert!(
            one.contains(
                "Produced with (2 of 2 results recorded it): code 0.1.0 (g1a2b3c); libtorch 2.11.0; \
                 device AMD EPYC 7B13; dataset sha256 3f2a3f2a3f2a3f2a."
            ),
            "{one}"
        );
        assert!(!one.contains("WARNING: the trials ran under different"), "{one}");
        ts[1].provenance = produced("0.2.0 (g9f8e7d)").into();
        let mixed = notes(&Design::of(&ts), &ts).join("\n");
        assert!(mixed.contains("code 0.1.0 (g1a2b3c) (1 trial) or 0.2.0 (g9f8e7d) (1 trial)"), "{mixed}");
        assert!(mixed.contains("WARNING: the trials ran under different code:"), "{mixed}");
        let rows = trial_rows(&Design::of(&ts), &ts);
        assert_eq!(rows[1].provenance.as_ref().map(|p| p.code_version.as_str()), Some("0.2.0 (g9f8e7d)"));
    }

    #[test]
    fn notes_name_devices_threads_divergence_steps_and_short_data() {
        let mut ts = vec![
            trial(8, 0, TrialState::Succeeded, "cpu", 4),
            trial(8, 1, TrialState::Succeeded, "cpu", 4),
            trial(32, 0, TrialState::Diverged, "cuda:0", 0),
            trial(32, 1, TrialState::Queued, "", 0),
        ];
        ts[2].diverged_step = Some(47);
        ts[1].train_images_used = Some(500);
        std::sync::Arc::make_mut(&mut ts[3].settings).insert("lr".into(), Level::Float(0.01));
        std::sync::Arc::make_mut(&mut ts[3].settings).insert("precision".into(), Level::Str("bf16".into()));
        let design = Design::of(&ts);
        let n = notes(&design, &ts);
        let all = n.join("\n");
        assert!(
            all.contains(
                "of the 3 trials that ran, 2 on cpu with 4 libtorch threads, 1 on cuda:0 (libtorch's default threads)"
            ),
            "{all}"
        );
        assert!(all.contains("mixes devices or thread counts"), "{all}");
        assert!(all.contains("number of libtorch threads"), "{all}");
        assert!(all.contains("depth=32 skip=off init=default batchnorm=off seed 0 at step 47"), "{all}");
        assert!(all.contains("WARNING: 1 trials trained on fewer images") && all.contains("seed 1 used 500"), "{all}");
        assert!(all.contains("Trained with: epochs=6, lr="), "{all}");
        assert!(all.contains("lr=0.01 (1 trial) or 0.1 (3 trials)"), "{all}");
        assert!(all.contains("precision=bf16 (1 trial) or fp32 (3 trials)"), "{all}");
        let rows = trial_rows(&design, &ts);
        assert_eq!(rows[2].diverged_step, Some(47));
        let setting = |row: &TrialRow, name: &str| row.settings.as_ref().and_then(|s| s.get(name)).cloned();
        assert_eq!(setting(&rows[3], "precision"), Some(Level::Str("bf16".into())));
        assert_eq!(setting(&rows[0], "precision"), Some(Level::Str("fp32".into())), "the default, filled in");
        assert_eq!(setting(&rows[0], "lr"), Some(Level::Float(0.1)));
        assert_eq!(setting(&rows[0], "batch_size"), None, "no default is made up for a key a trial always stores");
        assert_eq!((rows[0].device.as_str(), rows[0].threads), ("cpu", 4));
    }

    #[test]
    fn trials_without_stored_settings_state_none() {
        let mut ts = [trial(8, 0, TrialState::Succeeded, "cpu", 2)];
        std::sync::Arc::make_mut(&mut ts[0].settings).clear();
        let n = notes(&Design::of(&ts), &ts).join("\n");
        assert!(!n.contains("Trained with"), "{n}");
        assert_eq!(trial_rows(&Design::of(&ts), &ts)[0].settings, None);
    }

    #[test]
    fn one_setting_is_not_called_a_mix_and_the_thread_dependence_is_always_said() {
        let ts = [trial(8, 0, TrialState::Succeeded, "cpu", 2)];
        let n = notes(&Design::of(&ts), &ts).join("\n");
        assert!(!n.contains("mixes"), "{n}");
        assert!(n.contains("1 on cpu with 2 libtorch threads") && n.contains("--threads"), "{n}");
        assert!(!n.contains("diverged trials") && !n.contains("WARNING"), "{n}");
    }
}
