//! The facts of the machine a benchmark ran on, for its report.

use serde_json::{Value, json};

/// Cores, memory and the CPU model of this machine, with `note` (what
/// shares the cores during the run).
pub fn facts(note: &str) -> Value {
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let first = text.lines().next()?.split_whitespace().nth(1)?.to_owned();
            first.parse::<f64>().ok()
        })
        .map(|kib| (kib / 1024.0 / 1024.0).round());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        });
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_gib": memory_gib,
        "cpu": cpu,
        "note": note,
    })
}
