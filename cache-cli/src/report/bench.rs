//! What `cachectl bench` measured: each run's phase times, their spread
//! per scenario, the ratio to the cold runs, as a table, JSON or an SVG
//! plot. The runs themselves are `commands::bench`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

/// The phases reported, in stacking order.
pub const PHASES: [&str; 6] = ["hash", "lookup", "build", "push", "layer", "total"];

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct RunTimes {
    /// Seconds per phase (the keys of [`PHASES`]; `total` is the wall time).
    pub phases: BTreeMap<String, f64>,
    /// Bytes uploaded (base and app).
    pub bytes: u64,
    /// Whether the base was found rather than built.
    pub base_hit: bool,
    /// Whether the builder ran.
    pub built: bool,
    /// Whether the app image was an identical earlier push.
    pub app_reused: bool,
}

impl RunTimes {
    /// Reads the phases of one `cachectl build --json` result.
    pub fn from_build_json(build: &Value) -> Option<Self> {
        let (base, app) = (&build["base"], &build["app"]);
        let seconds = |value: &Value, name: &str| value[name].as_f64().unwrap_or(0.0);
        let phases = [
            ("hash", seconds(base, "hash_seconds")),
            ("lookup", seconds(base, "lookup_seconds")),
            ("build", seconds(base, "build_seconds")),
            (
                "push",
                seconds(base, "push_seconds") + seconds(app, "push_seconds"),
            ),
            ("layer", seconds(app, "layer_seconds")),
            ("total", seconds(base, "seconds") + seconds(app, "seconds")),
        ];
        Some(Self {
            phases: phases
                .iter()
                .map(|(name, value)| ((*name).to_owned(), value.max(0.0)))
                .collect(),
            bytes: base["pushed_bytes"].as_u64()? + app["uploaded_bytes"].as_u64()?,
            base_hit: base["hit"].as_bool()?,
            built: base["source"].as_str()? == "built",
            app_reused: app["reused"].as_bool()?,
        })
    }
}

/// Median, min and max of one phase.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Spread {
    /// Median.
    pub median: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let median = match sorted.len() {
            0 => 0.0,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Self {
            median,
            min: sorted.first().copied().unwrap_or(0.0),
            max: sorted.last().copied().unwrap_or(0.0),
        }
    }
}

/// One scenario's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// `cold`, `app-change` or `no-change`.
    pub name: String,
    /// Each run.
    pub runs: Vec<RunTimes>,
    /// Per phase, over the runs.
    pub phases: BTreeMap<String, Spread>,
    /// Median bytes uploaded.
    pub bytes_uploaded: u64,
    /// Median total against cold's: `(1 - warm / cold) * 100` (0 for cold).
    pub saving_percent: f64,
    /// Median total divided by cold's.
    pub ratio_to_cold: f64,
}

/// The whole result, as printed with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Runs per scenario.
    pub runs: usize,
    /// The app image the runs pushed (under [`BENCH_TAG`]).
    pub image: String,
    /// The scenarios, in order.
    pub scenarios: Vec<ScenarioReport>,
}

impl BenchReport {
    /// Summarises the runs of each scenario, in [`SCENARIOS`] order.
    pub fn new(image: String, runs: usize, measured: Vec<(String, Vec<RunTimes>)>) -> Self {
        let mut scenarios: Vec<ScenarioReport> = measured
            .into_iter()
            .map(|(name, runs)| {
                let phases = PHASES
                    .iter()
                    .map(|phase| {
                        let values: Vec<f64> = runs
                            .iter()
                            .map(|run| run.phases.get(*phase).copied().unwrap_or(0.0))
                            .collect();
                        ((*phase).to_owned(), Spread::of(&values))
                    })
                    .collect();
                let bytes: Vec<f64> = runs.iter().map(|run| run.bytes as f64).collect();
                ScenarioReport {
                    name,
                    bytes_uploaded: Spread::of(&bytes).median as u64,
                    runs,
                    phases,
                    saving_percent: 0.0,
                    ratio_to_cold: 1.0,
                }
            })
            .collect();
        let cold = scenarios
            .iter()
            .find(|s| s.name == "cold")
            .map(|s| s.phases["total"].median)
            .filter(|total| *total > 0.0);
        if let Some(cold) = cold {
            for scenario in &mut scenarios {
                let total = scenario.phases["total"].median;
                scenario.ratio_to_cold = total / cold;
                scenario.saving_percent = (1.0 - total / cold) * 100.0;
            }
        }
        Self {
            runs,
            image,
            scenarios,
        }
    }

    /// The terminal table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "cachectl bench: {} run(s) per scenario, app image {}\n",
            self.runs, self.image
        );
        let _ = write!(out, "{:<11}", "scenario");
        for phase in PHASES {
            let _ = write!(out, " {:>22}", format!("{phase} (ms)"));
        }
        let _ = writeln!(out, " {:>12} {:>16}", "uploaded", "vs cold");
        for scenario in &self.scenarios {
            let _ = write!(out, "{:<11}", scenario.name);
            for phase in PHASES {
                let spread = scenario.phases[phase];
                let _ = write!(
                    out,
                    " {:>22}",
                    format!(
                        "{:.1} [{:.1}-{:.1}]",
                        spread.median * 1000.0,
                        spread.min * 1000.0,
                        spread.max * 1000.0
                    )
                );
            }
            let versus = if scenario.name == "cold" {
                "-".to_owned()
            } else {
                format!(
                    "-{:.1} % ({:.3}x)",
                    scenario.saving_percent, scenario.ratio_to_cold
                )
            };
            let _ = writeln!(
                out,
                " {:>12} {:>16}",
                format!("{} B", scenario.bytes_uploaded),
                versus
            );
        }
        out.push_str(
            "\ntimes: median [min-max] milliseconds; total is the wall time of the whole step \
             (a new cachectl build process, as in CI)\n",
        );
        out
    }

    /// Stacked bars of the median phases per scenario, as a standalone SVG.
    pub fn svg(&self) -> String {
        const COLORS: [(&str, &str); 5] = [
            ("hash", "#8e7cc3"),
            ("lookup", "#6fa8dc"),
            ("build", "#e06666"),
            ("push", "#f6b26b"),
            ("layer", "#93c47d"),
        ];
        let (width, left, bar_height, gap, top) = (760.0, 110.0, 36.0, 22.0, 40.0);
        let longest = self
            .scenarios
            .iter()
            .map(|s| {
                COLORS
                    .iter()
                    .map(|(phase, _)| s.phases[*phase].median)
                    .sum::<f64>()
            })
            .fold(0.0_f64, f64::max)
            .max(0.001);
        let scale = (width - left - 120.0) / longest;
        let height = top + self.scenarios.len() as f64 * (bar_height + gap) + 40.0;
        let mut out = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
             viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
             <text x=\"{left}\" y=\"22\" font-size=\"14\">Deploy step per scenario, median seconds per phase</text>"
        );
        for (row, scenario) in self.scenarios.iter().enumerate() {
            let y = top + row as f64 * (bar_height + gap);
            let _ = write!(
                out,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
                left - 8.0,
                y + bar_height / 2.0 + 4.0,
                scenario.name
            );
            let mut x = left;
            for (phase, color) in COLORS {
                let seconds = scenario.phases[phase].median;
                let w = seconds * scale;
                if w > 0.0 {
                    let _ = write!(
                        out,
                        "<rect class=\"phase-{phase}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" \
                         height=\"{bar_height}\" fill=\"{color}\"><title>{} {phase}: {seconds:.3} s</title></rect>",
                        scenario.name
                    );
                }
                x += w;
            }
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{}\">{:.2} s</text>",
                x + 6.0,
                y + bar_height / 2.0 + 4.0,
                scenario.phases["total"].median
            );
        }
        let legend_y = height - 14.0;
        for (i, (phase, color)) in COLORS.iter().enumerate() {
            let x = left + i as f64 * 90.0;
            let _ = write!(
                out,
                "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{color}\"/>\
                 <text x=\"{}\" y=\"{legend_y}\">{phase}</text>",
                legend_y - 10.0,
                x + 16.0
            );
        }
        out.push_str("</svg>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(total: f64, build: f64) -> RunTimes {
        RunTimes {
            phases: [("total".to_owned(), total), ("build".to_owned(), build)].into(),
            bytes: 10,
            base_hit: build == 0.0,
            built: build > 0.0,
            app_reused: false,
        }
    }

    #[test]
    fn savings_are_against_the_cold_median() {
        let report = BenchReport::new(
            "r/web:cachectl-bench".into(),
            3,
            vec![
                (
                    "cold".into(),
                    vec![run(10.0, 9.0), run(12.0, 11.0), run(30.0, 29.0)],
                ),
                (
                    "no-change".into(),
                    vec![run(0.1, 0.0), run(0.2, 0.0), run(0.3, 0.0)],
                ),
            ],
        );
        let cold = &report.scenarios[0];
        assert_eq!(
            cold.phases["total"],
            Spread {
                median: 12.0,
                min: 10.0,
                max: 30.0
            }
        );
        let warm = &report.scenarios[1];
        assert!((warm.ratio_to_cold - 0.2 / 12.0).abs() < 1e-9);
        assert!((warm.saving_percent - (1.0 - 0.2 / 12.0) * 100.0).abs() < 1e-9);
        assert!(report.table().contains("no-change"));
        let svg = report.svg();
        assert!(svg.contains("class=\"phase-build\"") && svg.starts_with("<svg"));
    }
}
