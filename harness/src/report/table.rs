//! A table as rows and one column list, rendered to Markdown and to CSV from that list.
//!
//! A column is one quantity of a row: in Markdown one cell, readable (`0.97 [0.95, 0.99]`); in
//! CSV zero or more cells, each one number or word as written (`median`, `median_boot95_lo`,
//! `median_boot95_hi`), so that pandas reads it without parsing. A column can be Markdown-only
//! or CSV-only. Both renderers walk the same list, so a column added to it appears in both
//! files, in the same place.

use anyhow::Result;
use std::fmt::Write as _;

/// How a cell of row type `R` is written.
type Cell<'a, R> = Box<dyn Fn(&R) -> String + 'a>;

/// One column: its Markdown header and cell (if shown there) and its CSV headers and cells.
pub struct Column<'a, R> {
    md: Option<(String, Cell<'a, R>)>,
    csv: Vec<(String, Cell<'a, R>)>,
}

impl<'a, R> Column<'a, R> {
    /// A column in both files: one Markdown cell, and the CSV cells `csv` (header, cell) in order.
    pub fn new(
        md_header: impl Into<String>,
        md: impl Fn(&R) -> String + 'a,
        csv: Vec<(&str, Cell<'a, R>)>,
    ) -> Self {
        Column {
            md: Some((md_header.into(), Box::new(md))),
            csv: csv.into_iter().map(|(h, c)| (h.to_string(), c)).collect(),
        }
    }

    /// A column of the Markdown table only.
    pub fn md_only(header: impl Into<String>, md: impl Fn(&R) -> String + 'a) -> Self {
        Column {
            md: Some((header.into(), Box::new(md))),
            csv: vec![],
        }
    }

    /// A column of the CSV only (what the Markdown says in its heading, such as the metric).
    pub fn csv_only(header: &str, csv: impl Fn(&R) -> String + 'a) -> Self {
        Column {
            md: None,
            csv: vec![(header.to_string(), Box::new(csv))],
        }
    }
}

/// A CSV cell, boxed for [`Column::new`].
pub fn csv_cell<'a, R>(f: impl Fn(&R) -> String + 'a) -> Cell<'a, R> {
    Box::new(f)
}

/// The Markdown table of `rows`: header, separator and one line per row.
pub fn markdown<R>(columns: &[Column<R>], rows: &[R]) -> String {
    let shown: Vec<&(String, Cell<R>)> = columns.iter().filter_map(|c| c.md.as_ref()).collect();
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    let mut md = line(shown.iter().map(|(h, _)| h.clone()).collect());
    writeln!(md, "|{}", shown.iter().map(|_| "---|").collect::<String>())
        .expect("writing to a String");
    for r in rows {
        md.push_str(&line(shown.iter().map(|(_, cell)| cell(r)).collect()));
    }
    md
}

/// The CSV file of `rows`: `comments` (each line `# ...`, written raw so that the CSV writer does
/// not quote them; pandas reads them with comment="#"), then the header and one record per row.
pub fn csv<R>(columns: &[Column<R>], rows: &[R], comments: &[String]) -> Result<Vec<u8>> {
    let mut head = String::new();
    for l in comments {
        writeln!(head, "# {}", l.replace('\n', " "))?;
    }
    let cells: Vec<&(String, Cell<R>)> = columns.iter().flat_map(|c| &c.csv).collect();
    let mut w = csv::Writer::from_writer(head.into_bytes());
    w.write_record(cells.iter().map(|(h, _)| h))?;
    for r in rows {
        w.write_record(cells.iter().map(|(_, cell)| cell(r)))?;
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}

/// A number in a Markdown cell: 4 significant decimals, trailing zeros dropped, scientific
/// outside [1e-3, 1e5), `–` for NaN.
pub fn fmt(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v != 0.0 && (v.abs() >= 1e5 || v.abs() < 1e-3) {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

/// A p-value in a Markdown cell.
pub fn fmt_p(p: f64) -> String {
    if p < 1e-4 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

/// A number in a CSV cell: Rust's shortest exact form, empty when absent or NaN.
pub fn csv_num(v: Option<f64>) -> String {
    v.filter(|v| !v.is_nan())
        .map(|v| format!("{v:?}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_column_list_renders_both_files() {
        let cols: Vec<Column<(f64, f64)>> = vec![
            Column::csv_only("kind", |_| "x".into()),
            Column::new(
                "value [lo]",
                |r: &(f64, f64)| format!("{} [{}]", fmt(r.0), fmt(r.1)),
                vec![
                    ("value", csv_cell(|r: &(f64, f64)| csv_num(Some(r.0)))),
                    ("lo", csv_cell(|r: &(f64, f64)| csv_num(Some(r.1)))),
                ],
            ),
            Column::md_only("note", |_| "–".into()),
        ];
        let rows = [(1.5, 0.25), (f64::NAN, 1e-5)];
        assert_eq!(
            markdown(&cols, &rows),
            "| value [lo] | note |\n|---|---|\n| 1.5 [0.25] | – |\n| – [1.000e-5] | – |\n"
        );
        let bytes = csv(&cols, &rows, &["made by a test".into()]).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "# made by a test\nkind,value,lo\nx,1.5,0.25\nx,,1e-5\n"
        );
    }
}
