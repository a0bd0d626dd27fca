//! Writing a run's results: each file to a temporary name, then renamed.
//! `report.html` shows the report's figures ([`prunex::report::html`]).

use std::path::Path;

use prunex::models::weights;
use prunex::output::write_atomically;
use prunex::report::RunReport;

use super::RunError;
use crate::exec::model::TorchModel;

/// Writes the results; returns why `model.onnx` could not be written, when
/// it could not (the other files are written regardless).
pub(super) fn export(
    dir: &Path,
    m: &TorchModel,
    report: &RunReport,
    extras: &prunex::report::html::Extras,
) -> Result<Option<String>, RunError> {
    let fail = |p: &Path, e: std::io::Error| RunError::Write {
        path: p.display().to_string(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
    let sd = m.state_dict()?;
    let w = dir.join("weights.safetensors");
    write_atomically(&w, weights::to_safetensors(&sd)).map_err(|e| fail(&w, e))?;
    // The model for runtimes: ONNX, with the weights inline, or beside it
    // in model.onnx.data when they pass what one file holds (written
    // first: a model file never points at data not there yet).
    use prunex::models::onnx;
    let data_name = "model.onnx.data";
    let skipped = match onnx::to_onnx_files(&m.graph, &sd, data_name, onnx::MAX_BYTES) {
        Ok(files) => {
            let d = dir.join(data_name);
            match files.data {
                Some(data) => write_atomically(&d, data).map_err(|e| fail(&d, e))?,
                // A data file from an earlier run would only mislead.
                None if d.exists() => std::fs::remove_file(&d).map_err(|e| fail(&d, e))?,
                None => {}
            }
            let o = dir.join("model.onnx");
            write_atomically(&o, files.model).map_err(|e| fail(&o, e))?;
            None
        }
        Err(why) => Some(why),
    };
    let y = dir.join("model.yaml");
    write_atomically(&y, prunex::models::yaml::to_yaml(&m.graph)).map_err(|e| fail(&y, e))?;
    let r = dir.join("report.yaml");
    write_atomically(&r, prunex::yaml::to_string(report)).map_err(|e| fail(&r, e))?;
    let j = dir.join("report.json");
    write_atomically(
        &j,
        serde_json::to_string_pretty(report).expect("reports serialize"),
    )
    .map_err(|e| fail(&j, e))?;
    let t = dir.join("timings.yaml");
    write_atomically(&t, prunex::yaml::to_string(&report.timings)).map_err(|e| fail(&t, e))?;
    let h = dir.join("report.html");
    write_atomically(&h, prunex::report::html::page(report, extras)).map_err(|e| fail(&h, e))?;
    Ok(skipped)
}
