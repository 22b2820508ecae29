//! Per-operation latency against the number of endpoints present: a CSV file and a PNG rendered
//! from it by gnuplot.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// One colour per door (setup and teardown series of a door come in pairs).
const COLORS: [&str; 6] = [
    "#7b1fa2", "#00838f", "#1565c0", "#e65100", "#c62828", "#2e7d32",
];

/// One plotted series: label and the latency of operation i with `present(i)` endpoints there.
pub struct Series {
    /// Label.
    pub label: String,
    /// Setup or teardown panel.
    pub teardown: bool,
    /// (endpoints present, latency).
    pub points: Vec<(usize, Duration)>,
}

/// Writes `dir/latency.csv` (series, op, present, ms) and renders `dir/latency.png`; returns
/// the PNG path, or why it could not be rendered.
pub fn render(dir: &Path, series: &[Series]) -> Result<std::path::PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut csv = String::from("series,op,present,ms\n");
    for (k, s) in series.iter().enumerate() {
        let data = dir.join(format!("series{k}.dat"));
        let mut dat = String::new();
        for (x, d) in &s.points {
            let ms = d.as_secs_f64() * 1e3;
            let _ = writeln!(
                csv,
                "{},{},{x},{ms:.4}",
                s.label,
                if s.teardown { "teardown" } else { "setup" }
            );
            let _ = writeln!(dat, "{x} {ms:.4}");
        }
        std::fs::write(&data, dat).map_err(|e| e.to_string())?;
    }
    std::fs::write(dir.join("latency.csv"), csv).map_err(|e| e.to_string())?;
    let png = dir.join("latency.png");
    let mut gp = format!(
        "set terminal png size 1400,900 font ',11'\nset output '{}'\n\
         set multiplot layout 2,1\nset logscale y\nset grid\nset key outside right\n\
         set xlabel 'endpoints already present'\nset ylabel 'ms per operation (log)'\n",
        png.display()
    );
    for teardown in [false, true] {
        let _ = writeln!(
            gp,
            "set title '{}'",
            if teardown {
                "teardown / detach / DEL"
            } else {
                "setup / attach / ADD"
            }
        );
        let plots: Vec<String> = series
            .iter()
            .enumerate()
            .filter(|(_, s)| s.teardown == teardown)
            .map(|(k, s)| {
                format!(
                    "'{}' using 1:2 with points pt 7 ps 0.5 lc rgb '{}' title '{}'",
                    dir.join(format!("series{k}.dat")).display(),
                    COLORS[(k / 2) % COLORS.len()],
                    s.label
                )
            })
            .collect();
        if !plots.is_empty() {
            let _ = writeln!(gp, "plot {}", plots.join(", "));
        }
    }
    gp.push_str("unset multiplot\n");
    let script = dir.join("latency.gp");
    std::fs::write(&script, gp).map_err(|e| e.to_string())?;
    let out = Command::new("gnuplot")
        .arg(&script)
        .output()
        .map_err(|e| format!("gnuplot: {e} (apt-get install gnuplot-nox)"))?;
    if !out.status.success() {
        return Err(format!(
            "gnuplot failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(png)
}
