//! Results for people and for CI systems: the reference on stdout (or JSON
//! with `--json`), a summary on stderr, `$GITHUB_OUTPUT` /
//! `$GITHUB_STEP_SUMMARY` when GitHub Actions sets them, and the same
//! outputs as `CACHECTL_*` lines of a dotenv file named by
//! `$CACHECTL_DOTENV` (a GitLab CI `artifacts: reports: dotenv`, or any CI
//! system that reads one).

use std::io::Write;

use super::outcome::{EnsureReport, Hit, LayerReport, PackageLayer, RestoreReport, SaveReport};

/// The result on stdout: the JSON of `value` with `--json`, else `reference`.
fn print_result(value: &impl serde::Serialize, reference: &str, json: bool) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut stdout, value)?;
        writeln!(stdout)?;
    } else {
        writeln!(stdout, "{reference}")?;
    }
    stdout.flush()
}

/// Prints the result of `ensure-base` and writes the CI outputs.
pub fn report_ensure(report: &EnsureReport, json: bool) -> std::io::Result<()> {
    print_result(report, &report.reference, json)?;
    let key16 = &report.key[..16.min(report.key.len())];
    if report.hit {
        eprintln!(
            "  (hit: key {key16}, from {}, {:.0} ms)",
            report.source,
            report.seconds * 1000.0
        );
    } else {
        eprintln!(
            "  (built: key {key16}, build {:.1} s, push {:.1} s, {} bytes pushed)",
            report.build_seconds, report.push_seconds, report.pushed_bytes
        );
        package_layers(&report.package_layers);
        if !report.plan_changes.is_empty() {
            eprintln!("  (package plan: {})", report.plan_changes.join(", "));
        }
    }
    github_outputs(report)
}

/// Prints the result of `cache save` (the key, or JSON).
pub fn report_folder_save(report: &SaveReport, json: bool) -> std::io::Result<()> {
    print_result(report, &report.key, json)?;
    eprintln!(
        "  (saved {}: {} files, {} bytes; uploaded {} new contents, {} bytes; {} already stored; {:.1} s)",
        report.name,
        report.files,
        report.bytes,
        report.uploaded_files,
        report.uploaded_bytes,
        report.skipped_files,
        report.seconds
    );
    outputs(&format!("cache-key={}\n", report.key))
}

/// Prints the result of `cache restore` (the hit kind, or JSON) and writes
/// `cache-hit` (true only for an exact hit) and `cache-matched-key`.
pub fn report_folder_restore(report: &RestoreReport, json: bool) -> std::io::Result<()> {
    let hit = match report.hit {
        Hit::Exact => "exact",
        Hit::Partial => "partial",
        Hit::Miss => "miss",
    };
    print_result(report, hit, json)?;
    eprintln!(
        "  ({hit} for {}: {} files, {} written, {} downloaded ({} bytes), {} bytes already here; {:.1} s)",
        report.name,
        report.files,
        report.written_files,
        report.downloaded_files,
        report.downloaded_bytes,
        report.skipped_bytes,
        report.seconds
    );
    outputs(&format!(
        "cache-hit={}\ncache-matched-key={}\n",
        report.hit == Hit::Exact,
        report.restored_key.as_deref().unwrap_or("")
    ))
}

/// Writes CI outputs (`name=value` lines): to `$GITHUB_OUTPUT`, and to
/// `$CACHECTL_DOTENV` as `CACHECTL_NAME=value` (upper case, `_` for `-`).
pub fn outputs(text: &str) -> std::io::Result<()> {
    append("GITHUB_OUTPUT", text)?;
    let dotenv: String = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| {
            format!(
                "CACHECTL_{}={value}\n",
                name.to_ascii_uppercase().replace('-', "_")
            )
        })
        .collect();
    append("CACHECTL_DOTENV", &dotenv)
}

/// Appends `text` to the file the GitHub Actions variable `variable`
/// (`GITHUB_OUTPUT`, `GITHUB_STEP_SUMMARY`) names, if it is set.
pub fn append(variable: &str, text: &str) -> std::io::Result<()> {
    let Some(path) = std::env::var_os(variable).filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(text.as_bytes())
}

fn github_outputs(report: &EnsureReport) -> std::io::Result<()> {
    outputs(&format!(
        "base-image={}\nbase-key={}\ncache-hit={}\n",
        report.reference, report.key, report.hit
    ))?;
    let outcome = if report.hit {
        format!(
            "hit ({}) in {:.0} ms",
            report.source,
            report.seconds * 1000.0
        )
    } else {
        format!(
            "built in {:.1} s, pushed {} bytes",
            report.seconds, report.pushed_bytes
        )
    };
    append(
        "GITHUB_STEP_SUMMARY",
        &format!("cachectl base `{}`: {outcome}\n", report.reference),
    )
}

/// Prints the result of `layer`.
pub fn report_layer(report: &LayerReport, json: bool) -> std::io::Result<()> {
    print_result(report, &report.reference, json)?;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    eprintln!(
        "  (app layer {} bytes packed in {:.1} s; {} bytes uploaded, {} mounted, {} skipped, push {:.1} s)",
        report.layer_bytes,
        report.layer_seconds,
        report.uploaded_bytes,
        report.mounted,
        report.skipped,
        report.push_seconds
    );
    if let Some(line) = app_layers_line(report) {
        eprintln!("  ({line})");
    }
    outputs(&format!("image={}\n", report.reference))
}

/// What the app's layers by change did, in words: how many the image has,
/// what this deploy's delta held, and whether the stack was compacted.
fn app_layers_line(report: &LayerReport) -> Option<String> {
    let layers = report.app_layers.as_ref()?;
    let pushed = match (layers.delta_files, layers.delta_bytes, layers.pushed) {
        (Some(files), Some(bytes), _) => format!(
            "a layer of {files} changed file{} ({}) pushed",
            if files == 1 { "" } else { "s" },
            super::bytes::human_bytes(bytes)
        ),
        (_, _, 0) => "none pushed".to_owned(),
        _ => "the whole app pushed as one".to_owned(),
    };
    let compacted = match layers.compaction {
        Some("deltas") => "; the deltas compacted into one on the full layer",
        Some(_) => "; compacted into one layer",
        None => "",
    };
    Some(format!(
        "app layers: {}, {pushed}{compacted}",
        layers.layers
    ))
}

/// Prints the result of `rollback` and writes the CI outputs.
pub fn report_rollback(report: &super::outcome::RollbackReport, json: bool) -> std::io::Result<()> {
    print_result(report, &report.reference, json)?;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    eprintln!(
        "  ({} now points at {} (deploy {}); 0 bytes uploaded, {:.0} ms)",
        report.image,
        report.digest,
        report.deploy,
        report.seconds * 1000.0
    );
    outputs(&format!(
        "image={}
previous-image={}
",
        report.reference,
        report.previous.as_deref().unwrap_or("")
    ))?;
    append(
        "GITHUB_STEP_SUMMARY",
        &format!(
            "cachectl rollback: `{}` now points at `{}` (deploy {})\n",
            report.image, report.digest, report.deploy
        ),
    )
}

/// Prints the result of `build`: the app image, with the base's outcome.
pub fn report_build(base: &EnsureReport, app: &LayerReport, json: bool) -> std::io::Result<()> {
    let combined = serde_json::json!({ "base": base, "app": app });
    print_result(&combined, &app.reference, json)?;
    for warning in &app.warnings {
        eprintln!("warning: {warning}");
    }
    let outcome = if base.hit {
        format!("base hit {:.0} ms", base.seconds * 1000.0)
    } else {
        format!("base built {:.1} s", base.seconds)
    };
    eprintln!(
        "  ({outcome}, app layer {} bytes in {:.1} s, {} bytes uploaded)",
        app.layer_bytes, app.seconds, app.uploaded_bytes
    );
    if let Some(line) = app_layers_line(app) {
        eprintln!("  ({line})");
    }
    package_layers(&base.package_layers);
    outputs(&format!(
        "image={}\nbase-image={}\ncache-hit={}\nbase-key={}\n",
        app.reference, base.reference, base.hit, base.key
    ))?;
    append(
        "GITHUB_STEP_SUMMARY",
        &format!(
            "cachectl build `{}`: {outcome}; app layer {} bytes, {} bytes uploaded{}\n",
            app.reference,
            app.layer_bytes,
            app.uploaded_bytes,
            if app.reused { " (unchanged)" } else { "" }
        ),
    )
}

/// The package layers of a built base, in a line or two: what was built
/// (with its packages) and how many were reused.
/// Layers named one by one in the human summary; past this many, a count
/// (`--json` names them all).
const NAMED_LAYERS: usize = 12;

fn package_layers(layers: &[PackageLayer]) {
    if layers.is_empty() {
        return;
    }
    let built: Vec<&PackageLayer> = layers.iter().filter(|l| l.source == "built").collect();
    let reused = layers.len() - built.len();
    let mut names: Vec<String> = built
        .iter()
        .take(NAMED_LAYERS)
        .map(|layer| match layer.packages.as_slice() {
            [] => layer.name.clone(),
            [one] => one.clone(),
            many => format!("{} ({} packages)", layer.name, many.len()),
        })
        .collect();
    if built.len() > NAMED_LAYERS {
        names.push(format!("{} more", built.len() - NAMED_LAYERS));
    }
    eprintln!(
        "  (package layers: {} built, {} bytes: {}; {reused} reused)",
        built.len(),
        built.iter().map(|layer| layer.bytes).sum::<u64>(),
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    );
}
