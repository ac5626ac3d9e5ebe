//! The `fractal` sweep kind: a dense grid of per-layer learning rates, cut into tiles
//! that workers train as one batched program each, optionally followed by a zoom
//! sequence whose windows centre on where the trainability boundary is densest.
//!
//! This module owns the sweep file's `fractal:` section, the tile geometry (what a tile
//! trial's hyperparameters mean), the [`FractalSearcher`], and the turning of a tile's
//! values into raster rows. The analysis of a raster is in [`crate::fractal`].

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::fractal::{BoxCount, Raster, boundary, box_count, densest_half_window};
use crate::rng::derive_seed;
use crate::searcher::{Ask, Searcher};
use crate::space::{Domain, ParamValue, Params, Scale, SearchSpace};
use crate::spec::Problem;
use crate::trial::{Artifact, ArtifactColumn, TrialId, TrialOutcome, TrialRequest};

/// The program that trains a tile.
pub const TILE_PROGRAM: &str = "fractal-tile";
/// The results table of raster rows.
pub const RASTER_TABLE: &str = "raster";
/// Box sizes the dimension is estimated over.
pub const BOX_SIZES: usize = 10;

/// The `fractal:` section as written.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFractal {
    /// Hidden nonlinearity: `tanh` (tanh(√2·z), default), `relu` (√2·relu(z)) or
    /// `identity` (a deep linear network).
    #[serde(default)]
    pub activation: Option<String>,
    /// `full_batch` (default), `minibatch` (batches drawn with replacement, the same
    /// sequence for every point) or `single_point` (one training example).
    #[serde(default)]
    pub variant: Option<String>,
    /// Input width n (default 16).
    #[serde(default)]
    pub n: Option<u32>,
    /// Hidden width (default 16).
    #[serde(default)]
    pub width: Option<u32>,
    /// Training examples (default: the parameter count n·width + width for tanh and
    /// relu, n for identity, 1 for `single_point`).
    #[serde(default)]
    pub dataset_size: Option<u32>,
    /// Examples per step for `minibatch` (default 16).
    #[serde(default)]
    pub batch_size: Option<u32>,
    /// Gradient-descent steps per grid point (default 500).
    #[serde(default)]
    pub steps: Option<u32>,
    /// `f64` (default) or `f32`.
    #[serde(default)]
    pub precision: Option<String>,
    /// The first frame's window in log10 learning rate: `x` for the input layer, `y` for
    /// the output layer (default `{ x: [-3, 6], y: [-3, 6] }`, the overview).
    #[serde(default)]
    pub window: Option<RawWindow>,
    /// Grid points per side, `N` or `[columns, rows]` (default 256).
    #[serde(default)]
    pub resolution: Option<RawResolution>,
    /// Grid points per tile side: one tile is one trial (default 64).
    #[serde(default)]
    pub tile: Option<u32>,
    /// A zoom sequence: each frame half the width of the one before, centred on where
    /// the previous frame's boundary is densest.
    #[serde(default)]
    pub zoom: Option<RawZoom>,
}

/// Grid points per side.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawResolution {
    /// The same on both axes.
    Square(u32),
    /// `[columns, rows]`.
    Sides([u32; 2]),
}

/// A window in log10 learning rate.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    /// `[low, high]` of log10 of the input layer's learning rate.
    pub x: [f64; 2],
    /// `[low, high]` of log10 of the output layer's learning rate.
    pub y: [f64; 2],
}

/// Zoom settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawZoom {
    /// Frames in the sequence, the first one included (at least 2).
    pub frames: u32,
}

/// The hidden nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `tanh(√2·z)`.
    Tanh,
    /// `√2·relu(z)`.
    Relu,
    /// `z`.
    Identity,
}

impl Activation {
    /// The name as written.
    pub fn as_str(&self) -> &'static str {
        match self {
            Activation::Tanh => "tanh",
            Activation::Relu => "relu",
            Activation::Identity => "identity",
        }
    }

    /// Parses a name as written.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tanh" => Some(Activation::Tanh),
            "relu" => Some(Activation::Relu),
            "identity" => Some(Activation::Identity),
            _ => None,
        }
    }
}

/// How each step's gradient is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// Full-batch gradient descent.
    FullBatch,
    /// Minibatches drawn with replacement (the full-batch loss is tracked).
    Minibatch,
    /// One training example.
    SinglePoint,
}

impl Variant {
    /// The name as written.
    pub fn as_str(&self) -> &'static str {
        match self {
            Variant::FullBatch => "full_batch",
            Variant::Minibatch => "minibatch",
            Variant::SinglePoint => "single_point",
        }
    }

    /// Parses a name as written.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "full_batch" => Some(Variant::FullBatch),
            "minibatch" => Some(Variant::Minibatch),
            "single_point" => Some(Variant::SinglePoint),
            _ => None,
        }
    }
}

/// A window in log10 learning rate, endpoints included.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// log10 of the input layer's learning rate at the first column.
    pub x_lo: f64,
    /// At the last column.
    pub x_hi: f64,
    /// log10 of the output layer's learning rate at the first row.
    pub y_lo: f64,
    /// At the last row.
    pub y_hi: f64,
}

impl Window {
    /// log10 learning rates of column `col` and row `row` of a `res_x × res_y` grid.
    pub fn at(&self, col: usize, row: usize, res_x: usize, res_y: usize) -> (f64, f64) {
        let lerp = |lo: f64, hi: f64, i: usize, n: usize| {
            if n <= 1 {
                (lo + hi) / 2.0
            } else {
                lo + (hi - lo) * i as f64 / (n - 1) as f64
            }
        };
        (
            lerp(self.x_lo, self.x_hi, col, res_x),
            lerp(self.y_lo, self.y_hi, row, res_y),
        )
    }

    /// The window half as wide and high, centred at pixel coordinates `(cx, cy)` of a
    /// `res_x × res_y` grid, moved inside this window if it would stick out.
    pub fn zoomed(&self, cx: f64, cy: f64, res_x: usize, res_y: usize) -> Window {
        let half = |lo: f64, hi: f64, c: f64, n: usize| {
            let centre = lo + (hi - lo) * c / (n.max(2) - 1) as f64;
            let r = (hi - lo) / 4.0;
            let centre = centre.clamp(lo + r, hi - r);
            (centre - r, centre + r)
        };
        let (x_lo, x_hi) = half(self.x_lo, self.x_hi, cx, res_x);
        let (y_lo, y_hi) = half(self.y_lo, self.y_hi, cy, res_y);
        Window {
            x_lo,
            x_hi,
            y_lo,
            y_hi,
        }
    }
}

/// A validated `fractal:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FractalSpec {
    /// Nonlinearity.
    pub activation: Activation,
    /// Gradient variant.
    pub variant: Variant,
    /// Input width.
    pub n: u32,
    /// Hidden width.
    pub width: u32,
    /// Training examples.
    pub dataset_size: u32,
    /// Examples per minibatch step (the dataset size for the other variants).
    pub batch_size: u32,
    /// Steps per point.
    pub steps: u32,
    /// `f64` or `f32`.
    pub precision: String,
    /// The first frame's window.
    pub window: Window,
    /// Columns.
    pub res_x: u32,
    /// Rows.
    pub res_y: u32,
    /// Points per tile side.
    pub tile: u32,
    /// Frames (1 without zoom).
    pub frames: u32,
}

/// The largest resolution per side.
pub const MAX_RESOLUTION: u32 = 16_384;

impl RawFractal {
    /// Checks the section; problems are located under `fractal`.
    pub fn validate(&self) -> Result<FractalSpec, Problem> {
        let bad = |key: &str, message: String, hint: &str| {
            Problem::new(&["fractal", key], message, hint.to_owned())
        };
        let activation = match self.activation.as_deref() {
            None => Activation::Tanh,
            Some(s) => Activation::parse(s).ok_or_else(|| {
                bad(
                    "activation",
                    format!("unknown activation `{s}`"),
                    "use `tanh`, `relu` or `identity`",
                )
            })?,
        };
        let variant = match self.variant.as_deref() {
            None => Variant::FullBatch,
            Some(s) => Variant::parse(s).ok_or_else(|| {
                bad(
                    "variant",
                    format!("unknown variant `{s}`"),
                    "use `full_batch`, `minibatch` or `single_point`",
                )
            })?,
        };
        let positive = |key: &str, v: Option<u32>, default: u32, max: u32| {
            let v = v.unwrap_or(default);
            if v == 0 || v > max {
                Err(bad(
                    key,
                    format!("fractal.{key} is {v}"),
                    &format!("use a whole number from 1 to {max}"),
                ))
            } else {
                Ok(v)
            }
        };
        let n = positive("n", self.n, 16, 4096)?;
        let width = positive("width", self.width, 16, 4096)?;
        let default_size = match (variant, activation) {
            (Variant::SinglePoint, _) => 1,
            (_, Activation::Identity) => n,
            _ => n * width + width,
        };
        let dataset_size = positive("dataset_size", self.dataset_size, default_size, 1 << 20)?;
        if variant == Variant::SinglePoint && dataset_size != 1 {
            return Err(bad(
                "dataset_size",
                format!("the single_point variant trains on one example, not {dataset_size}"),
                "remove dataset_size, or use variant full_batch",
            ));
        }
        if self.batch_size.is_some() && variant != Variant::Minibatch {
            return Err(bad(
                "batch_size",
                format!(
                    "batch_size is only used by the minibatch variant, not {}",
                    variant.as_str()
                ),
                "remove it, or set `variant: minibatch`",
            ));
        }
        let batch_size = match variant {
            Variant::Minibatch => positive("batch_size", self.batch_size, 16, 1 << 20)?,
            _ => dataset_size,
        };
        let steps = positive("steps", self.steps, 500, 1_000_000)?;
        if (steps as usize) < crate::fractal::TAIL {
            return Err(bad(
                "steps",
                format!(
                    "fractal.steps is {steps}, fewer than the {} final steps that decide convergence",
                    crate::fractal::TAIL
                ),
                "use at least 20 steps (the paper uses 500)",
            ));
        }
        let precision = match self.precision.as_deref() {
            None | Some("f64") => "f64",
            Some("f32") => "f32",
            Some(s) => {
                return Err(bad(
                    "precision",
                    format!("unknown precision `{s}`"),
                    "use `f64` (the paper's) or `f32`",
                ));
            }
        }
        .to_owned();
        let window = match &self.window {
            None => Window {
                x_lo: -3.0,
                x_hi: 6.0,
                y_lo: -3.0,
                y_hi: 6.0,
            },
            Some(w) => {
                for (axis, [lo, hi]) in [("x", w.x), ("y", w.y)] {
                    if !(lo.is_finite() && hi.is_finite() && lo < hi && lo > -30.0 && hi < 30.0) {
                        return Err(Problem::new(
                            &["fractal", "window", axis],
                            format!("window.{axis} is [{lo}, {hi}]"),
                            "give [low, high] in log10 learning rate with low < high, e.g. [-3, 6] for 10^-3 to 10^6",
                        ));
                    }
                }
                Window {
                    x_lo: w.x[0],
                    x_hi: w.x[1],
                    y_lo: w.y[0],
                    y_hi: w.y[1],
                }
            }
        };
        let (res_x, res_y) = match &self.resolution {
            None => (256, 256),
            Some(v) => {
                let (x, y) = match v {
                    RawResolution::Square(s) => (*s, *s),
                    RawResolution::Sides([x, y]) => (*x, *y),
                };
                let ok = |s: u32| (2..=MAX_RESOLUTION).contains(&s);
                (ok(x) && ok(y)).then_some((x, y)).ok_or_else(|| {
                    bad(
                        "resolution",
                        "invalid resolution".to_owned(),
                        &format!(
                            "give points per side, `N` or `[columns, rows]`, each from 2 to {MAX_RESOLUTION}"
                        ),
                    )
                })?
            }
        };
        let tile = positive("tile", self.tile, 64, MAX_RESOLUTION)?;
        let frames = match &self.zoom {
            None => 1,
            Some(z) if (2..=40).contains(&z.frames) => z.frames,
            Some(z) => {
                return Err(Problem::new(
                    &["fractal", "zoom", "frames"],
                    format!("zoom.frames is {}", z.frames),
                    "use 2 to 40 frames (the first included), or remove `zoom`",
                ));
            }
        };
        Ok(FractalSpec {
            activation,
            variant,
            n,
            width,
            dataset_size,
            batch_size,
            steps,
            precision,
            window,
            res_x,
            res_y,
            tile,
            frames,
        })
    }
}

impl FractalSpec {
    /// Tiles per row and per column of a frame.
    pub fn tiles(&self) -> (u32, u32) {
        (
            self.res_x.div_ceil(self.tile),
            self.res_y.div_ceil(self.tile),
        )
    }

    /// Tiles (trials) over every frame.
    pub fn trials(&self) -> u64 {
        let (tx, ty) = self.tiles();
        u64::from(tx) * u64::from(ty) * u64::from(self.frames)
    }

    /// The hyperparameters a tile trial carries, as a search space (so the trials table
    /// has a column for each): the tile's place, its frame's window, and the training
    /// settings (fixed).
    pub fn space(&self) -> SearchSpace {
        let int = |high: u32| Domain::Int {
            low: 0,
            high: i64::from(high),
            scale: Scale::Linear,
            grid: None,
        };
        let float = Domain::Float {
            low: -30.0,
            high: 30.0,
            scale: Scale::Linear,
            grid: None,
        };
        let fixed = |v: ParamValue| Domain::Fixed(v);
        let mut params = BTreeMap::new();
        for (name, d) in [
            ("frame", int(self.frames)),
            ("tile_col", int(self.res_x)),
            ("tile_row", int(self.res_y)),
            ("col0", int(self.res_x)),
            ("row0", int(self.res_y)),
            ("cols", int(self.tile)),
            ("rows", int(self.tile)),
            ("x_lo", float.clone()),
            ("x_hi", float.clone()),
            ("y_lo", float.clone()),
            ("y_hi", float.clone()),
            ("res_x", fixed(ParamValue::Int(i64::from(self.res_x)))),
            ("res_y", fixed(ParamValue::Int(i64::from(self.res_y)))),
            (
                "activation",
                fixed(ParamValue::Str(self.activation.as_str().into())),
            ),
            (
                "variant",
                fixed(ParamValue::Str(self.variant.as_str().into())),
            ),
            ("n", fixed(ParamValue::Int(i64::from(self.n)))),
            ("width", fixed(ParamValue::Int(i64::from(self.width)))),
            (
                "dataset_size",
                fixed(ParamValue::Int(i64::from(self.dataset_size))),
            ),
            (
                "batch_size",
                fixed(ParamValue::Int(i64::from(self.batch_size))),
            ),
            ("train_steps", fixed(ParamValue::Int(i64::from(self.steps)))),
            ("precision", fixed(ParamValue::Str(self.precision.clone()))),
            (
                "problem_seed",
                Domain::Int {
                    low: 0,
                    high: i64::MAX,
                    scale: Scale::Linear,
                    grid: None,
                },
            ),
        ] {
            params.insert(name.to_owned(), d);
        }
        SearchSpace { params }
    }
}

/// One tile of one frame: what a tile trial's hyperparameters say.
#[derive(Debug, Clone, PartialEq)]
pub struct Tile {
    /// Frame (0 for the first).
    pub frame: u32,
    /// First column of the tile in the frame.
    pub col0: u32,
    /// First row.
    pub row0: u32,
    /// Columns in the tile.
    pub cols: u32,
    /// Rows in the tile.
    pub rows: u32,
    /// Columns of the frame.
    pub res_x: u32,
    /// Rows of the frame.
    pub res_y: u32,
    /// The frame's window.
    pub window: Window,
}

impl Tile {
    /// Reads a tile trial's hyperparameters.
    pub fn from_params(p: &Params) -> Result<Tile, String> {
        let int = |k: &str| {
            p.get(k)
                .and_then(ParamValue::as_i64)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| format!("tile parameter `{k}` is missing or not a whole number"))
        };
        let float = |k: &str| {
            p.get(k)
                .and_then(ParamValue::as_f64)
                .ok_or_else(|| format!("tile parameter `{k}` is missing or not a number"))
        };
        Ok(Tile {
            frame: int("frame")?,
            col0: int("col0")?,
            row0: int("row0")?,
            cols: int("cols")?,
            rows: int("rows")?,
            res_x: int("res_x")?,
            res_y: int("res_y")?,
            window: Window {
                x_lo: float("x_lo")?,
                x_hi: float("x_hi")?,
                y_lo: float("y_lo")?,
                y_hi: float("y_hi")?,
            },
        })
    }

    /// Every point of the tile, row-major: its column and row in the frame and its
    /// log10 learning rates `(input layer, output layer)`.
    pub fn points(&self) -> Vec<(u32, u32, f64, f64)> {
        let mut out = Vec::with_capacity((self.cols * self.rows) as usize);
        for y in self.row0..self.row0 + self.rows {
            for x in self.col0..self.col0 + self.cols {
                let (lx, ly) = self.window.at(
                    x as usize,
                    y as usize,
                    self.res_x as usize,
                    self.res_y as usize,
                );
                out.push((x, y, lx, ly));
            }
        }
        out
    }

    /// The `(lr_input, lr_output)` of every point, row-major within the tile.
    pub fn learning_rates(&self) -> Vec<(f64, f64)> {
        self.points()
            .into_iter()
            .map(|(_, _, lx, ly)| (10f64.powf(lx), 10f64.powf(ly)))
            .collect()
    }
}

/// The tile trials' hyperparameters.
fn tile_params(spec: &FractalSpec, seed: u64, frame: u32, window: &Window, index: u32) -> Params {
    let (tx, _) = spec.tiles();
    let (tc, tr) = (index % tx, index / tx);
    let (col0, row0) = (tc * spec.tile, tr * spec.tile);
    let cols = spec.tile.min(spec.res_x - col0);
    let rows = spec.tile.min(spec.res_y - row0);
    let int = |v: u32| ParamValue::Int(i64::from(v));
    let mut p = Params::new();
    for (k, v) in [
        ("frame", int(frame)),
        ("tile_col", int(tc)),
        ("tile_row", int(tr)),
        ("col0", int(col0)),
        ("row0", int(row0)),
        ("cols", int(cols)),
        ("rows", int(rows)),
        ("x_lo", ParamValue::Float(window.x_lo)),
        ("x_hi", ParamValue::Float(window.x_hi)),
        ("y_lo", ParamValue::Float(window.y_lo)),
        ("y_hi", ParamValue::Float(window.y_hi)),
        ("res_x", int(spec.res_x)),
        ("res_y", int(spec.res_y)),
        (
            "activation",
            ParamValue::Str(spec.activation.as_str().into()),
        ),
        ("variant", ParamValue::Str(spec.variant.as_str().into())),
        ("n", int(spec.n)),
        ("width", int(spec.width)),
        ("dataset_size", int(spec.dataset_size)),
        ("batch_size", int(spec.batch_size)),
        ("train_steps", int(spec.steps)),
        ("precision", ParamValue::Str(spec.precision.clone())),
        ("problem_seed", ParamValue::Int((seed >> 1) as i64)),
    ] {
        p.insert(k.to_owned(), v);
    }
    p
}

/// Frame after frame, tile after tile (row-major). A frame's tiles are all handed out
/// at once; the next frame waits until every tile of the one before has ended, because
/// its window centres on the densest boundary of that frame. A tile that failed for good
/// leaves its points unknown (NaN), never a wrong sign.
///
/// Properties: the asks depend only on the spec, the seed and the values told, so replay
/// after a restart asks for the same tiles; every tile of every frame is asked for once.
#[derive(Debug, Clone)]
pub struct FractalSearcher {
    spec: FractalSpec,
    seed: u64,
    frame: u32,
    window: Window,
    next_tile: u32,
    told_in_frame: u32,
    issued: u64,
    /// Tiles handed out and not yet told: trial → tile.
    open: BTreeMap<TrialId, Tile>,
    /// The current frame's values, row-major, NaN until told.
    values: Vec<f64>,
    /// Windows of the frames started so far.
    windows: Vec<Window>,
}

impl FractalSearcher {
    /// A searcher over `spec`'s frames; `seed` is the sweep's.
    pub fn new(spec: FractalSpec, seed: u64) -> Self {
        let window = spec.window;
        let values = vec![f64::NAN; (spec.res_x * spec.res_y) as usize];
        Self {
            spec,
            seed,
            frame: 0,
            window,
            next_tile: 0,
            told_in_frame: 0,
            issued: 0,
            open: BTreeMap::new(),
            values,
            windows: vec![window],
        }
    }

    /// The window of every frame started so far.
    pub fn windows(&self) -> &[Window] {
        &self.windows
    }

    fn tiles_per_frame(&self) -> u32 {
        let (tx, ty) = self.spec.tiles();
        tx * ty
    }
}

impl Searcher for FractalSearcher {
    fn ask(&mut self) -> Ask {
        if self.next_tile == self.tiles_per_frame() {
            if self.frame + 1 >= self.spec.frames {
                return Ask::Done;
            }
            if self.told_in_frame < self.tiles_per_frame() {
                return Ask::Wait;
            }
            // Every tile of this frame is in: zoom on its densest boundary.
            let raster = Raster {
                width: self.spec.res_x as usize,
                height: self.spec.res_y as usize,
                values: std::mem::take(&mut self.values),
            };
            let (w, h, edges) = boundary(&raster);
            let (cx, cy) = densest_half_window(w, h, &edges);
            // Cell (x, y) lies between pixels x and x + 1: its centre is pixel x + 0.5.
            self.window = self
                .window
                .zoomed(cx + 0.5, cy + 0.5, raster.width, raster.height);
            self.windows.push(self.window);
            self.values = vec![f64::NAN; raster.width * raster.height];
            self.frame += 1;
            self.next_tile = 0;
            self.told_in_frame = 0;
        }
        let trial_id = self.issued;
        let params = tile_params(
            &self.spec,
            self.seed,
            self.frame,
            &self.window,
            self.next_tile,
        );
        if let Ok(tile) = Tile::from_params(&params) {
            self.open.insert(trial_id, tile);
        }
        self.next_tile += 1;
        self.issued += 1;
        Ask::Trial(TrialRequest {
            trial_id,
            params,
            seed: derive_seed(self.seed, trial_id),
        })
    }

    fn tell(&mut self, outcome: &TrialOutcome) {
        let Some(tile) = self.open.remove(&outcome.trial_id) else {
            return;
        };
        if tile.frame != self.frame {
            return;
        }
        self.told_in_frame += 1;
        let values = outcome
            .artifacts
            .iter()
            .find(|a| a.table == RASTER_TABLE)
            .and_then(|a| a.f64s("value"));
        if let Some(v) = values.filter(|v| v.len() == (tile.cols * tile.rows) as usize) {
            for r in 0..tile.rows {
                for c in 0..tile.cols {
                    let at = ((tile.row0 + r) * self.spec.res_x + tile.col0 + c) as usize;
                    self.values[at] = v[(r * tile.cols + c) as usize];
                }
            }
        }
    }

    fn issued(&self) -> u64 {
        self.issued
    }
}

/// The raster rows of a tile: the worker's per-point `value` and `diverged_at` columns,
/// with each point's place and learning rates added. `None` if the artifact does not fit
/// the tile.
pub fn raster_rows(params: &Params, artifact: &Artifact) -> Option<Artifact> {
    let tile = Tile::from_params(params).ok()?;
    let values = artifact.f64s("value")?;
    let diverged = artifact.i64s("diverged_at")?;
    let n = (tile.cols * tile.rows) as usize;
    if values.len() != n || diverged.len() != n {
        return None;
    }
    let mut cols = BTreeMap::new();
    let points = tile.points();
    let xi: Vec<i64> = points.iter().map(|p| i64::from(p.0)).collect();
    let yi: Vec<i64> = points.iter().map(|p| i64::from(p.1)).collect();
    let lx: Vec<f64> = points.iter().map(|p| p.2).collect();
    let ly: Vec<f64> = points.iter().map(|p| p.3).collect();
    let lr = |v: &[f64]| v.iter().map(|l| 10f64.powf(*l)).collect::<Vec<f64>>();
    cols.insert(
        "frame".to_owned(),
        ArtifactColumn::I64(vec![i64::from(tile.frame); n]),
    );
    cols.insert("lr_input".to_owned(), ArtifactColumn::F64(lr(&lx)));
    cols.insert("lr_output".to_owned(), ArtifactColumn::F64(lr(&ly)));
    cols.insert("log10_lr_input".to_owned(), ArtifactColumn::F64(lx));
    cols.insert("log10_lr_output".to_owned(), ArtifactColumn::F64(ly));
    cols.insert("x".to_owned(), ArtifactColumn::I64(xi));
    cols.insert("y".to_owned(), ArtifactColumn::I64(yi));
    cols.insert(
        "converged".to_owned(),
        ArtifactColumn::Bool(values.iter().map(|v| *v < 0.0).collect()),
    );
    cols.insert("value".to_owned(), ArtifactColumn::F64(values.to_vec()));
    cols.insert(
        "diverged_at".to_owned(),
        ArtifactColumn::I64(diverged.to_vec()),
    );
    Some(Artifact {
        table: RASTER_TABLE.to_owned(),
        columns: cols,
    })
}

/// The analysis of one frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameSummary {
    /// Frame number.
    pub frame: u32,
    /// Its window.
    pub window: Window,
    /// Points that trained (negative value).
    pub trainable: u64,
    /// Points with a value (tiles that failed for good leave theirs out).
    pub points: u64,
    /// Boundary cells (2×2 blocks holding both signs).
    pub boundary_cells: u64,
    /// Box sizes in grid points.
    pub box_sizes: Vec<usize>,
    /// Boxes holding boundary but not only boundary, per size.
    pub box_counts: Vec<usize>,
    /// Slopes between neighbouring sizes.
    pub slopes: Vec<f64>,
    /// The least-squares box-counting dimension (`None` without a boundary).
    pub dimension: Option<f64>,
}

/// The analysis of a whole fractal sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FractalSummary {
    /// Per frame.
    pub frames: Vec<FrameSummary>,
    /// The median of every frame's slopes (the paper's estimate for a zoom sequence).
    pub pooled_dimension: Option<f64>,
}

/// Analyses frame rasters (each `res_x × res_y`, row-major, NaN where unknown; NaN
/// counts as trainable for the boundary only if nothing else is known, so a failed tile
/// shows as a hole, not as boundary).
pub fn summarise(frames: &[(Window, Raster)]) -> FractalSummary {
    let mut out = Vec::new();
    let mut counts: Vec<BoxCount> = Vec::new();
    for (k, (window, r)) in frames.iter().enumerate() {
        let known = r.values.iter().filter(|v| !v.is_nan()).count() as u64;
        let trainable = r.values.iter().filter(|v| **v < 0.0).count() as u64;
        let (_, _, edges) = boundary(r);
        let bc = box_count(r, BOX_SIZES);
        if let Some(b) = &bc {
            counts.push(b.clone());
        }
        out.push(FrameSummary {
            frame: k as u32,
            window: *window,
            trainable,
            points: known,
            boundary_cells: edges.iter().filter(|e| **e).count() as u64,
            box_sizes: bc.as_ref().map(|b| b.sizes.clone()).unwrap_or_default(),
            box_counts: bc.as_ref().map(|b| b.counts.clone()).unwrap_or_default(),
            slopes: bc.as_ref().map(|b| b.slopes.clone()).unwrap_or_default(),
            dimension: bc.map(|b| b.dimension),
        });
    }
    FractalSummary {
        frames: out,
        pooled_dimension: crate::fractal::pooled_dimension(&counts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trial::TrialStatus;

    fn spec(yaml: &str) -> FractalSpec {
        let raw: RawFractal = serde_yaml::from_str(yaml).unwrap();
        raw.validate().unwrap()
    }

    fn tile_outcome(trial_id: TrialId, t: &Tile, f: impl Fn(f64, f64) -> f64) -> TrialOutcome {
        let values: Vec<f64> = t.points().iter().map(|p| f(p.2, p.3)).collect();
        let n = values.len();
        TrialOutcome {
            trial_id,
            status: TrialStatus::Finished,
            objective: None,
            steps: 1,
            artifacts: vec![Artifact {
                table: RASTER_TABLE.into(),
                columns: BTreeMap::from([
                    ("value".to_owned(), ArtifactColumn::F64(values)),
                    ("diverged_at".to_owned(), ArtifactColumn::I64(vec![-1; n])),
                ]),
            }],
        }
    }

    #[test]
    fn defaults_follow_the_paper() {
        let s = spec("{}");
        assert_eq!((s.n, s.width, s.dataset_size, s.steps), (16, 16, 272, 500));
        assert_eq!(s.precision, "f64");
        assert_eq!(spec("{ activation: identity }").dataset_size, 16);
        assert_eq!(spec("{ variant: single_point }").dataset_size, 1);
        assert_eq!(spec("{ variant: minibatch }").batch_size, 16);
        let s = spec("{ resolution: [100, 50], tile: 32 }");
        assert_eq!(s.tiles(), (4, 2));
        assert_eq!(s.trials(), 8);
    }

    #[test]
    fn tiles_cover_every_point_once_and_zoom_halves_the_window() {
        let s = spec("{ resolution: [40, 30], tile: 16, zoom: { frames: 3 } }");
        let mut searcher = FractalSearcher::new(s.clone(), 7);
        let mut seen = vec![0u32; 40 * 30];
        let mut tiles = Vec::new();
        // Frame 0: boundary along x = 2 (log10 lr), so the zoom moves to it.
        while let Ask::Trial(t) = searcher.ask() {
            let tile = Tile::from_params(&t.params).unwrap();
            for r in 0..tile.rows {
                for c in 0..tile.cols {
                    seen[((tile.row0 + r) * 40 + tile.col0 + c) as usize] += 1;
                }
            }
            tiles.push((t.trial_id, tile));
        }
        assert!(seen.iter().all(|n| *n == 1), "{seen:?}");
        assert_eq!(tiles.len(), 3 * 2);
        // The next frame waits for every tile of this one.
        assert_eq!(searcher.ask(), Ask::Wait);
        for (id, t) in &tiles {
            searcher.tell(&tile_outcome(*id, t, |x, _| x - 2.0));
        }
        let Ask::Trial(t) = searcher.ask() else {
            panic!("frame 1 should start");
        };
        let w1 = Tile::from_params(&t.params).unwrap().window;
        assert!((w1.x_hi - w1.x_lo - 4.5).abs() < 1e-12, "{w1:?}");
        assert!(
            w1.x_lo < 2.0 && w1.x_hi > 2.0,
            "centred on the boundary: {w1:?}"
        );
        assert_eq!(searcher.windows().len(), 2);
        let mut n = 1;
        while let Ask::Trial(_) = searcher.ask() {
            n += 1;
        }
        assert_eq!(n, 6);
        assert_eq!(searcher.issued(), 12);
    }

    /// Runs a whole zoom sequence, telling each tile as soon as it is asked for; returns
    /// the requests and outcomes in order.
    fn run(s: &FractalSpec, seed: u64) -> Vec<(TrialRequest, TrialOutcome)> {
        let mut searcher = FractalSearcher::new(s.clone(), seed);
        let mut out = Vec::new();
        while let Ask::Trial(t) = searcher.ask() {
            let tile = Tile::from_params(&t.params).unwrap();
            // A wavy boundary, so the zoom has somewhere particular to go.
            let o = tile_outcome(t.trial_id, &tile, |x, y| y - 1.5 - (3.0 * x).sin());
            searcher.tell(&o);
            out.push((t, o));
        }
        out
    }

    #[test]
    fn replay_after_a_restart_asks_for_the_same_tiles_and_windows() {
        use crate::searcher::ReplayEvent;
        let s = spec("{ resolution: 24, tile: 10, zoom: { frames: 4 } }");
        let full = run(&s, 3);
        assert_eq!(full.len(), 4 * 9);
        for cut in [0, 5, 9, 10, 20, 35] {
            let events: Vec<ReplayEvent> = full[..cut]
                .iter()
                .flat_map(|(t, o)| [ReplayEvent::Issued(t.clone()), ReplayEvent::Told(o.clone())])
                .collect();
            let mut rebuilt = FractalSearcher::new(s.clone(), 3);
            rebuilt.replay(&events).unwrap();
            let mut rest = Vec::new();
            while let Ask::Trial(t) = rebuilt.ask() {
                let tile = Tile::from_params(&t.params).unwrap();
                rebuilt.tell(&tile_outcome(t.trial_id, &tile, |x, y| {
                    y - 1.5 - (3.0 * x).sin()
                }));
                rest.push(t);
            }
            let expected: Vec<TrialRequest> = full[cut..].iter().map(|(t, _)| t.clone()).collect();
            assert_eq!(rest, expected, "cut at {cut}");
        }
        // Each frame's window is half the one before and inside it.
        let windows: Vec<Window> = full
            .iter()
            .map(|(t, _)| Tile::from_params(&t.params).unwrap().window)
            .collect();
        for pair in windows.windows(2).filter(|w| w[0] != w[1]) {
            let (a, b) = (pair[0], pair[1]);
            assert!(((b.x_hi - b.x_lo) * 2.0 - (a.x_hi - a.x_lo)).abs() < 1e-9);
            assert!(b.x_lo >= a.x_lo - 1e-12 && b.x_hi <= a.x_hi + 1e-12);
            assert!(b.y_lo >= a.y_lo - 1e-12 && b.y_hi <= a.y_hi + 1e-12);
        }
    }

    #[test]
    fn raster_rows_place_every_point() {
        let s = spec("{ resolution: 8, tile: 4 }");
        let mut searcher = FractalSearcher::new(s, 1);
        let Ask::Trial(t) = searcher.ask() else {
            panic!()
        };
        let Ask::Trial(t2) = searcher.ask() else {
            panic!()
        };
        let tile = Tile::from_params(&t2.params).unwrap();
        assert_eq!((tile.col0, tile.row0), (4, 0));
        let o = tile_outcome(1, &tile, |x, y| x + y);
        let rows = raster_rows(&t2.params, &o.artifacts[0]).unwrap();
        assert_eq!(rows.rows(), 16);
        assert_eq!(rows.i64s("x").unwrap()[0], 4);
        let lx = rows.f64s("log10_lr_input").unwrap();
        assert!((lx[0] - (-3.0 + 9.0 * 4.0 / 7.0)).abs() < 1e-12);
        // A wrong-sized artifact is refused, not misplaced.
        assert!(
            raster_rows(
                &t.params,
                &tile_outcome(0, &Tile { cols: 3, ..tile }, |_, _| 0.0).artifacts[0]
            )
            .is_none()
        );
    }

    #[test]
    fn tile_parameters_never_collide_with_results_columns() {
        for name in spec("{}").space().params.keys() {
            assert!(
                !crate::spec::RESERVED_COLUMNS.contains(&name.as_str()),
                "{name}"
            );
        }
    }

    #[test]
    fn bad_sections_name_the_key() {
        for (yaml, key) in [
            ("{ activation: sigmoid }", "activation"),
            ("{ steps: 5 }", "steps"),
            ("{ precision: f16 }", "precision"),
            ("{ resolution: 1 }", "resolution"),
            ("{ batch_size: 8 }", "batch_size"),
            ("{ variant: single_point, dataset_size: 4 }", "dataset_size"),
            ("{ window: { x: [3, 1], y: [0, 1] } }", "x"),
            ("{ zoom: { frames: 1 } }", "frames"),
            ("{ tile: 0 }", "tile"),
        ] {
            let raw: RawFractal = serde_yaml::from_str(yaml).unwrap();
            let p = raw.validate().unwrap_err();
            let last = format!("{:?}", p.path.last().unwrap());
            assert!(last.contains(key), "{yaml}: {p:?}");
        }
    }
}
