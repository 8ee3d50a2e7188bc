//! Unit tests of the statistics against reference values (mpmath, scipy,
//! R) and hand calculations.

use super::*;

/// Relative closeness, for comparisons against reference constants.
#[track_caller]
fn close(actual: f64, expected: f64, rel: f64) {
    let err = (actual - expected).abs() / expected.abs().max(1e-300);
    assert!(err <= rel, "{actual} vs {expected}: relative error {err:e} > {rel:e}");
}

// Student t quantiles, from mpmath 1.4.1 at 40 digits (root of
// 1 - betainc(ν/2, 1/2, 0, ν/(ν+t²), regularized)/2 = p; for ν = 1, 2
// also the closed forms tan(π(p-½)) and (2p-1)/sqrt(2p(1-p)), which agree),
// rounded to f64. scipy.stats 1.17.1 `t.ppf` agrees with each to 1e-15.
// (The often-quoted 4.302652729911275 for ν = 2 is off by 1.6e-10.)
const T_975_1: f64 = 12.706204736174705; // 12.70620473617470464602...
const T_975_2: f64 = 4.302652729749464; // 4.30265272974946385232...
const T_975_4: f64 = 2.776445105197794; // 2.77644510519779435780...
const T_95_10: f64 = 1.812461122811676; // 1.81246112281167641362...
const T_995_30: f64 = 2.749995653567225; // 2.74999565356722533240...
const T_975_17_776: f64 = 2.1028213103802217; // 2.10282131038022168612...

#[test]
fn t_quantiles_match_reference_values() {
    close(t_quantile(0.975, 1.0).unwrap(), T_975_1, 1e-12);
    close(t_quantile(0.975, 2.0).unwrap(), T_975_2, 1e-12);
    close(t_quantile(0.975, 4.0).unwrap(), T_975_4, 1e-12);
    close(t_quantile(0.95, 10.0).unwrap(), T_95_10, 1e-12);
    close(t_quantile(0.995, 30.0).unwrap(), T_995_30, 1e-12);
    close(t_quantile(0.975, 17.776).unwrap(), T_975_17_776, 1e-12);
    close(-t_quantile(0.025, 4.0).unwrap(), T_975_4, 1e-12);
    assert_eq!(t_quantile(0.0, 4.0), None);
    assert_eq!(t_quantile(1.0, 4.0), None);
    assert_eq!(t_quantile(f64::NAN, 4.0), None);
    assert_eq!(t_quantile(0.5, 0.0), None);
}

// Samples and intervals: scipy.stats 1.17.1,
// `t.interval(level, n-1, loc=mean, scale=sem)` and `np.std(ddof=1)`.
const X: [f64; 3] = [0.61, 0.64, 0.58];
const X_SD: f64 = 0.030000000000000027;
const X_CI95: (f64, f64) = (0.53547586864749, 0.68452413135251);
const Y: [f64; 5] = [0.912, 0.905, 0.921, 0.917, 0.899];
const Y_MEAN: f64 = 0.9108;
const Y_SD: f64 = 0.008899438184514804;
const Y_CI95: (f64, f64) = (0.8997498880020481, 0.921850111997952);
const Y_CI99: (f64, f64) = (0.892475933775039, 0.9291240662249611);

// Student's sleep data (Cushny & Peebles; R's `sleep` data set): extra
// hours of sleep for 10 patients under two drugs.
const SLEEP_1: [f64; 10] = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0];
const SLEEP_2: [f64; 10] = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4];
// scipy.stats 1.17.1 `ttest_ind(SLEEP_1, SLEEP_2, equal_var=False)`, its
// `.df` and `.confidence_interval(0.95 / 0.90)`. They match, to the printed
// digits, the output of R's `t.test(extra ~ group, data = sleep)` as
// shown in R's documentation: t = -1.8608, df = 17.776, p = 0.07939.
const WELCH_T: f64 = -1.8608134674868526;
const WELCH_DF: f64 = 17.776473516178488;
const WELCH_P: f64 = 0.0793941401873583;
const WELCH_CI95: (f64, f64) = (-3.3654832307117104, 0.20548323071171137);
const WELCH_CI90: (f64, f64) = (-3.053381497331607, -0.10661850266839323);
// scipy.stats 1.17.1 `ttest_rel(SLEEP_1, SLEEP_2)` and its
// `.confidence_interval(0.95)` (R's paired `t.test` on `sleep` prints
// t = -4.0621, df = 9, p-value = 0.002833).
// By hand: mean diff = -15.8/10 = -1.58, sd = 1.22999548..., t =
// -1.58 / (1.22999548 / sqrt(10)).
const PAIRED_T: f64 = -4.062127683382037;
const PAIRED_P: f64 = 0.002832890197384273;
const PAIRED_SD: f64 = 1.2299954832798732;
const PAIRED_CI95: (f64, f64) = (-2.459885763276983, -0.7001142367230175);

#[track_caller]
fn close_pair(actual: (f64, f64), expected: (f64, f64), rel: f64) {
    close(actual.0, expected.0, rel);
    close(actual.1, expected.1, rel);
}

#[test]
fn summaries_and_t_intervals() {
    let x = Moments::from_samples(&X).unwrap();
    assert_eq!(x.n, 3);
    close(x.mean, 0.61, 1e-15);
    close(x.sd.unwrap(), X_SD, 1e-12);
    close_pair(t_interval(&x, 0.95).unwrap(), X_CI95, 1e-12);

    let y = Moments::from_samples(&Y).unwrap();
    close(y.mean, Y_MEAN, 1e-15);
    close(y.sd.unwrap(), Y_SD, 1e-12);
    close_pair(t_interval(&y, 0.95).unwrap(), Y_CI95, 1e-12);
    close_pair(t_interval(&y, 0.99).unwrap(), Y_CI99, 1e-12);
    assert_eq!(t_interval(&y, 1.0), None);
    assert_eq!(t_interval(&y, 0.0), None);
}

#[test]
fn one_sample_has_no_spread_and_none_has_no_summary() {
    let one = Moments::from_samples(&[0.5]).unwrap();
    assert_eq!(one, Moments { n: 1, mean: 0.5, sd: None });
    assert_eq!(t_interval(&one, 0.95), None);
    assert_eq!(Moments::from_samples(&[]), None);
    assert_eq!(Moments::from_sums(0, 0.0, 0.0), None);
    assert_eq!(Moments::from_sums(1, 0.5, 0.25).unwrap().sd, None);
    assert_eq!(paired_t(&[1.0]), None);
}

#[test]
fn sql_sums_agree_with_samples() {
    let sum: f64 = Y.iter().sum();
    let sum_sq: f64 = Y.iter().map(|v| v * v).sum();
    let s = Moments::from_sums(5, sum, sum_sq).unwrap();
    close(s.mean, Y_MEAN, 1e-15);
    // Unshifted sums lose digits here (spread 0.009 on a mean of 0.91).
    close(s.sd.unwrap(), Y_SD, 1e-9);
    let shift = 0.9;
    let sum: f64 = Y.iter().map(|v| v - shift).sum();
    let sum_sq: f64 = Y.iter().map(|v| (v - shift) * (v - shift)).sum();
    let s = Moments::from_shifted_sums(5, shift, sum, sum_sq).unwrap();
    close(s.mean, Y_MEAN, 1e-15);
    close(s.sd.unwrap(), Y_SD, 1e-13);
}

#[test]
fn large_offsets_need_the_shift_and_never_give_nan() {
    // 1e9 + {1, 2, 3}: mean 1e9 + 2, sd exactly 1.
    let xs = [1e9 + 1.0, 1e9 + 2.0, 1e9 + 3.0];
    let s = Moments::from_samples(&xs).unwrap();
    assert_eq!((s.mean, s.sd), (1e9 + 2.0, Some(1.0)));
    let s = Moments::from_shifted_sums(3, 1e9, 6.0, 14.0).unwrap();
    assert_eq!((s.mean, s.sd), (1e9 + 2.0, Some(1.0)));
    // Constant data: rounding may push the raw variance below zero.
    for v in [0.1, 0.7, 1e9 + 0.1] {
        let s = Moments::from_sums(3, 3.0 * v, 3.0 * v * v).unwrap();
        let sd = s.sd.unwrap();
        assert!(sd >= 0.0 && sd.is_finite(), "{v}: {sd}");
        assert_eq!(Moments::from_samples(&[v, v, v]).unwrap().sd, Some(0.0));
    }
}

#[test]
fn welch_difference_matches_scipy_and_r() {
    let a = Moments::from_samples(&SLEEP_1).unwrap();
    let b = Moments::from_samples(&SLEEP_2).unwrap();
    let w = welch_diff(&a, &b, 0.95).unwrap();
    close(w.diff, -1.58, 1e-13);
    close(w.t, WELCH_T, 1e-12);
    close(w.df, WELCH_DF, 1e-12);
    close(w.p_two_sided, WELCH_P, 1e-10);
    close_pair(w.ci, WELCH_CI95, 1e-11);
    close_pair(welch_diff(&a, &b, 0.90).unwrap().ci, WELCH_CI90, 1e-11);
    // Swapping the groups flips the sign, nothing else.
    let r = welch_diff(&b, &a, 0.95).unwrap();
    close(r.t, -WELCH_T, 1e-12);
    close(r.p_two_sided, WELCH_P, 1e-10);
    let one = Moments::from_samples(&[1.0]).unwrap();
    assert_eq!(welch_diff(&a, &one, 0.95), None);
}

#[test]
fn welch_df_exists_for_data_scaled_near_1e_plus_minus_80() {
    // Before: the variances (~1e-162 or 1e158) were squared again, the
    // df came out 0/0 or inf/inf = NaN and the interval was lost.
    for k in [1e-80, 1e80, 1e-85, 1e85, 1e-200, 1e200] {
        let a: Vec<f64> = SLEEP_1.iter().map(|x| x * k).collect();
        let b: Vec<f64> = SLEEP_2.iter().map(|x| x * k).collect();
        let (a, b) = (Moments::from_samples(&a).unwrap(), Moments::from_samples(&b).unwrap());
        let w = welch_diff(&a, &b, 0.95).unwrap();
        close(w.df, WELCH_DF, 1e-12);
        close(w.t, WELCH_T, 1e-12);
        close(w.p_two_sided, WELCH_P, 1e-10);
        close_pair((w.ci.0 / k, w.ci.1 / k), WELCH_CI95, 1e-11);
    }
}

#[test]
fn summaries_are_exact_under_power_of_two_scaling() {
    // The samples are scaled by a power of two internally, so data whose
    // squares would overflow (or underflow) gets the unscaled answer.
    let base = Moments::from_samples(&Y).unwrap();
    for e in [-900, -300, 300, 900] {
        let k = 2f64.powi(e);
        let ys: Vec<f64> = Y.iter().map(|y| y * k).collect();
        let s = Moments::from_samples(&ys).unwrap();
        assert_eq!((s.mean / k, s.sd.unwrap() / k), (base.mean, base.sd.unwrap()), "2^{e}");
    }
}

#[test]
fn welch_satterthwaite_edge_cases() {
    assert_eq!(welch_satterthwaite(&[]), None);
    assert_eq!(welch_satterthwaite(&[(f64::NAN, 2.0)]), None);
    assert_eq!(welch_satterthwaite(&[(1.0, f64::INFINITY)]), None);
    assert_eq!(welch_satterthwaite(&[(0.0, 2.0), (0.0, 3.0)]), Some((0.0, 5.0)));
    // One term: its own df, whatever its size.
    for se in [1e-300, 1.0, 1e300] {
        assert_eq!(welch_satterthwaite(&[(se, 4.0)]), Some((se, 4.0)));
    }
}

#[test]
fn welch_with_constant_groups() {
    let a = Moments::from_samples(&[0.1, 0.1, 0.1]).unwrap();
    let b = Moments::from_samples(&[0.3, 0.3]).unwrap();
    let w = welch_diff(&a, &b, 0.95).unwrap();
    assert_eq!((w.se, w.df, w.ci), (0.0, 3.0, (w.diff, w.diff)));
    assert_eq!((w.t, w.p_two_sided), (f64::NEG_INFINITY, 0.0));
    let same = welch_diff(&a, &a, 0.95).unwrap();
    assert_eq!((same.t, same.p_two_sided), (0.0, 1.0));
}

#[test]
fn paired_t_matches_scipy_and_r() {
    let diffs: Vec<f64> = SLEEP_1.iter().zip(SLEEP_2).map(|(a, b)| a - b).collect();
    let p = paired_t(&diffs).unwrap();
    assert_eq!((p.n, p.df), (10, 9.0));
    close(p.mean_diff, -1.58, 1e-13);
    close(p.sd, PAIRED_SD, 1e-12);
    close(p.t, PAIRED_T, 1e-12);
    close(p.p_two_sided, PAIRED_P, 1e-10);
    close_pair(p.ci95, PAIRED_CI95, 1e-12);
}

#[test]
fn paired_t_with_constant_differences() {
    let p = paired_t(&[0.02, 0.02, 0.02]).unwrap();
    assert_eq!((p.t, p.p_two_sided, p.ci95), (f64::INFINITY, 0.0, (0.02, 0.02)));
    let p = paired_t(&[0.0, 0.0]).unwrap();
    assert_eq!((p.t, p.p_two_sided), (0.0, 1.0));
}

#[test]
fn holm_step_down() {
    // By hand: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02,
    // 0.03, 0.06, 0.04; the running maximum lifts the last to 0.06.
    let adj = holm(&[0.01, 0.04, 0.03, 0.005]);
    let expected = [0.03, 0.06, 0.06, 0.02];
    for (a, e) in adj.iter().zip(expected) {
        close(*a, e, 1e-15);
    }
    // By hand: 0.01*5, 0.02*4, 0.03*3, 0.04*2, 0.05*1 = 0.05, 0.08,
    // 0.09, 0.08, 0.05, then the running maximum.
    let adj = holm(&[0.01, 0.02, 0.03, 0.04, 0.05]);
    for (a, e) in adj.iter().zip([0.05, 0.08, 0.09, 0.09, 0.09]) {
        close(*a, e, 1e-15);
    }
    // Capped at 1.
    assert_eq!(holm(&[0.5, 0.6, 0.9]), vec![1.0, 1.0, 1.0]);
    assert_eq!(holm(&[0.2]), vec![0.2]);
    assert!(holm(&[]).is_empty());
    // NaN stays NaN and does not count towards m.
    let adj = holm(&[0.01, f64::NAN, 0.04]);
    assert!(adj[1].is_nan());
    close(adj[0], 0.02, 1e-15);
    close(adj[2], 0.04, 1e-15);
}

proptest::proptest! {
    #[test]
    fn holm_is_monotone_and_bounded(ps in proptest::collection::vec(0.0f64..=1.0, 0..20)) {
        let adj = holm(&ps);
        proptest::prop_assert_eq!(adj.len(), ps.len());
        for i in 0..ps.len() {
            proptest::prop_assert!(adj[i] >= ps[i] && adj[i] <= 1.0);
            for j in 0..ps.len() {
                if ps[i] < ps[j] {
                    proptest::prop_assert!(adj[i] <= adj[j]);
                }
            }
        }
    }

    #[test]
    fn shifted_sums_agree_with_samples(
        xs in proptest::collection::vec(-1e3f64..1e3, 2..30),
    ) {
        let direct = Moments::from_samples(&xs).unwrap();
        let shift = xs[0];
        let sum: f64 = xs.iter().map(|x| x - shift).sum();
        let sum_sq: f64 = xs.iter().map(|x| (x - shift) * (x - shift)).sum();
        let agg = Moments::from_shifted_sums(xs.len() as u64, shift, sum, sum_sq).unwrap();
        let scale = xs.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        proptest::prop_assert!((direct.mean - agg.mean).abs() <= 1e-12 * scale);
        proptest::prop_assert!((direct.sd.unwrap() - agg.sd.unwrap()).abs() <= 1e-6 * scale);
    }
}
