//! The report's provenance: where and how each trial ran (device, libtorch
//! threads), at which step the diverged ones diverged, and which trained on
//! fewer images than the grid asked for. Notes for the text formats; one row
//! per trial for JSON.

use std::collections::BTreeMap;

use serde::Serialize;
use sweep_proto::v1 as pb;

use crate::report::on_off;

/// Most trials named in one note.
const MAX_NAMED: usize = 8;

/// One trial's provenance (the JSON report's `trials` array).
#[derive(Debug, Serialize, PartialEq)]
pub struct TrialRow {
    pub depth: u32,
    pub skip: bool,
    pub init: String,
    pub batchnorm: bool,
    pub seed: u64,
    pub state: String,
    /// `cpu`, `cuda:0`; empty when the coordinator did not record it.
    pub device: String,
    /// libtorch intra-op threads; 0 when unknown or libtorch's default.
    pub threads: u32,
    pub diverged_step: Option<i64>,
    /// Set only when fewer than `data.train_subset` images were available.
    pub train_images_used: Option<u64>,
}

pub fn trial_rows(trials: &[pb::TrialFinal]) -> Vec<TrialRow> {
    trials
        .iter()
        .map(|t| {
            let c = t.cell.clone().unwrap_or_default();
            TrialRow {
                depth: c.depth,
                skip: c.skip,
                init: c.init,
                batchnorm: c.batchnorm,
                seed: t.seed,
                state: t.state.clone(),
                device: t.device.clone(),
                threads: t.threads,
                diverged_step: t.diverged_step,
                train_images_used: t.train_images_used,
            }
        })
        .collect()
}

fn trial_name(t: &pb::TrialFinal) -> String {
    let c = t.cell.clone().unwrap_or_default();
    format!(
        "depth={} skip={} init={} batchnorm={} seed {}",
        c.depth,
        on_off(c.skip),
        c.init,
        on_off(c.batchnorm),
        t.seed
    )
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
pub fn notes(trials: &[pb::TrialFinal]) -> Vec<String> {
    let mut notes = Vec::new();
    let ran: Vec<&pb::TrialFinal> =
        trials.iter().filter(|t| matches!(t.state.as_str(), "succeeded" | "diverged" | "failed")).collect();
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

    let diverged: Vec<String> = trials
        .iter()
        .filter(|t| t.state == "diverged")
        .map(|t| match t.diverged_step {
            Some(s) => format!("{} at step {s}", trial_name(t)),
            None => format!("{} (step not recorded)", trial_name(t)),
        })
        .collect();
    if !diverged.is_empty() {
        notes.push(format!("Where the diverged trials diverged: {}.", named(&diverged)));
    }

    let short: Vec<String> =
        trials.iter().filter_map(|t| t.train_images_used.map(|n| format!("{} used {n}", trial_name(t)))).collect();
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

    fn trial(depth: u32, seed: u64, state: &str, device: &str, threads: u32) -> pb::TrialFinal {
        pb::TrialFinal {
            cell: Some(pb::AnalysisCell { depth, skip: false, init: "default".into(), batchnorm: false }),
            seed,
            state: state.into(),
            device: device.into(),
            threads,
            ..Default::default()
        }
    }

    #[test]
    fn notes_name_devices_threads_divergence_steps_and_short_data() {
        let mut ts = vec![
            trial(8, 0, "succeeded", "cpu", 4),
            trial(8, 1, "succeeded", "cpu", 4),
            trial(32, 0, "diverged", "cuda:0", 0),
            trial(32, 1, "queued", "", 0),
        ];
        ts[2].diverged_step = Some(47);
        ts[1].train_images_used = Some(500);
        let n = notes(&ts);
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
        let rows = trial_rows(&ts);
        assert_eq!(rows[2].diverged_step, Some(47));
        assert_eq!((rows[0].device.as_str(), rows[0].threads), ("cpu", 4));
    }

    #[test]
    fn one_setting_is_not_called_a_mix_and_the_thread_dependence_is_always_said() {
        let n = notes(&[trial(8, 0, "succeeded", "cpu", 2)]).join("\n");
        assert!(!n.contains("mixes"), "{n}");
        assert!(n.contains("1 on cpu with 2 libtorch threads") && n.contains("--threads"), "{n}");
        assert!(!n.contains("diverged trials") && !n.contains("WARNING"), "{n}");
    }
}
