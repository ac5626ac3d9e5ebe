//! The programs this worker runs and what each takes and reports.

use tessera_core::program::{ParamInfo, ProgramInfo};
use tessera_core::space::{ParamValue, ValueKind};

/// The MLP classifier on a tabular Parquet dataset (Burn).
pub(crate) const MLP: &str = "mlp-classifier";
/// A closed-form objective for tests and benchmarks (no Burn, no data).
pub(crate) const SYNTHETIC: &str = "synthetic";
/// One tile of a fractal trainability grid, trained as one batched program.
pub(crate) const FRACTAL_TILE: &str = tessera_core::fractal_sweep::TILE_PROGRAM;
/// A `nas` sweep's trial: train the super-network, or evaluate sub-networks of it.
pub(crate) const NAS: &str = tessera_core::nas_sweep::PROGRAM;
/// A `metalic` sweep's round: one two-subdomain PINN trained with chosen interface terms.
pub(crate) const METALIC: &str = tessera_core::metalic_sweep::PROGRAM;

/// What a `metalic` trial's hyperparameters are (set by the `metalic` sweep kind from its
/// `metalic:` section; a user does not write them).
fn metalic_params() -> Vec<ParamInfo> {
    use ValueKind as K;
    let int = |name, help| p(name, K::Int, None, help);
    let float = |name, help| p(name, K::Float, None, help);
    vec![
        ParamInfo {
            options: &["advection", "reaction", "poisson"],
            ..p("family", K::Str, None, "the PDE family")
        },
        float(
            "context",
            "the family's parameter: β, ρ or the forcing's sharpness",
        ),
        p(
            "arms",
            K::Str,
            None,
            "interface terms: nine 0/1 digits (solution, average, residual, residual_continuity, flux, normal_second, residual_gradient, tangential, tangential_second), one arm or one per phase, comma-separated",
        ),
        ParamInfo {
            options: &["warmup", "play", "test"],
            ..p("stage", K::Str, None, "the protocol stage of the round")
        },
        int("round", "the round (or test context) number"),
        p(
            "hidden",
            K::Str,
            None,
            "hidden widths of each subdomain's network, e.g. `20,20`",
        ),
        int("boundary_points", "boundary points per subdomain"),
        int("collocation_points", "collocation points per subdomain"),
        int("interface_points", "points on the interface"),
        float("boundary_weight", "boundary loss weight"),
        float("residual_weight", "residual loss weight"),
        float("interface_weight", "weight of the selected interface terms"),
        int("adam_steps", "full-batch Adam steps (0 skips the phase)"),
        float("adam_learning_rate", "Adam's learning rate"),
        int(
            "lbfgs_iterations",
            "L-BFGS iterations after Adam (0 skips the phase)",
        ),
        int("lbfgs_history", "L-BFGS curvature pairs kept"),
    ]
}

/// What a `nas` trial's hyperparameters are (set by the `nas` sweep kind from its `nas:`
/// section; a user does not write them).
fn nas_params() -> Vec<ParamInfo> {
    use ValueKind as K;
    let int = |name, help| p(name, K::Int, None, help);
    vec![
        ParamInfo {
            options: &["supernet", "evaluate"],
            ..p(
                "role",
                K::Str,
                None,
                "train the super-network, or evaluate sub-networks of it",
            )
        },
        p(
            "supernet",
            K::Str,
            None,
            "the super-network's family and elastic choices, as JSON",
        ),
        int(
            "generation",
            "the search generation that asked for the sub-networks",
        ),
        int("shard", "the validation shard to evaluate on"),
        int("shards", "validation shards in all"),
        p(
            "subnets",
            K::Str,
            None,
            "the sub-networks to evaluate: `id:g.g.g;…`",
        ),
        int("epochs", "super-network training epochs"),
        p("learning_rate", K::Float, None, "Adam's learning rate"),
        int("batch_size", "rows per training step"),
        int(
            "random_subnets",
            "random sub-networks per step besides the largest and smallest",
        ),
        int("latency_batch", "rows per timed forward pass"),
        int("latency_warmup", "untimed passes before timing"),
        int(
            "latency_repeats",
            "timed passes (their median is the latency)",
        ),
    ]
}

/// What a fractal tile trial's hyperparameters are (set by the `fractal` sweep kind from
/// its `fractal:` section; a user does not write them).
fn fractal_tile_params() -> Vec<ParamInfo> {
    use ValueKind as K;
    let int = |name, help| p(name, K::Int, None, help);
    let float = |name, help| p(name, K::Float, None, help);
    vec![
        int("frame", "zoom frame (0 for the first)"),
        int("tile_col", "tile column in the frame"),
        int("tile_row", "tile row in the frame"),
        int("col0", "first grid column of the tile"),
        int("row0", "first grid row of the tile"),
        int("cols", "grid columns in the tile"),
        int("rows", "grid rows in the tile"),
        float(
            "x_lo",
            "log10 input-layer learning rate at the frame's first column",
        ),
        float("x_hi", "… at its last column"),
        float(
            "y_lo",
            "log10 output-layer learning rate at the frame's first row",
        ),
        float("y_hi", "… at its last row"),
        int("res_x", "grid columns of the frame"),
        int("res_y", "grid rows of the frame"),
        ParamInfo {
            options: &["tanh", "relu", "identity"],
            ..p("activation", K::Str, None, "hidden nonlinearity")
        },
        ParamInfo {
            options: &["full_batch", "minibatch", "single_point"],
            ..p("variant", K::Str, None, "how each step's gradient is taken")
        },
        int("n", "input width"),
        int("width", "hidden width"),
        int("dataset_size", "training examples"),
        int("batch_size", "examples per minibatch step"),
        int("train_steps", "gradient-descent steps per point"),
        ParamInfo {
            options: &["f64", "f32"],
            ..p("precision", K::Str, None, "arithmetic precision")
        },
        int("problem_seed", "seed of the shared weights and data"),
    ]
}

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
                r(
                    1.0,
                    4096.0,
                    p(
                        "sync_every",
                        K::Int,
                        Some(Int(1)),
                        "batches per optimizer step: their gradients are summed, and a data-parallel trial's replicas exchange once per step",
                    ),
                ),
            ],
            metrics: &["train_loss", "train_accuracy", "val_loss", "val_accuracy"],
            needs_dataset: true,
            data_parallel: true,
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
            data_parallel: false,
        },
        ProgramInfo {
            name: FRACTAL_TILE,
            description: "one tile of a fractal trainability grid (kind: fractal): thousands of tiny networks trained at once",
            params: fractal_tile_params(),
            metrics: &[
                "points_done",
                "trainable_fraction",
                "boundary_fraction",
                "network_steps_per_s",
            ],
            needs_dataset: false,
            data_parallel: false,
        },
        ProgramInfo {
            name: NAS,
            description: "a nas sweep's trial (kind: nas): trains the weight-sharing super-network, or measures sub-networks sliced out of it",
            params: nas_params(),
            metrics: &[
                "train_loss",
                "val_accuracy",
                "val_accuracy_smallest",
                "evaluated",
                "best_accuracy",
            ],
            needs_dataset: true,
            data_parallel: true,
        },
        ProgramInfo {
            name: METALIC,
            description: "a metalic sweep's round (kind: metalic): a two-subdomain PINN trained with the chosen interface conditions",
            params: metalic_params(),
            metrics: &["loss", "error", "reward"],
            needs_dataset: false,
            data_parallel: false,
        },
    ]
}
