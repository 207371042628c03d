//! Run-time device choice: `--device cpu|cuda[:N][,cuda:M...]`.
//!
//! Library code is generic over the Burn backend; the CLI picks the backend once with
//! [`with_backend!`](crate::with_backend) and everything below runs on it.
use anyhow::{bail, Result};
use std::str::FromStr;

/// CPU backend (Flex), the default.
pub type Cpu = burn::backend::Flex;
/// CPU backend with autodiff, for training and optimization.
pub type CpuAd = burn::backend::Autodiff<Cpu>;

/// `value` as a `U` when `T` is `U` (else back unchanged): how a generic function takes a
/// backend's own path without a trait bound that every caller would have to carry (the CPU
/// training backend's nodes in `decoder::activation` and `decoder::deconv`).
pub fn cast<T: 'static, U: 'static>(value: T) -> std::result::Result<U, T> {
    let boxed: Box<dyn std::any::Any> = Box::new(value);
    boxed.downcast::<U>().map(|u| *u).map_err(|b| *b.downcast::<T>().expect("its own type"))
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    /// One or more CUDA device indices.
    Cuda(Vec<usize>),
}

impl FromStr for DeviceSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s == "cpu" {
            return Ok(DeviceSpec::Cpu);
        }
        let mut ids = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            if part == "cpu" {
                bail!("invalid device list '{s}': the CPU is one device; data-parallel training lists CUDA devices (cuda:0,cuda:1)");
            }
            match part.strip_prefix("cuda") {
                Some("") => ids.push(0),
                Some(rest) => match rest.strip_prefix(':').and_then(|n| n.parse().ok()) {
                    Some(n) => ids.push(n),
                    None => bail!("invalid device '{part}': expected cpu, cuda or cuda:N"),
                },
                None => bail!("invalid device '{part}': expected cpu, cuda or cuda:N"),
            }
        }
        Ok(DeviceSpec::Cuda(ids))
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(ids) => {
                let parts: Vec<String> = ids.iter().map(|i| format!("cuda:{i}")).collect();
                write!(f, "{}", parts.join(","))
            }
        }
    }
}

#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda;
#[cfg(feature = "cuda")]
pub type CudaAd = burn::backend::Autodiff<Cuda>;

/// Check that CUDA device `index` can run a kernel; a missing driver or GPU becomes an
/// error message instead of a panic backtrace deep in the runtime.
#[cfg(feature = "cuda")]
pub fn cuda_device(index: usize) -> Result<burn::backend::cuda::CudaDevice> {
    use burn::tensor::Tensor;
    let device = burn::backend::cuda::CudaDevice::new(index);
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = std::panic::catch_unwind(|| {
        let t = Tensor::<Cuda, 1>::ones([4], &device);
        t.sum().into_scalar()
    });
    std::panic::set_hook(hook);
    match probe {
        Ok(_) => Ok(device),
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown error".into());
            bail!("CUDA device cuda:{index} is not usable on this machine: {msg}")
        }
    }
}

/// Error for a `--device cuda` request in a build without the `cuda` feature.
pub fn no_cuda_error() -> anyhow::Error {
    anyhow::anyhow!(
        "this preimage build has no CUDA support; rebuild with `cargo build --release --features cuda` \
         or use --device cpu"
    )
}

/// Error for several devices given to a command that runs on one.
pub fn one_device_error(spec: &DeviceSpec) -> anyhow::Error {
    anyhow::anyhow!("--device {spec}: this command runs on one device; several devices (data-parallel) are for train-decoder")
}

/// Run `$body` with `$B` bound to the autodiff backend type and `$dev` to the device named
/// by a [`DeviceSpec`]; a spec naming several devices is an error. The three-name form
/// `|B, dev, devs|` also binds `$devs` to all requested devices, in order (data-parallel
/// training; the first is the main device). A device may be listed twice (`cuda:0,cuda:0`):
/// two workers share it, which tests the multi-device path on one GPU.
#[macro_export]
macro_rules! with_backend {
    ($spec:expr, |$B:ident, $dev:ident| $body:expr) => {{
        if let $crate::device::DeviceSpec::Cuda(ids) = &$spec {
            if ids.len() != 1 {
                return Err($crate::device::one_device_error(&$spec));
            }
        }
        $crate::with_backend!($spec, |$B, $dev, _devs| $body)
    }};
    ($spec:expr, |$B:ident, $dev:ident, $devs:ident| $body:expr) => {{
        match &$spec {
            $crate::device::DeviceSpec::Cpu => {
                type $B = $crate::device::CpuAd;
                let $dev = burn::backend::flex::FlexDevice;
                #[allow(unused_variables)]
                let $devs = vec![$dev.clone()];
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::device::DeviceSpec::Cuda(ids) => {
                type $B = $crate::device::CudaAd;
                #[allow(unused_variables)]
                let $devs = ids.iter().map(|&i| $crate::device::cuda_device(i)).collect::<anyhow::Result<Vec<_>>>()?;
                let $dev = $devs[0].clone();
                $body
            }
            #[cfg(not(feature = "cuda"))]
            $crate::device::DeviceSpec::Cuda(_) => {
                return Err($crate::device::no_cuda_error());
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(vec![0]));
        assert_eq!("cuda:1,cuda:0".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(vec![1, 0]));
        let err = "gpu".parse::<DeviceSpec>().unwrap_err().to_string();
        assert!(err.contains("'gpu'"), "{err}");
    }
}
