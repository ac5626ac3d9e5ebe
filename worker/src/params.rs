//! Reading a trial's hyperparameters with the program's defaults.

use tessera_core::Params;
use tessera_core::program::ProgramInfo;
use tessera_core::space::ParamValue;

/// A trial's hyperparameters seen through its program's declaration.
pub(crate) struct ParamReader<'a> {
    pub(crate) params: &'a Params,
    pub(crate) info: &'a ProgramInfo,
}

impl ParamReader<'_> {
    fn value(&self, name: &str) -> Result<ParamValue, String> {
        if let Some(v) = self.params.get(name) {
            return Ok(v.clone());
        }
        self.info
            .params
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.default.clone())
            .ok_or_else(|| {
                format!(
                    "hyperparameter `{name}` is required by `{}`",
                    self.info.name
                )
            })
    }

    pub(crate) fn f64(&self, name: &str) -> Result<f64, String> {
        self.value(name)?
            .as_f64()
            .ok_or_else(|| format!("`{name}` must be a number"))
    }

    pub(crate) fn usize(&self, name: &str) -> Result<usize, String> {
        self.value(name)?
            .as_i64()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| format!("`{name}` must be a non-negative integer"))
    }

    pub(crate) fn str(&self, name: &str) -> Result<String, String> {
        match self.value(name)? {
            ParamValue::Str(s) => Ok(s),
            _ => Err(format!("`{name}` must be a string")),
        }
    }
}
