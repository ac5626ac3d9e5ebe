//! Which Burn backend and device a worker trains on.
//!
//! Burn 0.22 picks the backend at run time from the device: `Device::flex()` (the
//! pure-Rust CPU backend, always built) or, with the `tch` cargo feature, LibTorch on the
//! CPU (`Device::libtorch()`) or on a CUDA GPU (`Device::libtorch_cuda(i)`). Burn 0.23
//! removes `tch`; this module is the one place that names backends, so Burn's own CUDA
//! backend can be added beside it when the project moves on.
//!
//! Asking for what this build or machine lacks (LibTorch without the feature, CUDA without
//! a GPU, a GPU index past the last one) is an error at start-up, before any trial runs.

use burn::tensor::Device;

/// A training backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Burn's pure-Rust CPU backend.
    Flex,
    /// LibTorch (PyTorch's C++ library) through burn's `tch` backend.
    LibTorch,
}

impl Backend {
    /// `flex` or `libtorch`, as flags and metrics name it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::LibTorch => "libtorch",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Backend> {
        match s {
            "flex" => Some(Backend::Flex),
            "libtorch" | "tch" => Some(Backend::LibTorch),
            _ => None,
        }
    }
}

/// The backends this build can train on.
pub fn compiled_backends() -> Vec<Backend> {
    let mut v = vec![Backend::Flex];
    if cfg!(feature = "tch") {
        v.push(Backend::LibTorch);
    }
    v
}

/// A chosen device: the Burn device and how to describe it.
#[derive(Debug, Clone)]
pub struct Selected {
    /// The backend.
    pub backend: Backend,
    /// The Burn device.
    pub device: Device,
    /// `cpu` or `cuda:N`.
    pub label: String,
    /// GPU indices it uses (empty on the CPU).
    pub gpus: Vec<u32>,
}

/// Selects `device` (`cpu`, `cuda` or `cuda:N`) on `backend` (default: flex for the CPU,
/// libtorch for CUDA). With LibTorch, its intra-op threads are set so that `slots`
/// concurrent trials share the cores instead of fighting over them.
pub fn select(backend: Option<Backend>, device: &str, slots: u32) -> Result<Selected, String> {
    let cuda = match device {
        "cpu" => None,
        "cuda" => Some(0u32),
        other => match other.strip_prefix("cuda:").map(str::parse::<u32>) {
            Some(Ok(i)) => Some(i),
            _ => {
                return Err(format!(
                    "unknown device `{other}`: use `cpu`, `cuda` or `cuda:N` (N a GPU index)"
                ));
            }
        },
    };
    let backend = backend.unwrap_or(if cuda.is_some() {
        Backend::LibTorch
    } else {
        Backend::Flex
    });
    match (backend, cuda) {
        (Backend::Flex, None) => Ok(Selected {
            backend,
            device: Device::flex(),
            label: "cpu".into(),
            gpus: Vec::new(),
        }),
        (Backend::Flex, Some(_)) => {
            Err("the flex backend runs on the CPU only: use `--backend libtorch` for CUDA".into())
        }
        (Backend::LibTorch, cuda) => libtorch(cuda, slots),
    }
}

#[cfg(feature = "tch")]
#[allow(deprecated)] // burn 0.22 deprecates its tch backend (removed in 0.23); pinned on purpose.
fn libtorch(cuda: Option<u32>, slots: u32) -> Result<Selected, String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // One intra-op pool for the process: each of the `slots` trials gets its share.
    let threads = (cores / slots.max(1) as usize).max(1);
    tch::set_num_threads(threads as i32);
    match cuda {
        None => Ok(Selected {
            backend: Backend::LibTorch,
            device: Device::libtorch(),
            label: "cpu".into(),
            gpus: Vec::new(),
        }),
        Some(i) => {
            if !tch::Cuda::is_available() {
                return Err(format!(
                    "cuda:{i} asked for, but LibTorch sees no CUDA device (no GPU, no driver, or a CPU-only LibTorch); use `--device cpu`"
                ));
            }
            let count = tch::Cuda::device_count();
            if i64::from(i) >= count {
                return Err(format!(
                    "cuda:{i} asked for, but this machine has {count} CUDA device(s): use cuda:0..cuda:{}",
                    count - 1
                ));
            }
            Ok(Selected {
                backend: Backend::LibTorch,
                device: Device::libtorch_cuda(i as usize),
                label: format!("cuda:{i}"),
                gpus: vec![i],
            })
        }
    }
}

#[cfg(not(feature = "tch"))]
fn libtorch(_cuda: Option<u32>, _slots: u32) -> Result<Selected, String> {
    Err("this tessera was built without LibTorch: build it with `--features tch` (run `bash tests/libtorch.sh` first and export what it prints), or use `--backend flex --device cpu`".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_impossible_requests_are_clear_errors() {
        let s = select(None, "cpu", 2).unwrap();
        assert_eq!((s.backend, s.label.as_str()), (Backend::Flex, "cpu"));
        assert!(
            select(None, "gpu0", 1)
                .unwrap_err()
                .contains("unknown device")
        );
        assert!(
            select(Some(Backend::Flex), "cuda:0", 1)
                .unwrap_err()
                .contains("--backend libtorch")
        );
        if cfg!(feature = "tch") {
            let s = select(Some(Backend::LibTorch), "cpu", 2).unwrap();
            assert_eq!(s.backend, Backend::LibTorch);
            // No GPU here: a clear error, not a crash.
            if let Err(e) = select(None, "cuda:0", 1) {
                assert!(e.contains("CUDA"), "{e}");
            }
        } else {
            assert!(
                select(None, "cuda:1", 1)
                    .unwrap_err()
                    .contains("--features tch")
            );
            assert!(select(Some(Backend::LibTorch), "cpu", 1).is_err());
        }
        assert_eq!(Backend::parse("tch"), Some(Backend::LibTorch));
        assert!(compiled_backends().contains(&Backend::Flex));
    }
}
