//! Factorial effects checked against independently computed values.
//!
//! Reference values: scipy 1.17.1 / statsmodels (Python 3), script in the
//! comments below. The data is a 2 (depth) x 2 (skip) design with 3 seeds
//! per cell, except depth 32 without skips, which has 4 (unbalanced).
//!
//! ```python
//! from scipy import stats; from statsmodels.stats.multitest import multipletests
//! stats.t.interval(0.95, n-1, loc=mean, scale=sd/sqrt(n))            # cells
//! stats.ttest_ind(a, b, equal_var=False)                              # simple effects
//! stats.ttest_rel(a, b); .confidence_interval(0.95)                   # paired
//! multipletests(ps, method="holm")                                    # Holm
//! # main effects: the contrast 1/2 * sum over depths of (mean_T - mean_F),
//! # se = sqrt(sum w^2 s^2 / n), Welch-Satterthwaite df, stats.t.ppf(0.975, df),
//! # p = 2 * stats.t.sf(|est / se|, df)
//! ```

use std::collections::BTreeMap;

use sweep_core::effects::{analyze, contrast, Factor, Intervals, Method, Observation, Options};
use sweep_core::stats::{welch_diff, Moments};

#[track_caller]
fn close(actual: f64, expected: f64, rel: f64) {
    let err = (actual - expected).abs() / expected.abs().max(1e-300);
    assert!(err <= rel, "{actual} vs {expected}: relative error {err:e} > {rel:e}");
}

/// (depth, skip, [(seed, value)]) of one cell.
type CellData = (&'static str, &'static str, &'static [(u64, f64)]);

const DATA: &[CellData] = &[
    ("8", "false", &[(0, 0.61), (1, 0.64), (2, 0.58)]),
    ("8", "true", &[(0, 0.66), (1, 0.70), (2, 0.65)]),
    ("32", "false", &[(0, 0.42), (1, 0.55), (2, 0.31), (3, 0.47)]),
    ("32", "true", &[(0, 0.72), (1, 0.69), (2, 0.74)]),
];

fn factors() -> Vec<Factor> {
    vec![Factor::new("depth", ["8", "32"]), Factor::new("skip", ["false", "true"])]
}

fn observations(skip_cell: Option<(&str, &str)>) -> Vec<Observation> {
    DATA.iter()
        .filter(|(d, s, _)| skip_cell != Some((d, s)))
        .flat_map(|(d, s, vs)| {
            vs.iter().map(move |&(seed, value)| Observation { levels: vec![d.to_string(), s.to_string()], seed, value })
        })
        .collect()
}

/// Independent (Welch) intervals everywhere: what the scipy values are.
fn opts() -> Options {
    Options {
        intervals: Intervals::Independent,
        baselines: BTreeMap::new(),
        focus: vec!["skip".into()],
        by: vec!["skip".into()],
    }
}

/// With blocked intervals (the default), a contrast whose cells ran the
/// same seeds is the paired t-test on them: the simple effect of skip at
/// depth 8 (seeds 0-2 in both cells) equals the paired comparison that
/// `analyze` computes separately (`paired_t`, checked against scipy's
/// `ttest_rel` above). Depth 32's cells ran different seeds (0-3 vs 0-2),
/// so its effect, and every main effect (which uses depth 32), stay Welch.
#[test]
fn a_contrast_of_cells_with_the_same_seeds_is_blocked_and_equals_the_paired_test() {
    let a = analyze(&factors(), &observations(None), &Options { intervals: Intervals::Auto, ..opts() }).unwrap();
    let at8 = a.simple_effects.iter().find(|c| c.at.get("depth").map(String::as_str) == Some("8")).unwrap();
    let e = at8.effect.unwrap();
    assert_eq!(e.method, Method::Blocked);
    let p = a.paired.iter().find(|p| p.at.get("depth").map(String::as_str) == Some("8")).unwrap().test.unwrap();
    close(e.estimate, p.mean_diff, 1e-12);
    close(e.ci95_lo.unwrap(), p.ci95.0, 1e-12);
    close(e.ci95_hi.unwrap(), p.ci95.1, 1e-12);
    close(e.p_value.unwrap(), p.p_two_sided, 1e-12);
    assert_eq!(e.df, Some(2.0));
    let at32 = a.simple_effects.iter().find(|c| c.at.get("depth").map(String::as_str) == Some("32")).unwrap();
    assert_eq!(at32.effect.unwrap().method, Method::Independent, "seeds 0-3 vs 0-2");
    assert!(a.main_effects.iter().all(|c| c.effect.unwrap().method == Method::Independent));
    // The skip=true group (cells (8,T) and (32,T), seeds 0-2 both) is
    // blocked: its interval is over the per-seed means of the two cells.
    let g = a.groups.iter().find(|g| g.levels["skip"] == "true").unwrap().mean.unwrap();
    assert_eq!(g.method, Method::Blocked);
    let per_seed = [(0.66 + 0.72) / 2.0, (0.70 + 0.69) / 2.0, (0.65 + 0.74) / 2.0];
    let m = Moments::from_samples(&per_seed).unwrap();
    let half = 4.302652729911275 * m.sd.unwrap() / 3f64.sqrt(); // scipy: stats.t.ppf(0.975, 2)
    close(g.estimate, m.mean, 1e-12);
    close(g.ci95_hi.unwrap() - g.estimate, half, 1e-9);
}

#[test]
fn cells_main_effects_simple_effects_and_paired_match_scipy() {
    let a = analyze(&factors(), &observations(None), &opts()).unwrap();

    // Cells, in factor-level order: (8,F), (8,T), (32,F), (32,T).
    let cells = [
        (0.61, 0.030000000000000027, 0.53547586864749, 0.68452413135251),
        (0.6699999999999999, 0.026457513110645866, 0.6042758939227157, 0.7357241060772841),
        (0.4375, 0.1004572877727976, 0.2776500378443191, 0.5973499621556809),
        (0.7166666666666667, 0.025166114784235857, 0.6541505718729088, 0.7791827614604245),
    ];
    assert_eq!(a.cells.len(), 4);
    for (c, (m, sd, lo, hi)) in a.cells.iter().zip(cells) {
        close(c.mean, m, 1e-14);
        close(c.sd.unwrap(), sd, 1e-12);
        close(c.ci95_lo.unwrap(), lo, 1e-12);
        close(c.ci95_hi.unwrap(), hi, 1e-12);
    }
    assert_eq!(a.cells[2].levels, vec!["32", "false"]);
    assert_eq!(a.cells[2].n, 4);

    // Main effects: depth 32 vs 8, then skip true vs false.
    assert_eq!(a.main_effects.len(), 2);
    let depth = &a.main_effects[0];
    assert_eq!((depth.factor.as_str(), depth.level.as_str(), depth.baseline.as_str()), ("depth", "32", "8"));
    let e = depth.effect.unwrap();
    close(e.estimate, -0.06291666666666662, 1e-13);
    close(e.se.unwrap(), 0.02858041773273753, 1e-12);
    close(e.df.unwrap(), 4.817076633799229, 1e-12);
    close(e.ci95_lo.unwrap(), -0.13723208529044523, 1e-12);
    close(e.ci95_hi.unwrap(), 0.011398751957111986, 1e-11);
    close(e.p_value.unwrap(), 0.08101094973815623, 1e-10);
    let skip = &a.main_effects[1];
    assert_eq!((skip.factor.as_str(), skip.level.as_str(), skip.baseline.as_str()), ("skip", "true", "false"));
    let e = skip.effect.unwrap();
    close(e.estimate, 0.1695833333333333, 1e-13);
    close(e.se.unwrap(), 0.02858041773273753, 1e-12);
    close(e.df.unwrap(), 4.817076633799228, 1e-12);
    close(e.ci95_lo.unwrap(), 0.0952679147095547, 1e-12);
    close(e.ci95_hi.unwrap(), 0.24389875195711191, 1e-12);
    close(e.p_value.unwrap(), 0.0022021739815375613, 1e-9);
    // Marginal means are means of cell means: (0.67 + 0.71667) / 2.
    close(skip.level_mean.unwrap(), (0.6699999999999999 + 0.7166666666666667) / 2.0, 1e-14);
    close(skip.baseline_mean.unwrap(), (0.61 + 0.4375) / 2.0, 1e-14);
    assert_eq!((skip.strata_used, skip.strata_unmatched), (2, 0));
    // statsmodels multipletests(method="holm").
    close(skip.p_holm.unwrap(), 0.0044043479630751226, 1e-9);
    close(depth.p_holm.unwrap(), 0.08101094973815623, 1e-10);

    // Simple effects of skip at each depth: two cells each, so Welch's test
    // (scipy ttest_ind(equal_var=False)).
    let simple: Vec<_> = a.simple_effects.iter().filter(|c| c.at.contains_key("depth")).collect();
    assert_eq!(simple.len(), 2);
    let refs = [
        ("8", 0.05999999999999994, 3.938461538461536, 0.061108439786851924, -0.004516307389756613, 0.1245163073897565),
        ("32", 0.2791666666666667, 3.4864524061180853, 0.008661597409256335, 0.1251570286845571, 0.4331763046487762),
    ];
    for (c, (d, est, df, p, lo, hi)) in simple.iter().zip(refs) {
        assert_eq!(c.at["depth"], d);
        let e = c.effect.unwrap();
        close(e.estimate, est, 1e-13);
        close(e.df.unwrap(), df, 1e-12);
        close(e.p_value.unwrap(), p, 1e-10);
        close(e.ci95_lo.unwrap(), lo, 1e-10);
        close(e.ci95_hi.unwrap(), hi, 1e-12);
    }

    // Paired t on shared seeds (seed 3 exists only without skips), Holm
    // across the two cells.
    assert_eq!(a.paired.len(), 2);
    let refs = [
        (
            "8",
            10.392304845413257,
            0.009132611386275467,
            0.035158622882496694,
            0.08484137711750334,
            0.018265222772550934,
        ),
        ("32", 3.4579395557996633, 0.07441570787225639, -0.07084184569813629, 0.6508418456981362, 0.07441570787225639),
    ];
    for (p, (d, t, pv, lo, hi, holm)) in a.paired.iter().zip(refs) {
        assert_eq!(p.at["depth"], d);
        assert_eq!(p.shared_seeds, vec![0, 1, 2]);
        let test = p.test.unwrap();
        close(test.t, t, 1e-12);
        close(test.p_two_sided, pv, 1e-10);
        close(test.ci95.0, lo, 1e-11);
        close(test.ci95.1, hi, 1e-12);
        close(p.p_holm.unwrap(), holm, 1e-10);
    }

    // Grouped by skip: means of the cell means over depth.
    assert_eq!(a.groups.len(), 2);
    close(a.groups[1].mean.unwrap().estimate, (0.6699999999999999 + 0.7166666666666667) / 2.0, 1e-14);
    assert_eq!((a.groups[0].cells, a.groups[0].n), (2, 7));
}

#[test]
fn a_two_cell_contrast_is_welchs_difference() {
    // Student's sleep data, as in stats.rs: the contrast (+1, -1) must be
    // Welch's interval (R: t = -1.8608, df = 17.776, p = 0.07939).
    let a = Moments::from_samples(&[0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]).unwrap();
    let b = Moments::from_samples(&[1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]).unwrap();
    let c = contrast(&[(1.0, a), (-1.0, b)], 0.95).unwrap();
    let w = welch_diff(&a, &b, 0.95).unwrap();
    close(c.estimate, w.diff, 1e-15);
    close(c.df.unwrap(), w.df, 1e-13);
    close(c.ci95_lo.unwrap(), w.ci.0, 1e-13);
    close(c.ci95_hi.unwrap(), w.ci.1, 1e-13);
    close(c.p_value.unwrap(), 0.0793941401873583, 1e-10);
    // One observation: an estimate, no interval.
    let one = Moments::from_samples(&[0.5]).unwrap();
    let c = contrast(&[(1.0, a), (-1.0, one)], 0.95).unwrap();
    assert_eq!((c.se, c.ci95_lo, c.p_value), (None, None, None));
    assert!(contrast(&[], 0.95).is_none());
}

#[test]
fn a_missing_cell_drops_its_stratum_instead_of_biasing_the_effect() {
    // Without depth 32 + skip, the skip effect can only be measured at depth
    // 8: it is then exactly the depth-8 Welch comparison.
    let a = analyze(&factors(), &observations(Some(("32", "true"))), &opts()).unwrap();
    let skip = a.main_effects.iter().find(|c| c.factor == "skip").unwrap();
    assert_eq!((skip.strata_used, skip.strata_unmatched), (1, 1));
    let e = skip.effect.unwrap();
    close(e.estimate, 0.05999999999999994, 1e-13);
    close(e.p_value.unwrap(), 0.061108439786851924, 1e-10);
    assert_eq!(a.paired.len(), 1);
}

#[test]
fn baselines_and_errors() {
    let mut o = opts();
    o.baselines.insert("skip".into(), "true".into());
    let a = analyze(&factors(), &observations(None), &o).unwrap();
    let skip = a.main_effects.iter().find(|c| c.factor == "skip").unwrap();
    assert_eq!((skip.level.as_str(), skip.baseline.as_str()), ("false", "true"));
    close(skip.effect.unwrap().estimate, -0.1695833333333333, 1e-13);
    assert_eq!(a.baselines["skip"], "true");

    o.baselines.insert("skip".into(), "maybe".into());
    let e = analyze(&factors(), &observations(None), &o).unwrap_err();
    assert!(e.to_string().contains("maybe"), "{e}");
    let o = Options { focus: vec!["width".into()], ..Options::default() };
    assert!(analyze(&factors(), &observations(None), &o).is_err());
    let bad = vec![Observation { levels: vec!["8".into()], seed: 0, value: 1.0 }];
    assert!(analyze(&factors(), &bad, &Options::default()).is_err());
}

// ---- scale and non-finite values (issue 8) ---------------------------------

fn scaled(k: f64) -> Vec<Observation> {
    observations(None).into_iter().map(|o| Observation { value: o.value * k, ..o }).collect()
}

#[test]
fn effects_at_1e_plus_minus_80_and_beyond_match_the_unscaled_ones() {
    // Before: the Welch–Satterthwaite df squared variances of ~1e-160 (or
    // 1e160) again and came out NaN (0/0 or inf/inf). The df, t and p of a
    // contrast do not depend on the unit of the data.
    let base = analyze(&factors(), &observations(None), &opts()).unwrap();
    for k in [1e-80, 1e80, 1e-150, 1e150, 1e-250, 1e250] {
        let a = analyze(&factors(), &scaled(k), &opts()).unwrap();
        assert!(!format!("{a:?}").contains("NaN"), "{k:e}: {a:?}");
        for (x, y) in
            base.main_effects.iter().chain(&base.simple_effects).zip(a.main_effects.iter().chain(&a.simple_effects))
        {
            let (ex, ey) = (x.effect.unwrap(), y.effect.unwrap());
            close(ey.estimate / k, ex.estimate, 1e-12);
            close(ey.se.unwrap() / k, ex.se.unwrap(), 1e-12);
            close(ey.df.unwrap(), ex.df.unwrap(), 1e-12);
            close(ey.p_value.unwrap(), ex.p_value.unwrap(), 1e-9);
            close(ey.ci95_lo.unwrap() / k, ex.ci95_lo.unwrap(), 1e-12);
            close(ey.ci95_hi.unwrap() / k, ex.ci95_hi.unwrap(), 1e-12);
        }
        for (x, y) in base.cells.iter().zip(&a.cells) {
            close(y.sd.unwrap() / k, x.sd.unwrap(), 1e-12);
            close(y.ci95_lo.unwrap() / k, x.ci95_lo.unwrap(), 1e-12);
        }
        for (x, y) in base.paired.iter().zip(&a.paired) {
            let (tx, ty) = (x.test.unwrap(), y.test.unwrap());
            close(ty.t, tx.t, 1e-12);
            close(ty.p_two_sided, tx.p_two_sided, 1e-9);
        }
    }
}

#[test]
fn a_nan_or_infinite_value_is_refused_naming_its_cell_and_seed() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut obs = observations(None);
        obs[4].value = bad; // depth 8, skip true, seed 1
        let e = analyze(&factors(), &obs, &opts()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("seed 1") && msg.contains("depth=8 skip=true"), "{msg}");
        assert!(msg.contains("not a finite number"), "{msg}");
    }
    // The summary of such a group does not exist (it used to be sd 0).
    assert_eq!(Moments::from_samples(&[0.5, f64::NAN, 0.7]), None);
    assert_eq!(Moments::from_samples(&[0.5, f64::INFINITY]), None);
    assert_eq!(Moments::from_sums(2, f64::NAN, 1.0), None);
    assert_eq!(Moments::from_sums(2, 1.0, f64::INFINITY), None);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    /// A value at a random scale: mantissa in [-1000, 1000], exponent in
    /// [-300, 300] (shared per case, so cells are comparable).
    fn cell_values() -> impl Strategy<Value = Vec<f64>> {
        prop::collection::vec(-1000.0f64..1000.0, 1..5)
    }

    proptest! {
        /// Whatever finite values come in, no statistic in the analysis is
        /// NaN (inf is allowed only for t of constant data, documented).
        #[test]
        fn no_nan_reaches_an_analysis(
            cells in prop::collection::vec(cell_values(), 4),
            exp in -300i32..300,
        ) {
            let k = 10f64.powi(exp);
            let names = [("8", "false"), ("8", "true"), ("32", "false"), ("32", "true")];
            let obs: Vec<Observation> = names.iter().zip(&cells).flat_map(|((d, s), vs)| {
                vs.iter().enumerate().map(move |(seed, v)| Observation {
                    levels: vec![d.to_string(), s.to_string()], seed: seed as u64, value: v * k,
                })
            }).collect();
            let a = analyze(&factors(), &obs, &opts()).unwrap();
            let shown = format!("{a:?}");
            prop_assert!(!shown.contains("NaN"), "{}", shown);
        }

        /// Welch's df, t and p are unit-free: scaling both groups by 1e±80
        /// (or further) gives the unscaled result.
        #[test]
        fn welch_is_scale_free(
            xs in prop::collection::vec(-1000.0f64..1000.0, 2..8),
            ys in prop::collection::vec(-1000.0f64..1000.0, 2..8),
            k in prop::sample::select(vec![1e-80, 1e80, 1e-160, 1e160, 1e-290, 1e290]),
        ) {
            let a = Moments::from_samples(&xs).unwrap();
            let b = Moments::from_samples(&ys).unwrap();
            let scale = xs.iter().chain(&ys).fold(0.0f64, |m, x| m.max(x.abs()));
            prop_assume!(a.sd.unwrap().max(b.sd.unwrap()) > 1e-6 * scale);
            prop_assume!((a.mean - b.mean).abs() > 1e-6 * scale);
            let base = welch_diff(&a, &b, 0.95).unwrap();
            let xk: Vec<f64> = xs.iter().map(|x| x * k).collect();
            let yk: Vec<f64> = ys.iter().map(|y| y * k).collect();
            let w = welch_diff(&Moments::from_samples(&xk).unwrap(), &Moments::from_samples(&yk).unwrap(), 0.95).unwrap();
            prop_assert!(w.df.is_finite() && w.df > 0.0, "{:?}", w);
            let rel = |x: f64, y: f64| (x - y).abs() <= 1e-8 * y.abs().max(1e-300);
            prop_assert!(rel(w.df, base.df), "df {} vs {}", w.df, base.df);
            prop_assert!(rel(w.t, base.t), "t {} vs {}", w.t, base.t);
            prop_assert!((w.p_two_sided - base.p_two_sided).abs() <= 1e-8, "p {} vs {}", w.p_two_sided, base.p_two_sided);
            prop_assert!(rel(w.se / k, base.se), "se {} vs {}", w.se / k, base.se);
        }
    }
}

/// The standardised effect (Cohen's d) is the effect over the pooled sd of
/// the cells compared, `sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1))`.
/// Reference values from Python's `statistics` (variance, mean) on DATA:
/// ```python
/// pooled = sqrt(sum((len(c)-1)*variance(c) for c in cells) / sum(len(c)-1 for c in cells))
/// ```
#[test]
fn standardized_effects_are_differences_over_the_pooled_seed_sd() {
    let a = analyze(&factors(), &observations(None), &opts()).unwrap();
    let main = a.main_effects.iter().find(|c| c.factor == "skip").unwrap();
    close(main.standardized.unwrap(), 2.72947485453344, 1e-12);
    let at = |depth: &str| a.simple_effects.iter().find(|c| c.factor == "skip" && c.at["depth"] == depth).unwrap();
    close(at("8").standardized.unwrap(), 2.121320343559645, 1e-12);
    close(at("32").standardized.unwrap(), 3.5148455365422206, 1e-12);
    // Paired at depth 32: the mean of the differences on the shared seeds
    // (0-2) over the two cells' pooled sd (all their seeds).
    let paired = a.paired.iter().find(|p| p.at["depth"] == "32").unwrap();
    close(paired.standardized.unwrap(), 3.6512425275125153, 1e-12);
    // Cells without a spread (one seed each) have no d.
    let one_seed: Vec<Observation> = observations(None).into_iter().filter(|o| o.seed == 0).collect();
    let a = analyze(&factors(), &one_seed, &opts()).unwrap();
    assert!(a.main_effects.iter().all(|c| c.standardized.is_none()));
}
