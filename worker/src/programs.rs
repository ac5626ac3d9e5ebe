//! The programs this worker runs and what each takes and reports.

use tessera_core::program::{ParamInfo, ProgramInfo};
use tessera_core::space::{ParamValue, ValueKind};

/// The MLP classifier on a tabular Parquet dataset (Burn).
pub(crate) const MLP: &str = "mlp-classifier";
/// A closed-form objective for tests and benchmarks (no Burn, no data).
pub(crate) const SYNTHETIC: &str = "synthetic";

fn p(
    name: &'static str,
    kind: ValueKind,
    default: Option<ParamValue>,
    help: &'static str,
) -> ParamInfo {
    ParamInfo {
        name,
        kind,
        default,
        options: &[],
        min: None,
        max: None,
        help,
    }
}

/// `info` with its values bounded to `[min, max]`.
fn r(min: f64, max: f64, info: ParamInfo) -> ParamInfo {
    ParamInfo {
        min: Some(min),
        max: Some(max),
        ..info
    }
}

/// Every program this worker can run.
pub fn program_infos() -> Vec<ProgramInfo> {
    use ParamValue::{Float, Int, Str};
    use ValueKind as K;
    vec![
        ProgramInfo {
            name: MLP,
            description: "MLP classifier (ReLU, cross-entropy) trained with Burn on a Parquet table with a `label` column",
            params: vec![
                r(
                    1e-12,
                    1000.0,
                    p(
                        "lr",
                        K::Float,
                        Some(Float(1e-3)),
                        "learning rate, e.g. { float: [1.0e-4, 1.0e-1], scale: log }",
                    ),
                ),
                r(
                    1.0,
                    1000000.0,
                    p("width", K::Int, Some(Int(64)), "units per hidden layer"),
                ),
                r(
                    0.0,
                    64.0,
                    p(
                        "depth",
                        K::Int,
                        Some(Int(2)),
                        "hidden layers (0 is logistic regression)",
                    ),
                ),
                r(
                    0.0,
                    0.99,
                    p(
                        "dropout",
                        K::Float,
                        Some(Float(0.0)),
                        "dropout probability after each hidden layer, in [0, 0.99]",
                    ),
                ),
                r(
                    1.0,
                    10000000.0,
                    p(
                        "batch_size",
                        K::Int,
                        Some(Int(32)),
                        "rows per gradient step",
                    ),
                ),
                r(
                    1.0,
                    1000000.0,
                    p(
                        "epochs",
                        K::Int,
                        Some(Int(10)),
                        "passes over the training set; one report per epoch",
                    ),
                ),
                ParamInfo {
                    options: &["adam", "sgd"],
                    ..p(
                        "optimizer",
                        K::Str,
                        Some(Str("adam".into())),
                        "`adam` or `sgd` (momentum 0.9)",
                    )
                },
                r(
                    0.0,
                    10.0,
                    p(
                        "weight_decay",
                        K::Float,
                        Some(Float(0.0)),
                        "L2 weight decay",
                    ),
                ),
            ],
            metrics: &["train_loss", "train_accuracy", "val_loss", "val_accuracy"],
            needs_dataset: true,
        },
        ProgramInfo {
            name: SYNTHETIC,
            description: "closed-form objective for tests and benchmarks: loss = (x-0.3)^2 + (y+0.2)^2 + 1/step",
            params: vec![
                p("x", K::Float, Some(Float(0.0)), "first coordinate"),
                p("y", K::Float, Some(Float(0.0)), "second coordinate"),
                r(
                    0.0,
                    10000000.0,
                    p("reports", K::Int, Some(Int(1)), "reports (steps) per trial"),
                ),
                r(
                    0.0,
                    3600000.0,
                    p(
                        "sleep_ms",
                        K::Int,
                        Some(Int(0)),
                        "milliseconds to sleep per step",
                    ),
                ),
                r(
                    0.0,
                    1000.0,
                    p(
                        "fail_attempts",
                        K::Int,
                        Some(Int(0)),
                        "the first N attempts return an error",
                    ),
                ),
                r(
                    0.0,
                    1000.0,
                    p(
                        "panic_attempts",
                        K::Int,
                        Some(Int(0)),
                        "the first N attempts panic",
                    ),
                ),
            ],
            metrics: &["loss", "score"],
            needs_dataset: false,
        },
    ]
}
