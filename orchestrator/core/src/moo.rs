//! Multi-objective optimisation over integer genes, for the NAS sweep kind: Pareto
//! dominance, non-dominated sorting and crowding distance (Deb et al., *A fast and elitist
//! multiobjective genetic algorithm: NSGA-II*, 2002), the hypervolume indicator for two or
//! three objectives, and NSGA-II's variation operators for integer genes (simulated binary
//! crossover and polynomial mutation on the gene index, rounded).
//!
//! Every objective here is minimised: a caller turns "maximise accuracy" into
//! "minimise −accuracy". Pure functions and one plain struct; the randomness comes from a
//! caller's [`Rng`], so a seeded search is reproducible.

use std::collections::BTreeSet;

use crate::rng::Rng;

/// A sub-network (or any candidate): one choice index per gene.
pub type Genome = Vec<u32>;

/// Whether `a` Pareto-dominates `b`: no worse in every objective and better in one.
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    let mut better = false;
    for (x, y) in a.iter().zip(b) {
        if x > y {
            return false;
        }
        better |= x < y;
    }
    better
}

/// Non-dominated sorting: the indices of `points` in fronts, the first front holding the
/// points no other point dominates, each next front those dominated only by earlier
/// fronts. Indices within a front ascend.
pub fn fronts(points: &[Vec<f64>]) -> Vec<Vec<usize>> {
    let n = points.len();
    let mut dominated_by = vec![0usize; n];
    let mut dominating: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        for j in i + 1..n {
            if dominates(&points[i], &points[j]) {
                dominating[i].push(j);
                dominated_by[j] += 1;
            } else if dominates(&points[j], &points[i]) {
                dominating[j].push(i);
                dominated_by[i] += 1;
            }
        }
    }
    let mut out = Vec::new();
    let mut current: Vec<usize> = (0..n).filter(|i| dominated_by[*i] == 0).collect();
    while !current.is_empty() {
        let mut next = Vec::new();
        for &i in &current {
            for &j in &dominating[i] {
                dominated_by[j] -= 1;
                if dominated_by[j] == 0 {
                    next.push(j);
                }
            }
        }
        next.sort_unstable();
        out.push(current);
        current = next;
    }
    out
}

/// The crowding distance of each member of `front` (indices into `points`), in the
/// front's order: per objective, the gap between a point's neighbours normalised by the
/// objective's range, summed; the extremes of each objective get infinity.
#[allow(clippy::needless_range_loop)] // `k` indexes an objective of every point
pub fn crowding(points: &[Vec<f64>], front: &[usize]) -> Vec<f64> {
    let m = points.first().map_or(0, Vec::len);
    let mut dist = vec![0.0; front.len()];
    if front.len() <= 2 {
        return vec![f64::INFINITY; front.len()];
    }
    for k in 0..m {
        let mut order: Vec<usize> = (0..front.len()).collect();
        order.sort_by(|a, b| points[front[*a]][k].total_cmp(&points[front[*b]][k]));
        let lo = points[front[order[0]]][k];
        let hi = points[front[order[order.len() - 1]]][k];
        dist[order[0]] = f64::INFINITY;
        dist[order[order.len() - 1]] = f64::INFINITY;
        if hi > lo {
            for w in 1..order.len() - 1 {
                let gap = points[front[order[w + 1]]][k] - points[front[order[w - 1]]][k];
                dist[order[w]] += gap / (hi - lo);
            }
        }
    }
    dist
}

/// The hypervolume dominated by `points` and bounded by `reference` (minimisation), for
/// two or three objectives; points not strictly better than the reference in every
/// objective add nothing. Exact: a sweep over the sorted first objective in 2-D, and
/// slices along the third objective, each a 2-D sweep, in 3-D.
pub fn hypervolume(points: &[Vec<f64>], reference: &[f64]) -> f64 {
    let inside: Vec<&Vec<f64>> = points
        .iter()
        .filter(|p| p.len() == reference.len() && p.iter().zip(reference).all(|(x, r)| x < r))
        .collect();
    match reference.len() {
        2 => area(inside.iter().map(|p| (p[0], p[1])).collect(), reference),
        3 => {
            let mut zs: Vec<f64> = inside.iter().map(|p| p[2]).collect();
            zs.sort_by(f64::total_cmp);
            zs.dedup();
            let mut volume = 0.0;
            for (i, z) in zs.iter().enumerate() {
                let next = zs.get(i + 1).copied().unwrap_or(reference[2]);
                let slice: Vec<(f64, f64)> = inside
                    .iter()
                    .filter(|p| p[2] <= *z)
                    .map(|p| (p[0], p[1]))
                    .collect();
                volume += area(slice, reference) * (next - z);
            }
            volume
        }
        _ => f64::NAN,
    }
}

fn area(mut pts: Vec<(f64, f64)>, reference: &[f64]) -> f64 {
    pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut total = 0.0;
    let mut best_y = reference[1];
    for (i, (x, y)) in pts.iter().enumerate() {
        if *y < best_y {
            best_y = *y;
        }
        let next_x = pts.get(i + 1).map_or(reference[0], |p| p.0);
        total += (next_x - x) * (reference[1] - best_y);
    }
    total
}

/// NSGA-II for integer genes: `choices[g]` values for gene `g`.
#[derive(Debug, Clone, PartialEq)]
pub struct Nsga2 {
    /// Values per gene.
    pub choices: Vec<u32>,
    /// Population size.
    pub population: usize,
    /// Crossover probability per pair (default 0.9).
    pub crossover: f64,
    /// SBX distribution index (default 15: children near their parents).
    pub eta_crossover: f64,
    /// Polynomial-mutation distribution index (default 20).
    pub eta_mutation: f64,
}

impl Nsga2 {
    /// NSGA-II over `choices` with a population of `population` and the usual settings
    /// (crossover 0.9, η_c = 15, η_m = 20, mutation probability 1/genes).
    pub fn new(choices: Vec<u32>, population: usize) -> Self {
        Self {
            choices,
            population: population.max(2),
            crossover: 0.9,
            eta_crossover: 15.0,
            eta_mutation: 20.0,
        }
    }

    /// A uniformly random genome.
    pub fn random(&self, rng: &mut Rng) -> Genome {
        self.choices
            .iter()
            .map(|c| rng.below(u64::from((*c).max(1))) as u32)
            .collect()
    }

    /// The survivors of `evaluated` (genome, objectives): whole fronts in order, the last
    /// one cut by crowding distance (larger first), `population` in all. Returns indices.
    pub fn survivors(&self, evaluated: &[(Genome, Vec<f64>)]) -> Vec<usize> {
        let objectives: Vec<Vec<f64>> = evaluated.iter().map(|(_, o)| o.clone()).collect();
        let mut out = Vec::with_capacity(self.population);
        for front in fronts(&objectives) {
            if out.len() + front.len() <= self.population {
                out.extend_from_slice(&front);
                continue;
            }
            let d = crowding(&objectives, &front);
            let mut order: Vec<usize> = (0..front.len()).collect();
            order.sort_by(|a, b| d[*b].total_cmp(&d[*a]).then(front[*a].cmp(&front[*b])));
            let room = self.population - out.len();
            out.extend(order.into_iter().take(room).map(|i| front[i]));
            break;
        }
        out
    }

    /// The survivors themselves (see [`Nsga2::survivors`]), cloned.
    pub fn select(&self, evaluated: &[(Genome, Vec<f64>)]) -> Vec<(Genome, Vec<f64>)> {
        self.survivors(evaluated)
            .into_iter()
            .map(|i| evaluated[i].clone())
            .collect()
    }

    /// The next generation to evaluate from the parents `evaluated` (the survivors of
    /// everything measured so far, or the whole population): binary tournaments by rank
    /// then crowding, SBX crossover and polynomial mutation of the gene indices, rounded.
    /// Children already in `seen` are redrawn (up to a limit, then mutated at random), so
    /// a search does not spend real evaluations twice on one candidate.
    pub fn offspring(
        &self,
        evaluated: &[(Genome, Vec<f64>)],
        seen: &BTreeSet<Genome>,
        rng: &mut Rng,
    ) -> Vec<Genome> {
        if evaluated.is_empty() {
            return (0..self.population).map(|_| self.random(rng)).collect();
        }
        let objectives: Vec<Vec<f64>> = evaluated.iter().map(|(_, o)| o.clone()).collect();
        let mut rank = vec![0usize; evaluated.len()];
        let mut crowd = vec![0.0; evaluated.len()];
        for (r, front) in fronts(&objectives).iter().enumerate() {
            for (i, d) in front.iter().zip(crowding(&objectives, front)) {
                rank[*i] = r;
                crowd[*i] = d;
            }
        }
        let pick = |rng: &mut Rng| {
            let a = rng.below(evaluated.len() as u64) as usize;
            let b = rng.below(evaluated.len() as u64) as usize;
            if (rank[a], -crowd[a]) <= (rank[b], -crowd[b]) {
                a
            } else {
                b
            }
        };
        let mut out: Vec<Genome> = Vec::with_capacity(self.population);
        let mut fresh: BTreeSet<Genome> = BTreeSet::new();
        let mut tries = 0;
        while out.len() < self.population {
            let (p1, p2) = (&evaluated[pick(rng)].0, &evaluated[pick(rng)].0);
            let (mut c1, mut c2) = self.sbx(p1, p2, rng);
            self.mutate(&mut c1, rng);
            self.mutate(&mut c2, rng);
            for mut c in [c1, c2] {
                tries += 1;
                if tries > 50 * self.population {
                    // Nearly everything nearby was seen: explore at random instead.
                    c = self.random(rng);
                }
                if out.len() < self.population && !seen.contains(&c) && fresh.insert(c.clone()) {
                    out.push(c);
                }
            }
            if tries > 100 * self.population {
                break;
            }
        }
        out
    }

    fn sbx(&self, a: &Genome, b: &Genome, rng: &mut Rng) -> (Genome, Genome) {
        let (mut c1, mut c2) = (a.clone(), b.clone());
        if rng.next_f64() >= self.crossover {
            return (c1, c2);
        }
        for g in 0..self.choices.len() {
            if rng.next_f64() >= 0.5 || a[g] == b[g] {
                continue;
            }
            let (x1, x2) = (f64::from(a[g].min(b[g])), f64::from(a[g].max(b[g])));
            let u = rng.next_f64();
            let beta = if u <= 0.5 {
                (2.0 * u).powf(1.0 / (self.eta_crossover + 1.0))
            } else {
                (1.0 / (2.0 * (1.0 - u))).powf(1.0 / (self.eta_crossover + 1.0))
            };
            let y1 = 0.5 * ((x1 + x2) - beta * (x2 - x1));
            let y2 = 0.5 * ((x1 + x2) + beta * (x2 - x1));
            let (v1, v2) = (self.clamp(g, y1), self.clamp(g, y2));
            if rng.next_f64() < 0.5 {
                (c1[g], c2[g]) = (v1, v2);
            } else {
                (c1[g], c2[g]) = (v2, v1);
            }
        }
        (c1, c2)
    }

    fn mutate(&self, c: &mut Genome, rng: &mut Rng) {
        let p = 1.0 / self.choices.len().max(1) as f64;
        for (g, cg) in c.iter_mut().enumerate() {
            let hi = f64::from(self.choices[g].saturating_sub(1));
            if hi <= 0.0 || rng.next_f64() >= p {
                continue;
            }
            let x = f64::from(*cg);
            let u = rng.next_f64();
            let e = self.eta_mutation + 1.0;
            let delta = if u < 0.5 {
                let d1 = x / hi;
                (2.0 * u + (1.0 - 2.0 * u) * (1.0 - d1).powf(e)).powf(1.0 / e) - 1.0
            } else {
                let d2 = (hi - x) / hi;
                1.0 - (2.0 * (1.0 - u) + 2.0 * (u - 0.5) * (1.0 - d2).powf(e)).powf(1.0 / e)
            };
            // Rounding a small step would often give the same value: move at least one.
            let mut v = self.clamp(g, x + delta * hi);
            if v == *cg {
                v = self.clamp(g, x + delta.signum());
            }
            *cg = v;
        }
    }

    fn clamp(&self, g: usize, v: f64) -> u32 {
        let hi = f64::from(self.choices[g].saturating_sub(1));
        v.round().clamp(0.0, hi) as u32
    }
}

/// What [`linas_next`] knows besides the measurements.
pub struct LinasModel<'a> {
    /// NSGA-II generations run on the predictions alone.
    pub generations: usize,
    /// Objective `k` of a genome where it is known without measuring (MACs and
    /// parameters are counted, not predicted); `None` where a predictor must guess.
    pub exact: &'a dyn Fn(&Genome, usize) -> Option<f64>,
    /// Turns objectives into the values selection compares (constraint penalties).
    pub penalise: &'a dyn Fn(&[f64]) -> Vec<f64>,
}

impl LinasModel<'_> {
    /// Plain LINAS: every objective predicted, no constraints.
    pub fn plain(generations: usize) -> LinasModel<'static> {
        LinasModel {
            generations,
            exact: &|_, _| None,
            penalise: &|o| o.to_vec(),
        }
    }
}

/// One LINAS iteration (Cummings et al., the DyNAS-T system): fit one predictor per
/// objective that is not known exactly, on every real measurement so far
/// ([`crate::predictor::fit_best`] on one-hot genes), run NSGA-II for
/// `model.generations` on the predictions alone, starting from the survivors of the
/// measured points, and return its final population, minus anything already measured,
/// with each candidate's predicted objectives, as the next candidates to measure for real
/// (topped up with fresh offspring if the predictors' front is mostly known).
pub fn linas_next(
    algo: &Nsga2,
    measured: &[(Genome, Vec<f64>)],
    model: &LinasModel<'_>,
    rng: &mut Rng,
) -> Vec<(Genome, Vec<f64>)> {
    use crate::predictor::{fit_best, one_hot};
    let seen: BTreeSet<Genome> = measured.iter().map(|(g, _)| g.clone()).collect();
    let m = measured.first().map_or(0, |(_, o)| o.len());
    let xs: Vec<Vec<f64>> = measured
        .iter()
        .map(|(g, _)| one_hot(&algo.choices, g))
        .collect();
    let exact_everywhere = |k: usize| measured.iter().all(|(g, _)| (model.exact)(g, k).is_some());
    let models: Vec<Option<_>> = (0..m)
        .map(|k| {
            if exact_everywhere(k) && !measured.is_empty() {
                return None;
            }
            let ys: Vec<f64> = measured.iter().map(|(_, o)| o[k]).collect();
            Some(fit_best(&xs, &ys, algo.choices.len(), 5))
        })
        .collect();
    let predict = |g: &Genome| -> Vec<f64> {
        let x = one_hot(&algo.choices, g);
        (0..m)
            .map(|k| match (model.exact)(g, k) {
                Some(v) => v,
                None => models[k]
                    .as_ref()
                    .and_then(Option::as_ref)
                    .map_or(f64::NAN, |mm| mm.predict(&x)),
            })
            .collect()
    };
    let with_predictions = |gs: Vec<Genome>| -> Vec<(Genome, Vec<f64>)> {
        gs.into_iter()
            .map(|g| {
                let o = predict(&g);
                (g, o)
            })
            .collect()
    };
    if measured.is_empty() || models.iter().any(|mm| matches!(mm, Some(None))) {
        return with_predictions(algo.offspring(&[], &seen, rng));
    }
    let penalised = |pool: &[(Genome, Vec<f64>)]| -> Vec<(Genome, Vec<f64>)> {
        pool.iter()
            .map(|(g, o)| (g.clone(), (model.penalise)(o)))
            .collect()
    };
    let measured_pen = penalised(measured);
    // The pool keeps raw predictions; selection compares penalised ones.
    let mut pool: Vec<(Genome, Vec<f64>)> = algo
        .survivors(&measured_pen)
        .into_iter()
        .map(|i| (measured[i].0.clone(), predict(&measured[i].0)))
        .collect();
    let mut predicted: BTreeSet<Genome> = pool.iter().map(|(g, _)| g.clone()).collect();
    for _ in 0..model.generations {
        let children = algo.offspring(&penalised(&pool), &predicted, rng);
        for c in children {
            predicted.insert(c.clone());
            let o = predict(&c);
            pool.push((c, o));
        }
        let keep = algo.survivors(&penalised(&pool));
        pool = keep.into_iter().map(|i| pool[i].clone()).collect();
    }
    let mut next: Vec<(Genome, Vec<f64>)> = pool
        .into_iter()
        .filter(|(g, _)| !seen.contains(g))
        .collect();
    if next.len() < algo.population {
        let mut taken = seen.clone();
        taken.extend(next.iter().map(|(g, _)| g.clone()));
        let more = algo.offspring(&algo.select(&measured_pen), &taken, rng);
        next.extend(with_predictions(
            more.into_iter()
                .take(algo.population - next.len())
                .collect(),
        ));
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_points(rng: &mut Rng, n: usize, m: usize) -> Vec<Vec<f64>> {
        (0..n)
            .map(|_| (0..m).map(|_| (rng.below(20) as f64) / 2.0).collect())
            .collect()
    }

    #[test]
    fn fronts_partition_the_points_and_respect_dominance() {
        let mut rng = Rng::new(4);
        for m in [2, 3] {
            let pts = random_points(&mut rng, 120, m);
            let f = fronts(&pts);
            let mut all: Vec<usize> = f.iter().flatten().copied().collect();
            all.sort_unstable();
            assert_eq!(all, (0..pts.len()).collect::<Vec<_>>());
            for (k, front) in f.iter().enumerate() {
                for &i in front {
                    // Nothing in this or a later front dominates it...
                    for later in &f[k..] {
                        assert!(later.iter().all(|&j| !dominates(&pts[j], &pts[i])));
                    }
                    // ...and something in the front before does.
                    if k > 0 {
                        assert!(f[k - 1].iter().any(|&j| dominates(&pts[j], &pts[i])));
                    }
                }
            }
        }
    }

    #[test]
    fn hypervolume_matches_hand_computed_values() {
        let r2 = [4.0, 4.0];
        assert_eq!(hypervolume(&[vec![1.0, 1.0]], &r2), 9.0);
        // Two points: union of [1,4]x[3,4] and [3,4]x[1,4] style boxes.
        assert_eq!(
            hypervolume(&[vec![1.0, 3.0], vec![3.0, 1.0]], &r2),
            3.0 + 3.0 - 1.0
        );
        // A dominated point and a point beyond the reference add nothing.
        let hv = hypervolume(&[vec![1.0, 3.0], vec![3.0, 1.0]], &r2);
        assert_eq!(
            hypervolume(
                &[
                    vec![1.0, 3.0],
                    vec![3.0, 1.0],
                    vec![3.5, 3.5],
                    vec![0.0, 5.0]
                ],
                &r2
            ),
            hv
        );
        let r3 = [2.0, 2.0, 2.0];
        assert_eq!(hypervolume(&[vec![1.0, 1.0, 1.0]], &r3), 1.0);
        assert_eq!(hypervolume(&[vec![0.0, 0.0, 0.0]], &r3), 8.0);
        // Two boxes 2x2x1 and 1x1x2 overlapping in 1x1x1: 4 + 2 - 1.
        assert_eq!(
            hypervolume(&[vec![0.0, 0.0, 1.0], vec![1.0, 1.0, 0.0]], &r3),
            5.0
        );
        assert!(hypervolume(&[], &r3) == 0.0);
    }

    #[test]
    fn crowding_prefers_the_extremes() {
        let pts = vec![
            vec![0.0, 4.0],
            vec![1.0, 3.0],
            vec![2.0, 2.5],
            vec![4.0, 0.0],
        ];
        let d = crowding(&pts, &[0, 1, 2, 3]);
        assert!(d[0].is_infinite() && d[3].is_infinite());
        assert!(d[1].is_finite() && d[2].is_finite());
    }

    /// A discrete two-objective problem with a known front: ZDT1 on 10 genes of 11 values.
    fn zdt1(g: &Genome) -> Vec<f64> {
        let x: Vec<f64> = g.iter().map(|v| f64::from(*v) / 10.0).collect();
        let gsum = 1.0 + 9.0 * x[1..].iter().sum::<f64>() / (x.len() - 1) as f64;
        vec![x[0], gsum * (1.0 - (x[0] / gsum).sqrt())]
    }

    #[test]
    fn nsga2_beats_random_search_at_equal_evaluations() {
        let reference = [1.1, 11.0];
        let (mut nsga_total, mut random_total) = (0.0, 0.0);
        for seed in 0..5 {
            let algo = Nsga2::new(vec![11; 10], 20);
            let mut rng = Rng::new(seed);
            let mut all: Vec<(Genome, Vec<f64>)> = Vec::new();
            let mut seen = BTreeSet::new();
            let mut parents: Vec<(Genome, Vec<f64>)> = Vec::new();
            for _ in 0..15 {
                for c in algo.offspring(&parents, &seen, &mut rng) {
                    seen.insert(c.clone());
                    let o = zdt1(&c);
                    all.push((c, o));
                }
                parents = algo.select(&all);
            }
            let pts: Vec<Vec<f64>> = all.iter().map(|(_, o)| o.clone()).collect();
            nsga_total += hypervolume(&pts, &reference);
            let mut rng = Rng::new(seed + 100);
            let pts: Vec<Vec<f64>> = (0..all.len())
                .map(|_| zdt1(&algo.random(&mut rng)))
                .collect();
            random_total += hypervolume(&pts, &reference);
            assert_eq!(all.len(), 300, "no candidate evaluated twice");
        }
        eprintln!(
            "hypervolume summed over 5 seeds: NSGA-II {nsga_total:.3}, random {random_total:.3}"
        );
        assert!(
            nsga_total > random_total * 1.05,
            "{nsga_total} vs {random_total}"
        );
    }

    #[test]
    fn variation_stays_in_range_and_survivors_keep_the_front() {
        let algo = Nsga2::new(vec![3, 1, 5, 2], 8);
        let mut rng = Rng::new(9);
        let parents: Vec<(Genome, Vec<f64>)> = (0..8)
            .map(|i| (algo.random(&mut rng), vec![i as f64, 8.0 - i as f64]))
            .collect();
        for c in algo.offspring(&parents, &BTreeSet::new(), &mut rng) {
            assert!(c.iter().zip(&algo.choices).all(|(v, n)| v < n), "{c:?}");
        }
        let mut pool = parents.clone();
        pool.push((vec![0, 0, 0, 0], vec![100.0, 100.0]));
        let kept = algo.survivors(&pool);
        assert_eq!(kept.len(), 8);
        assert!(!kept.contains(&8), "the dominated point is dropped");
    }

    #[test]
    fn linas_proposes_new_candidates_near_the_predicted_front() {
        let algo = Nsga2::new(vec![11; 10], 20);
        let mut rng = Rng::new(3);
        let mut measured: Vec<(Genome, Vec<f64>)> = (0..40)
            .map(|_| {
                let g = algo.random(&mut rng);
                let o = zdt1(&g);
                (g, o)
            })
            .collect();
        let before = hypervolume(
            &measured.iter().map(|(_, o)| o.clone()).collect::<Vec<_>>(),
            &[1.1, 11.0],
        );
        let next: Vec<Genome> = linas_next(&algo, &measured, &LinasModel::plain(30), &mut rng)
            .into_iter()
            .map(|(g, _)| g)
            .collect();
        assert_eq!(next.len(), 20);
        let seen: BTreeSet<Genome> = measured.iter().map(|(g, _)| g.clone()).collect();
        assert!(
            next.iter().all(|g| !seen.contains(g)),
            "nothing measured twice"
        );
        measured.extend(next.iter().map(|g| (g.clone(), zdt1(g))));
        let after = hypervolume(
            &measured.iter().map(|(_, o)| o.clone()).collect::<Vec<_>>(),
            &[1.1, 11.0],
        );
        assert!(after > before, "{before} -> {after}");
    }
}
