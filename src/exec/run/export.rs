//! Writing a run's results: each file to a temporary name, then renamed.

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
) -> Result<Option<String>, RunError> {
    let fail = |p: &Path, e: std::io::Error| RunError::Write {
        path: p.display().to_string(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
    let sd = m.state_dict()?;
    let w = dir.join("weights.safetensors");
    write_atomically(&w, weights::to_safetensors(&sd)).map_err(|e| fail(&w, e))?;
    // The model for runtimes: ONNX, with the weights inline.
    let onnx = prunex::models::onnx::to_onnx(&m.graph, &sd);
    let skipped = match onnx {
        Ok(bytes) => {
            let o = dir.join("model.onnx");
            write_atomically(&o, bytes).map_err(|e| fail(&o, e))?;
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
    Ok(skipped)
}
