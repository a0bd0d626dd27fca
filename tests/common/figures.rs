/// Every chart report.html can hold, in the page's order
/// (tests/report_html.rs checks the page builder against this list).
pub const ALL_FIGURES: [&str; 6] = [
    "loss",
    "accuracy",
    "sparsity",
    "channels",
    "layer-sparsity",
    "latency",
];
