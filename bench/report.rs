//! Medians, ratios and the printed report.

use std::{fmt::Write as _, time::Duration};

/// The median of `values` (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Microseconds, for tables.
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A markdown table being written.
pub struct Table {
    text: String,
}

impl Table {
    /// A table with these column headings.
    pub fn new(headings: &[&str]) -> Table {
        let mut text = format!("| {} |\n", headings.join(" | "));
        let _ = writeln!(text, "|{}", "---|".repeat(headings.len()));
        Table { text }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: &[String]) {
        let _ = writeln!(self.text, "| {} |", cells.join(" | "));
    }

    /// The table's markdown.
    pub fn finish(self) -> String {
        self.text
    }
}

/// The report: sections of markdown, and whether every check held.
#[derive(Default)]
pub struct Report {
    text: String,
    /// Correctness failures (targets missed are reported, not failures).
    pub failures: Vec<String>,
}

impl Report {
    /// Adds a heading and its markdown.
    pub fn section(&mut self, heading: &str, body: &str) {
        let _ = write!(self.text, "\n### {heading}\n\n{body}\n");
        print!("\n### {heading}\n\n{body}\n");
    }

    /// Records a correctness check.
    pub fn check(&mut self, ok: bool, what: impl Into<String>) {
        let what = what.into();
        if !ok {
            eprintln!("CHECK FAILED: {what}");
            self.failures.push(what);
        }
    }

    /// The whole report.
    pub fn text(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
