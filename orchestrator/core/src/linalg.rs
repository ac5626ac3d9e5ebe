//! Small dense linear algebra on row-major `Vec<f64>` matrices: the Cholesky factor and
//! the triangular solves that the predictors (kernel ridge) and the GP bandit need. The
//! matrices here have at most a few hundred rows, so plain loops are enough.

/// The lower Cholesky factor `L` of a symmetric positive-definite `n × n` matrix
/// (`A = L Lᵀ`), or `None` if `A` is not numerically positive definite.
pub fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= l[j * n + k] * l[j * n + k];
        }
        if d <= 0.0 || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        l[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            l[i * n + j] = s / d;
        }
    }
    Some(l)
}

/// Solves `L x = b` for lower-triangular `L`.
pub fn solve_lower(l: &[f64], n: usize, mut b: Vec<f64>) -> Vec<f64> {
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= l[i * n + k] * b[k];
        }
        b[i] = s / l[i * n + i];
    }
    b
}

/// Solves `Lᵀ x = b` for lower-triangular `L`.
pub fn solve_lower_t(l: &[f64], n: usize, mut b: Vec<f64>) -> Vec<f64> {
    for i in (0..n).rev() {
        let mut s = b[i];
        for k in i + 1..n {
            s -= l[k * n + i] * b[k];
        }
        b[i] = s / l[i * n + i];
    }
    b
}

/// Solves `A x = b` for symmetric positive-definite `A` (`n × n`) by Cholesky.
pub fn solve_spd(a: Vec<f64>, b: Vec<f64>, n: usize) -> Option<Vec<f64>> {
    let l = cholesky(&a, n)?;
    Some(solve_lower_t(&l, n, solve_lower(&l, n, b)))
}

/// `A⁻¹` from the Cholesky factor `L` of `A`.
pub fn inverse_from_cholesky(l: &[f64], n: usize) -> Vec<f64> {
    let mut inv = vec![0.0; n * n];
    for j in 0..n {
        let mut e = vec![0.0; n];
        e[j] = 1.0;
        let col = solve_lower_t(l, n, solve_lower(l, n, e));
        for i in 0..n {
            inv[i * n + j] = col[i];
        }
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_and_inverts_a_small_system() {
        let a = vec![4.0, 2.0, 2.0, 3.0];
        let x = solve_spd(a.clone(), vec![2.0, 1.0], 2).unwrap();
        assert!((4.0 * x[0] + 2.0 * x[1] - 2.0).abs() < 1e-12);
        assert!((2.0 * x[0] + 3.0 * x[1] - 1.0).abs() < 1e-12);
        let inv = inverse_from_cholesky(&cholesky(&a, 2).unwrap(), 2);
        // A · A⁻¹ = I.
        for i in 0..2 {
            for j in 0..2 {
                let v: f64 = (0..2).map(|k| a[i * 2 + k] * inv[k * 2 + j]).sum();
                assert!((v - f64::from(u8::from(i == j))).abs() < 1e-12);
            }
        }
        assert!(solve_spd(vec![0.0], vec![1.0], 1).is_none());
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }
}
