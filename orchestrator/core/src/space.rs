//! Search spaces: the hyperparameters a sweep varies and the values each may take.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// One hyperparameter's value in a trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string (an optimizer's name, say).
    Str(String),
}

impl ParamValue {
    /// The value as a float, if it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ParamValue::Int(v) => Some(*v as f64),
            ParamValue::Float(v) => Some(*v),
            _ => None,
        }
    }

    /// The value as an integer, if it is one (or a float with no fractional part).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            ParamValue::Int(v) => Some(*v),
            ParamValue::Float(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => Some(*v as i64),
            _ => None,
        }
    }

    /// The value as a string slice, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            ParamValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a bool, if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            ParamValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    fn kind(&self) -> ValueKind {
        match self {
            ParamValue::Bool(_) => ValueKind::Bool,
            ParamValue::Int(_) => ValueKind::Int,
            ParamValue::Float(_) => ValueKind::Float,
            ParamValue::Str(_) => ValueKind::Str,
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Bool(v) => write!(f, "{v}"),
            ParamValue::Int(v) => write!(f, "{v}"),
            ParamValue::Float(v) => write!(f, "{v}"),
            ParamValue::Str(v) => write!(f, "{v}"),
        }
    }
}

/// The column type a hyperparameter gets in the results tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueKind {
    /// Boolean column.
    Bool,
    /// 64-bit integer column.
    Int,
    /// 64-bit float column.
    Float,
    /// UTF-8 string column.
    Str,
}

/// A hyperparameter assignment: name → value, ordered by name.
pub type Params = BTreeMap<String, ParamValue>;

/// How a numeric range is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// Uniform in the value.
    Linear,
    /// Uniform in the logarithm of the value (bounds must be positive).
    Log,
}

/// The values one hyperparameter may take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Domain {
    /// A real interval `[low, high]`.
    Float {
        /// Lower bound (inclusive).
        low: f64,
        /// Upper bound (inclusive).
        high: f64,
        /// Sampling scale.
        scale: Scale,
        /// Number of points a grid sweep takes along this axis.
        grid: Option<u32>,
    },
    /// An integer interval `[low, high]`.
    Int {
        /// Lower bound (inclusive).
        low: i64,
        /// Upper bound (inclusive).
        high: i64,
        /// Sampling scale.
        scale: Scale,
        /// Number of points a grid sweep takes (all integers when absent).
        grid: Option<u32>,
    },
    /// One of a list of values.
    Choice(Vec<ParamValue>),
    /// Always this value.
    Fixed(ParamValue),
}

impl Domain {
    /// The column type of this hyperparameter.
    pub fn value_kind(&self) -> ValueKind {
        match self {
            Domain::Float { .. } => ValueKind::Float,
            Domain::Int { .. } => ValueKind::Int,
            Domain::Fixed(v) => v.kind(),
            Domain::Choice(values) => {
                let first = values.first().map_or(ValueKind::Str, ParamValue::kind);
                if values.iter().all(|v| v.kind() == first) {
                    first
                } else if values
                    .iter()
                    .all(|v| matches!(v.kind(), ValueKind::Int | ValueKind::Float))
                {
                    ValueKind::Float
                } else {
                    ValueKind::Str
                }
            }
        }
    }

    /// Whether `value` lies in this domain.
    pub fn contains(&self, value: &ParamValue) -> bool {
        match (self, value) {
            (Domain::Float { low, high, .. }, v) => {
                v.as_f64().is_some_and(|x| x >= *low && x <= *high)
            }
            (Domain::Int { low, high, .. }, ParamValue::Int(x)) => x >= low && x <= high,
            (Domain::Int { .. }, _) => false,
            (Domain::Choice(values), v) => values.contains(v),
            (Domain::Fixed(f), v) => f == v,
        }
    }

    /// Draws a value uniformly (on the domain's scale).
    pub fn sample(&self, rng: &mut Rng) -> ParamValue {
        match self {
            Domain::Float {
                low, high, scale, ..
            } => {
                let u = rng.next_f64();
                let v = match scale {
                    Scale::Linear => low + u * (high - low),
                    Scale::Log => (low.ln() + u * (high.ln() - low.ln())).exp(),
                };
                ParamValue::Float(v.clamp(*low, *high))
            }
            Domain::Int {
                low,
                high,
                scale: Scale::Log,
                ..
            } => {
                // Uniform in log space over [low, high + 1), floored: every integer reachable.
                let (l, h) = ((*low as f64).ln(), (*high as f64 + 1.0).ln());
                let v = (l + rng.next_f64() * (h - l)).exp().floor() as i64;
                ParamValue::Int(v.clamp(*low, *high))
            }
            Domain::Int { low, high, .. } => {
                let span = high.abs_diff(*low).saturating_add(1);
                ParamValue::Int(low.wrapping_add(rng.below(span) as i64))
            }
            Domain::Choice(values) => values[rng.below(values.len() as u64) as usize].clone(),
            Domain::Fixed(v) => v.clone(),
        }
    }

    /// The number of values a grid sweep takes along this axis (saturating).
    pub fn grid_len(&self) -> u64 {
        match self {
            Domain::Float { grid, .. } => u64::from(grid.unwrap_or(1).max(1)),
            Domain::Int {
                low,
                high,
                grid: None,
                ..
            } => (high.abs_diff(*low)).saturating_add(1),
            Domain::Int { .. } => self.grid_values().len() as u64,
            Domain::Choice(values) => values.len() as u64,
            Domain::Fixed(_) => 1,
        }
    }

    /// The `i`-th grid value along this axis (`i < grid_len()`), without listing them all.
    pub fn grid_value(&self, i: u64) -> ParamValue {
        match self {
            Domain::Int {
                low, grid: None, ..
            } => ParamValue::Int(low.saturating_add(i as i64)),
            Domain::Choice(values) => values[i as usize].clone(),
            Domain::Fixed(v) => v.clone(),
            Domain::Float {
                low,
                high,
                scale,
                grid,
            } => {
                let n = grid.unwrap_or(1).max(1);
                ParamValue::Float(spaced_at(*low, *high, *scale, n, i as u32))
            }
            Domain::Int { .. } => self.grid_values()[i as usize].clone(),
        }
    }

    /// The values a grid sweep takes along this axis, in order (bounded axes only: an
    /// integer range without `grid` lists every integer).
    pub fn grid_values(&self) -> Vec<ParamValue> {
        match self {
            Domain::Float {
                low,
                high,
                scale,
                grid,
            } => {
                let n = grid.unwrap_or(1).max(1);
                spaced(*low, *high, *scale, n)
                    .into_iter()
                    .map(ParamValue::Float)
                    .collect()
            }
            Domain::Int {
                low,
                high,
                scale,
                grid,
            } => match grid {
                None => (*low..=*high).map(ParamValue::Int).collect(),
                Some(n) => {
                    let mut out: Vec<i64> = spaced(*low as f64, *high as f64, *scale, (*n).max(1))
                        .into_iter()
                        .map(|v| v.round() as i64)
                        .collect();
                    out.dedup();
                    out.into_iter().map(ParamValue::Int).collect()
                }
            },
            Domain::Choice(values) => values.clone(),
            Domain::Fixed(v) => vec![v.clone()],
        }
    }
}

fn spaced_at(low: f64, high: f64, scale: Scale, n: u32, i: u32) -> f64 {
    if n == 1 {
        return match scale {
            Scale::Linear => (low + high) / 2.0,
            Scale::Log => (low * high).sqrt(),
        };
    }
    let t = f64::from(i) / f64::from(n - 1);
    let v = match scale {
        Scale::Linear => low + t * (high - low),
        Scale::Log => (low.ln() + t * (high.ln() - low.ln())).exp(),
    };
    v.clamp(low, high)
}

fn spaced(low: f64, high: f64, scale: Scale, n: u32) -> Vec<f64> {
    (0..n).map(|i| spaced_at(low, high, scale, n, i)).collect()
}

/// A sweep's search space: every hyperparameter (varied or fixed) by name.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SearchSpace {
    /// The domains, ordered by hyperparameter name.
    pub params: BTreeMap<String, Domain>,
}

impl SearchSpace {
    /// Whether every hyperparameter of the space is assigned a value inside its domain,
    /// and nothing else is assigned.
    pub fn contains(&self, params: &Params) -> bool {
        params.len() == self.params.len()
            && self
                .params
                .iter()
                .all(|(name, domain)| params.get(name).is_some_and(|v| domain.contains(v)))
    }

    /// Draws one assignment.
    pub fn sample(&self, rng: &mut Rng) -> Params {
        self.params
            .iter()
            .map(|(name, d)| (name.clone(), d.sample(rng)))
            .collect()
    }

    /// The number of points in the full grid (saturating).
    pub fn grid_size(&self) -> u64 {
        self.params
            .values()
            .map(Domain::grid_len)
            .fold(1u64, u64::saturating_mul)
    }

    /// The `index`-th point of the grid (mixed radix, the last name varying fastest).
    pub fn grid_point(&self, index: u64) -> Params {
        let mut rest = index;
        let mut out = Params::new();
        for (name, domain) in self.params.iter().rev() {
            let n = domain.grid_len().max(1);
            out.insert(name.clone(), domain.grid_value(rest % n));
            rest /= n;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> SearchSpace {
        let mut params = BTreeMap::new();
        params.insert(
            "lr".into(),
            Domain::Float {
                low: 1e-4,
                high: 1e-1,
                scale: Scale::Log,
                grid: Some(4),
            },
        );
        params.insert(
            "width".into(),
            Domain::Int {
                low: 1,
                high: 3,
                scale: Scale::Linear,
                grid: None,
            },
        );
        params.insert(
            "opt".into(),
            Domain::Choice(vec![
                ParamValue::Str("adam".into()),
                ParamValue::Str("sgd".into()),
            ]),
        );
        params.insert("epochs".into(), Domain::Fixed(ParamValue::Int(5)));
        SearchSpace { params }
    }

    #[test]
    fn grid_enumerates_every_combination_once() {
        let s = space();
        assert_eq!(s.grid_size(), 4 * 3 * 2);
        let mut seen = Vec::new();
        for i in 0..s.grid_size() {
            let p = s.grid_point(i);
            assert!(s.contains(&p), "{p:?}");
            assert!(!seen.contains(&p));
            seen.push(p);
        }
    }

    #[test]
    fn log_grid_hits_both_ends() {
        let d = Domain::Float {
            low: 1e-4,
            high: 1e-1,
            scale: Scale::Log,
            grid: Some(4),
        };
        let v: Vec<f64> = d
            .grid_values()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!((v[0] - 1e-4).abs() < 1e-12 && (v[3] - 1e-1).abs() < 1e-12);
        assert!((v[1] - 1e-3).abs() < 1e-9);
    }

    #[test]
    fn mixed_numeric_choice_is_a_float_column() {
        let d = Domain::Choice(vec![ParamValue::Int(1), ParamValue::Float(0.5)]);
        assert_eq!(d.value_kind(), ValueKind::Float);
    }
}
