//! The grid both benchmarks fill: 5 depths x 2 x 5 x 2 = 100 cells, with as
//! many seeds as it takes to reach `trials`.

pub(crate) fn grid(trials: usize) -> sweep_core::GridSpec {
    let seeds = trials.div_ceil(100);
    let text = format!(
        r#"
name = "bench"
seeds = {seeds}
[grid]
depth = [8, 16, 24, 32, 40]
skip = [true, false]
init = ["default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"]
batchnorm = [true, false]
[data]
path = "/data"
"#
    );
    sweep_core::GridSpec::parse(&text, std::path::Path::new("/bench.toml")).expect("valid bench grid")
}
